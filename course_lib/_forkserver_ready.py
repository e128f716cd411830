"""Imported last by each of the launcher's forkservers: marks that its preloading has finished.

It creates the file named by ``COURSE_FORKSERVER_READY`` when the server imports it. A launch
waits for the first server's file before its clock starts, and switches to the second (fully
preloaded) server only once that server's file exists.
"""
import os

_path = os.environ.get("COURSE_FORKSERVER_READY")
if _path:
    open(_path, "w").close()
