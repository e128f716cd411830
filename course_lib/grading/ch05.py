"""Checks for chapter 5 (tensor parallelism: f and g, row-parallel linear, vocab-parallel loss).

Each ``check_*`` runs the learner's code on real gloo ranks, compares it with a
single-process computation done here, reads the counted communication of each pass
(forward, backward) and raises :class:`CheckFailed` with a hint naming the rank and the
likely mistake. ``hidden`` cases use other world sizes and shapes.
"""
from __future__ import annotations

import functools
import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import comm
from course_lib.grading import isolation
from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import run_learner
from course_lib.tensor_parallel import reduce_from_tp, vocab_range

Q1, Q2, Q3 = "Q1 conjugate operators f and g", "Q2 row-parallel linear", "Q3 vocab-parallel cross-entropy"
_DEADLOCK = ("Every rank must call the same collectives in the same order: comm.all_reduce runs on all ranks "
             "or on none.")


def _calls(stats: comm.CommStats) -> dict:
    return dict(stats.collective_calls)


# ----------------------------------------------------------------------------- Q1
def _q1_rank(f_cls: type, g_cls: type, rank: int, world_size: int, n: int) -> dict:
    w = torch.linspace(1, 2, n)
    x = (torch.arange(n, dtype=torch.float32) + 10 * rank).requires_grad_()  # different on each rank
    comm.reset_stats()
    y = f_cls.apply(x)
    f_fwd = _calls(comm.get_stats())
    comm.reset_stats()
    (y * w * (rank + 1)).sum().backward()
    f_bwd = _calls(comm.get_stats())
    z = torch.full((n,), float(rank + 1), requires_grad=True)
    comm.reset_stats()
    s = g_cls.apply(z)
    g_fwd = _calls(comm.get_stats())
    z_after = z.detach().clone()
    comm.reset_stats()
    (s * w * (rank + 1)).sum().backward()
    g_bwd = _calls(comm.get_stats())
    return dict(y=y.detach(), dx=x.grad, f_fwd=f_fwd, f_bwd=f_bwd, s=s.detach(), dz=z.grad,
                z_after=z_after, g_fwd=g_fwd, g_bwd=g_bwd)


@own_work(Q1, forbid=("course_lib.tensor_parallel", "course_lib.sequence_parallel", "course_lib.tp_gpt", "torch.distributed"))
def check_conjugate_operators(f_cls: type, g_cls: type, world_sizes: tuple[int, ...] = (2,), n: int = 6) -> None:
    """``f``: identity forward, all-reduce backward; ``g``: all-reduce forward, identity backward.
    Rank r feeds f its own x_r and weighs the output by (r + 1); it feeds g a vector of (r + 1)."""
    for cls, name in ((f_cls, "CopyToTP (f)"), (g_cls, "ReduceFromTP (g)")):
        if not isolation.subclass_of(cls, torch.autograd.Function):
            raise CheckFailed(Q1, f"{name} must be a class deriving from torch.autograd.Function, got {cls!r}")
    w = torch.linspace(1, 2, n)
    for p in world_sizes:
        res = run_learner(Q1, functools.partial(_q1_rank, f_cls, g_cls), p, [n] * p, deadlock_hint=_DEADLOCK)
        total = p * (p + 1) / 2  # sum over ranks of (r + 1)
        for r, (o, _) in enumerate(res):
            mine = torch.arange(n, dtype=torch.float32) + 10 * r
            other = 1 if r == 0 else 0
            if p > 1 and torch.equal(o["y"], res[other][0]["y"]):
                raise CheckFailed(Q1, f"rank {r}'s output of f is rank {other}'s: you all-reduced in forward where the "
                                  "column-parallel layer needs identity (f returns its input unchanged)")
            expect(torch.allclose(o["y"], mine), Q1, f"rank {r}: f changed its input in forward; f is the identity "
                   "forward (return x.view_as(x) or x.clone())")
            expect(not o["f_fwd"], Q1, f"rank {r}: f called {o['f_fwd']} in forward; its forward sends nothing")
            if o["dx"] is not None and torch.allclose(o["dx"], w * (r + 1)):
                raise CheckFailed(Q1, f"rank {r}'s input gradient through f is only its own part (r + 1) w: f's "
                                  "backward must all-reduce the gradient, since every rank's output slice depends "
                                  "on the whole input")
            expect(o["dx"] is not None and torch.allclose(o["dx"], w * total), Q1,
                   f"rank {r}: the gradient through f is {o['dx']}, expected the sum over ranks {(w * total).tolist()}")
            expect(o["f_bwd"] == {"all_reduce": 1}, Q1, f"rank {r}: f's backward called {o['f_bwd'] or 'no collective'}; "
                   "it needs exactly one comm.all_reduce (torch.distributed's own calls are not counted)")
            if torch.allclose(o["s"], torch.full((n,), float(r + 1))) and p > 1:
                raise CheckFailed(Q1, f"rank {r}'s output of g is its own partial sum: g must all-reduce in forward "
                                  "(the row-parallel layer's output is the sum over ranks)")
            expect(torch.allclose(o["s"], torch.full((n,), total)), Q1,
                   f"rank {r}: g's output is {o['s'].tolist()}, expected the sum over ranks {total}")
            expect(torch.equal(o["z_after"], torch.full((n,), float(r + 1))), Q1,
                   f"rank {r}: g overwrote its input: comm.all_reduce works in place, so all-reduce a clone "
                   "(x.clone()) and return that")
            expect(o["g_fwd"] == {"all_reduce": 1}, Q1, f"rank {r}: g's forward called {o['g_fwd'] or 'no collective'}; "
                   "it needs exactly one comm.all_reduce")
            if o["dz"] is not None and torch.allclose(o["dz"], w * total) and p > 1:
                raise CheckFailed(Q1, f"rank {r}'s gradient through g is summed over the ranks: g's backward is the "
                                  "identity (its output is the same on every rank, so the gradient already is)")
            expect(o["dz"] is not None and torch.allclose(o["dz"], w * (r + 1)), Q1,
                   f"rank {r}: the gradient through g is {o['dz']}, expected the incoming gradient unchanged")
            expect(not o["g_bwd"], Q1, f"rank {r}: g called {o['g_bwd']} in backward; its backward sends nothing")
    passed(Q1, f"world sizes {list(world_sizes)}: f = identity / all-reduce, g = all-reduce / identity")


