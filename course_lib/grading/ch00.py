"""Checks for chapter 0 (processes, point-to-point, collectives).

Each ``check_*`` runs the learner's function on real gloo ranks, compares every rank's
output with what the collective must produce, asserts the bytes moved, and on failure
raises :class:`CheckFailed` with a hint that names the rank and the likely mistake.
``hidden=True`` runs the instructors' extra cases (other world sizes and shapes).
"""
from __future__ import annotations

from typing import Callable

import torch

from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import only_point_to_point, run_learner

Q1, Q2, Q3 = "Q1 ring_shift", "Q2 naive_all_reduce", "Q3 all_to_all_p2p"


# ----------------------------------------------------------------------------- Q1
def _q1_inputs(p: int, n: int) -> list[torch.Tensor]:
    return [torch.full((n,), 10.0 * r) + torch.arange(n) for r in range(p)]


@own_work(Q1, forbid=("torch.distributed", "course_lib.collectives"))
def check_ring_shift(fn: Callable, world_sizes: tuple[int, ...] = (2, 3), n: int = 4) -> None:
    """Rank r must return the tensor of rank (r - 1) mod p, moved with point-to-point calls."""
    for p in world_sizes:
        inputs = _q1_inputs(p, n)
        res = run_learner(Q1, fn, p, inputs, deadlock_hint=(
            "Blocking send on every rank before any recv waits forever: start the receive and "
            "the send together with comm.irecv / comm.isend, then wait() on both."))
        for r, (out, stats) in enumerate(res):
            expect(isinstance(out, torch.Tensor), Q1, f"rank {r} returned {type(out).__name__}; return the received tensor")
            expect(out.shape == inputs[r].shape, Q1, f"rank {r} returned shape {tuple(out.shape)}, expected {tuple(inputs[r].shape)}")
            left, right = (r - 1) % p, (r + 1) % p
            if torch.equal(out, inputs[r]):
                raise CheckFailed(Q1, f"rank {r} returned its own tensor: return the one received from rank {left}")
            if p > 2 and torch.equal(out, inputs[right]):
                raise CheckFailed(Q1, f"rank {r} got the tensor of rank {right}, its right neighbour: the data must "
                                  f"flow to the right, so send to (rank + 1) % world_size and receive from (rank - 1) % world_size")
            expect(torch.equal(out, inputs[left]), Q1, f"rank {r} returned {out.tolist()}, expected rank {left}'s {inputs[left].tolist()}")
            only_point_to_point(Q1, r, stats)
            nbytes = inputs[r].numel() * inputs[r].element_size()
            expect(stats.sent_bytes == nbytes and stats.recv_bytes == nbytes, Q1,
                   f"rank {r} sent {stats.sent_bytes} B and received {stats.recv_bytes} B; one message of "
                   f"{nbytes} B each way is enough")
    passed(Q1, f"world sizes {list(world_sizes)}")


# ----------------------------------------------------------------------------- Q2
Q2_DEADLOCK_HINT = ("Rank 0 must receive from ranks 1..p-1 and then send to each; every other rank sends once "
                    "to 0, then receives once from 0. Check that each send has a matching recv.")


