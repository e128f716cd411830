"""Checks for chapter 6 (pipeline parallelism).

Q1: the learner writes rank r's 1F1B compute order as ``[("F", 0), ("F", 1), ("B", 0), ...]``.
The check does not compare with one answer: it builds the whole schedule from the learner's
function for every rank, adds the messages, and simulates it. The order must be complete (F before
B for each micro-batch), must not deadlock (the simulator names the ranks and events that wait on
each other), must hold at most p - r micro-batches on rank r (1F1B's memory bound) and must take
1F1B's step time (no bubble beyond (p-1)/(m+p-1)).

Q2: the learner writes a two-stage 1F1B executor with ``comm`` point-to-point calls; it runs on two
real ranks and must give the single-process loss and gradients, send exactly m activations and m
gradients, and keep at most 2 micro-batches in flight on rank 0 (read from ``comm``'s trace).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from course_lib import comm
from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import run_learner
from course_lib.configs import toy_config
from course_lib.model import GPT
from course_lib.pipeline_parallel import StageChunk
from course_lib.pipeline_actions import with_communication
from course_lib.pipeline_simulator import ScheduleDeadlock, simulate, unit_cost

Q1, Q2 = "Q1 1F1B event list", "Q2 two-stage 1F1B executor"
# Seconds: a correct answer takes well under one, but each rank first imports the model and the stages
# it is sent; on a loaded machine (a class graded with -j 2 beside other work) one rank's imports took
# over 12 s while the other waited in recv, and a correct answer lost its points. A deadlock costs this much.
TIMEOUT = 30.0
DEADLOCK_HINT = (
    "The ranks wait on each other: a blocking comm.send returns only once the other rank posts the "
    "matching comm.recv. In 1F1B rank 0 sends activation i+1 while rank 1 sends gradient i, so if both "
    "sends block, neither reaches its receive. Send with comm.isend (wait on the Works at the end).")


# What each question asks the learner to write, so an answer may not use it (course_lib.grading.borrow).
# Q1: the schedule builders (one_f_one_b and its siblings) live in pipeline_schedules; the exercise
# hands out only the data types (pipeline_actions) and the simulator (pipeline_simulator).
FORBID_Q1 = ("course_lib.pipeline_schedules", "course_lib.pipeline_parallel", "course_lib.runs.pipeline_parallel",
             "torch.distributed.pipelining")
FORBID_Q2 = ("course_lib.pipeline_parallel", "course_lib.runs.pipeline_parallel", "torch.distributed")


# ----------------------------------------------------------------------------- Q1
@own_work(Q1, forbid=FORBID_Q1)
def check_one_f_one_b(fn: Callable, sizes: tuple[tuple[int, int], ...] = ((2, 4), (4, 8), (4, 4))) -> None:
    """``fn(rank, p, m)`` -> rank's compute order; checked by simulation for each (p, m)."""
    for p, m in sizes:
        compute = []
        for r in range(p):
            try:
                ops = list(fn(r, p, m))
            except NotImplementedError:
                raise CheckFailed(Q1, "not answered yet: replace `raise NotImplementedError()` with your code") from None
            bad = [op for op in ops if not (isinstance(op, tuple) and len(op) == 2 and op[0] in ("F", "B")
                                            and isinstance(op[1], int))]
            expect(not bad, Q1, f"rank {r} (p={p}, m={m}) returned {bad[:2]}: each event is a tuple "
                   "(\"F\" or \"B\", micro-batch index)")
            compute.append([(k, i, r) for k, i in ops])
        sched = with_communication("yours", p, m, 1, compute)
        try:
            tl = simulate(sched, unit_cost(1.0, 2.0))
        except ScheduleDeadlock as e:
            raise CheckFailed(Q1, f"with p={p}, m={m} your order deadlocks: {e}".replace("\n", " ")) from None
        except ValueError as e:
            raise CheckFailed(Q1, f"with p={p}, m={m}: {e}") from None
        for r in range(p):
            expect(tl.in_flight[r] <= min(p - r, m), Q1,
                   f"with p={p}, m={m}, rank {r} holds the activations of {tl.in_flight[r]} micro-batches at "
                   f"once; 1F1B holds at most p - rank = {min(p - r, m)}: run only p - rank - 1 = "
                   f"{max(min(p - r - 1, m), 0)} forwards before the first backward, then alternate F and B "
                   "(all forwards first is GPipe)")
        best = simulate(with_communication("ref", p, m, 1, [_reference(r, p, m) for r in range(p)]),
                        unit_cost(1.0, 2.0))
        expect(tl.makespan <= best.makespan + 1e-9, Q1,
               f"with p={p}, m={m} your step takes {tl.makespan:g} time units (t_F=1, t_B=2), 1F1B takes "
               f"{best.makespan:g}: rank(s) {[r for r in range(p) if tl.events[r][-1][2] > best.makespan]} "
               f"wait too long. Run p - rank - 1 warm-up forwards, not fewer: a rank that starts backwards "
               "too early idles until the gradient comes back")
    passed(Q1, "complete, deadlock-free, 1F1B memory and time for " + ", ".join(f"p={p} m={m}" for p, m in sizes))


def _reference(r: int, p: int, m: int) -> list[tuple[str, int, int]]:
    w = min(p - r - 1, m)
    ops = [("F", i, r) for i in range(w)]
    for i in range(m - w):
        ops += [("F", w + i, r), ("B", i, r)]
    return ops + [("B", i, r) for i in range(m - w, m)]