# ----------------------------------------------------------------------------- Q2
def _q2_rank(cls: type, rank: int, world_size: int, case: tuple) -> dict:
    n_in, n_out, rows, seed = case
    torch.manual_seed(seed)
    linear = nn.Linear(n_in, n_out)
    X = torch.randn(rows, n_in)
    k = n_in // world_size
    x = X[:, rank * k:(rank + 1) * k].clone().requires_grad_()
    layer = cls(linear, rank, world_size, reduce_from_tp)
    comm.reset_stats()
    y = layer(x)
    fwd = dict(comm.get_stats().collective_bytes)
    comm.reset_stats()
    y.square().sum().backward()
    bwd = dict(comm.get_stats().collective_bytes)
    named = dict(layer.named_parameters())
    return dict(y=y.detach(), dx=x.grad, fwd=fwd, bwd=bwd,
                weight=named.get("weight"), weight_grad=None if named.get("weight") is None else named["weight"].grad,
                bias=named.get("bias"), bias_grad=None if named.get("bias") is None else named["bias"].grad,
                n_params=sum(p.numel() for p in layer.parameters()))


def _q2_weight_shapes(cls: type, p: int, n_in: int, n_out: int) -> list[tuple | None]:
    """The shape of ``weight`` in rank 0..p-1's layer, built without communication (in the
    answer process: it runs the learner's constructor), up to the first that fails."""
    linear = nn.Linear(n_in, n_out)
    shapes = []
    for r in range(p):
        try:
            layer = cls(linear, r, p, reduce_from_tp)
            wt = dict(layer.named_parameters()).get("weight")
            shapes.append(tuple(wt.shape) if wt is not None else None)
        except Exception:  # e.g. it asks comm for the world size: the run on real ranks will tell
            break
    return shapes


