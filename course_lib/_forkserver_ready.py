"""Imported last by the launcher's full forkserver: marks that its preloading has finished.

The launcher starts that server in the background and switches to it only once this file has
been imported there (it creates the file named by ``COURSE_FORKSERVER_READY``).
"""
import os

_path = os.environ.get("COURSE_FORKSERVER_READY")
if _path:
    open(_path, "w").close()
