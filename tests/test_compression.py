"""Chapter 7 compressors: exact bytes through comm's counters, results equal to a single-process
computation, QSGD's unbiasedness, error feedback's residual, and use inside DDP (course and torch)."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import comm
from course_lib.alpha_beta import AlphaBeta
from course_lib import comm_hooks as H
from course_lib import compression as C
from course_lib import compression_time as T
from course_lib.launcher import launch
from course_lib.model import GPT
from course_lib.configs import toy_config

N = 1000  # elements of the test gradient (not a multiple of 8 after the pad checks below)
SHAPES = {"vector": (N,), "matrix": (40, 30), "odd": (13,)}


def _compressors(collectives: str) -> dict[str, C.Compressor]:
    return {"fp32": C.AllReduce(collectives), "fp16": C.HalfPrecision(torch.float16, collectives),
            "bf16": C.HalfPrecision(torch.bfloat16, collectives), "qsgd": C.QSGD(4, collectives=collectives),
            "sign": C.SignMajority(collectives), "ef-sign": C.EFSign(collectives),
            "random-k": C.RandomK(0.1, collectives=collectives), "top-k": C.TopK(0.1, collectives=collectives),
            "powersgd": C.PowerSGD(2, collectives=collectives)}


def _expected_bytes(name: str, shape: tuple[int, ...]) -> int:
    """The formulas of the chapter, written out independently of ``plan``."""
    n = math.prod(shape)
    k = max(1, int(0.1 * n))
    m, cols = (shape[0], n // shape[0]) if len(shape) > 1 else (math.isqrt(n - 1) + 1, 0)
    cols = cols or math.ceil(n / m)
    powersgd = 4 * 2 * (m + cols) if 2 * (m + cols) < m * cols else 4 * n
    return {"fp32": 4 * n, "fp16": 2 * n, "bf16": 2 * n, "qsgd": n + 4, "sign": math.ceil(n / 8),
            "ef-sign": math.ceil(n / 8) + 4, "random-k": 4 * k, "top-k": 8 * k, "powersgd": powersgd}[name]


def _grads(p: int, shape: tuple[int, ...], step: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 * p + step)
    return [torch.randn(shape, generator=g) for _ in range(p)]


def _bytes_worker(rank: int, world_size: int, collectives: str) -> dict:
    out = {}
    for shape_name, shape in SHAPES.items():
        for name, c in _compressors(collectives).items():
            comm.reset_stats()
            c.reduce(_grads(world_size, shape)[rank])
            s = comm.get_stats()
            out[shape_name, name] = (sum(s.collective_bytes.values()), s.sent_bytes, s.recv_bytes)
    return out


@pytest.mark.parametrize("p", [2, 4])
def test_bytes_on_the_counters_equal_the_formulas(p):
    res = launch(_bytes_worker, p, collectives="gloo")
    for rank, out in enumerate(res):
        for (shape_name, name), (coll, sent, _) in out.items():
            shape = SHAPES[shape_name]
            want = _expected_bytes(name, shape)
            assert coll == want == _compressors("gloo")[name].payload_bytes(shape), (rank, shape_name, name, coll, want)
            assert sent == 0


def test_ring_counters_show_all_gather_traffic_growing_with_ranks():
    """On chapter 3's ring every byte is a counted send: Top-K's all-gather sends (p-1) 8k per rank,
    the dense ring all-reduce about 2(p-1)/p 4n, so Top-K's share grows with p."""
    sent = {}
    for p in (2, 4):
        res = launch(_bytes_worker, p, collectives="ring")
        for rank, out in enumerate(res):
            for (shape_name, name), (coll, s, r) in out.items():
                assert coll == 0
                assert s == _compressors("ring")[name].ring_bytes_sent(SHAPES[shape_name], p, rank), (p, rank, name)
        sent[p] = res[0]["vector", "top-k"][1], res[0]["vector", "fp32"][1]
    k = int(0.1 * N)
    assert sent[2][0] == 8 * k and sent[4][0] == 3 * 8 * k
    assert sent[2][1] == 4 * N and sent[4][1] == 2 * 3 * N
    assert sent[4][0] / sent[4][1] > sent[2][0] / sent[2][1]