@own_work(Q2, forbid=("torch.distributed", "course_lib.collectives"))
def check_naive_all_reduce(fn: Callable, world_sizes: tuple[int, ...] = (2, 4), n: int = 5) -> None:
    """Every rank must return the elementwise sum; root 0 receives and sends (p-1)n, others n."""
    for p in world_sizes:
        gen = torch.Generator().manual_seed(p)
        inputs = [torch.randint(-9, 10, (n,), generator=gen).double() for _ in range(p)]
        total = torch.stack(inputs).sum(0)
        res = run_learner(Q2, fn, p, inputs, deadlock_hint=Q2_DEADLOCK_HINT)
        for r, (out, stats) in enumerate(res):
            expect(isinstance(out, torch.Tensor) and out.shape == total.shape, Q2,
                   f"rank {r} returned {out!r}; return a tensor of shape {tuple(total.shape)}")
            if torch.equal(out, inputs[r]) and p > 1:
                raise CheckFailed(Q2, f"rank {r} returned its own input unchanged: "
                                  + ("add what you receive" if r == 0 else "receive the total back from rank 0"))
            if r != 0 and torch.equal(out, inputs[0]):
                raise CheckFailed(Q2, f"rank {r} received rank 0's input, not the sum: rank 0 must send after adding")
            expect(torch.allclose(out, total), Q2, f"rank {r} returned {out.tolist()}, expected the sum {total.tolist()}")
        for r, (out, stats) in enumerate(res):  # values first: they explain byte mismatches
            only_point_to_point(Q2, r, stats)
            nb = n * 8
            want = ((p - 1) * nb, (p - 1) * nb) if r == 0 else (nb, nb)
            expect((stats.recv_bytes, stats.sent_bytes) == want, Q2,
                   f"rank {r} received {stats.recv_bytes} B and sent {stats.sent_bytes} B; the naive "
                   f"algorithm moves {want[0]} B in and {want[1]} B out on this rank")
    passed(Q2, f"world sizes {list(world_sizes)}; root traffic (p-1)n each way, as the formula says")


# ----------------------------------------------------------------------------- Q3
def _chunk(src: int, idx: int, m: int) -> torch.Tensor:
    """Chunk ``idx`` of rank ``src``: values 100*src + idx, plus a ramp so shapes matter."""
    return torch.full((m,), 100.0 * src + idx) + torch.arange(m) / 1000


def _identify(t: torch.Tensor, p: int, m: int) -> tuple[int, int] | None:
    for s in range(p):
        for i in range(p):
            if t.shape == (m,) and torch.equal(t, _chunk(s, i, m)):
                return s, i
    return None


@own_work(Q3, forbid=("torch.distributed", "course_lib.collectives"))
def check_all_to_all(fn: Callable, world_sizes: tuple[int, ...] = (2, 3), m: int = 3) -> None:
    """Rank j's input is a list of p chunks; rank r must return [chunk r of rank j for j in 0..p-1]."""
    for p in world_sizes:
        inputs = [[_chunk(j, i, m) for i in range(p)] for j in range(p)]
        res = run_learner(Q3, fn, p, inputs, deadlock_hint=(
            "If every rank first sends to all others with blocking comm.send, all of them wait. "
            "Post the receives and sends with comm.irecv / comm.isend, then wait() on all of them."))
        for r, (out, stats) in enumerate(res):
            expect(isinstance(out, (list, tuple)) and len(out) == p, Q3,
                   f"rank {r} returned {type(out).__name__} of length {len(out) if hasattr(out, '__len__') else '?'}; "
                   f"return a list of {p} tensors, one per source rank")
            got = [_identify(t, p, m) if isinstance(t, torch.Tensor) else None for t in out]
            seen = [g for g in got if g is not None]
            for g in set(seen):
                if seen.count(g) > 1:
                    raise CheckFailed(Q3, f"rank {r} received chunk {g[1]} of rank {g[0]} twice: check the index you send")
            for j, g in enumerate(got):
                if g is None:
                    raise CheckFailed(Q3, f"rank {r}, position {j}: {out[j]!r} is not any rank's chunk (was the "
                                      "receive buffer the right shape, and did you wait() before returning?)")
                src, idx = g
                if idx != r:
                    raise CheckFailed(Q3, f"rank {r} received chunk {idx} from rank {src}, but it should get chunk {r} "
                                      "of every rank: send chunk `dst` to rank dst")
                if src != j:
                    raise CheckFailed(Q3, f"rank {r} stored rank {src}'s chunk at position {j}: put what comes "
                                      "from rank j at position j")
            only_point_to_point(Q3, r, stats)
            nbytes = (p - 1) * m * 4
            expect(stats.sent_bytes == nbytes, Q3, f"rank {r} sent {stats.sent_bytes} B; all-to-all sends "
                   f"p-1 = {p - 1} chunks of {m * 4} B (its own chunk stays local)")
    passed(Q3, f"world sizes {list(world_sizes)}; each rank sent (p-1)/p of its data")
