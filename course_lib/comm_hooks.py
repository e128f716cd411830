"""Chapter 3's collectives inside PyTorch's own DDP, through its communication-hook API.

``torch.nn.parallel.DistributedDataParallel`` hands each gradient bucket to a hook that must
return a ``Future`` of the reduced bucket (Li et al. 2020; ``torch.distributed.algorithms.
ddp_comm_hooks``). A hook is where a different collective, or a compressed one, goes: chapter 3's ring
(:func:`ring_allreduce_hook`) or chapter 7's compressors (:func:`compression_hook`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from course_lib.collectives import ring_all_reduce
from course_lib.compression import Compressor, bool_arg, check_compressor


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


@dataclass
class HookState:
    """State of :func:`compression_hook`: the compressor, whether to compress each gradient
    of a bucket separately (``per_tensor``, as torch's ``powerSGD_hook`` does) or the flat
    bucket, and the element count of every bucket seen (to check the bytes)."""

    compressor: Compressor
    per_tensor: bool = False
    buckets: list = field(default_factory=list)

    def __post_init__(self) -> None:
        check_compressor(self.compressor)
        bool_arg("per_tensor", self.per_tensor)


# No annotations: torch's DDP checks that ``bucket`` is annotated exactly as dist.GradBucket,
# and ``from __future__ import annotations`` would turn annotations into strings.
def compression_hook(state, bucket):
    """A comm hook for ``torch.nn.parallel.DistributedDataParallel``:
    ``ddp.register_comm_hook(HookState(TopK(0.01)), compression_hook)`` makes torch's DDP
    send each bucket through a course compressor instead of an fp32 all-reduce
    (``torch.distributed.algorithms.ddp_comm_hooks``). Runs synchronously; returns a
    completed ``Future`` holding the bucket's averaged (approximated) gradients."""
    if not isinstance(state, HookState):
        raise TypeError(f"state must be a HookState, e.g. HookState(TopK(0.01)), got {type(state).__name__}")
    buf = bucket.buffer()
    state.buckets.append(buf.numel())
    # Keys from the parameters, not bucket.index(): DDP rebuilds its buckets after the first step.
    params = bucket.parameters()
    if state.per_tensor:
        offset = 0
        for p, grad in zip(params, bucket.gradients()):
            part = buf[offset:offset + grad.numel()]
            part.copy_(state.compressor.reduce(part.view_as(grad), key=id(p)).reshape(-1))
            offset += grad.numel()
    else:
        buf.copy_(state.compressor.reduce(buf, key=tuple(id(p) for p in params)))
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(buf)
    return fut
