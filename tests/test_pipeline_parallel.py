"""Chapter 6: pipeline schedules (simulated, formulas, deadlocks) and their execution on real ranks,
equal to single-process gradient accumulation and to torch.distributed.pipelining."""
from __future__ import annotations

import itertools

import pytest
import torch

from course_lib.launcher import launch
from course_lib.model import GPTConfig
from course_lib.pipeline_parallel import split_balanced, split_uniform, stage_times
from course_lib.pipeline_schedules import (Action, Schedule, ScheduleDeadlock, bubble_formula, gpipe,
                                           in_flight_formula, interleaved_1f1b, make_schedule,
                                           one_f_one_b, simulate, unit_cost, validate)
from course_lib.runs.pipeline_parallel import (build_model, make_batches, profile_stages, replay_cpu_costs,
                                               stage_cost_model, torch_pipeline_losses, train_pipelines,
                                               train_reference)

CFG2 = GPTConfig(vocab_size=16, block_size=8, n_layer=4, n_head=2, n_embd=16)   # p=2: up to 4 stages
CFG4 = GPTConfig(vocab_size=16, block_size=8, n_layer=8, n_head=2, n_embd=16)   # p=4: up to 8 stages
STEPS, M = 3, 4
NAMES = ["gpipe", "1f1b", "interleaved", "zb-h1"]


@pytest.mark.parametrize("p,m", [(2, 4), (4, 4), (4, 8), (8, 16)])
def test_simulated_bubble_and_memory_equal_the_formulas(p, m):
    for name in NAMES:
        tl = simulate(make_schedule(name, p, m, v=2), unit_cost(t_f=1, t_b=2, t_w=1))
        assert tl.bubble() == pytest.approx(bubble_formula(name, p, m, v=2), abs=1e-12), name
        if name != "interleaved":
            assert tl.in_flight == [in_flight_formula(name, p, m, r) for r in range(p)], name
    # zero bubble beats 1F1B; interleaving beats 1F1B
    assert bubble_formula("zb-h1", p, m) < bubble_formula("1f1b", p, m)
    assert bubble_formula("interleaved", p, m, 2) < bubble_formula("1f1b", p, m)


def test_without_micro_batches_only_one_stage_works():
    # the seeds' "different layers on different devices": m = 1, (p-1)/p idle
    assert simulate(gpipe(4, 1)).bubble() == pytest.approx(0.75)


def test_blocking_sends_deadlock_is_found_before_running():
    with pytest.raises(ScheduleDeadlock) as e:
        simulate(one_f_one_b(2, 4, blocking_sends=True))
    msg = str(e.value)
    assert "rank 0 is blocked in SEND_F1@s0->r1" in msg and "rank 1 is blocked in SEND_B0@s1->r0" in msg
    assert e.value.cycle == [0, 1] and "cycle of waits: rank 0 -> rank 1 -> rank 0" in msg
    simulate(one_f_one_b(2, 4))                          # the same order with isend runs
    # GPipe never sends and receives in opposite directions at once: blocking sends are safe there
    simulate(Schedule("gpipe-blocking", 2, 4, 1, gpipe(2, 4).ranks, blocking_sends=True))


def test_a_receive_nobody_sends_is_reported():
    s = one_f_one_b(2, 2)
    bad = Schedule("bad", 2, 2, 1, [s.ranks[0], [a for a in s.ranks[1] if a.kind != "SEND_B" or a.mb != 1]])
    with pytest.raises(ValueError, match="rank 0 waits for RECV_B1@s0<-r1 but rank 1 never sends it"):
        validate(bad)
    swapped = [list(s.ranks[0]), s.ranks[1]]
    i = swapped[0].index(Action("F", 0, 0))
    j = swapped[0].index(Action("B", 0, 0))
    swapped[0][i], swapped[0][j] = swapped[0][j], swapped[0][i]
    with pytest.raises(ValueError, match="rank 0 runs B0@s0 before F0@s0"):
        validate(Schedule("bad", 2, 2, 1, swapped))


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="multiple of p=4"):
        interleaved_1f1b(4, 6, 2)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("pipedream", 2, 4)
    with pytest.raises(ValueError, match="at least one of 2 blocks"):
        split_uniform(2, 4)


