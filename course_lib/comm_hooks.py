"""Chapter 3's collectives inside PyTorch's own DDP, through its communication-hook API.

``torch.nn.parallel.DistributedDataParallel`` hands each gradient bucket to a hook that must
return a ``Future`` of the reduced bucket (Li et al. 2020; ``torch.distributed.algorithms.
ddp_comm_hooks``). A hook is where a different collective, or a compressed one, goes.
"""
from __future__ import annotations

import torch

from course_lib.collectives import ring_all_reduce


# No annotations on the hook: torch's DDP checks that ``bucket`` is annotated as exactly
# dist.GradBucket, and this file's ``from __future__ import annotations`` makes them strings.
def ring_allreduce_hook(state, bucket):
    """A comm hook for PyTorch's own DDP that averages each bucket with the course's ring:
    ``g <- (1/p) sum_r g_r`` by :func:`course_lib.collectives.ring_all_reduce`, op="avg".

    ``ddp.register_comm_hook(state, ring_allreduce_hook)`` swaps DDP's gloo all-reduce for
    chapter 3's ring, so torch's bucketing and autograd plumbing run on our collective (the
    hook API: Li et al. 2020; ``torch.distributed.algorithms.ddp_comm_hooks``). ``state``: a
    list that records each bucket's element count (so the bytes can be checked), or None;
    ``bucket``: a ``torch.distributed.GradBucket``. Returns a completed ``Future[Tensor]``.
    The ring runs synchronously inside the hook, so this hook gives up overlap; that is the
    price of writing it in Python on blocking waits.
    """
    buf = bucket.buffer()
    if state is not None:
        state.append(buf.numel())
    ring_all_reduce(buf, op="avg")
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(buf)
    return fut