# ----------------------------------------------------------------------------- values
# Two stacks over the N-element vector: a 20 x 30 matrix, and the last 400 elements + 20 pads as 28 x 15.
STACKS = [torch.arange(600).view(20, 30), torch.cat([torch.arange(600, N), torch.full((20,), -1)]).view(28, 15)]


def _values_worker(rank: int, world_size: int, steps: int) -> dict:
    cs = {**_compressors("gloo"), "top-k dgc": C.TopK(0.1, momentum=0.9),
          "stacked": C.StackedPowerSGD(STACKS, rank=2, momentum=0.9)}
    out: dict = {name: [] for name in cs}
    out["stacked bytes"] = []
    for t in range(steps):
        for name, c in cs.items():
            shape = SHAPES["matrix"] if name == "powersgd" else SHAPES["vector"]
            comm.reset_stats()
            out[name].append(c.reduce(_grads(world_size, shape, t)[rank]))
            if name == "stacked":
                out["stacked bytes"].append(sum(comm.get_stats().collective_bytes.values()))
    return out


def _reference(name: str, p: int, steps: int) -> list[torch.Tensor]:
    """Single-process: what the p ranks together must compute, step by step."""
    shape = SHAPES["matrix"] if name == "powersgd" else SHAPES["vector"]
    res, e, u = [], [torch.zeros(shape) for _ in range(p)], [torch.zeros(shape) for _ in range(p)]
    gen = torch.Generator().manual_seed(0)
    q = qs = None
    for t in range(steps):
        g = _grads(p, shape, t)
        if name == "fp32":
            res.append(sum(g) / p)
        elif name == "sign":
            res.append(torch.sign(sum(torch.where(x >= 0, 1.0, -1.0) for x in g)))
        elif name == "ef-sign":
            outs = []
            for r in range(p):
                v = g[r] + e[r]
                c = v.abs().mean() * torch.where(v >= 0, 1.0, -1.0)
                e[r] = v - c
                outs.append(c)
            res.append(sum(outs) / p)
        elif name == "top-k":
            k = int(0.1 * N)
            outs = []
            for r in range(p):
                v = g[r] + e[r]
                keep = torch.zeros(N, dtype=torch.bool)
                keep[v.abs().topk(k).indices] = True
                outs.append(torch.where(keep, v, 0.0))
                e[r] = torch.where(keep, 0.0, v)
            res.append(sum(outs) / p)
        elif name == "top-k dgc":  # DGC: local velocity u, accumulated into e; both cleared where sent
            outs = []
            for r in range(p):
                u[r] = 0.9 * u[r] + g[r]
                v = e[r] + u[r]
                keep = torch.zeros(N, dtype=torch.bool)
                keep[v.abs().topk(int(0.1 * N)).indices] = True
                outs.append(torch.where(keep, v, 0.0))
                e[r], u[r] = torch.where(keep, 0.0, v), torch.where(keep, 0.0, u[r])
            res.append(sum(outs) / p)
        elif name == "random-k":
            idx = torch.randperm(N, generator=gen)[:int(0.1 * N)]
            outs = []
            for r in range(p):
                v = g[r] + e[r]
                keep = torch.zeros(N, dtype=torch.bool)
                keep[idx] = True
                outs.append(torch.where(keep, v, 0.0))
                e[r] = torch.where(keep, 0.0, v)
            res.append(sum(outs) / p)
        elif name == "powersgd":
            M = [g[r] + e[r] for r in range(p)]
            if q is None:
                q = torch.randn(shape[1], 2, generator=gen)
            P = torch.linalg.qr(sum(m @ q for m in M) / p).Q
            q = sum(m.T @ P for m in M) / p
            for r in range(p):
                e[r] = M[r] - P @ q.T
            res.append(P @ q.T)
        elif name == "stacked":  # PowerSGD per stack on e + u; u loses the subspace sent
            if qs is None:
                qs = [torch.randn(I.shape[1], 2, generator=gen) for I in STACKS]
            x = []
            for r in range(p):
                u[r] = 0.9 * u[r] + g[r]
                x.append(torch.cat([e[r] + u[r], torch.zeros(1)]))
            sent = torch.zeros(N + 1)
            for i, I in enumerate(STACKS):
                M = [torch.where(I >= 0, x[r][I], 0.0) for r in range(p)]
                P = torch.linalg.qr(sum(m @ qs[i] for m in M) / p).Q
                qs[i] = sum(m.T @ P for m in M) / p
                sent[I] = P @ qs[i].T
                for r in range(p):
                    U = torch.cat([u[r], torch.zeros(1)])[I]
                    keep = I >= 0
                    u[r][I[keep]] = (U - P @ (P.T @ U))[keep]
            for r in range(p):
                e[r] = x[r][:N] - sent[:N]
            res.append(sent[:N])
    return res