def test_balanced_split_is_the_best_contiguous_split():
    seconds = [0.2, 1.0, 3.0, 1.0, 1.0, 2.5, 0.5, 1.2]
    best = min(max(stage_times(seconds, list(zip((0,) + c, c + (8,)))))
               for c in itertools.combinations(range(1, 8), 3))
    b = split_balanced(seconds, 4)
    assert max(stage_times(seconds, b)) == pytest.approx(best)
    assert b[0][0] == 0 and b[-1][1] == 8 and all(b[i][1] == b[i + 1][0] for i in range(3))
    assert max(stage_times(seconds, split_uniform(6, 4))) > best


def _check_against_reference(out, cfg, p):
    ref = train_reference(cfg, m=M, steps=STEPS)
    for name in NAMES:
        runs = [o[name] for o in out]
        sched = make_schedule(name, p, M, v=2)
        # loss: the last stage's sum of loss_i / m, every step
        assert runs[-1]["losses"] == pytest.approx(ref["losses"], abs=1e-6), name
        # every parameter's gradient appears on some rank and equals the reference
        seen = set()
        for r in runs:
            for n, g in r["grads"].items():
                torch.testing.assert_close(g, ref["grads"][n], atol=1e-7, rtol=1e-5, msg=f"{name} grad {n}")
                seen.add(n)
            for n, q in r["params"].items():
                torch.testing.assert_close(q, ref["params"][n], atol=2e-5, rtol=1e-4, msg=f"{name} param {n}")
        assert seen == set(ref["grads"]), (name, set(ref["grads"]) - seen)
        # the executed order on each rank is the simulated one, and so are the in-flight peaks
        sim = simulate(sched)
        replay = replay_cpu_costs(sched, [run["record"] for run in runs])
        assert replay.order(0) == sim.order(0) and 0 < replay.bubble() < 1
        for r, run in enumerate(runs):
            assert [str(a) for a, _, _ in run["record"].events] == sim.order(r), (name, r)
            assert run["record"].peak_in_flight == sim.in_flight[r], (name, r)
        # bytes: one (B/m, T, C) float32 tensor per send, plus the tied embedding's gradient swap
        act = (8 // M) * cfg.block_size * cfg.n_embd * 4
        emb = cfg.vocab_size * cfg.n_embd * 4
        for r, run in enumerate(runs):
            sends = sum(a.kind.startswith("SEND") for a in sched.ranks[r])
            tied = STEPS * emb if r in (0, p - 1) else 0
            assert run["sent_bytes"] == STEPS * sends * act + tied, (name, r)


def test_two_ranks_equal_single_process_and_order_equals_simulation():
    out = launch(train_pipelines, 2, schedules=NAMES, config=CFG2, m=M, steps=STEPS, timeout=120)
    _check_against_reference(out, CFG2, 2)


def test_four_ranks_equal_single_process_and_order_equals_simulation():
    out = launch(train_pipelines, 4, schedules=NAMES, config=CFG4, m=M, steps=STEPS, timeout=120)
    _check_against_reference(out, CFG4, 4)


def test_same_loss_and_gradients_as_torch_pipelining():
    out = launch(torch_pipeline_losses, 2, config=CFG2, m=M, v=2, timeout=120)
    ref = train_reference(CFG2, m=M, steps=1)
    for name in out[0]:
        loss = next(r[name]["loss"] for r in out if r[name]["loss"] is not None)  # the last stage's rank
        assert loss == pytest.approx(ref["losses"][0], abs=1e-6), name
    for r in out:
        for name, res in r.items():
            for n, g in res["grads"].items():
                torch.testing.assert_close(g, ref["grads"][n], atol=1e-7, rtol=1e-5, msg=f"{name} {n}")


def test_stage_profile_feeds_the_simulator():
    x, y = make_batches(CFG2, 8, 1)[0]
    costs = profile_stages(build_model(CFG2), split_uniform(CFG2.n_layer, 2), x, y, m=4, repeats=2)
    assert len(costs) == 2 and all(f > 0 and b > 0 for f, b in costs)
    # equal stages, t_B = 2 t_F: the cost model reproduces the formula
    tl = simulate(one_f_one_b(4, 8), stage_cost_model([(1.0, 2.0)] * 4))
    assert tl.bubble() == pytest.approx(bubble_formula("1f1b", 4, 8))