# ----------------------------------------------------------------------------- Q2
@dataclass
class TwoStageJob:
    """What each rank gets: its ``stage`` (rank 0: ``stage(x) -> h``; rank 1: ``stage(h, y) -> loss``
    of one micro-batch), the ``micro_batches`` [(x, y)] and the activation shape ``act_shape``."""

    stage: torch.nn.Module
    micro_batches: list
    act_shape: tuple


def _setup(m: int, seed: int = 0) -> tuple[list[TwoStageJob], GPT, list]:
    torch.manual_seed(seed)
    model = GPT(replace(toy_config(16), tie_weights=False))  # untied: the two stages share no weight
    g = torch.Generator().manual_seed(seed)
    mbs = [(torch.randint(16, (2, 8), generator=g), torch.randint(16, (2, 8), generator=g)) for _ in range(m)]
    L = len(model.blocks)
    jobs = [TwoStageJob(StageChunk(model, 0, 2), mbs, (2, 8, 16)), TwoStageJob(StageChunk(model, 2, L + 2), mbs, (2, 8, 16))]
    return jobs, model, mbs


def _traced(fn: Callable) -> Callable:
    def worker(rank: int, world_size: int, job: TwoStageJob):
        comm.tracing = True
        out = fn(rank, world_size, job)
        grads = {n: (q.grad.clone() if q.grad is not None else None) for n, q in job.stage.named_parameters()}
        return out, grads, [(op, peer) for op, _, _, _, peer in comm.get_stats().trace]
    return worker


@own_work(Q2, forbid=FORBID_Q2)
def check_two_stage(fn: Callable, ms: tuple[int, ...] = (4,)) -> None:
    """``fn(rank, world_size, job)`` runs 1F1B on two ranks; returns sum_i loss_i / m on rank 1."""
    if not callable(fn):
        raise CheckFailed(Q2, f"expected your function, got {type(fn).__name__}; run its cell first")
    for m in ms:
        jobs, model, mbs = _setup(m)
        res = run_learner(Q2, _traced(fn), 2, jobs, deadlock_hint=DEADLOCK_HINT, timeout=TIMEOUT)
        ref_loss = 0.0
        for x, y in mbs:
            _, loss = model(x, y)
            (loss / m).backward()
            ref_loss += loss.item() / m
        names = {id(q): n for n, q in model.named_parameters()}
        ref = [{n: names[id(q)] for n, q in job.stage.named_parameters()} for job in jobs]
        (_, grads0, trace0), stats0 = res[0]
        (out1, grads1, _), stats1 = res[1]
        expect(isinstance(out1, (float, torch.Tensor)), Q2, f"rank 1 returned {type(out1).__name__}; return "
               "the sum over micro-batches of loss_i / m as a float")
        loss = float(out1)
        if abs(loss - ref_loss * m) < 1e-5 and m > 1:
            raise CheckFailed(Q2, f"rank 1 returned {loss:.5f} = m x the mean loss {ref_loss:.5f}: divide each "
                              "micro-batch loss by m (gradient accumulation averages over micro-batches)")
        expect(abs(loss - ref_loss) < 1e-5, Q2, f"rank 1 returned loss {loss:.6f}, single process gives "
               f"{ref_loss:.6f}: return sum_i loss_i / m over all {m} micro-batches")
        for r, grads in ((0, grads0), (1, grads1)):
            for n, g in grads.items():
                expect(g is not None, Q2, f"rank {r}: {n} has no gradient; did rank {r} run the backward of "
                       "every micro-batch" + (" with the received gradient (h.backward(grad))?" if r == 0 else "?"))
                want = dict(model.named_parameters())[ref[r][n]].grad
                if torch.allclose(g, want, atol=1e-6, rtol=1e-4):
                    continue
                if m > 1 and torch.allclose(g, m * want, atol=1e-6, rtol=1e-4):
                    raise CheckFailed(Q2, f"rank {r}: the gradients are m = {m} times too large: backpropagate "
                                      "loss_i / m, not loss_i")
                raise CheckFailed(Q2, f"rank {r}: gradient of {n} differs from single-process training by "
                                  f"{(g - want).abs().max().item():.2e}: check which gradient goes with which "
                                  "micro-batch (micro-batch i's output must be backpropagated with gradient i)")
        act = 2 * 8 * 16 * 4
        for r, st in ((0, stats0), (1, stats1)):
            expect(st.sent_messages == m and st.recv_messages == m and st.sent_bytes == m * act, Q2,
                   f"rank {r} sent {st.sent_messages} and received {st.recv_messages} messages "
                   f"({st.sent_bytes} B); each rank sends and receives exactly one {act}-byte tensor per "
                   f"micro-batch (m = {m}): activations forward, their gradients back")
        live = peak = 0
        for op, _ in trace0:
            live += 1 if op in ("send", "isend") else -1 if op in ("recv", "irecv") else 0
            peak = max(peak, live)
        expect(peak <= 2, Q2, f"rank 0 sent {peak} activations before receiving their gradients: that is "
               "GPipe's order (all forwards first), holding m micro-batches. 1F1B keeps at most p = 2 in flight: "
               "after one warm-up forward, alternate forward i+1 and backward i")
    passed(Q2, f"loss and gradients equal one process, {m} activations and {m} gradients sent, <= 2 in flight")