@pytest.mark.parametrize("p", [2, 4])
def test_results_equal_the_single_process_computation(p):
    steps = 3
    res = launch(_values_worker, p, steps=steps)
    assert res[0]["stacked bytes"] == [4 * 2 * (20 + 30 + 28 + 15)] * steps  # sum over stacks of 4r(m + n)
    assert C.StackedPowerSGD(STACKS, rank=2).payload_bytes((N,)) == 4 * 2 * (20 + 30 + 28 + 15)
    for name in ("fp32", "sign", "ef-sign", "top-k", "top-k dgc", "random-k", "powersgd", "stacked"):
        want = _reference(name, p, steps)
        for rank in range(p):
            for t in range(steps):
                torch.testing.assert_close(res[rank][name][t], want[t], atol=1e-5, rtol=1e-4,
                                           msg=lambda m: f"{name} rank {rank} step {t}: {m}")
    mean = [sum(_grads(p, SHAPES["vector"], t)) / p for t in range(steps)]
    for name, tol in (("fp16", 2e-3), ("bf16", 2e-2)):
        for t in range(steps):
            err = (res[0][name][t] - mean[t]).abs().max().item()
            assert 0 < err < tol, (name, err)  # 16 bits lose something, not much


# ----------------------------------------------------------------------------- statistics, EF
def test_qsgd_is_unbiased_and_its_variance_within_the_bound():
    d, s, draws = 200, 4, 20000
    v = torch.randn(d, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    total, sq = torch.zeros(d), 0.0
    for _ in range(draws):
        norm, q = C.qsgd_quantize(v, s, gen)
        x = C.qsgd_dequantize(norm, q, s)
        total += x
        sq += (x - v).square().sum().item()
    bound = min(d / s**2, math.sqrt(d) / s)
    variance = sq / draws / v.square().sum().item()
    assert variance <= bound
    # E||mean - v||^2 = variance ||v||^2 / draws: allow 3x its square root.
    bias = ((total / draws - v).norm() / v.norm()).item()
    assert bias < 3 * math.sqrt(variance / draws), bias
    # The same grid with deterministic rounding is far from unbiased (the test can fail).
    nearest = v.norm() * torch.round(v.abs() / v.norm() * s) / s * torch.sign(v)
    assert ((nearest - v).norm() / v.norm()).item() > 10 * bias


def test_pack_signs_round_trips():
    g = torch.randn(77, generator=torch.Generator().manual_seed(3))
    packed = C.pack_signs(g)
    assert packed.dtype == torch.uint8 and packed.numel() == 10
    assert torch.equal(C.unpack_signs(packed, 77), torch.where(g >= 0, 1.0, -1.0))


def _residual_worker(rank: int, world_size: int) -> dict:
    out = {}
    for name, c in (("top-k", C.TopK(0.05)), ("ef-sign", C.EFSign()), ("powersgd", C.PowerSGD(2))):
        shape = SHAPES["matrix"]
        g_sum, sent_sum = torch.zeros(shape), torch.zeros(shape)
        for t in range(4):
            g = _grads(world_size, shape, t)[rank]
            before = c.residual.get(0, torch.zeros(1200)).reshape(shape).clone() if name != "powersgd" \
                else c.residual.get(0, torch.zeros(shape)).clone()
            c.reduce(g)
            after = c.residual[0].reshape(shape)
            sent_sum += g + before - after  # what this rank's compressed message stood for
            g_sum += g
        out[name] = (g_sum, sent_sum, c.residual[0].reshape(shape).clone())
    return out


def test_error_feedback_residual_keeps_what_was_not_sent():
    """sum_t g_t = sum_t C(p_t) + e_T on every rank: nothing is lost, only delayed; and the
    residual is what the compressor dropped (Top-K: exactly n - k non-zeros)."""
    res = launch(_residual_worker, 2)
    for rank, out in enumerate(res):
        for name, (g_sum, sent_sum, e) in out.items():
            torch.testing.assert_close(sent_sum + e, g_sum)
            assert e.abs().sum() > 0, name
        assert int((out["top-k"][2] != 0).sum()) == 1200 - 60


def test_every_compressor_answers_the_interface():
    """ratio(shape) == payload_bytes(shape) / 4n == (sum of the plan's bytes) / 4n, for every class."""
    cs = _compressors("gloo")
    classes = {c for c in vars(C).values() if isinstance(c, type) and issubclass(c, C.Compressor)
               and c is not C.Compressor and not c.__name__.startswith("_")}
    assert {type(c) for c in cs.values()} == classes - {C.StackedPowerSGD}  # its shape is its stacks': below
    for name, c in cs.items():
        for shape in (*SHAPES.values(), torch.Size([40, 30])):
            n, plan = math.prod(shape), c.plan(shape)
            assert all(isinstance(m, C.Message) for m in plan), name
            assert c.payload_bytes(shape) == sum(m.nbytes for m in plan) == _expected_bytes(name, tuple(shape))
            assert c.ratio(shape) == c.payload_bytes(shape) / (4 * n), (name, shape)
    assert C.TopK(0.1).ratio((1000,)) == 0.2 and C.RandomK(0.1).ratio((1000,)) == 0.1
    stacked = C.StackedPowerSGD(STACKS, rank=2)
    assert stacked.ratio((N,)) == stacked.payload_bytes((N,)) / (4 * N) == sum(m.nbytes for m in stacked.plan((N,))) / (4 * N)


_ALPHA_BETA = T.CLUSTERS[0].link


def _with_residual(c: C.Compressor) -> C.Compressor:
    c.residual[0] = torch.zeros(5)  # as if key 0 had been a tensor of 5 elements
    return c


_BAD = {  # call -> (exception, what the message must say: the argument and the fix)
    "TopK(0)": (lambda: C.TopK(0), ValueError, "ratio must be a finite number in \\(0, 1\\]"),
    "TopK('0.01')": (lambda: C.TopK("0.01"), ValueError, "ratio must be .*fraction of elements sent"),
    "TopK(nan)": (lambda: C.TopK(float("nan")), ValueError, "ratio must be a finite number"),
    "TopK(error_feedback='no')": (lambda: C.TopK(0.1, error_feedback="no"), ValueError,
                                  "error_feedback must be True or False"),
    "TopK(momentum=1)": (lambda: C.TopK(0.01, momentum=1.0), ValueError, "momentum must be .*no momentum correction"),
    "RandomK(2)": (lambda: C.RandomK(2), ValueError, "ratio must be"),
    "RandomK(seed=2.5)": (lambda: C.RandomK(seed=2.5), ValueError, "seed must be an int >= 0.*same seed"),
    "QSGD(200)": (lambda: C.QSGD(200), ValueError, "levels must be an int in \\[1, 127\\]"),
    "QSGD(True)": (lambda: C.QSGD(True), ValueError, "levels must be an int"),
    "QSGD(seed=-1)": (lambda: C.QSGD(seed=-1), ValueError, "seed must be an int >= 0"),
    "AllReduce('nccl')": (lambda: C.AllReduce("nccl"), ValueError, "collectives must be 'gloo' or 'ring'"),
    "HalfPrecision(float32)": (lambda: C.HalfPrecision(torch.float32), ValueError, "dtype must be torch.float16"),
    "PowerSGD(0)": (lambda: C.PowerSGD(0), ValueError, "rank must be an int"),
    "PowerSGD(True)": (lambda: C.PowerSGD(True), ValueError, "rank must be an int"),
    "PowerSGD(error_feedback='no')": (lambda: C.PowerSGD(error_feedback="no"), TypeError,
                                      "error_feedback must be True or False"),
    "PowerSGD(seed=2.5)": (lambda: C.PowerSGD(seed=2.5), TypeError, "seed must be an int"),
    "StackedPowerSGD() without stacks": (lambda: C.StackedPowerSGD().payload_bytes((10,)), ValueError,
                                         "no stacks; pass stacks="),
    "StackedPowerSGD(stacks of another size)": (lambda: C.StackedPowerSGD(STACKS).payload_bytes((10,)), ValueError,
                                                "stacks cover 1000 elements"),
    "reduce(int64)": (lambda: C.AllReduce().reduce(torch.ones(3, dtype=torch.int64)), TypeError, "floating-point"),
    "reduce(empty)": (lambda: C.TopK(0.1).reduce(torch.ones(0)), ValueError, "at least one element"),
    "qsgd_quantize(levels=0)": (lambda: C.qsgd_quantize(torch.ones(3), 0), ValueError, "levels must be an int in"),
    "qsgd_quantize(int)": (lambda: C.qsgd_quantize(torch.ones(3, dtype=torch.int64), 4), TypeError,
                           "v must be a floating"),
    "qsgd_dequantize(levels=0)": (lambda: C.qsgd_dequantize(torch.tensor(1.0), torch.ones(3, dtype=torch.int8), 0),
                                  ValueError, "levels must be an int in"),
    "qsgd_dequantize(float q)": (lambda: C.qsgd_dequantize(torch.tensor(1.0), torch.ones(3), 4), TypeError,
                                 "q must be"),
    "pack_signs(int64)": (lambda: C.pack_signs(torch.ones(3, dtype=torch.int64)), TypeError,
                          "floating-point.*g.float\\(\\)"),
    "pack_signs(list)": (lambda: C.pack_signs([1.0, -1.0]), TypeError, "floating-point tensor"),
    "unpack_signs(n=-1)": (lambda: C.unpack_signs(torch.zeros(2, dtype=torch.uint8), -1), ValueError,
                           "n must be an int in \\[0, 8 \\* packed.numel\\(\\)\\] = \\[0, 16\\]"),
    "unpack_signs(n=17)": (lambda: C.unpack_signs(torch.zeros(2, dtype=torch.uint8), 17), ValueError, "n must be"),
    "unpack_signs(float)": (lambda: C.unpack_signs(torch.zeros(2), 8), TypeError, "packed must be the uint8"),
    "payload_bytes((2.5,))": (lambda: C.AllReduce().payload_bytes((2.5,)), ValueError, "shape must hold ints >= 1"),
    "payload_bytes((-3,))": (lambda: C.TopK(0.1).payload_bytes((-3,)), ValueError, "shape must hold ints >= 1"),
    "payload_bytes((0,))": (lambda: C.SignMajority().payload_bytes((0, 4)), ValueError, "shape must hold ints >= 1"),
    "ratio(1000)": (lambda: C.QSGD().ratio(1000), ValueError, "shape must be a tuple of ints such as \\(1000,\\)"),
    "plan(('a',))": (lambda: C.EFSign().plan(("a",)), ValueError, "shape must hold ints"),
    "PowerSGD.plan((2.5, 3))": (lambda: C.PowerSGD(2).plan((2.5, 3)), ValueError, "shape must hold ints"),
    "matrix_shape((3, True))": (lambda: C.matrix_shape((3, True)), ValueError, "shape must hold ints"),
    "ring_bytes_sent(rank=2, p=2)": (lambda: C.AllReduce().ring_bytes_sent((10,), 2, 2), ValueError,
                                     "rank must be an int in \\[0, p\\)"),
    "ring_bytes_sent(p=0)": (lambda: C.AllReduce().ring_bytes_sent((10,), 0, 0), ValueError, "p must be an int >= 1"),
    "Message('send')": (lambda: C.Message("send", 3, 4), ValueError, "op must be 'all_reduce' or 'all_gather'"),
    "Message(element_size=0)": (lambda: C.Message("all_reduce", 3, 0), ValueError, "element_size must be an int >= 1"),
    "predict_comm_seconds(link=None)": (lambda: T.predict_comm_seconds(C.AllReduce(), (10,), 2, None), TypeError,
                                        "link must be an AlphaBeta"),
    "predict_comm_seconds(p=0)": (lambda: T.predict_comm_seconds(C.AllReduce(), (10,), 0, _ALPHA_BETA), ValueError,
                                  "p must be an int >= 1"),
    "predict_comm_seconds('fp32')": (lambda: T.predict_comm_seconds("fp32", (10,), 2, _ALPHA_BETA), TypeError,
                                     "compressor must be a .*Compressor, e.g. TopK"),
    "predict_step_seconds(flop=nan)": (lambda: T.predict_step_seconds(C.AllReduce(), [(10,)], T.CLUSTERS[0],
                                                                      float("nan")),
                                       ValueError, "flop_per_device must be a finite number"),
    "predict_step_seconds(flop=-1)": (lambda: T.predict_step_seconds(C.AllReduce(), [(10,)], T.CLUSTERS[0], -1.0),
                                      ValueError, "flop_per_device must be"),
    "predict_step_seconds(cluster=8)": (lambda: T.predict_step_seconds(C.AllReduce(), [(10,)], 8, 1e6), TypeError,
                                        "cluster must be a Cluster, e.g. CLUSTERS\\[0\\]"),
    "predict_step_seconds(shapes=(10,))": (lambda: T.predict_step_seconds(C.AllReduce(), (10,), T.CLUSTERS[0], 1e6),
                                           ValueError, "shape must be a tuple of ints"),
    "Cluster(devices=0)": (lambda: T.Cluster("x", 0, _ALPHA_BETA, 1e12), ValueError, "devices must be an int >= 1"),
    "Cluster(devices=8.0)": (lambda: T.Cluster("x", 8.0, _ALPHA_BETA, 1e12), ValueError, "devices must be an int"),
    "Cluster(flops=-1)": (lambda: T.Cluster("x", 8, _ALPHA_BETA, -1), ValueError, "flops must be .*FLOP/s"),
    "Cluster(flops=nan)": (lambda: T.Cluster("x", 8, _ALPHA_BETA, float("nan")), ValueError, "flops must be a finite"),
    "Cluster(alpha=nan)": (lambda: T.Cluster("x", 8, AlphaBeta(float("nan"), 1e-9), 1e12), ValueError,
                           "alpha must be a finite number >= 0 \\(seconds\\)"),
    "predict_comm_seconds(beta=-1)": (lambda: T.predict_comm_seconds(C.AllReduce(), (10,), 2, AlphaBeta(1e-6, -1.0)),
                                      ValueError, "beta must be a finite number >= 0 \\(seconds per byte\\)"),
    "Cluster(link=None)": (lambda: T.Cluster("x", 8, None, 1e12), TypeError, "link must be an AlphaBeta"),
    "HookState(None)": (lambda: H.HookState(None), TypeError, "compressor must be a .*Compressor"),
    "HookState(per_tensor='yes')": (lambda: H.HookState(C.TopK(0.1), per_tensor="yes"), ValueError,
                                    "per_tensor must be True or False"),
    "reduce(key reused)": (lambda: _with_residual(C.TopK(0.1)).reduce(torch.ones(3)), ValueError,
                           "key 0 was first used for a tensor of 5 elements, now 3: give each tensor its own key"),
    "EFSign.reduce(key reused)": (lambda: _with_residual(C.EFSign()).reduce(torch.ones(3)), ValueError, "own key"),
    "RandomK.reduce(key reused)": (lambda: _with_residual(C.RandomK(0.5)).reduce(torch.ones(3)), ValueError, "own key"),
    "compression_hook(None)": (lambda: H.compression_hook(None, None), TypeError, "state must be a HookState"),
}


@pytest.mark.parametrize("case", list(_BAD))
def test_bad_arguments_say_what_to_do(case):
    call, exc, message = _BAD[case]
    with pytest.raises(exc, match=message):
        call()


# ----------------------------------------------------------------------------- inside DDP
def _ddp_worker(rank: int, world_size: int, impl: str, method: str, per_tensor: bool = False, **kw) -> dict:
    from course_lib.runs.compression import train_compressed
    from course_lib.data import load_dataset

    cfg = toy_config(load_dataset().vocab_size)
    return train_compressed(rank, world_size, config=cfg, steps=3, batch_size=8, method=method, impl=impl,
                            per_tensor=per_tensor, eval_iters=0, **kw)


def _ddp_runs(rank: int, world_size: int, runs: list[dict]) -> list[dict]:
    """Several :func:`_ddp_worker` runs inside one launch (one start-up)."""
    return [_ddp_worker(rank, world_size, **kw) for kw in runs]


def test_course_ddp_with_compressor_fp32_equals_plain_ddp_and_counts_bytes():
    from course_lib.runs.data_parallel import train_data_parallel
    from course_lib.data import load_dataset

    cfg = toy_config(load_dataset().vocab_size)
    plain = launch(train_data_parallel, 2, config=cfg, steps=3, batch_size=8)
    runs = launch(_ddp_runs, 2, runs=[dict(impl="course", method="fp32"),
                                      dict(impl="course", method="top-k 1% +EF", warmup_steps=1),
                                      dict(impl="course", method="powersgd r=4 stacked", warmup_steps=1,
                                           optimizer="sgd", lr=0.1, momentum=0.9, momentum_correction=True)])
    fp32, topk, stacked = ([r[i] for r in runs] for i in range(3))
    torch.testing.assert_close(fp32[0]["params"], plain[0]["params"], atol=1e-6, rtol=1e-5)
    n = sum(p.numel() for p in GPT(cfg).parameters())
    assert fp32[0]["bytes_per_step"] == 4 * n
    # one bucket, the whole model: 1 dense warm-up step of 4n bytes, then 2 steps of 8k bytes
    assert topk[0]["bytes_per_step"] == (4 * n + 2 * 8 * max(1, int(0.01 * n))) / 3
    # stacked PowerSGD: 2 steps of 4r(m + n) per stack (gpt_stacks' two matrices)
    stacks = C.gpt_stacks(GPT(cfg))
    assert stacked[0]["bytes_per_step"] == (4 * n + 2 * sum(4 * 4 * sum(I.shape) for I in stacks)) / 3
    for res in (topk, stacked):
        assert torch.equal(res[0]["params"], res[1]["params"])  # replicas stay identical


def _torch_ddp_worker(rank: int, world_size: int) -> dict:
    """Every run on torch's DDP in one launch (one start-up): the course's fp32 DDP, torch's
    DDP with the course's compressors as hooks, and the fp16 hooks (course and torch's)."""
    from course_lib.runs.compression import train_compressed
    from course_lib.data import load_dataset

    kw = dict(config=toy_config(load_dataset().vocab_size), steps=3, batch_size=8, eval_iters=0)
    return {"plain": train_compressed(rank, world_size, impl="course", method="fp32", **kw),
            "hook": train_compressed(rank, world_size, impl="torch", method="fp32", **kw),
            "sign": train_compressed(rank, world_size, impl="torch", method="sign (majority)", per_tensor=True, **kw),
            "fp16": _fp16_hooks_worker(rank, world_size, steps=3)}


@pytest.fixture(scope="module")
def torch_ddp_runs() -> list[dict]:
    return launch(_torch_ddp_worker, 2)


def test_torch_ddp_comm_hook_uses_the_compressors(torch_ddp_runs):
    from course_lib.data import load_dataset

    cfg = toy_config(load_dataset().vocab_size)
    plain, hook, sign = ([r[k] for r in torch_ddp_runs] for k in ("plain", "hook", "sign"))
    torch.testing.assert_close(hook[0]["params"], plain[0]["params"], atol=1e-6, rtol=1e-5)
    shapes = [tuple(p.shape) for p in GPT(cfg).parameters()]
    assert sign[0]["bytes_per_step"] == sum(math.ceil(math.prod(s) / 8) for s in shapes)
    assert torch.equal(sign[0]["params"], sign[1]["params"])


def _fp16_hooks_worker(rank: int, world_size: int, steps: int) -> dict:
    """The same model, data and SGD under torch's DDP, once with the course's fp16 compressor
    as a comm hook, once with torch's ``fp16_compress_hook``: each step's reduced gradients."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook
    from course_lib.data import get_batch_shard, load_dataset
    from course_lib.update_rules import flat_params

    data = load_dataset()
    cfg = toy_config(data.vocab_size)
    torch.manual_seed(0)
    local = GPT(cfg)  # this rank's own gradient at step 0, before any hook
    x, y = get_batch_shard(data.train, 8, cfg.block_size, torch.Generator().manual_seed(0), rank, world_size)
    local(x, y)[1].backward()
    out = {"local": torch.cat([p.grad.reshape(-1) for p in local.parameters()])}
    for impl in ("course", "torch"):
        torch.manual_seed(0)
        model = GPT(cfg)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        if impl == "course":
            ddp.register_comm_hook(H.HookState(C.HalfPrecision(torch.float16)), H.compression_hook)
        else:
            ddp.register_comm_hook(None, fp16_compress_hook)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        gen, grads = torch.Generator().manual_seed(0), []
        for _ in range(steps):
            x, y = get_batch_shard(data.train, 8, cfg.block_size, gen, rank, world_size)
            opt.zero_grad(set_to_none=True)
            ddp(x, y)[1].backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
            opt.step()
        out[impl] = grads, flat_params(model)
    return out


def test_course_fp16_hook_equals_torch_fp16_compress_hook(torch_ddp_runs):
    """2 ranks, 3 SGD steps: the course's fp16 (divide in fp32, cast, all-reduce) and torch's
    fp16_compress_hook (cast, divide in fp16, all-reduce) give the same gradients and weights
    up to fp16 rounding. With p = 2 the division is exact in fp16's normal range; below it
    (|g/2| < 6.1e-5) torch rounds twice, so a rank's half may differ by one subnormal step,
    2^-24, which can tip the rounding of the fp16 sum by one ulp: tolerance one fp16 ulp
    (rtol 2^-10) plus two subnormal steps. Both really
    went through 16 bits (every reduced gradient is an fp16 value), and step 0 equals each
    rounding order computed in one process, bit for bit."""
    res = [r["fp16"] for r in torch_ddp_runs]
    g0, g1 = res[0]["local"], res[1]["local"]
    # Step 0 in one process, from the ranks' own gradients: each order of rounding, exactly.
    course_order = ((g0 / 2).half() + (g1 / 2).half()).float()
    torch_order = (g0.half() / 2 + g1.half() / 2).float()
    for rank, out in enumerate(res):
        (ours, ours_params), (theirs, theirs_params) = out["course"], out["torch"]
        assert torch.equal(ours[0], course_order) and torch.equal(theirs[0], torch_order), rank
        for t, (a, b) in enumerate(zip(ours, theirs)):
            torch.testing.assert_close(a, b, atol=2**-23, rtol=2**-10, msg=lambda m: f"rank {rank} step {t}: {m}")
            assert torch.equal(a, a.half().float()) and torch.equal(b, b.half().float())  # fp16 values
        torch.testing.assert_close(ours_params, theirs_params, atol=1e-6, rtol=0)
    assert torch.equal(res[0]["course"][1], res[1]["course"][1])


def test_course_powersgd_hook_close_to_torch_powersgd_hook():
    """Same rank 4, error feedback and warm start, per tensor: the two PowerSGDs differ in details
    (torch sends its first step dense and skips tensors that compress less than 2x), so compare
    the loss after 8 steps, not the parameters."""
    from course_lib.data import load_dataset
    from course_lib.configs import small_config
    from course_lib.runs.compression import mean_losses

    cfg = small_config(load_dataset().vocab_size)
    kw = dict(config=cfg, steps=8, batch_size=16, per_tensor=True, eval_iters=0)
    course = mean_losses(launch(train_compressed_worker, 2, impl="torch", method="powersgd r=4", **kw))
    theirs = mean_losses(launch(train_compressed_worker, 2, impl="torch-powersgd", **kw))
    assert course[0] == theirs[0]  # same model, same batch
    assert abs(course[-1] - theirs[-1]) < 0.02 * theirs[-1], (course[-1], theirs[-1])
    assert course[-1] < course[0] - 0.1  # both actually train


def train_compressed_worker(rank, world_size, **kw):
    from course_lib.runs.compression import train_compressed

    return train_compressed(rank, world_size, **kw)
