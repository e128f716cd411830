"""Checks for chapter 2 (parameter server and gossip).

Q1 runs the learner's synchronous PS step on real gloo ranks; Q2 replays scripted push
sequences through the learner's staleness bookkeeping, then plugs it into the real
asynchronous parameter server (:func:`course_lib.parameter_server.run_ps`); Q3 runs the
learner's gossip step on a ring. Each compares values and bytes with the formulas and, on
failure, raises :class:`CheckFailed` naming the rank (or the push) and the likely mistake.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from course_lib.grading import isolation
from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import only_point_to_point, run_learner
from course_lib.launcher import DeadlockError, WorkerError
from course_lib.parameter_server import LeastSquares, run_ps
from course_lib.ssp import SSPBook, on_push, staleness_bound

Q1, Q2, Q3 = "Q1 sync_ps_step", "Q2 on_push", "Q3 gossip_step"
# What the exercise hands out (for running the learner's on_push): an answer may use it.
HANDED_OUT = ("course_lib.parameter_server.LeastSquares", "course_lib.parameter_server.run_ps",
              "course_lib.parameter_server.staleness_histogram")


# ----------------------------------------------------------------------------- Q1
Q1_DEADLOCK_HINT = ("The server must receive one gradient from each worker 1..p-1, then send the new w to each; "
                    "a worker sends its g to rank 0, then receives w from rank 0.")


def _q1_inputs(p: int, n: int, lr: float) -> list[dict]:
    gen = torch.Generator().manual_seed(10 * p + n)
    w = torch.randint(-5, 6, (n,), generator=gen).double()
    grads = [torch.randint(-9, 10, (n,), generator=gen).double() for _ in range(p - 1)]
    return [dict(w=w.clone(), lr=lr)] + [dict(w=w.clone(), g=g) for g in grads]


@own_work(Q1, forbid=("course_lib.parameter_server", "course_lib.gossip", "torch.distributed"), allow=HANDED_OUT)
def check_sync_ps_step(fn: Callable, world_sizes: tuple[int, ...] = (3, 4), n: int = 6, lr: float = 0.5) -> None:
    """Rank 0 (server) and ranks 1..p-1 (workers) must all return ``w - lr * mean_k g_k``."""
    for p in world_sizes:
        inputs = _q1_inputs(p, n, lr)
        w, grads = inputs[0]["w"], [x["g"] for x in inputs[1:]]
        W = p - 1
        want = w - lr * torch.stack(grads).mean(0)
        res = run_learner(Q1, fn, p, inputs, deadlock_hint=Q1_DEADLOCK_HINT)
        for r, (out, _) in enumerate(res):
            expect(isinstance(out, torch.Tensor) and out.shape == w.shape, Q1,
                   f"rank {r} returned {type(out).__name__}; return the new parameters, a tensor of shape {tuple(w.shape)}")
            if torch.allclose(out, want):
                continue
            who = "the server (rank 0)" if r == 0 else f"worker rank {r}"
            if torch.allclose(out, w - lr * torch.stack(grads).sum(0)):
                raise CheckFailed(Q1, f"{who} used the *sum* of the {W} gradients: average them (divide by the "
                                  f"number of workers W = {W}), otherwise the learning rate is multiplied by W")
            if torch.allclose(out, w - lr * torch.stack(grads).sum(0) / p):
                raise CheckFailed(Q1, f"{who} divided the sum by world_size = {p}, but rank 0 is the server and "
                                  f"computes no gradient: average over the W = world_size - 1 = {W} workers")
            if torch.allclose(out, w):
                raise CheckFailed(Q1, f"{who} returned the old parameters: " + (
                    "apply w - lr * mean(g) after receiving the gradients" if r == 0 else
                    "receive the updated w from the server (the pull) and return it"))
            if r > 0 and torch.allclose(out, w - lr * grads[r - 1]):
                raise CheckFailed(Q1, f"worker rank {r} applied only its own gradient: the update uses the "
                                  "average of all workers' gradients; receive it from the server")
            raise CheckFailed(Q1, f"rank {r} returned {out.tolist()}, expected w - lr * mean(g) = {want.tolist()}")
        nb = n * 8
        for r, (_, stats) in enumerate(res):
            only_point_to_point(Q1, r, stats)
            want_b = (W * nb, W * nb) if r == 0 else (nb, nb)
            expect((stats.recv_bytes, stats.sent_bytes) == want_b, Q1,
                   f"rank {r} received {stats.recv_bytes} B and sent {stats.sent_bytes} B; one PS step moves "
                   f"{want_b[0]} B in and {want_b[1]} B out on this rank (the server receives W = {W} gradients "
                   f"of {nb} B and sends W copies of w; a worker sends one gradient and receives one w)")
    passed(Q1, f"world sizes {list(world_sizes)}; server link W x n bytes each way, workers n")


# ----------------------------------------------------------------------------- Q2
# Scripted push orders: (n_workers, s, order of pushing workers). Each push is only possible if
# the worker was released, so the scripts respect the reference rule.
_SCRIPTS = [
    (3, None, [0, 1, 2, 0, 0, 1, 0, 2]),
    (2, 0, [0, 1, 1, 0, 0, 1]),
    (3, 1, [0, 0, 1, 2, 1, 0, 2, 2, 1]),
]


def _replay(fn: Callable, n: int, s: int | None, order: list[int]) -> None:
    ref, got = SSPBook(n, s), SSPBook(n, s)
    for i, k in enumerate(order):
        assert k not in ref.waiting, f"bad script: worker {k} pushes while it waits"
        want_rel = on_push(ref, k)
        before = copy.deepcopy(got)
        out = fn(got, k)
        where = f"(W={n} workers, s={s}, push {i} by worker {k}, pushes so far {order[:i]})"
        expect(isinstance(out, (list, tuple, set)), Q2, f"on_push returned {type(out).__name__}; return the "
               f"list of released workers {where}")
        expect(len(got.staleness) == i + 1, Q2, f"book.staleness has {len(got.staleness)} entries after {i + 1} "
               f"pushes: append the staleness of every applied gradient once {where}")
        tau, want_tau = got.staleness[-1], ref.staleness[-1]
        if tau != want_tau:
            if tau == want_tau + 1 and got.version == before.version + 1:
                raise CheckFailed(Q2, f"push {i} got staleness {tau}, expected {want_tau}: compute tau = version - "
                                  f"pulled[k] *before* adding 1 to version {where}")
            if got.pulled == before.pulled and i > 0:
                raise CheckFailed(Q2, f"push {i} got staleness {tau}, expected {want_tau}: book.pulled never "
                                  "changes: set pulled[j] = version for every worker j you release (it pulls now) "
                                  f"{where}")
            raise CheckFailed(Q2, f"push {i} got staleness {tau}, expected {want_tau} = version - pulled[k] {where}")
        expect(got.version == ref.version, Q2, f"book.version is {got.version} after {i + 1} pushes; add 1 per push {where}")
        expect(got.clock == ref.clock, Q2, f"book.clock is {got.clock}, expected {ref.clock}: add 1 to clock[k] "
               f"for the worker that pushed {where}")
        rel = sorted(out)
        if rel != want_rel:
            slowest = min(ref.clock)
            if s is not None and not rel and want_rel:
                raise CheckFailed(Q2, f"nobody was released, expected {want_rel}; a worker j may start when "
                                  f"clock[j] - min(clock) <= s (here min(clock) = {slowest}); with s = 0 the "
                                  f"slowest worker must still go on (use <=, not <) {where}")
            raise CheckFailed(Q2, f"released {rel}, expected {want_rel}: release every waiting worker j "
                              f"with clock[j] - min(clock) <= s, min over *all* workers (here {slowest}), "
                              f"and for s=None (ASP) release k at once {where}")
        if got.pulled != ref.pulled:
            if got.pulled == before.pulled:
                raise CheckFailed(Q2, f"book.pulled never changes: set pulled[j] = version for every worker j you "
                                  f"release (it pulls the parameters now), expected {ref.pulled} {where}")
            raise CheckFailed(Q2, f"book.pulled is {got.pulled}, expected {ref.pulled}: a released worker j "
                              f"pulls the current version, pulled[j] = version {where}")
        expect(got.waiting == ref.waiting, Q2, f"book.waiting is {sorted(got.waiting)}, expected "
               f"{sorted(ref.waiting)}: add k, remove the released workers {where}")


def _real_run(fn: Callable, n_workers: int, s: int | None, steps: int) -> SSPBook:
    mode = "async" if s is None else "ssp"
    delays = [0.0] * (n_workers - 1) + [0.004]  # a slow worker, so staleness shows up
    try:
        res = isolation.launch(run_ps, 1 + n_workers, problem=LeastSquares(dim=8), steps=steps, lr=0.05,
                               mode=mode, s=s, delays=delays, push_hook=fn, timeout=12)
    except DeadlockError:
        raise CheckFailed(Q2, f"the parameter server with your on_push (W={n_workers}, s={s}) did not finish: a "
                          "worker was never released; the slowest worker must always be allowed on") from None
    except WorkerError as e:
        raise CheckFailed(Q2, f"the parameter server with your on_push (W={n_workers}, s={s}) failed on rank "
                          f"{e.rank}: {str(e).splitlines()[0].split(': ', 1)[-1]}") from None
    return res[0]["book"]


@own_work(Q2, forbid=("course_lib.ssp.on_push", "course_lib.parameter_server._async_server"))
def check_on_push(fn: Callable, real_runs: tuple[tuple[int, int | None], ...] = ((3, 1),), steps: int = 12) -> None:
    """Scripted pushes must give the reference bookkeeping; real SSP runs must respect the bound."""
    if not callable(fn):
        raise CheckFailed(Q2, f"expected your function, got {type(fn).__name__}; run the cell that defines it first")
    try:
        for n, s, order in _SCRIPTS:
            _replay(fn, n, s, order)
    except NotImplementedError:
        raise CheckFailed(Q2, "not answered yet: replace `raise NotImplementedError()` with your code") from None
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - any learner error becomes a hint
        raise CheckFailed(Q2, f"on_push raised {type(e).__name__}: {e}") from None
    for n, s in real_runs:
        book = _real_run(fn, n, s, steps)
        expect(len(book.staleness) == n * steps, Q2, f"the server applied {n * steps} gradients but the book "
               f"recorded {len(book.staleness)}")
        if s is not None:
            bound = staleness_bound(n, s)
            expect(max(book.staleness) <= bound, Q2, f"a gradient had staleness {max(book.staleness)} > "
                   f"(W-1)(2s+1) = {bound} with W={n}, s={s}: the SSP rule let a worker run too far ahead")
            expect(book.max_gap <= s, Q2, f"a worker was released {book.max_gap} clocks ahead of the slowest, "
                   f"more than s={s}")
    passed(Q2, f"{len(_SCRIPTS)} scripted push sequences; real runs (W, s) = {list(real_runs)} within the bound")


# ----------------------------------------------------------------------------- Q3
@own_work(Q3, forbid=("course_lib.gossip", "course_lib.parameter_server", "torch.distributed"), allow=HANDED_OUT)
def check_gossip_step(fn: Callable, world_sizes: tuple[int, ...] = (3, 4), n: int = 5) -> None:
    """Rank r must return ``(x_{r-1} + x_r + x_{r+1}) / 3`` (ring, weights 1/3), by p2p only."""
    for p in world_sizes:
        gen = torch.Generator().manual_seed(p)
        inputs = [torch.randint(-20, 21, (n,), generator=gen).double() * 3 for _ in range(p)]
        res = run_learner(Q3, fn, p, inputs, deadlock_hint=(
            "If every rank first calls a blocking send, nobody receives: post comm.irecv from both "
            "neighbours and comm.isend to both, then wait() on all four."))
        for r, (out, stats) in enumerate(res):
            x, left, right = inputs[r], inputs[(r - 1) % p], inputs[(r + 1) % p]
            expect(isinstance(out, torch.Tensor) and out.shape == x.shape, Q3,
                   f"rank {r} returned {type(out).__name__}; return the mixed model, shape {tuple(x.shape)}")
            if torch.allclose(out, (left + x + right) / 3):
                continue
            if torch.allclose(out, x / 2 + (left + right) / 4):
                raise CheckFailed(Q3, f"rank {r}'s result used weight 1/2 for itself and 1/4 for each neighbour: "
                                  "that row does sum to 1, but the question's W gives 1/3 each to self, left and "
                                  "right (the ring's uniform averaging)")
            if torch.allclose(out, left + x + right):
                raise CheckFailed(Q3, f"rank {r} returned the sum of the three models: multiply each by its "
                                  "weight 1/3 (a row of W sums to 1)")
            if torch.allclose(out, (left + right) / 2) or torch.allclose(out, (left + right) / 3):
                raise CheckFailed(Q3, f"rank {r} left out its own model: W_rr = 1/3 keeps a third of x_r")
            if torch.allclose(out, (x + left) / 2) or torch.allclose(out, (x + right) / 2) \
                    or torch.allclose(out, (2 * x + left) / 3) or torch.allclose(out, (2 * x + right) / 3):
                raise CheckFailed(Q3, f"rank {r} mixed with only one neighbour: receive from both rank "
                                  f"{(r - 1) % p} (left) and rank {(r + 1) % p} (right)")
            if torch.allclose(out, x):
                raise CheckFailed(Q3, f"rank {r} returned its own model unchanged: add the neighbours' models")
            raise CheckFailed(Q3, f"rank {r} returned {out.tolist()}, expected (x_left + x + x_right) / 3 = "
                              f"{((left + x + right) / 3).tolist()}")
        nb = n * 8
        for r, (_, stats) in enumerate(res):
            only_point_to_point(Q3, r, stats)
            expect(stats.sent_bytes == 2 * nb and stats.recv_bytes == 2 * nb, Q3,
                   f"rank {r} sent {stats.sent_bytes} B and received {stats.recv_bytes} B; a ring gossip step sends "
                   f"the model to 2 neighbours and receives 2 models: {2 * nb} B each way")
    passed(Q3, f"world sizes {list(world_sizes)}; 2 models sent per node, whatever the ring size")
