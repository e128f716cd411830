"""Data parallelism from scratch: replicate the model, split the batch, average the gradients.

    rank r:  g_r = (1/b) sum_{i in B_r} grad l(theta; x_i)       (its b = B/p rows)
    all:     g   = (1/p) sum_r g_r  = (1/B) sum_{i in B} grad l    (all-reduce, then / p)
    all:     theta <- optimizer(theta, g)                          (identical on every rank)

Three steps, each a lesson of chapter 4:

1. :func:`broadcast_parameters`: every replica starts from rank 0's weights.
2. :class:`BucketedDDP`: the all-reduce of gradients, in *buckets* launched from autograd
   hooks while the backward pass is still computing earlier layers (overlap), as in
   PyTorch DDP (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data
   Parallel Training", VLDB). Buckets follow the *reverse* parameter order, the order in
   which backward produces gradients.
3. :meth:`BucketedDDP.no_sync`: gradient accumulation over micro-batches, communicating
   only on the last one.

All communication goes through :mod:`course_lib.comm`, so the bytes are counted: one step
all-reduces exactly ``4 * Psi`` bytes (``Psi`` float32 gradients) on every rank.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn

from course_lib import comm

DEFAULT_BUCKET_CAP_BYTES = 25 * 2**20  # torch DDP's default bucket_cap_mb=25


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """``theta <- theta_src`` on every rank: parameters and buffers (one broadcast each).

    Seeding every rank identically also gives equal replicas, but a broadcast makes it true
    whatever the ranks did before (a different seed, a checkpoint loaded on rank 0 only).
    """
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            comm.broadcast(t.data, src)


def assign_buckets(params: list[nn.Parameter], bucket_cap_bytes: int) -> list[list[nn.Parameter]]:
    """Cut ``params`` into consecutive buckets of at most ``bucket_cap_bytes`` (at least one
    parameter each, so a parameter larger than the cap gets a bucket of its own).

    Pass the parameters in the order their gradients become ready, i.e. reversed
    ``model.parameters()`` (Li et al. 2020, sec. 3.2.3: backward visits layers last to first).
    """
    if not isinstance(bucket_cap_bytes, int) or bucket_cap_bytes < 1:
        raise ValueError(f"bucket_cap_bytes must be a positive int (bytes), got {bucket_cap_bytes!r}; "
                         "e.g. 25 * 2**20 for torch DDP's default 25 MiB")
    if not params:
        raise ValueError("no parameters to bucket: does the model have trainable parameters?")
    buckets: list[list[nn.Parameter]] = [[]]
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        if buckets[-1] and size + nbytes > bucket_cap_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += nbytes
    return buckets


@dataclass
class Bucket:
    """Parameters whose gradients travel in one all-reduce, flattened into ``buffer``."""

    params: list[nn.Parameter]
    buffer: torch.Tensor  # the flat gradients, sum(p.numel()) floats
    offsets: list[int]
    ready: int = 0  # how many of ``params`` have their gradient this backward
    work: object | None = None  # the async all-reduce in flight
    t_launch: float | None = None
    t_done: list = field(default_factory=list)  # filled by the Work's future when it completes


@dataclass
class StepTimeline:
    """When things happened in the last step (``time.perf_counter`` seconds), for plots."""

    forward: tuple[float, float] | None = None
    backward: tuple[float, float] | None = None  # first gradient ready, backward returned
    buckets: list[tuple[int, float, float, int]] = field(default_factory=list)  # (i, launch, done, bytes)
    wait_end: float | None = None  # gradients averaged, optimizer may step


class BucketedDDP(nn.Module):
    """DDP from scratch: ``loss.backward()`` returns with gradients averaged over the ranks.

    ``g <- (1/p) sum_r g_r`` per bucket; buckets of at most ``bucket_cap_bytes`` in reverse
    parameter order; with ``overlap=True`` each bucket's ``all_reduce(async_op=True)`` starts
    from the post-accumulate-grad hook of its last parameter, while backward goes on with
    earlier layers; with ``overlap=False`` all buckets start after backward (the baseline).
    Li et al. 2020 (PyTorch DDP, VLDB), sec. 3.2. It is the course's version of
    ``torch.nn.parallel.DistributedDataParallel`` (one process per rank), not of
    ``torch.nn.DataParallel`` (one process, threads, one replica per GPU): both are data
    parallelism, neither is model parallelism.

    ``compressor`` (chapter 7): an object with ``reduce(tensor, key) -> mean estimate``, e.g.
    ``course_lib.compression.TopK(0.01)``; each bucket then goes through it (synchronously,
    from the same hook) instead of the fp32 all-reduce. A bucket of one parameter is passed
    in that parameter's shape (PowerSGD compresses matrices), a larger one as a flat vector.
    """

    def __init__(self, module: nn.Module, bucket_cap_bytes: int = DEFAULT_BUCKET_CAP_BYTES,
                 overlap: bool = True, broadcast: bool = True, compressor=None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"BucketedDDP wraps an nn.Module, got {type(module).__name__}")
        self.module = module
        self.world_size = comm.get_world_size()
        self.overlap = overlap
        self.compressor = compressor
        self.sync = True
        if broadcast:
            broadcast_parameters(module)
        params = [p for p in module.parameters() if p.requires_grad]  # ties counted once
        self.buckets = []
        for group in assign_buckets(params[::-1], bucket_cap_bytes):
            sizes = [p.numel() for p in group]
            offsets = [sum(sizes[:i]) for i in range(len(sizes))]
            self.buckets.append(Bucket(group, torch.zeros(sum(sizes), dtype=group[0].dtype), offsets))
        self._where = {p: (b, i) for b, bucket in enumerate(self.buckets) for i, p in enumerate(bucket.params)}
        self._next = 0  # buckets launch strictly in order: every rank must call the same collectives
        self._in_backward = False
        self.timeline = StepTimeline()
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    # ------------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.module(*args, **kwargs)
        self.timeline = StepTimeline(forward=(t0, time.perf_counter()))
        return out

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Gradient accumulation: backward passes inside only add into ``p.grad`` locally;
        the first backward outside communicates the accumulated sum (Li et al. 2020, 3.2.4)."""
        old, self.sync = self.sync, False
        try:
            yield
        finally:
            self.sync = old

    # ------------------------------------------------------------------ backward hooks
    def _grad_ready(self, p: nn.Parameter) -> None:
        if not self.sync:
            return
        if not self._in_backward:  # first gradient of this backward pass
            self._in_backward = True
            self.timeline.backward = (time.perf_counter(), float("nan"))
            # Run _finish when autograd has finished the whole backward pass, so that
            # loss.backward() returns with averaged gradients, as with torch DDP.
            torch.autograd.Variable._execution_engine.queue_callback(self._finish)
        b, i = self._where[p]
        bucket = self.buckets[b]
        n = p.numel()
        bucket.buffer[bucket.offsets[i]:bucket.offsets[i] + n].copy_(p.grad.reshape(-1))
        bucket.ready += 1
        if self.overlap:
            self._launch_ready()

    def _launch_ready(self) -> None:
        """Launch every complete bucket whose predecessors are launched (same order on all ranks)."""
        while self._next < len(self.buckets) and self.buckets[self._next].ready == len(self.buckets[self._next].params):
            self._launch(self._next)
            self._next += 1

    def _launch(self, b: int) -> None:
        bucket = self.buckets[b]
        bucket.t_launch = time.perf_counter()
        bucket.t_done = []
        if self.compressor is not None:  # chapter 7: the compressor communicates and averages
            one = bucket.buffer.view_as(bucket.params[0]) if len(bucket.params) == 1 else bucket.buffer
            bucket.buffer.copy_(self.compressor.reduce(one, key=b).reshape(-1))
            bucket.t_done.append(time.perf_counter())
            return
        bucket.work = comm.all_reduce(bucket.buffer, async_op=True)
        bucket.work.get_future().then(lambda _f, done=bucket.t_done: done.append(time.perf_counter()))

    def _finish(self) -> None:
        """After backward: launch what is left, wait, average, copy back into ``p.grad``."""
        t_end = time.perf_counter()
        self.timeline.backward = (self.timeline.backward[0], t_end)
        for bucket in self.buckets[self._next:]:
            if bucket.ready != len(bucket.params):  # a parameter unused this step: zero gradient
                for p, off in zip(bucket.params, bucket.offsets):
                    if p.grad is None:
                        bucket.buffer[off:off + p.numel()].zero_()
        while self._next < len(self.buckets):
            self._launch(self._next)
            self._next += 1
        for b, bucket in enumerate(self.buckets):
            if self.compressor is None:
                bucket.work.wait()
                # Sum over ranks / p = the mean gradient: the full-batch gradient for equal shards.
                bucket.buffer.div_(self.world_size)
            for p, off in zip(bucket.params, bucket.offsets):
                if p.grad is None:
                    p.grad = torch.empty_like(p)
                p.grad.copy_(bucket.buffer[off:off + p.numel()].view_as(p))
            done = bucket.t_done[0] if bucket.t_done else time.perf_counter()
            self.timeline.buckets.append((b, bucket.t_launch, done, bucket.buffer.numel() * bucket.buffer.element_size()))
            bucket.ready, bucket.work = 0, None
        self._next = 0
        self._in_backward = False
        self.timeline.wait_end = time.perf_counter()
