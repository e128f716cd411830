"""Checks for chapter 3 (ring reduce-scatter and ring all-gather from point-to-point messages).

Both exercises use the convention of :mod:`course_lib.collectives`: ``x`` has ``p*m``
elements, chunk i is ``x.chunk(p)[i]``, rank r sends to r+1 and receives from r-1, and in
step s (0-based)

* reduce-scatter: rank r sends chunk (r - s - 1) % p and adds what it receives to chunk
  (r - s - 2) % p; after p-1 steps its chunk r is complete and it returns it;
* all-gather: rank r sends chunk (r - s) % p and receives chunk (r - s - 1) % p in place.

The inputs are built so that every value says where it came from, so a wrong answer is
reported as "rank 2 ended with chunk 3", "contains only ranks [0, 1]" or "chunk 1 still empty".
"""
from __future__ import annotations

from typing import Callable

import torch

from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import only_point_to_point, run_learner

Q1, Q2 = "Q1 ring_reduce_scatter", "Q2 ring_all_gather"
TIMEOUT = 8.0  # seconds: a correct answer takes well under one
DEADLOCK_HINT = (
    "The run deadlocks: with gloo a blocking comm.send returns only once the receiver has posted "
    "its recv, so if every rank sends first, nobody receives. Post both at once with comm.isend / "
    "comm.irecv and wait() on both, or order by parity (even ranks send then receive, odd ranks "
    "receive then send).")


def _check_ring_bytes(q: str, res, m: int, what: str) -> None:
    """Every rank sent and received exactly p-1 chunks of m float64, with point-to-point calls only."""
    p = len(res)
    for r, (_, stats) in enumerate(res):
        only_point_to_point(q, r, stats)
        nbytes = (p - 1) * m * 8
        expect(stats.sent_bytes == nbytes and stats.recv_bytes == nbytes, q,
               f"with {p} ranks, rank {r} sent {stats.sent_bytes} B and received {stats.recv_bytes} B; a ring "
               + what.format(steps=p - 1, chunk=m * 8))


# ----------------------------------------------------------------------------- Q1
def _rs_input(j: int, p: int, m: int) -> torch.Tensor:
    """Rank j, chunk i, element k holds 2^j + 64 i + 4096 k: any sum of such values names its parts."""
    i = torch.arange(p).repeat_interleave(m)
    k = torch.arange(m).repeat(p)
    return (2.0 ** j + 64 * i + 4096 * k).double()


