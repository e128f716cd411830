"""Pipeline parallelism on real ranks: cut the GPT into stages, run any schedule with point-to-point calls.

The GPT is a chain of L + 2 modules: ``embed``, ``blocks[0..L)``, ``head`` (+ loss). A pipeline of
S stages gives stage s the contiguous modules ``[a_s, b_s)`` (:func:`split_uniform`, or
:func:`split_balanced`: chapter 1's chain DP on measured per-module times). Stage s lives on rank
``s % p`` (v = S / p chunks per rank for interleaving).

:func:`run_schedule` executes one schedule of :mod:`course_lib.pipeline_schedules` on this rank:

* F(i, s): receive the activation (B_mb, T, C), run the stage's modules, keep input and output
  for the backward; the last stage computes ``loss_i / m`` (gradient accumulation: the mean of the
  m micro-batch means is the global batch's mean loss when micro-batches are equal);
* B(i, s): backpropagate the received output gradient; send the input gradient back. In a
  zero-bubble schedule B computes only dL/dx and the outputs' gradients of every parameterised
  module (``autograd.grad`` skips the weight gradients nobody asked for); W then turns each
  module's output gradient into its weight gradient (Qi et al. 2024, sec. 2);
* messages: ``comm.isend`` (or ``comm.send`` for a blocking schedule) and ``comm.recv``, tagged by
  (direction, micro-batch, sending stage), so each message lands where the schedule says.

With tied embeddings (``GPT.lm_head.weight is tok_emb.weight``) the first and the last stage each
hold a copy; :func:`sync_tied_grads` adds their gradients, so both copies take the same step
(Shoeybi et al. 2019 do the same with an all-reduce over the embedding group).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from course_lib import comm
from course_lib.allocation.chain_dp import chain_dp
from course_lib.allocation.problem import Device, Links, Module, Problem
from course_lib.model import GPT
from course_lib.pipeline_schedules import Action, Schedule, validate

Bounds = list[tuple[int, int]]


# ----------------------------------------------------------------------------- splitting
def module_names(n_layer: int) -> list[str]:
    """The chain the stages cut: ``['embed', 'block0', ..., 'head']``."""
    return ["embed"] + [f"block{i}" for i in range(n_layer)] + ["head"]


def split_uniform(n_layer: int, stages: int) -> Bounds:
    """Equal numbers of blocks per stage (the first n_layer % stages stages get one more); the
    embedding joins stage 0 and the head the last stage. Returns ``[(a_s, b_s)]`` over the chain."""
    if stages < 1 or n_layer < stages:
        raise ValueError(f"cannot give each of {stages} stages at least one of {n_layer} blocks; "
                         f"use at most {n_layer} stages or a deeper model")
    counts = [n_layer // stages + (s < n_layer % stages) for s in range(stages)]
    ends = np.cumsum(counts)
    bounds = [(0 if s == 0 else 1 + int(ends[s - 1]), 1 + int(ends[s])) for s in range(stages)]
    bounds[-1] = (bounds[-1][0], n_layer + 2)
    return bounds


def split_balanced(seconds: list[float], stages: int) -> Bounds:
    """Contiguous stages that minimise the slowest stage's time, ``min max_s sum_{j in s} t_j``,
    solved exactly by chapter 1's chain DP (:func:`course_lib.allocation.chain_dp`, objective
    "bottleneck") on equal devices and free links. ``seconds[j]`` is module j's measured time."""
    k = len(seconds)
    if stages < 1 or k < stages:
        raise ValueError(f"need 1 <= stages <= {k} modules, got stages={stages}")
    if any(not t > 0 for t in seconds):
        raise ValueError("every module time must be > 0 seconds; measure them with "
                         "course_lib.allocation.calibrate.profile_gpt")
    devices = tuple(Device(f"stage{s}", 1.0, 1e30) for s in range(stages))
    modules = tuple(Module(f"m{j}", float(t), 0.0) for j, t in enumerate(seconds))
    x = chain_dp(Problem(devices, modules, Links.uniform(stages, np.inf)), "bottleneck").assignment
    bounds = []
    for s in range(stages):
        idx = [j for j, d in enumerate(x) if d == s]
        if not idx:
            raise ValueError(f"the balanced split leaves stage {s} empty ({x}); use fewer stages")
        bounds.append((idx[0], idx[-1] + 1))
    return bounds


def stage_times(seconds: list[float], bounds: Bounds) -> list[float]:
    """Per stage, the sum of its modules' times: the slowest one paces the pipeline."""
    return [float(sum(seconds[a:b])) for a, b in bounds]


