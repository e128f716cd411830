"""Fixtures shared by several test files."""
import pathlib

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run in-process models on 1 intra-op thread, restored afterwards: they are too small to
    gain from a second thread, and on a busy 2-core machine two spinning OpenMP threads made
    them 10-20x slower. Test files opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SESSION_START = __import__("time").time()


def pytest_terminal_summary(terminalreporter):
    """Name the browser test's screenshots (written during this run) at the end of the output."""
    shots = pathlib.Path(__file__).resolve().parents[1] / "build" / "browser"
    new = sorted(p for p in shots.glob("*.png") if p.stat().st_mtime >= _SESSION_START)
    if new:
        terminalreporter.write_sep("-", f"browser screenshots ({len(new)})")
        for p in new:
            terminalreporter.write_line(str(p.relative_to(shots.parents[1])))


LONG_FILES = ("tests/test_browser.py", "tests/test_environment.py", "tests/test_grading.py",
              "tests/test_grading_class.py")  # minutes each
# ./course test runs pytest-xdist with --dist loadscope, and the scope is ours (below): a file
# runs whole on one worker (a notebook's cells share one kernel; a module's fixtures are built
# once), except these, whose tests are independent and each a minute or more: spread over workers.
SPREAD_FILES = ("tests/test_grading.py",)


def pytest_collection_modifyitems(items):
    """Hand the longest files to the workers first, so that they do not finish alone at the end."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FILES))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown when it is not loaded
def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadscope``: one scope per file, one per test in :data:`SPREAD_FILES`."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in SPREAD_FILES else path

    return ByFile(config, log)
