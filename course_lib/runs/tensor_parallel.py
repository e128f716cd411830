"""Tensor-parallel GPT runs: the same batches through the single-process GPT and its
tensor-parallel shards, compared number by number, with every collective counted per stage.

    res = launch(compare_tp, 2, config=cfg, batch_size=8, steps=20, lr=1e-3)
    res[0]["max_diff"]        # logits, loss, gradients at step 0; parameters after `steps`
    res[0]["comm"]            # bytes and calls per stage: embed / block i / head, fwd and bwd
    launch(measure_comm_per_stage, 4, config=cfg, batch_size=8, sequence_parallel=True)
    launch(compare_torch_tp, 2, config=cfg)   # PyTorch's torch.distributed.tensor.parallel, same weights
"""
from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel, SequenceParallel,
                                               loss_parallel, parallelize_module)

from course_lib import comm
from course_lib.configs import mlp_config
from course_lib.data import get_batch, load_dataset
from course_lib.model import GPT, MLP, GPTConfig
from course_lib.sequence_parallel import seq_range
from course_lib.tensor_parallel import (ParallelMLP, comm_bytes_by_op, param_count_per_rank,
                                        vocab_parallel_cross_entropy)
from course_lib.tp_gpt import TensorParallelGPT, gather_dim, saved_activation_bytes, unshard
from course_lib.train import make_optimizer, train_step


def _snapshot() -> dict:
    s = comm.get_stats()
    return dict(bytes=sum(s.collective_bytes.values()), calls=dict(s.collective_calls),
                by_op=dict(s.collective_bytes))