# ----------------------------------------------------------------------------- one stage
class StageChunk(nn.Module):
    """Modules ``[a, b)`` of the chain: ``forward(x, y, m)`` returns the activation, or, on the
    last stage, ``loss / m``."""

    def __init__(self, model: GPT, a: int, b: int) -> None:
        super().__init__()
        L = len(model.blocks)
        if not 0 <= a < b <= L + 2:
            raise ValueError(f"a stage covers modules [a, b) with 0 <= a < b <= {L + 2}, got [{a}, {b})")
        self.model_ref = [model]  # a list: not registered, so parameters() lists only our modules
        self.a, self.b, self.L = a, b, L
        mods: list[nn.Module] = []
        if a == 0:
            mods += [model.tok_emb, model.pos_emb]
        mods += list(model.blocks[max(a, 1) - 1:min(b, L + 1) - 1])
        if b == L + 2:
            mods += [model.ln_f, model.lm_head]
        self.parts = nn.ModuleList(mods)

    @property
    def is_first(self) -> bool:
        return self.a == 0

    @property
    def is_last(self) -> bool:
        return self.b == self.L + 2

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, m: int = 1) -> torch.Tensor:
        model = self.model_ref[0]
        h = model.embed(x) if self.is_first else x
        h = model.run_blocks(h, max(self.a, 1) - 1, min(self.b, self.L + 1) - 1)
        if not self.is_last:
            return h
        if y is None:
            raise ValueError("the last stage needs the targets y to compute the loss")
        return GPT.loss_fn(model.head(h), y) / m


def message_tag(a: Action, num_stages: int) -> int:
    """One tag per message: (micro-batch, sending stage, direction) -> int."""
    direction, mb, src = a.message()
    return (mb * num_stages + src) * 2 + (direction == "B")


# ----------------------------------------------------------------------------- executor
@dataclass
class StepRecord:
    """What one rank did in one step: its actions with start/end (perf_counter seconds), the loss
    (last stage only), and its activation memory."""

    rank: int
    events: list[tuple[Action, float, float]]
    loss: float | None
    peak_in_flight: int
    peak_saved_bytes: int
    saved_bytes: dict = field(default_factory=dict)  # (mb, stage) -> bytes autograd saved in F
    cpu_seconds: list = field(default_factory=list)  # per event: CPU time of this rank's thread in it


