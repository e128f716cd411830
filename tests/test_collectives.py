"""Chapter 3: collectives from point-to-point messages on real gloo ranks, their byte counts,
and the alpha-beta fit."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import collectives as C
from course_lib import comm
from course_lib.alpha_beta import AlphaBeta, fit_alpha_beta, predict
from course_lib.launcher import WorkerError, launch

ALGOS = ["naive", "tree", "recursive_doubling", "ring", "rabenseifner"]


def _input(j: int, n: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * j + n)
    if kind == "int":  # integer-valued floats: every summation order gives the exact sum
        return torch.randint(-1000, 1000, (n,), generator=g).float()
    return torch.randn(n, generator=g, dtype=torch.float64)


def _all_algorithms(rank: int, p: int, sizes: list[int], kind: str, piece_bytes: int) -> dict:
    """Run every algorithm on every size; return what each rank got and the bytes it sent."""
    out = {}
    for n in sizes:
        total = torch.stack([_input(j, n, kind) for j in range(p)]).sum(0)
        for name in ALGOS:
            x = _input(rank, n, kind)
            comm.reset_stats()
            if name == "ring":
                C.ring_all_reduce(x, piece_bytes=piece_bytes)
            elif name == "rabenseifner":
                C.rabenseifner_all_reduce(x, piece_bytes=piece_bytes)
            else:
                C.ALL_REDUCE[name](x)
            out[name, n] = (x, total, comm.get_stats().sent_bytes)
        b = C.chunk_bounds(n, p)
        x = _input(rank, n, kind)
        comm.reset_stats()
        mine = C.ring_reduce_scatter(x, piece_bytes=piece_bytes).clone()
        out["rs", n] = (mine, total[b[rank]:b[rank + 1]], comm.get_stats().sent_bytes)
        full = torch.cat([_input(j, n, kind)[b[j]:b[j + 1]] for j in range(p)])
        y = torch.full((n,), float("nan"), dtype=full.dtype)
        y[b[rank]:b[rank + 1]] = full[b[rank]:b[rank + 1]]
        comm.reset_stats()
        C.ring_all_gather(y, piece_bytes=piece_bytes)
        out["ag", n] = (y, full, comm.get_stats().sent_bytes)
    return out


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_every_algorithm_sums_exactly_on_integer_values(p):
    # numel < p, uneven chunks, several pieces per chunk, then smaller again (the ring reuses
    # its larger receive buffers from the previous calls)
    sizes = [1, p - 1 or 1, 7, 40, 1001, 9]
    res = launch(_all_algorithms, p, sizes=sizes, kind="int", piece_bytes=64)
    for rank, out in enumerate(res):
        for (name, n), (got, want, _) in out.items():
            assert torch.equal(got, want), f"{name}, p={p}, n={n}, rank {rank}: {got[:5]} != {want[:5]}"
            if name == "rabenseifner":
                assert out[name, n][2] == C.rabenseifner_bytes_sent(n, p, rank, 4), (n, rank)
    # the binomial tree: the busiest rank sends ceil(log2 p) n bytes, not 2 ceil(log2 p) n
    # (the slip chapter 3's table once had; at p = 5 rank 0 sends 3n)
    busiest = max(out["tree", 40][2] for out in res)
    assert busiest == math.ceil(math.log2(p)) * 40 * 4 if p > 1 else busiest == 0


def test_random_floats_within_tolerance_and_ring_bytes_exact():
    p, sizes = 4, [6, 1000]  # 6 % 4 != 0: uneven chunks; 1000 floats64 in 128-byte pieces
    res = launch(_all_algorithms, p, sizes=sizes, kind="float", piece_bytes=128)
    for rank, out in enumerate(res):
        for (name, n), (got, want, sent) in out.items():
            # float64 sums of p O(1) terms in a different order: rounding of a few ulps
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            kind = {"ring": "all_reduce", "rs": "reduce_scatter", "ag": "all_gather"}.get(name)
            if kind:
                assert sent == C.ring_bytes_sent(n, p, rank, 8, kind), (name, n, rank, sent)
        # n divisible by p: the textbook formulas hold exactly
        assert out["ring", 1000][2] == 2 * (p - 1) * 1000 * 8 // p
        assert out["rs", 1000][2] == out["ag", 1000][2] == (p - 1) * 1000 * 8 // p
        naive_sent = out["naive", 1000][2]
        assert naive_sent == ((p - 1) * 8000 if rank == 0 else 8000)
        assert out["recursive_doubling", 1000][2] == int(math.log2(p)) * 8000
        assert out["rabenseifner", 1000][2] == 2 * (p - 1) * 1000 * 8 // p
        assert out["rabenseifner", 6][2] == C.rabenseifner_bytes_sent(6, p, rank, 8)


def _rabenseifner_bytes(rank: int, p: int, n: int) -> int:
    x = _input(rank, n, "int")
    comm.reset_stats()
    C.rabenseifner_all_reduce(x, piece_bytes=256)
    assert torch.equal(x, torch.stack([_input(j, n, "int") for j in range(p)]).sum(0)), rank
    return comm.get_stats().sent_bytes


@pytest.mark.parametrize("p", [6, 8])
def test_rabenseifner_bytes(p):
    n = 840  # divisible by 2..8
    sent = launch(_rabenseifner_bytes, p, n=n)
    assert sent == [C.rabenseifner_bytes_sent(n, p, r, 4) for r in range(p)]
    if p == 8:  # a power of two: the ring's bytes, 2 (p-1)/p n, from every rank
        assert sent == [2 * 7 * n * 4 // 8] * 8
    else:  # p = 6 = 4 + 2: ranks 0, 2 fold into 1, 3 (n each), which also hand the result back (n more)
        core = 2 * 3 * n * 4 // 4
        assert sent == [n * 4, core + n * 4, n * 4, core + n * 4, core, core]


def test_rabenseifner_bytes_formula_uneven():
    # n = 10, p = 4: chunks 3, 3, 2, 2. Rank 0 gives chunks 2, 3 (4 elements), then 1 (3);
    # it holds chunk 0 (3), then chunks 0, 1 (6)
    assert C.rabenseifner_bytes_sent(10, 4, 0, 1) == 4 + 3 + 3 + 6
    assert C.rabenseifner_bytes_sent(10, 1, 0) == 0
    with pytest.raises(ValueError, match="rank must be in"):
        C.rabenseifner_bytes_sent(10, 4, 4)


def test_ring_bytes_formula_uneven():
    # n = 10, p = 4: chunks 3, 3, 2, 2
    assert [C.ring_bytes_sent(10, 4, r, 1) for r in range(4)] == [20 - 3 - 3, 20 - 3 - 2, 20 - 2 - 2, 20 - 2 - 3]
    assert C.ring_bytes_sent(12, 4, 0, 4, "reduce_scatter") == 36
    assert C.ring_bytes_sent(12, 1, 0, 4) == 0
    assert C.chunk_bounds(10, 4) == [0, 3, 6, 8, 10]
    assert C.chunk_bounds(2, 4) == [0, 1, 2, 2, 2]


def _avg_and_group(rank: int, p: int) -> dict:
    x = torch.full((5,), float(rank + 1))
    C.ring_all_reduce(x, op="avg")
    y = torch.full((3,), float(rank + 1))
    C.recursive_doubling_all_reduce(y, op=torch.distributed.ReduceOp.AVG)
    evens = comm.new_group([0, 2])  # every rank must create the group
    z = torch.full((4,), float(rank))
    if rank in (0, 2):
        C.ring_all_reduce(z, group=evens)
        C.tree_all_reduce(z, group=evens)
    steps = C.ring_all_reduce_steps(torch.full((p,), 2.0 ** rank))
    return {"avg": x, "avg_rd": y, "group": z, "steps": steps}


def test_avg_subgroup_and_ring_steps():
    res = launch(_avg_and_group, 4)
    for rank, out in enumerate(res):
        assert torch.equal(out["avg"], torch.full((5,), 2.5))
        assert torch.equal(out["avg_rd"], torch.full((3,), 2.5))
        # evens: ring gives 0 + 2 = 2 on both; the tree then sums 2 + 2 = 4
        assert torch.equal(out["group"], torch.full((4,), 4.0 if rank in (0, 2) else float(rank)))
        # the step-by-step ring: 2(p-1) snapshots; after p-1 steps exactly chunk `rank` is complete
        assert len(out["steps"]) == 6
        assert [c for c in range(4) if out["steps"][2][c] == 15] == [rank]
        assert torch.equal(out["steps"][-1], torch.full((4,), 15.0))


def _bad(rank: int, p: int, case: str):
    if case == "list":
        C.ring_all_reduce([1.0, 2.0])
    if case == "op":
        C.ring_all_reduce(torch.ones(3), op="max")
    if case == "strided":
        C.tree_all_reduce(torch.ones(3, 4).T)
    if case == "avg_int":
        C.ring_all_reduce(torch.ones(3, dtype=torch.int64), op="avg")
    if case == "piece":
        C.ring_reduce_scatter(torch.ones(3), piece_bytes=0)
    if case == "root":
        C.naive_all_reduce(torch.ones(3), root=p)


@pytest.mark.parametrize("case,exc,msg", [
    ("list", "TypeError", "expected a torch.Tensor"),
    ("op", "ValueError", "use 'sum' or 'avg'"),
    ("strided", "ValueError", "pass x.contiguous()"),
    ("avg_int", "TypeError", "needs a floating-point tensor"),
    ("piece", "ValueError", "piece_bytes must be a positive int"),
    ("root", "ValueError", "root must be a rank of the group"),
])
def test_bad_input_says_what_to_do(case, exc, msg):
    with pytest.raises(WorkerError) as e:
        launch(_bad, 2, case=case)
    assert e.value.exc_type == exc and msg in str(e.value)


def test_outside_a_process_group():
    with pytest.raises(RuntimeError, match="inside a function run by course_lib.launch"):
        C.ring_all_reduce(torch.ones(2))


# ----------------------------------------------------------------------------- alpha-beta
def test_fit_recovers_known_alpha_beta():
    truth = AlphaBeta(alpha=30e-6, beta=1 / 2e9)
    sizes = [4 ** k for k in range(1, 13)]
    g = torch.Generator().manual_seed(0)
    noise = 1 + 0.02 * torch.randn(len(sizes), generator=g, dtype=torch.float64)
    times = [truth.time(n) * float(e) for n, e in zip(sizes, noise)]
    fit = fit_alpha_beta(sizes, times)
    assert fit.alpha == pytest.approx(truth.alpha, rel=0.05)
    assert fit.beta == pytest.approx(truth.beta, rel=0.05)
    exact = fit_alpha_beta(sizes, [truth.time(n) for n in sizes])
    assert exact.alpha == pytest.approx(truth.alpha, rel=1e-9) and exact.beta == pytest.approx(truth.beta, rel=1e-9)
    assert "alpha = 30.0 us, 1/beta = 2.00 GB/s" in str(exact)


def test_fit_rejects_bad_data():
    with pytest.raises(ValueError, match="two different message sizes"):
        fit_alpha_beta([8, 8], [1e-5, 1e-5])
    with pytest.raises(ValueError, match="same length"):
        fit_alpha_beta([8, 16], [1e-5])
    with pytest.raises(ValueError, match="positive"):
        fit_alpha_beta([8, 16], [1e-5, -1.0])


def test_predictions_follow_the_formulas():
    m = AlphaBeta(alpha=1.0, beta=0.01)
    n = 400
    assert predict("ring", n, 4, m) == pytest.approx(2 * 3 * 1 + 2 * 3 / 4 * n * 0.01)
    assert predict("naive", n, 4, m) == pytest.approx(2 * 3 * (1 + 4))
    assert predict("recursive_doubling", n, 8, m) == pytest.approx(3 * 5)
    assert predict("recursive_doubling", n, 6, m) == pytest.approx((2 + 2) * 5)
    assert predict("tree", n, 5, m) == pytest.approx(2 * 3 * 5)
    assert predict("reduce_scatter", n, 4, m) == pytest.approx(3 + 3 / 4 * 4)
    assert predict("rabenseifner", n, 8, m) == pytest.approx(2 * 3 * 1 + 2 * 7 / 8 * 4)
    # p = 6: four ranks run it after a fold that costs two whole-vector steps
    assert predict("rabenseifner", n, 6, m) == pytest.approx(2 * 2 * 1 + 2 * 3 / 4 * 4 + 2 * (1 + 4))
    # the ring's bandwidth term is bounded by 2 n beta, whatever p; the naive root's grows with p
    big = AlphaBeta(alpha=0.0, beta=1.0)
    assert all(predict("ring", 1000, p, big) < 2000 for p in (2, 16, 1024))
    assert predict("naive", 1000, 64, big) == 2 * 63 * 1000
    # shared cores: 8 ranks on 2 cores make every ring transfer 4x slower
    assert predict("ring", 1000, 8, big, cores=2) == pytest.approx(4 * predict("ring", 1000, 8, big))
    with pytest.raises(ValueError, match="unknown algorithm"):
        predict("butterfly", 1, 2, m)


@pytest.mark.parametrize("call, names", [
    (lambda: AlphaBeta(-1, 1), "alpha must be a finite number >= 0"),
    (lambda: AlphaBeta(float("nan"), 1e-9), "alpha must be a finite number >= 0"),
    (lambda: AlphaBeta(1e-6, float("inf")), "beta must be a finite number >= 0"),
    (lambda: predict("ring", float("nan"), 4, AlphaBeta(1e-6, 1e-9)), "nbytes must be a finite number"),
    (lambda: predict("ring", 8, 4, None), "model must be an AlphaBeta"),
    (lambda: predict("ring", 8, 4, AlphaBeta(1e-6, 1e-9), cores=0), "cores must be a number >= 1"),
    (lambda: C.rabenseifner_bytes_sent(10, 4, 0.5), "rank must be in \\[0, 4\\) \\(an int\\), got 0.5"),
    (lambda: C.rabenseifner_bytes_sent(10, True, 0), "p must be an int >= 1"),
    (lambda: C.rabenseifner_bytes_sent(-1, 4, 0), "rabenseifner_bytes_sent: n must be an int >= 0"),
])
def test_alpha_beta_and_byte_counts_name_the_bad_argument(call, names):
    with pytest.raises((ValueError, TypeError), match=names):
        call()


def _default_pieces(rank: int, p: int, n: int) -> bool:
    x = _input(rank, n, "int")
    C.ring_all_reduce(x)  # default pieces: two per chunk here (chunks of ~200 kB)
    return torch.equal(x, torch.stack([_input(j, n, "int") for j in range(p)]).sum(0))


def test_default_pieces_split_a_chunk():
    assert all(launch(_default_pieces, 2, n=100_003))
