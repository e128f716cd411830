"""Fixtures shared by several test files."""
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