def _q2_shapes_first(cls: type, p: int, n_in: int, n_out: int) -> None:
    """Name a wrong split before a forward pass crashes on mismatched shapes."""
    k = n_in // p
    for r, shape in enumerate(isolation.run(_q2_weight_shapes, cls, p, n_in, n_out)):
        if shape == (n_out // p, n_in) and shape != (n_out, k):
            raise CheckFailed(Q2, f"rank {r} holds rows of the weight (output features): the row-parallel layer "
                              f"splits the input features, the columns linear.weight[:, {r * k}:{(r + 1) * k}]")


@own_work(Q2, forbid=("course_lib.tensor_parallel", "course_lib.sequence_parallel", "course_lib.tp_gpt", "torch.distributed"))
def check_row_parallel_linear(cls: type, world_sizes: tuple[int, ...] = (2,), n_in: int = 8, n_out: int = 6,
                              rows: int = 5) -> None:
    """``cls(linear, rank, world_size, reduce)`` holds columns ``[r k, (r+1) k)`` of
    ``linear.weight`` (k = in / t) and the whole bias; ``forward(x_r)`` returns
    ``reduce(x_r W_r^T) + b``, equal to ``linear(X)`` on every rank, with gradients equal to
    the blocks of the single-process ones."""
    if not isolation.subclass_of(cls, nn.Module):
        raise CheckFailed(Q2, f"expected your class RowParallelLinear (an nn.Module), got {cls!r}")
    for p in world_sizes:
        _q2_shapes_first(cls, p, n_in, n_out)
        seed = 3 + p
        torch.manual_seed(seed)
        linear = nn.Linear(n_in, n_out)
        X = torch.randn(rows, n_in).requires_grad_()
        want = linear(X)
        want.square().sum().backward()
        k = n_in // p
        res = run_learner(Q2, functools.partial(_q2_rank, cls), p, [(n_in, n_out, rows, seed)] * p,
                          deadlock_hint=_DEADLOCK + " Call reduce(...) exactly once in forward, on every rank.")
        for r, (o, _) in enumerate(res):
            wt = o["weight"]
            expect(wt is not None and isinstance(wt, nn.Parameter), Q2,
                   f"rank {r}: the layer has no parameter named weight; store the shard as self.weight = nn.Parameter(...)")
            if wt.shape == (n_out // p, n_in) and wt.shape != (n_out, k):
                raise CheckFailed(Q2, f"rank {r} holds rows of the weight (output features): the row-parallel layer "
                                  f"splits the input features, the columns linear.weight[:, {r * k}:{(r + 1) * k}]")
            expect(wt.shape == (n_out, k), Q2, f"rank {r}: weight shard has shape {tuple(wt.shape)}, expected "
                   f"({n_out}, {k}): the columns [{r * k}, {(r + 1) * k}) of the ({n_out}, {n_in}) weight")
            cols = linear.weight.detach()[:, r * k:(r + 1) * k]
            if not torch.allclose(wt.detach(), cols):
                owner = next((q for q in range(p) if torch.allclose(wt.detach(), linear.weight.detach()[:, q * k:(q + 1) * k])), None)
                raise CheckFailed(Q2, f"rank {r} holds " + (f"rank {owner}'s columns" if owner is not None else
                                  "a weight that is not a column block of linear.weight") +
                                  f": rank r takes linear.weight[:, r*k:(r+1)*k], here [{r * k}, {(r + 1) * k})")
            b = linear.bias.detach()
            y = o["y"]
            expect(y.shape == want.shape, Q2, f"rank {r}: output shape {tuple(y.shape)}, expected {tuple(want.shape)}")
            if torch.allclose(y, want.detach() + (p - 1) * b, atol=1e-5) and p > 1:
                raise CheckFailed(Q2, f"rank {r}'s output has the bias {p} times: add the bias once, after the "
                                  "all-reduce (reduce), not to each rank's partial product")
            partial = X.detach()[:, r * k:(r + 1) * k] @ cols.T
            if p > 1 and (torch.allclose(y, partial + b, atol=1e-5) or torch.allclose(y, partial, atol=1e-5)):
                raise CheckFailed(Q2, f"rank {r}'s output is its own partial product x_r W_r^T: pass it through "
                                  "reduce(...) (g) to sum over the ranks, then add the bias")
            expect(torch.allclose(y, want.detach(), atol=1e-5), Q2,
                   f"rank {r}: output differs from the single-process layer by {(y - want.detach()).abs().max():.3g}")
            expect(o["fwd"] == {"all_reduce": y.numel() * 4}, Q2,
                   f"rank {r}: forward sent {o['fwd'] or 'nothing'}; a row-parallel layer sends one all-reduce of its "
                   f"output ({y.numel() * 4} bytes) through reduce(...)")
            expect(o["bwd"] == {}, Q2, f"rank {r}: backward sent {o['bwd']}; through g the gradient needs no communication")
            expect(o["weight_grad"] is not None and torch.allclose(o["weight_grad"], linear.weight.grad[:, r * k:(r + 1) * k], atol=1e-5),
                   Q2, f"rank {r}: the weight gradient is not the column block of the single-process one; compute the "
                   "output with F.linear(x, self.weight) so autograd sees the shard")
            expect(o["bias"] is not None and o["bias"].shape == (n_out,) and o["bias_grad"] is not None
                   and torch.allclose(o["bias_grad"], linear.bias.grad, atol=1e-5), Q2,
                   f"rank {r}: the bias must be the whole (replicated) bias as an nn.Parameter, its gradient equal to "
                   "the single-process one")
            expect(o["dx"] is not None and torch.allclose(o["dx"], X.grad[:, r * k:(r + 1) * k], atol=1e-5), Q2,
                   f"rank {r}: dL/dx_r differs from the single-process block; is the output computed from x with autograd?")
    passed(Q2, f"world sizes {list(world_sizes)}, {n_in} -> {n_out}: equal to nn.Linear, one all-reduce forward")


# ----------------------------------------------------------------------------- Q3
def _q3_logits(n: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, vocab, generator=g)
    z[: n // 2, : vocab // 3] += 200.0  # exp(200) overflows float32: only a max-shifted sum survives
    targets = torch.randint(vocab, (n,), generator=g)
    return z, targets


def _q3_rank(fn, rank: int, world_size: int, case: tuple) -> dict:
    n, vocab, seed = case
    z, y = _q3_logits(n, vocab, seed)
    start, end = vocab_range(vocab, rank, world_size)
    comm.reset_stats()
    with torch.no_grad():
        loss = fn(z[:, start:end].clone(), y.clone(), start)
    return dict(loss=loss, stats=comm.get_stats())


def _local_max_variant(z: torch.Tensor, y: torch.Tensor, p: int) -> float:
    """What the loss comes out as when each rank subtracts its own max (not reduced)."""
    ranges = [vocab_range(z.shape[1], r, p) for r in range(p)]
    m = [z[:, a:b].max(dim=1).values for a, b in ranges]
    s = sum((z[:, a:b] - mr[:, None]).exp().sum(dim=1) for (a, b), mr in zip(ranges, m))
    owner = torch.tensor([next(r for r, (a, b) in enumerate(ranges) if a <= int(t) < b) for t in y])
    m_owner = torch.stack(m)[owner, torch.arange(len(y))]
    return (s.log() - (z[torch.arange(len(y)), y] - m_owner)).mean().item()


@own_work(Q3, forbid=("course_lib.tensor_parallel", "course_lib.sequence_parallel", "course_lib.tp_gpt", "torch.distributed"))
def check_vocab_parallel_cross_entropy(fn, world_sizes: tuple[int, ...] = (2,), n: int = 12, vocab: int = 10) -> None:
    """``fn(logits_shard, targets, start)`` on rank r, with the logits of token ids
    ``[start, start + logits_shard.shape[1])``, must return ``F.cross_entropy`` of the full
    logits on every rank, sending at most 3 all-reduces of n floats (never the logits)."""
    if not callable(fn):
        raise CheckFailed(Q3, f"expected your function vocab_parallel_cross_entropy, got {fn!r}")
    if len(inspect.signature(fn).parameters) != 3:
        raise CheckFailed(Q3, "vocab_parallel_cross_entropy takes (logits_shard, targets, start)")
    for p in world_sizes:
        seed = 11 + p
        z, y = _q3_logits(n, vocab, seed)
        want = F.cross_entropy(z, y).item()
        res = run_learner(Q3, functools.partial(_q3_rank, fn), p, [(n, vocab, seed)] * p,
                          deadlock_hint=_DEADLOCK + " Every rank reduces the max, the sum of exponentials and the "
                          "target logit, even a rank that owns none of the targets.")
        for r, (o, _) in enumerate(res):
            loss, stats = o["loss"], o["stats"]
            calls = dict(stats.collective_calls)
            gathered = sorted(set(calls) - {"all_reduce"})
            expect(not gathered, Q3, f"rank {r} called {gathered}: never gather the logits; reduce three numbers per "
                   "token with comm.all_reduce (max with op=comm.ReduceOp.MAX, sum of exp, target logit)")
            expect(stats.collective_bytes["all_reduce"] <= 3 * 4 * n + 8, Q3,
                   f"rank {r} all-reduced {stats.collective_bytes['all_reduce']} bytes; three vectors of {n} floats "
                   f"({3 * 4 * n} bytes) suffice: do not all-reduce (B T, V/t) tensors")
            expect(calls.get("all_reduce", 0) >= 1 or p == 1, Q3,
                   f"rank {r} sent nothing through comm.all_reduce; torch.distributed's own calls are not counted")
            expect(isinstance(loss, torch.Tensor) and loss.numel() == 1, Q3,
                   f"rank {r} returned {type(loss).__name__}; return the mean loss as a 0-d tensor")
            v = loss.item()
            if v != v or abs(v) == float("inf"):
                raise CheckFailed(Q3, f"rank {r}'s loss is {v}: exp overflowed. Subtract the max over the whole "
                                  "vocabulary (comm.all_reduce(m, op=comm.ReduceOp.MAX)) before exp")
            if abs(v - _local_max_variant(z, y, p)) < 1e-3 and abs(v - want) > 1e-3:
                raise CheckFailed(Q3, f"rank {r} used its own max: all-reduce the max with op=comm.ReduceOp.MAX so "
                                  "every rank subtracts the same m_n before summing exponentials")
            expect(abs(v - want) < 1e-4, Q3,
                   f"rank {r}'s loss is {v:.6g}, the full cross-entropy is {want:.6g}. The target logit must come "
                   "only from the rank whose range [start, start + V_r) holds the target id (0 on the others, then "
                   "SUM), and the loss is log(sum exp(z - m)) - (z_target - m), averaged over tokens")
    passed(Q3, f"world sizes {list(world_sizes)}, vocabulary {vocab}: equal to F.cross_entropy, 3 all-reduces of {n} floats")
