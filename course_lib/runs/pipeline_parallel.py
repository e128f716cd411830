"""Pipeline-parallel training runs: our schedules, the single-process reference, and PyTorch's pipelining;
then the measured runs against the simulator's predictions.

    launch(train_pipeline, 4, config=cfg, schedule="1f1b", m=8, steps=3)

Every rank builds the same seeded GPT and keeps only its stages' parameters busy; the optimizer
(AdamW) skips parameters whose gradient is None, so each rank updates exactly its own.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from course_lib import comm
from course_lib.model import GPT, GPTConfig
from course_lib.pipeline_parallel import (Bounds, StageChunk, StepRecord, owned_parameters, run_schedule,
                                          split_uniform, stage_times, sync_tied_grads)
from course_lib.pipeline_schedules import Action, Cost, Schedule, Timeline, make_schedule, simulate
from course_lib.train import make_optimizer


def make_batches(config: GPTConfig, batch_size: int, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` seeded random (x, y) token batches of shape (batch_size, block_size)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.block_size)
    return [(torch.randint(config.vocab_size, shape, generator=g),
             torch.randint(config.vocab_size, shape, generator=g)) for _ in range(steps)]


def build_model(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def train_reference(config: GPTConfig, m: int, steps: int = 1, batch_size: int = 8, lr: float = 1e-2,
                    seed: int = 0) -> dict:
    """Single process, gradient accumulation over m micro-batches: ``loss = sum_i loss_i / m``.
    Returns per-step losses, the first step's gradients and the final parameters, by name."""
    model = build_model(config, seed)
    opt = make_optimizer(model, lr=lr)
    losses, grads = [], None
    for x, y in make_batches(config, batch_size, steps, seed):
        model.zero_grad(set_to_none=True)
        total = 0.0
        for xi, yi in zip(x.chunk(m), y.chunk(m)):
            _, loss = model(xi, yi)
            (loss / m).backward()
            total += loss.item() / m
        if grads is None:
            grads = {n: q.grad.clone() for n, q in model.named_parameters()}
        opt.step()
        losses.append(total)
    return {"losses": losses, "grads": grads,
            "params": {n: q.detach().clone() for n, q in model.named_parameters()}}


def train_pipeline(rank: int, world_size: int, *, config: GPTConfig, schedule: str = "1f1b", m: int = 4,
                   v: int = 2, steps: int = 1, batch_size: int = 8, lr: float = 1e-2, seed: int = 0,
                   bounds: Bounds | None = None, warmup: int = 0) -> dict:
    """Train ``steps`` steps with the named schedule on p = world_size ranks. Returns, for this rank,
    per-step losses (last stage), the first step's gradients and final parameters of its stages,
    and the last step's :class:`~course_lib.pipeline_parallel.StepRecord` (events, memory).
    ``warmup`` extra steps run first on the same batch and are not counted (timing runs)."""
    sched = make_schedule(schedule, world_size, m, v)
    bounds = bounds or split_uniform(config.n_layer, sched.num_stages)
    model = build_model(config, seed)
    opt = make_optimizer(model, lr=lr)
    batches = make_batches(config, batch_size, steps, seed)
    for _ in range(warmup):
        run_schedule(sched, model, bounds, *batches[0])
        model.zero_grad(set_to_none=True)
    mine = owned_parameters(model, bounds, sched, rank)
    losses, grads, record = [], None, None
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        comm.barrier()  # a common start line, so the ranks' timestamps share an origin
        record = run_schedule(sched, model, bounds, x, y)
        sync_tied_grads(model, sched)
        if grads is None:
            grads = {n: q.grad.clone() for n, q in mine.items() if q.grad is not None}
        opt.step()
        losses.append(record.loss)
    return {"losses": losses, "grads": grads, "record": record,
            "params": {n: q.detach().clone() for n, q in mine.items()}}


def train_pipelines(rank: int, world_size: int, *, schedules: list[str], **kwargs) -> dict[str, dict]:
    """:func:`train_pipeline` once per schedule in one launch (the same seeded start each time);
    also returns each run's communication counters."""
    out = {}
    for name in schedules:
        comm.reset_stats()
        res = train_pipeline(rank, world_size, schedule=name, **kwargs)
        st = comm.get_stats()
        res["sent_bytes"], res["sent_messages"] = st.sent_bytes, st.sent_messages
        out[name] = res
    return out