def _decode(v: float, p: int) -> tuple[list[int], int, int] | None:
    """Which ranks, which chunk and which element a sum of ``_rs_input`` values came from."""
    if v != int(v) or v < 0:
        return None
    mask = int(v) % 64
    ranks = [j for j in range(p) if mask >> j & 1]
    if not ranks or mask >> p:
        return None
    ik, rem = divmod((int(v) - mask) // 64, len(ranks))
    if rem or (int(v) - mask) % 64:
        return None
    return ranks, ik % 64, ik // 64


@own_work(Q1, forbid=("torch.distributed", "course_lib.collectives"))
def check_ring_reduce_scatter(fn: Callable, world_sizes: tuple[int, ...] = (2, 4), m: int = 3) -> None:
    """Rank r must return sum over ranks of chunk r, having sent exactly p-1 chunks."""
    for p in world_sizes:
        inputs = [_rs_input(j, p, m) for j in range(p)]
        total = torch.stack(inputs).sum(0).view(p, m)
        res = run_learner(Q1, fn, p, inputs, deadlock_hint=DEADLOCK_HINT, timeout=TIMEOUT)
        for r, (out, stats) in enumerate(res):
            expect(isinstance(out, torch.Tensor), Q1, f"rank {r} returned {type(out).__name__}; return chunk "
                   f"{r}, a tensor of {m} elements")
            expect(out.numel() == m, Q1, f"with {p} ranks, rank {r} returned {out.numel()} elements; return only "
                   f"its own reduced chunk x.chunk(world_size)[rank] ({m} elements), not the whole tensor")
            if torch.equal(out.flatten().double(), total[r]):
                continue
            parts = [_decode(float(v), p) for v in out.flatten()]
            if any(d is None for d in parts):
                raise CheckFailed(Q1, f"with {p} ranks, rank {r} returned {out.tolist()}, which is not a sum of one "
                                  f"chunk from several ranks: did you add a received chunk into the wrong place "
                                  f"(an index off by one?), "
                                  f"or return a receive buffer that was never waited on?")
            ranks, chunk, _ = parts[0]
            if ranks == list(range(p)) and chunk != r:
                raise CheckFailed(Q1, f"with {p} ranks, rank {r} ended with chunk {chunk} instead of chunk {r} "
                                  f"(off by one): in step s send chunk (rank - s - 1) % p and add the received "
                                  f"chunk to (rank - s - 2) % p, so that after p-1 steps chunk `rank` is complete")
            if ranks == [r] and chunk == r and p > 2 and stats.sent_bytes == (p - 1) * m * 8:
                # all p-1 steps ran, yet nothing reached chunk r: the indices are shifted by one
                raise CheckFailed(Q1, f"with {p} ranks, rank {r}'s chunk {r} was never added to (off by one): the "
                                  f"chunk you add into and the one you return differ by one step; in step s send "
                                  f"chunk (rank - s - 1) % p and add the received chunk to (rank - s - 2) % p, so "
                                  f"that chunk `rank` is the one completed last")
            if ranks != list(range(p)):
                missing = sorted(set(range(p)) - set(ranks))
                raise CheckFailed(Q1, f"with {p} ranks, rank {r}'s chunk {chunk} contains the inputs of ranks "
                                  f"{ranks} only (missing {missing}): the ring needs p-1 = {p - 1} steps, and in "
                                  f"each the chunk you send must be the one you just added to (step s sends "
                                  f"chunk (rank - s - 1) % p)")
            raise CheckFailed(Q1, f"with {p} ranks, rank {r} returned {out.tolist()}, expected {total[r].tolist()}: "
                              f"the elements are out of order")
        _check_ring_bytes(Q1, res, m, "reduce-scatter moves p-1 = {steps} chunks of {chunk} B each way, (p-1)/p of "
                          "the tensor")  # after the values: they explain byte mismatches
    passed(Q1, f"world sizes {list(world_sizes)}; each rank sent (p-1)/p of the tensor")


# ----------------------------------------------------------------------------- Q2
EMPTY = -1.0  # what the chunks a rank has not received yet hold


def _ag_chunk(j: int, m: int) -> torch.Tensor:
    return (1000.0 * (j + 1) + torch.arange(m)).double()


def _ag_input(j: int, p: int, m: int) -> torch.Tensor:
    x = torch.full((p * m,), EMPTY, dtype=torch.float64)
    x[j * m:(j + 1) * m] = _ag_chunk(j, m)
    return x


@own_work(Q2, forbid=("torch.distributed", "course_lib.collectives"))
def check_ring_all_gather(fn: Callable, world_sizes: tuple[int, ...] = (2, 4), m: int = 3) -> None:
    """Every rank must return the concatenation of all ranks' chunks, having sent p-1 chunks."""
    for p in world_sizes:
        inputs = [_ag_input(j, p, m) for j in range(p)]
        want = torch.cat([_ag_chunk(j, m) for j in range(p)])
        res = run_learner(Q2, fn, p, inputs, deadlock_hint=DEADLOCK_HINT, timeout=TIMEOUT)
        for r, (out, stats) in enumerate(res):
            expect(isinstance(out, torch.Tensor) and out.numel() == p * m, Q2,
                   f"rank {r} returned {type(out).__name__}"
                   + (f" of {out.numel()} elements" if isinstance(out, torch.Tensor) else "")
                   + f"; return x, the whole tensor of {p * m} elements, filled in place")
            out = out.flatten().double()
            if torch.equal(out, want):
                continue
            blocks = [out[i * m:(i + 1) * m] for i in range(p)]
            source = [next((j for j in range(p) if torch.equal(b, _ag_chunk(j, m))), None) for b in blocks]
            for i, src in enumerate(source):  # a misplaced chunk explains the empty ones it leaves behind
                if src is not None and src != i:
                    raise CheckFailed(Q2, f"with {p} ranks, rank {r} has rank {src}'s chunk at position {i} "
                                      f"(off by one): receive in step s into chunk (rank - s - 1) % p, the one "
                                      f"rank - 1 sent, which is the chunk you forward in step s+1")
            for i, b in enumerate(blocks):
                if source[i] is None and torch.all(b == EMPTY):
                    raise CheckFailed(Q2, f"with {p} ranks, rank {r}'s chunk {i} is still empty ({EMPTY:g}): it was "
                                      f"never received, or an empty chunk was forwarded. In step s send chunk "
                                      f"(rank - s) % p (your own in step 0) and receive chunk (rank - s - 1) % p, "
                                      f"for p-1 steps, and wait() before returning")
            i = next(i for i in range(p) if source[i] != i)
            raise CheckFailed(Q2, f"with {p} ranks, rank {r}'s chunk {i} is {blocks[i].tolist()}, expected "
                              f"{_ag_chunk(i, m).tolist()}")
        _check_ring_bytes(Q2, res, m, "all-gather moves p-1 = {steps} chunks of {chunk} B each way")
    passed(Q2, f"world sizes {list(world_sizes)}; each rank sent (p-1)/p of the tensor")