class SavedBytes:
    """Count the bytes autograd saves for backward (distinct storages, parameters excluded)."""

    def __init__(self, params: set[int]) -> None:
        self.params, self.seen = params, {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.params:
            self.seen[ptr] = t.untyped_storage().nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def _param_modules(chunk: nn.Module) -> list[nn.Module]:
    return [mod for mod in chunk.modules() if any(True for _ in mod.parameters(recurse=False))]


def run_schedule(schedule: Schedule, model: GPT, bounds: Bounds, x: torch.Tensor, y: torch.Tensor,
                 rank: int | None = None) -> StepRecord:
    """Run this rank's part of ``schedule`` for one step on the global batch ``(x, y)``, cut into
    ``schedule.m`` equal micro-batches. Leaves ``p.grad`` = the global batch's mean-loss gradient
    for every parameter of this rank's stages (call :func:`sync_tied_grads` next)."""
    validate(schedule)
    rank = comm.get_rank() if rank is None else rank
    S, m = schedule.num_stages, schedule.m
    if len(bounds) != S:
        raise ValueError(f"the schedule has {S} stages (p={schedule.p} x v={schedule.v}) but bounds "
                         f"lists {len(bounds)}; split the model with split_uniform(n_layer, {S})")
    if x.shape[0] % m:
        raise ValueError(f"batch of {x.shape[0]} rows cannot be cut into m={m} equal micro-batches; "
                         f"use a batch size that is a multiple of {m}")
    xs, ys = x.chunk(m), y.chunk(m)
    chunks = {s: StageChunk(model, *bounds[s]) for s in range(rank, S, schedule.p)}
    act_shape = (x.shape[0] // m, x.shape[1], model.config.n_embd)
    param_ptrs = {q.untyped_storage().data_ptr() for q in model.parameters()}

    # Zero bubble: remember every parameterised module's output, so that B can ask for their
    # gradients and W can turn them into weight gradients later.
    recording: list | None = None
    hooks = []
    if schedule.split_backward:
        for chunk in chunks.values():
            for mod in _param_modules(chunk):
                hooks.append(mod.register_forward_hook(
                    lambda mod, args, out: recording.append((mod, out)) if recording is not None else None))

    inputs: dict[tuple[int, int], torch.Tensor] = {}
    outputs: dict[tuple[int, int], torch.Tensor] = {}
    out_grads: dict[tuple[int, int], torch.Tensor] = {}
    in_grads: dict[tuple[int, int], torch.Tensor] = {}
    leaf_outputs: dict[tuple[int, int], list] = {}
    leaf_grads: dict[tuple[int, int], tuple] = {}
    saved: dict[tuple[int, int], int] = {}
    works, events, cpu = [], [], []
    loss_sum = 0.0
    live = peak = live_bytes = peak_bytes = 0

    def send(t: torch.Tensor, a: Action) -> None:
        tag = message_tag(a, S)
        if schedule.blocking_sends:
            comm.send(t, a.peer, tag=tag)
        else:
            works.append(comm.isend(t, a.peer, tag=tag))

    try:
        for a in schedule.ranks[rank]:
            key = (a.mb, a.stage)
            t0, c0 = time.perf_counter(), time.thread_time()
            if a.kind == "RECV_F":
                buf = torch.empty(act_shape)
                comm.recv(buf, a.peer, tag=message_tag(a, S))
                inputs[key] = buf.requires_grad_()
            elif a.kind == "F":
                chunk = chunks[a.stage]
                inp = xs[a.mb] if chunk.is_first else inputs[key]
                counter = SavedBytes(param_ptrs)
                recording = [] if schedule.split_backward else None
                with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
                    out = chunk(inp, ys[a.mb] if chunk.is_last else None, m)
                if recording is not None:
                    leaf_outputs[key], recording = recording, None
                outputs[key] = out
                if chunk.is_last:
                    loss_sum += out.item()
                saved[key] = counter.total
                live, live_bytes = live + 1, live_bytes + counter.total
                peak, peak_bytes = max(peak, live), max(peak_bytes, live_bytes)
            elif a.kind == "SEND_F":
                send(outputs[key].detach(), a)
            elif a.kind == "RECV_B":
                buf = torch.empty(act_shape)
                comm.recv(buf, a.peer, tag=message_tag(a, S))
                out_grads[key] = buf
            elif a.kind == "B":
                out, g = outputs[key], out_grads.pop(key, None)
                has_input = key in inputs
                if not schedule.split_backward:
                    torch.autograd.backward(out, g)
                    if has_input:
                        in_grads[key] = inputs.pop(key).grad
                    del outputs[key]
                    live, live_bytes = live - 1, live_bytes - saved[key]
                else:
                    wrt = ([inputs[key]] if has_input else []) + [o for _, o in leaf_outputs[key]]
                    grads = torch.autograd.grad(out, wrt, g, retain_graph=True, allow_unused=True)
                    if has_input:
                        in_grads[key] = grads[0]
                    leaf_grads[key] = grads[1:] if has_input else grads
            elif a.kind == "SEND_B":
                send(in_grads.pop(key), a)
            elif a.kind == "W":
                # Per module, from its output and the gradient B saved for it to its own parameters:
                # only the local products (dW = dy^T x, db, dgamma, ...) run. One call per module,
                # not one for all: from a module's output autograd would also reach earlier modules.
                for (mod, o), do in zip(leaf_outputs.pop(key), leaf_grads.pop(key)):
                    if do is None:
                        continue
                    params = [q for q in mod.parameters(recurse=False) if q.requires_grad]
                    for q, gq in zip(params, torch.autograd.grad(o, params, do, retain_graph=True)):
                        q.grad = gq if q.grad is None else q.grad + gq
                outputs.pop(key)
                inputs.pop(key, None)
                live, live_bytes = live - 1, live_bytes - saved[key]
            events.append((a, t0, time.perf_counter()))
            cpu.append(time.thread_time() - c0)
        for w in works:
            w.wait()
    finally:
        for h in hooks:
            h.remove()
    last = any(c.is_last for c in chunks.values())
    return StepRecord(rank, events, loss_sum if last else None, peak, peak_bytes, saved, cpu)


def sync_tied_grads(model: GPT, schedule: Schedule, rank: int | None = None) -> None:
    """With tied embeddings, rank of stage 0 and rank of the last stage swap their gradients of
    the shared matrix and both keep the sum (nothing to do if one rank holds both)."""
    if not model.config.tie_weights:
        return
    rank = comm.get_rank() if rank is None else rank
    first, last = schedule.rank_of(0), schedule.rank_of(schedule.num_stages - 1)
    if first == last or rank not in (first, last):
        return
    w = model.tok_emb.weight
    g = w.grad if w.grad is not None else torch.zeros_like(w)
    other = torch.empty_like(g)
    peer = last if rank == first else first
    reqs = [comm.isend(g.contiguous(), peer), comm.irecv(other, peer)]
    for r in reqs:
        r.wait()
    w.grad = g + other


def owned_parameters(model: GPT, bounds: Bounds, schedule: Schedule, rank: int) -> dict[str, nn.Parameter]:
    """Name -> parameter for the parameters of this rank's stages."""
    mine = {id(q) for s in range(rank, schedule.num_stages, schedule.p)
            for q in StageChunk(model, *bounds[s]).parameters()}
    return {n: q for n, q in model.named_parameters() if id(q) in mine}