# ----------------------------------------------------------------------------- PyTorch's pipelining
class _TorchStage(nn.Module):
    """One stage for ``torch.distributed.pipelining.PipelineStage``: returns logits on the last stage."""

    def __init__(self, model: GPT, a: int, b: int) -> None:
        super().__init__()
        self.chunk = StageChunk(model, a, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, model = self.chunk, self.chunk.model_ref[0]
        h = model.embed(x) if c.is_first else x
        h = model.run_blocks(h, max(c.a, 1) - 1, min(c.b, c.L + 1) - 1)
        return model.head(h) if c.is_last else h


TORCH_SCHEDULES = ("ScheduleGPipe", "Schedule1F1B", "ScheduleInterleaved1F1B", "ScheduleLoopedBFS",
                   "ScheduleInterleavedZeroBubble", "ScheduleZBVZeroBubble", "ScheduleDualPipeV")
V_SHAPED = ("ScheduleZBVZeroBubble", "ScheduleDualPipeV")  # rank r holds stages r and 2p-1-r


def torch_pipeline_loss(rank: int, world_size: int, *, config: GPTConfig, schedule: str = "Schedule1F1B",
                        m: int = 4, v: int = 1, batch_size: int = 8, seed: int = 0) -> dict:
    """One step of ``torch.distributed.pipelining`` on the same stages and batch: returns the mean
    micro-batch loss (last stage) and the gradients of this rank's parameters (summed over the
    tied copies, as ours), for comparison with :func:`train_pipeline`. Looped schedules put stage s
    on rank s % p (v per rank); V-shaped ones (ZBV, DualPipeV) put stages r and 2p-1-r on rank r."""
    # Imported here: torch.distributed.pipelining pulls in torch._dynamo, as slow to import as torch itself
    # (python -X importtime), and only this comparison needs it.
    from torch.distributed import pipelining as tpp

    if schedule not in TORCH_SCHEDULES:
        raise ValueError(f"schedule must be one of {TORCH_SCHEDULES}, got {schedule!r}")
    multi = schedule not in ("ScheduleGPipe", "Schedule1F1B")
    if schedule in V_SHAPED:
        v = 2
    S = world_size * (v if multi else 1)
    bounds = split_uniform(config.n_layer, S)
    model = build_model(config, seed)
    x, y = make_batches(config, batch_size, 1, seed)[0]
    mine = [rank, S - 1 - rank] if schedule in V_SHAPED else list(range(rank, S, world_size))
    stages = [tpp.PipelineStage(_TorchStage(model, *bounds[s]), s, S, torch.device("cpu")) for s in mine]

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return GPT.loss_fn(logits, target)

    cls = getattr(tpp, schedule)
    sched = cls(stages if multi else stages[0], n_microbatches=m, loss_fn=loss_fn)
    last = any(s == S - 1 for s in mine)
    losses: list = []
    t0 = time.perf_counter()
    if 0 in mine:
        sched.step(x, target=y if last else None, losses=losses if last else None)
    elif last:
        sched.step(target=y, losses=losses)
    else:
        sched.step()
    seconds = time.perf_counter() - t0
    if schedule not in V_SHAPED:  # V-shaped: the first and the last stage share rank 0 and the matrix
        sync_tied_grads(model, Schedule("torch", world_size, m, S // world_size, [[] for _ in range(world_size)]))
    mine = {id(q) for st in stages for q in st.submod.parameters()}
    if schedule in V_SHAPED and model.config.tie_weights:
        # Rank 0 holds both stages that use the tied matrix, and PyTorch divides each stage's
        # gradients by m after the step: the shared one twice. Compare the untied parameters only.
        mine.discard(id(model.tok_emb.weight))
    grads = {n: q.grad.clone() for n, q in model.named_parameters() if id(q) in mine and q.grad is not None}
    loss = float(torch.stack([l.detach() for l in losses]).mean()) if losses else None
    return {"loss": loss, "grads": grads, "seconds": seconds}


def torch_pipeline_losses(rank: int, world_size: int, *, schedules: tuple[str, ...] = TORCH_SCHEDULES,
                          **kwargs) -> dict[str, dict]:
    """:func:`torch_pipeline_loss` for each named PyTorch schedule, in one launch."""
    return {name: torch_pipeline_loss(rank, world_size, schedule=name, **kwargs) for name in schedules}


# ----------------------------------------------------------------------------- measured vs predicted
def measured_timeline(schedule: Schedule, records: list[StepRecord]) -> Timeline:
    """The ranks' measured events as one :class:`Timeline`, time 0 = the earliest start (all
    ranks read the same monotonic clock: they run on one machine)."""
    if len(records) != schedule.p:
        raise ValueError(f"need one StepRecord per rank ({schedule.p}), got {len(records)}")
    t0 = min(e[1] for rec in records for e in rec.events)
    events = [[(a, s - t0, e - t0) for a, s, e in rec.events] for rec in records]
    return Timeline(schedule, events, [rec.peak_in_flight for rec in records])


def replay_cpu_costs(schedule: Schedule, records: list[StepRecord], message_seconds: float = 0.0) -> Timeline:
    """The run as it would have gone with one core per rank: simulate ``schedule`` with each compute
    action lasting the CPU time its rank's thread actually spent in it (a measured cost that does
    not grow when ranks share a core, unlike wall time) and each message ``message_seconds``."""
    cpu = {a: c for rec in records for (a, _, _), c in zip(rec.events, rec.cpu_seconds) if a.is_compute}

    def cost(a: Action, sched: Schedule) -> float:
        return cpu[a] if a.is_compute else (message_seconds if a.kind.startswith("RECV") else 0.0)
    return simulate(schedule, cost)


def cost_model(seconds: list[float], bounds: Bounds, message_seconds: float = 0.0,
               backward_share: float = 2 / 3) -> Cost:
    """Predict each action's time from chapter 1's calibration: stage s takes
    t_s = sum of its modules' measured forward+backward seconds (on one micro-batch), F is
    (1 - backward_share) t_s and B the rest (t_B = 2 t_F: the backward computes two products per
    forward one, Kaplan et al. 2020); split, B and W take half of it each; a message
    ``message_seconds`` (alpha + bytes * beta of chapter 3)."""
    stage = stage_times(seconds, bounds)

    def cost(a: Action, schedule: Schedule) -> float:
        t = stage[a.stage]
        if a.kind == "F":
            return (1 - backward_share) * t
        if a.kind == "B":
            return backward_share * t / (2 if schedule.split_backward else 1)
        if a.kind == "W":
            return backward_share * t / 2
        return message_seconds if a.kind.startswith("RECV") else 0.0
    return cost


def profile_stages(model: GPT, bounds: Bounds, x: torch.Tensor, y: torch.Tensor, m: int,
                   repeats: int = 5) -> list[tuple[float, float]]:
    """Per stage, (t_F, t_B) of one micro-batch of ``(x, y)`` cut in m, in CPU seconds of this thread
    (the minimum over ``repeats`` runs after one warm-up): what the stage itself costs, unaffected by
    other processes sharing the core. Feed it to :func:`stage_cost_model`."""
    xi, yi = x.chunk(m)[0], y.chunk(m)[0]
    h, out = xi, []
    for a, b in bounds:
        chunk = StageChunk(model, a, b)
        fs, bs = [], []
        for _ in range(repeats + 1):
            inp = h if chunk.is_first else h.detach().requires_grad_()
            c0 = time.thread_time()
            o = chunk(inp, yi if chunk.is_last else None, m)
            c1 = time.thread_time()
            o.backward(None if chunk.is_last else torch.ones_like(o))
            fs.append(c1 - c0)
            bs.append(time.thread_time() - c1)
        model.zero_grad(set_to_none=True)
        out.append((min(fs[1:]), min(bs[1:])))
        h = o.detach()
    return out


def stage_cost_model(stage_costs: list[tuple[float, float]], message_seconds: float = 0.0) -> Cost:
    """Cost function for the simulator from measured per-stage (t_F, t_B) (:func:`profile_stages`);
    a split backward gives B and W half of t_B each; a message costs ``message_seconds``."""
    def cost(a: Action, schedule: Schedule) -> float:
        t_f, t_b = stage_costs[a.stage]
        if a.kind == "F":
            return t_f
        if a.kind in ("B", "W"):
            return t_b / 2 if schedule.split_backward else t_b
        return message_seconds if a.kind.startswith("RECV") else 0.0
    return cost


def module_seconds(model: GPT, x: torch.Tensor, y: torch.Tensor, m: int, repeats: int = 5) -> list[float]:
    """Per module of the chain (embed, blocks, head), forward + backward CPU seconds on one micro-batch:
    :func:`profile_stages` with one module per stage. The CPU-time counterpart of chapter 1's
    ``calibrate.profile_gpt`` (wall time), for :func:`split_balanced` on a busy machine."""
    chain = [(j, j + 1) for j in range(len(model.blocks) + 2)]
    return [t_f + t_b for t_f, t_b in profile_stages(model, chain, x, y, m, repeats)]