def staged_forward_backward(model: TensorParallelGPT, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Forward then backward one stage at a time (embedding, each block, head + loss), with the
    communication counters read after each: ``{"embed_fwd": ..., "block0_bwd": ...}``.
    The gradients it leaves are those of ``loss.backward()`` on the whole model."""
    stats: dict[str, dict] = {}
    comm.reset_stats()
    h0 = model.embed(x)
    stats["embed_fwd"] = _snapshot()
    ins, outs, h = [], [], h0
    for i, block in enumerate(model.blocks):
        inp = h.detach().requires_grad_()
        comm.reset_stats()
        h = block(inp)
        stats[f"block{i}_fwd"] = _snapshot()
        ins.append(inp)
        outs.append(h)
    inp = h.detach().requires_grad_()
    comm.reset_stats()
    logits = model.head(inp)
    loss = vocab_parallel_cross_entropy(logits, y, model.vocab_start)
    stats["head_fwd"] = _snapshot()
    comm.reset_stats()
    loss.backward()
    stats["head_bwd"] = _snapshot()
    grad = inp.grad
    for i in reversed(range(len(model.blocks))):
        comm.reset_stats()
        outs[i].backward(grad)
        stats[f"block{i}_bwd"] = _snapshot()
        grad = ins[i].grad
    comm.reset_stats()
    h0.backward(grad)
    stats["embed_bwd"] = _snapshot()
    comm.reset_stats()
    model.finish_grads()
    stats["finish_grads"] = _snapshot()
    return logits, loss.detach(), stats


def measure_comm_per_stage(rank: int, world_size: int, config: GPTConfig, batch_size: int = 8,
                           sequence_parallel: bool = False, seed: int = 0) -> dict:
    """Worker: one forward and backward of the TP (or TP+SP) GPT, stage by stage, with the bytes
    ``comm`` counted for each kind of collective (``counted``), next to the formula
    (``formula``, :func:`~course_lib.tensor_parallel.comm_bytes_by_op`; ``block_fwd`` there is
    every block's ``block{i}_fwd`` here)."""
    torch.manual_seed(seed)
    tp = TensorParallelGPT(GPT(config), rank, world_size, sequence_parallel=sequence_parallel)
    x, y = get_batch(load_dataset().train, batch_size, config.block_size, torch.Generator().manual_seed(seed + 1))
    _, _, stages = staged_forward_backward(tp, x, y)
    return dict(counted={stage: s["by_op"] for stage, s in stages.items()},
                formula=comm_bytes_by_op(config, batch_size, world_size, sequence_parallel=sequence_parallel))


def compare_tp(rank: int, world_size: int, config: GPTConfig, batch_size: int = 8, steps: int = 20,
               lr: float = 1e-3, sequence_parallel: bool = False, seed: int = 0) -> dict:
    """Worker: train the GPT (with :func:`course_lib.train.train_step`) and its tensor-parallel
    version side by side on the same batches.

    Returns the maximum absolute differences (``max_diff``: logits, loss and every gradient at
    step 0, every parameter after ``steps`` AdamW steps, the largest loss gap along the way),
    the per-stage communication of step 0 (``comm``), parameters and activation bytes per rank.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (step 0 is the one compared in detail), got {steps!r}")
    data = load_dataset().train
    torch.manual_seed(seed)
    ref = GPT(config)
    tp = TensorParallelGPT(ref, rank, world_size, sequence_parallel=sequence_parallel)
    opt_ref, opt_tp = make_optimizer(ref, lr=lr), make_optimizer(tp, lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    diffs: dict[str, float] = {}
    losses_ref, losses_tp = [], []
    for step in range(steps):
        x, y = get_batch(data, batch_size, config.block_size, gen)
        if step == 0:
            with torch.no_grad():
                logits_ref, _ = ref(x)
        losses_ref.append(train_step(ref, opt_ref, x, y))  # leaves ref's gradients in p.grad
        tp.zero_grad(set_to_none=True)
        if step == 0:
            logits, loss, stages = staged_forward_backward(tp, x, y)
            full = gather_dim(logits, -1)
            grads = unshard(tp, grads=True)
            diffs["logits"] = (full - logits_ref).abs().max().item()
            diffs["loss"] = abs(loss.item() - losses_ref[0])
            diffs["grads"] = max((grads[n] - p.grad).abs().max().item() for n, p in ref.named_parameters())
            diffs["grad_by_param"] = {n: (grads[n] - p.grad).abs().max().item() for n, p in ref.named_parameters()}
        else:
            _, loss = tp(x, y)
            loss.backward()
            tp.finish_grads()
        losses_tp.append(loss.item())
        opt_tp.step()
    params = unshard(tp)
    diffs["params_after"] = max((params[n] - p.detach()).abs().max().item() for n, p in ref.named_parameters())
    diffs["loss_curve"] = max(abs(a - b) for a, b in zip(losses_ref, losses_tp))
    T = config.block_size
    h = torch.randn(batch_size, T // world_size if sequence_parallel else T, config.n_embd, requires_grad=True)
    _, act = saved_activation_bytes(tp, tp.blocks[0], h)
    return dict(max_diff=diffs, comm=stages, losses_ref=losses_ref, losses_tp=losses_tp,
                params=sum(p.numel() for p in tp.parameters()),
                params_formula=param_count_per_rank(config, world_size, rank)["total"],
                act_bytes_per_block=act)


def tp_with_dropout(rank: int, world_size: int, config: GPTConfig, batch_size: int = 8,
                    sequence_parallel: bool = False, seed: int = 0, dropout_seed: int = 0) -> dict:
    """Worker: one forward and backward of the TP (or TP+SP) GPT with ``config.dropout > 0``.
    Returns the full logits, the loss and every full gradient: with the same ``dropout_seed``
    they do not depend on t nor on sequence parallelism (:class:`~course_lib.tensor_parallel.KeyedDropout`)."""
    torch.manual_seed(seed)
    tp = TensorParallelGPT(GPT(config), rank, world_size, sequence_parallel=sequence_parallel,
                           dropout_seed=dropout_seed)
    x, y = get_batch(load_dataset().train, batch_size, config.block_size, torch.Generator().manual_seed(seed + 1))
    logits, loss = tp(x, y)
    loss.backward()
    tp.finish_grads()
    return dict(logits=gather_dim(logits, -1), loss=loss.item(), grads=unshard(tp, grads=True))


def pin_to_core(rank: int) -> int | None:
    """Bind this rank's process, every thread of it, to one core: ``rank mod cores``.

    A gloo collective wakes three threads per rank (the caller, gloo's worker thread, its TCP
    thread) several times. Left free, the scheduler often wakes them on the core where another
    rank is computing, so the collective waits for that rank's time slice and the computation
    is interrupted; bound, a rank's hand-offs stay on its own core. (torchrun and MPI launchers
    bind ranks to cores for the same reason.) Returns the core, or None where the system cannot
    bind (macOS)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    core = cores[rank % len(cores)]
    for tid in os.listdir("/proc/self/task"):  # threads started later inherit the caller's binding
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:  # a thread that ended meanwhile
            pass
    return core


def pinned(rank: int, world_size: int, worker, pin: bool = True, **kwargs):
    """Worker: ``worker(rank, world_size, **kwargs)``, this rank bound to its core first if ``pin``
    (:func:`pin_to_core`)."""
    if pin:
        pin_to_core(rank)
    return worker(rank, world_size, **kwargs)


def time_tp_step(rank: int, world_size: int, config: GPTConfig, batch_size: int = 8, steps: int = 10,
                 warmup: int = 2, sequence_parallel: bool = False, lr: float = 1e-3, pin: bool = True) -> dict:
    """Worker: this rank's seconds per training step (forward, backward, AdamW) of the
    tensor-parallel GPT, and how they split.

    Every step starts after a barrier (so steps never overlap) and ends when this rank's AdamW
    step returns; the step time of the group is the slowest rank's, ``max`` over ranks of
    ``times[i]`` (a closing barrier would add one more collective to every step). Per step
    also ``comm_times`` (seconds inside the collectives, from :mod:`course_lib.comm`'s timeline)
    and ``opt_times`` (the AdamW step), so that ``compute = step - comm - opt``, and
    ``cpu_times``, the CPU seconds of this thread in forward + backward (its computation,
    plus the little it spends handing tensors to gloo). Also the
    collective bytes of one step, the parameters and one block's saved activations. ``pin``:
    each rank bound to core ``rank mod cores`` (:func:`pin_to_core`)."""
    if pin:
        pin_to_core(rank)
    data = load_dataset().train
    torch.manual_seed(0)
    tp = TensorParallelGPT(GPT(config), rank, world_size, sequence_parallel=sequence_parallel)
    opt = make_optimizer(tp, lr=lr)
    gen = torch.Generator().manual_seed(1)
    times, comm_times, opt_times, cpu_times = [], [], [], []
    tracing = comm.tracing
    comm.tracing = True
    try:
        for i in range(warmup + steps):
            x, y = get_batch(data, batch_size, config.block_size, gen)
            comm.barrier()
            comm.reset_stats()
            c0, t0 = time.thread_time(), time.perf_counter()
            tp.zero_grad(set_to_none=True)
            _, loss = tp(x, y)
            loss.backward()
            tp.finish_grads()
            c1, t1 = time.thread_time(), time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            stats = comm.get_stats()
            if i >= warmup:
                times.append(t2 - t0)
                opt_times.append(t2 - t1)
                cpu_times.append(c1 - c0)
                comm_times.append(sum(end - start for op, _, start, end, _ in stats.trace
                                      if end is not None and op != "barrier"))
            step_bytes = sum(n for op, n in stats.collective_bytes.items() if op != "barrier")
    finally:
        comm.tracing = tracing
    T = config.block_size
    h = torch.randn(batch_size, T // world_size if sequence_parallel else T, config.n_embd, requires_grad=True)
    _, act = saved_activation_bytes(tp, tp.blocks[0], h)
    return dict(step_s=statistics.median(times), times=times, comm_times=comm_times, opt_times=opt_times,
                cpu_times=cpu_times,
                step_bytes=step_bytes, params=sum(p.numel() for p in tp.parameters()), act_bytes_per_block=act)


def time_tp_shard(rank: int, world_size: int, config: GPTConfig, t: int, batch_size: int = 8, steps: int = 10,
                  warmup: int = 2, pin: bool = True) -> dict:
    """Worker, on ONE process: rank 0's share of the degree-``t`` model, timed alone.

    With ``world_size == 1`` every ``f``, ``g`` and loss all-reduce is skipped, so this is the
    computation one rank of a degree-``t`` group does, without its communication and without
    other ranks on the machine: chapter 1's calibration applied to the shard. ``compute_s``
    (forward + backward) and ``optimizer_s`` (AdamW over the rank's shards) are medians of the
    CPU seconds of this thread: on an idle core that is the wall time, and unlike the wall time
    it does not grow when other processes take the core (a shared machine); the wall times
    per step are returned too. ``pin``: bound to one core, as the ranks of
    :func:`time_tp_step` are."""
    if world_size != 1:
        raise ValueError(f"time_tp_shard times one rank's computation without communication: "
                         f"launch it on 1 process (launch(time_tp_shard, 1, t={t}, ...)), got {world_size}")
    if pin:
        pin_to_core(rank)
    data = load_dataset().train
    torch.manual_seed(0)
    tp = TensorParallelGPT(GPT(config), 0, t)
    opt = make_optimizer(tp)
    gen = torch.Generator().manual_seed(1)
    compute, optim, wall = [], [], []
    for i in range(warmup + steps):
        x, y = get_batch(data, batch_size, config.block_size, gen)
        c0, t0 = time.thread_time(), time.perf_counter()
        tp.zero_grad(set_to_none=True)
        _, loss = tp(x, y)
        loss.backward()
        c1 = time.thread_time()
        opt.step()
        c2, t2 = time.thread_time(), time.perf_counter()
        if i >= warmup:
            compute.append(c1 - c0)
            optim.append(c2 - c1)
            wall.append(t2 - t0)
    return dict(compute_s=statistics.median(compute), optimizer_s=statistics.median(optim), wall_times=wall)


def torch_tp_plan(config: GPTConfig, blocks_only: bool = False, sequence_parallel: bool = False) -> dict:
    """The course GPT's tensor-parallel plan in PyTorch's words (``parallelize_module``).

    q, k, v and up_proj ``ColwiseParallel``; out_proj and down_proj ``RowwiseParallel``. Unless
    ``blocks_only``: the token embedding ``RowwiseParallel`` (rows of the table split: the
    vocabulary-parallel embedding) and the head ``ColwiseParallel`` with logits left split over
    the vocabulary (``Shard(-1)``, for ``loss_parallel``). With ``sequence_parallel``: the
    LayerNorms ``SequenceParallel`` (split along T, ``Shard(1)``), the row-parallel outputs and
    the embedding reduce-scattered to ``Shard(1)``, and attention, MLP and head inputs all-gathered
    (``PrepareModuleInput`` to ``Replicate()``).
    """
    seq = Shard(1) if sequence_parallel else Replicate()
    plan: dict = {}
    for i in range(config.n_layer):
        for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "mlp.up_proj"):
            plan[f"blocks.{i}.{name}"] = ColwiseParallel()
        for name in ("attn.out_proj", "mlp.down_proj"):
            plan[f"blocks.{i}.{name}"] = RowwiseParallel(output_layouts=seq)
        if sequence_parallel:
            for name in ("ln_1", "ln_2"):
                plan[f"blocks.{i}.{name}"] = SequenceParallel()
            for name in ("attn", "mlp"):
                plan[f"blocks.{i}.{name}"] = PrepareModuleInput(input_layouts=(seq,), desired_input_layouts=(Replicate(),))
    if not blocks_only:
        plan["tok_emb"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=seq)
        plan["lm_head"] = ColwiseParallel(input_layouts=seq, output_layouts=Shard(-1), use_local_output=False)
        if sequence_parallel:
            plan["ln_f"] = SequenceParallel()
    return plan


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def _max_diff(a: dict, b: dict) -> float:
    return max((_full(a[n]) - _full(b[n])).abs().max().item() for n in b)


def _against_torch(rank: int, t: int, mesh, config: GPTConfig, x: torch.Tensor, y: torch.Tensor,
                   sequence_parallel: bool, seed: int) -> dict:
    """The whole untied GPT under :func:`torch_tp_plan` with ``loss_parallel``, against the
    single-process GPT and the course's :class:`TensorParallelGPT`, same weights and batch."""
    torch.manual_seed(seed)
    ref = GPT(config)
    model = parallelize_module(copy.deepcopy(ref), mesh, torch_tp_plan(config, sequence_parallel=sequence_parallel))
    ours = TensorParallelGPT(ref, rank, t, sequence_parallel=sequence_parallel)
    logits_ref, loss_ref = ref(x, y)
    loss_ref.backward()
    logits_ours, loss_ours = ours(x, y)
    loss_ours.backward()
    ours.finish_grads()
    out: dict = {}
    if sequence_parallel:
        # The GPT adds pos_emb(arange(T)) to the embedding; under SP a rank holds T/t positions, so
        # the embedding stage is written out here, and pos_emb (a plain replicated parameter) gets
        # its partial gradient summed by hand, as the course's finish_grads does.
        lo, hi = seq_range(x.shape[1], rank, t)
        logits = model.head(model.run_blocks(model.tok_emb(x) + model.pos_emb(torch.arange(lo, hi))))
    else:
        logits, _ = model(x)
        try:
            F.cross_entropy(logits.flatten(0, 1), y.flatten())
            out["without_loss_parallel"] = "no error"
        except Exception as e:  # what PyTorch says when the loss meets Shard(-1) logits
            out["without_loss_parallel"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    with loss_parallel():
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
    if sequence_parallel and t > 1:
        comm.all_reduce(model.pos_emb.weight.grad)
    g_pt = {n: p.grad for n, p in model.named_parameters()}
    out.update(
        logits_vs_ref=(_full(logits) - logits_ref).abs().max().item(),
        loss_vs_ref=abs(_full(loss).item() - loss_ref.item()),
        grads_vs_ref=_max_diff(g_pt, {n: p.grad for n, p in ref.named_parameters()}),
        logits_vs_course=(_full(logits) - gather_dim(logits_ours, -1)).abs().max().item(),
        grads_vs_course=_max_diff(g_pt, unshard(ours, grads=True)),
        sharded=sorted(n for n, p in model.named_parameters()
                       if isinstance(p, DTensor) and any(isinstance(pl, Shard) for pl in p.placements)))
    return out


def compare_torch_tp(rank: int, world_size: int, config: GPTConfig, batch_size: int = 8, seed: int = 0) -> dict:
    """Worker: PyTorch's own tensor parallelism (``torch.distributed.tensor.parallel``) on the
    same weights and batch as the single-process GPT and the course's :class:`TensorParallelGPT`,
    on a CPU device mesh of ``world_size`` ranks (1 works: a one-rank mesh).

    * ``blocks``: the tied GPT, only the blocks split (Colwise/Rowwise); the embedding and the
      tied head replicated. (``parallelize_module`` replaces a module's parameters by DTensors,
      which would break the tie between tok_emb and lm_head, so the whole-model plans below use
      the untied GPT: ``tie_weights=False``.)
    * ``tp_full``: :func:`torch_tp_plan`: vocab-parallel embedding (``RowwiseParallel`` on the
      nn.Embedding), blocks, head split over the vocabulary with the loss under
      ``loss_parallel()``; ``loss_parallel`` repeats its loss and gradient differences, and
      ``without_loss_parallel`` holds PyTorch's error for the same loss without it.
    * ``sp_full``: the same with sequence parallelism (``SequenceParallel`` LayerNorms).

    Each gives the maximum differences of logits, loss and gradients against the
    single-process GPT (``*_vs_ref``) and against the course (``*_vs_course``).
    """
    mesh = init_device_mesh("cpu", (world_size,))
    x, y = get_batch(load_dataset().train, batch_size, config.block_size, torch.Generator().manual_seed(seed + 1))
    out: dict = {}

    # 1. blocks only: ColwiseParallel / RowwiseParallel, against the GPT and the course's TP GPT
    torch.manual_seed(seed)
    ref = GPT(config)
    model = parallelize_module(copy.deepcopy(ref), mesh, torch_tp_plan(config, blocks_only=True))
    ours = TensorParallelGPT(ref, rank, world_size)
    logits_ref, loss_ref = ref(x, y)
    loss_ref.backward()
    logits_pt, loss_pt = model(x, y)
    loss_pt.backward()
    logits_ours, loss_ours = ours(x, y)
    loss_ours.backward()
    g_pt = {n: p.grad for n, p in model.named_parameters()}
    out["blocks"] = dict(
        logits_vs_ref=(_full(logits_pt) - logits_ref).abs().max().item(),
        loss_vs_ref=abs(loss_pt.item() - loss_ref.item()),
        grads_vs_ref=_max_diff(g_pt, {n: p.grad for n, p in ref.named_parameters()}),
        logits_vs_course=(_full(logits_pt) - gather_dim(logits_ours, -1)).abs().max().item(),
        grads_vs_course=_max_diff(g_pt, unshard(ours, grads=True)),
        sharded=[n for n, p in model.named_parameters() if isinstance(p, DTensor)
                 and any(isinstance(pl, Shard) for pl in p.placements)])

    # 2. and 3. the whole untied model, without and with sequence parallelism
    untied = dataclasses.replace(config, tie_weights=False)
    out["tp_full"] = _against_torch(rank, world_size, mesh, untied, x, y, False, seed)
    out["without_loss_parallel"] = out["tp_full"].pop("without_loss_parallel")
    out["loss_parallel"] = {k: out["tp_full"][k] for k in ("loss_vs_ref", "grads_vs_ref")}
    out["sp_full"] = _against_torch(rank, world_size, mesh, untied, x, y, True, seed)
    return out


def time_parallel_mlp(rank: int, world_size: int, width: int = 256, batch: tuple[int, int] = (8, 64),
                      steps: int = 10, warmup: int = 2, pin: bool = True) -> dict:
    """Worker: seconds of forward + backward of one tensor-parallel MLP (width -> 4 width ->
    width) on a (B, T, width) input, from a common barrier to this rank's end (``times``; the
    group's time is the slowest rank's), and their median (``step_s``). ``pin``: as in
    :func:`time_tp_step`."""
    if pin:
        pin_to_core(rank)
    torch.manual_seed(0)
    mlp = ParallelMLP(MLP(mlp_config(width)), rank, world_size)
    x = torch.randn(*batch, width)
    times = []
    for i in range(warmup + steps):
        xi = x.clone().requires_grad_()
        comm.barrier()
        t0 = time.perf_counter()
        mlp(xi).square().mean().backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return dict(step_s=statistics.median(times), times=times)
