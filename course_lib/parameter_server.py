"""A parameter server over gloo processes: synchronous (BSP), bounded-staleness (SSP), async (ASP).

Ranks ``0 .. S-1`` are servers, each holding a contiguous slice of the flat parameter
vector ``w``; ranks ``S .. S+W-1`` are workers. A worker *pulls* ``w``, computes the gradient
of its shard of a batch and *pushes* it back (Li et al. 2014, OSDI, "Scaling Distributed
Machine Learning with the Parameter Server"). The consistency model is a parameter of the
same system (Ho et al. 2013, NIPS, "More Effective Distributed ML via a Stale Synchronous
Parallel Parameter Server"):

* BSP (``mode="sync"``):   ``w_{t+1} = w_t - eta (1/W) sum_k g_k(w_t)``  = large-batch SGD.
* ASP (``mode="async"``):  each push is applied on arrival,
  ``w_{v+1} = w_v - eta g_k(w_{v - tau})`` with staleness ``tau = v - (version k pulled)``
  (Downpour SGD, Dean et al. 2012; lock-free shared-memory analogue: Recht et al. 2011, Hogwild!).
* SSP (``mode="ssp"``, bound s): worker k may start its step c only when every worker has
  finished ``c - s`` steps (clock gap ``<= s``); s = infinity is ASP. Then
  ``tau <= (W - 1)(2 s + 1)`` (each other worker pushes at most 2s+1 times meanwhile).

Bytes per step (one gradient from each of the W workers, ``Psi`` float32 parameters):
each worker sends ``4 Psi`` and receives ``4 Psi``; each of the S servers receives and sends
``W 4 Psi / S``. One server's link grows linearly with W: the bottleneck that sharding
(S > 1) and all-reduce (chapter 3: ``2 (p-1)/p 4 Psi`` per rank) remove.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from course_lib import comm, ssp
from course_lib.collectives import chunk_bounds
from course_lib.configs import small_config
from course_lib.data import load_dataset, shard_batch
from course_lib.model import GPT, GPTConfig
from course_lib.ssp import SSPBook
from course_lib.update_rules import (batch_grad, flat_params, set_flat_params,
                                     step_batch)


# ----------------------------------------------------------------------------- problems
class Problem(Protocol):
    """What the server and workers need to know about the model being trained."""

    def init(self) -> torch.Tensor: ...          # w_0, flat float32
    def grad(self, w: torch.Tensor, step: int, worker: int, n_workers: int) -> tuple[float, torch.Tensor]: ...
    def loss(self, w: torch.Tensor) -> float: ...  # evaluation loss (fixed data)


@dataclass
class LeastSquares:
    """``f(w) = 1/(2n) ||X w - y||^2``, mini-batches of ``batch`` rows drawn per step and split
    into W contiguous shards. Cheap, so tests can run many steps; the gradient of a shard is
    ``X_k^T (X_k w - y_k) / b_k``."""

    dim: int = 16
    n_rows: int = 512
    batch: int = 24  # divisible by 1, 2, 3, 4, 6, 8 workers
    noise: float = 0.1
    seed: int = 0

    def _data(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        X = torch.randn(self.n_rows, self.dim, generator=g)
        w_star = torch.randn(self.dim, generator=g)
        return X, X @ w_star + self.noise * torch.randn(self.n_rows, generator=g)

    def init(self) -> torch.Tensor:
        return torch.zeros(self.dim)

    def rows(self, step: int, worker: int, n_workers: int) -> torch.Tensor:
        if self.batch % n_workers:
            raise ValueError(f"batch={self.batch} must be divisible by the {n_workers} workers")
        g = torch.Generator().manual_seed(1_000_003 * self.seed + step)
        idx = torch.randint(self.n_rows, (self.batch,), generator=g)
        b = self.batch // n_workers
        return idx[worker * b:(worker + 1) * b]

    def grad(self, w: torch.Tensor, step: int, worker: int, n_workers: int) -> tuple[float, torch.Tensor]:
        X, y = self._data()
        i = self.rows(step, worker, n_workers)
        r = X[i] @ w - y[i]
        return 0.5 * r.pow(2).mean().item(), X[i].T @ r / len(i)

    def loss(self, w: torch.Tensor) -> float:
        X, y = self._data()
        return 0.5 * (X @ w - y).pow(2).mean().item()


@dataclass
class GPTProblem:
    """The course GPT on the tiny corpus. Worker k's gradient at its step c is the mean
    cross-entropy gradient on shard k of global batch c (:func:`step_batch`), so W workers
    together see exactly the batches a single process would. ``config=None``: the small
    28k-parameter config (:func:`course_lib.configs.small_config`); pass ``reference_config(...)`` for the
    207k-parameter reference model."""

    config: GPTConfig | None = None
    batch_size: int = 32
    model_seed: int = 0
    batch_seed: int = 0
    eval_batches: int = 2

    def __post_init__(self) -> None:
        self._cache: tuple | None = None

    def __getstate__(self) -> dict:  # ship the recipe to other processes, not the built model
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache = None

    def _built(self) -> tuple[GPT, torch.Tensor, torch.Tensor]:
        if self._cache is None:
            data = load_dataset()
            cfg = self.config or small_config(data.vocab_size)
            torch.manual_seed(self.model_seed)
            self._cache = (GPT(cfg), data.train, data.val)
        return self._cache

    def init(self) -> torch.Tensor:
        return flat_params(self._built()[0])

    def grad(self, w: torch.Tensor, step: int, worker: int, n_workers: int) -> tuple[float, torch.Tensor]:
        model, train, _ = self._built()
        set_flat_params(model, w)
        x, y = step_batch(train, self.batch_size, model.config.block_size, self.batch_seed, step)
        return batch_grad(model, shard_batch(x, worker, n_workers), shard_batch(y, worker, n_workers))

    @torch.no_grad()
    def loss(self, w: torch.Tensor) -> float:
        model, _, val = self._built()
        set_flat_params(model, w)
        losses = [model(*step_batch(val, self.batch_size, model.config.block_size, 7777, i))[1].item()
                  for i in range(self.eval_batches)]
        return sum(losses) / len(losses)


# ----------------------------------------------------------------------------- server optimizer
def flat_optimizer(w: torch.Tensor, name: str, lr: float) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    """Wrap the (slice of the) flat vector the server owns in an optimizer.

    ``"sgd"``: ``w <- w - eta g``. ``"adamw"``: AdamW with the reference run's betas; both act
    elementwise, so a server holding a slice updates it exactly as a single process would.
    """
    p = torch.nn.Parameter(w.clone())
    if name == "sgd":
        return p, _PlainSGD(p, lr)
    if name == "adamw":
        return p, torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.99), weight_decay=0.0, foreach=False)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


class _PlainSGD:
    """``p <- p - lr p.grad``: the arithmetic of ``torch.optim.SGD`` (``add_(grad, alpha=-lr)``),
    without the one-time imports of ``torch.optim`` in every freshly launched process."""

    def __init__(self, p: torch.nn.Parameter, lr: float) -> None:
        self.p, self.lr = p, lr

    @torch.no_grad()
    def step(self) -> None:
        self.p.add_(self.p.grad, alpha=-self.lr)


def shard_bounds(n: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous slices ``[lo, hi)`` of ``range(n)``, sizes differing by at most 1
    (chapter 3's chunk convention, :func:`course_lib.collectives.chunk_bounds`)."""
    if n_shards < 1 or n_shards > n:
        raise ValueError(f"need 1 <= n_servers <= {n} parameters, got {n_shards}")
    cuts = chunk_bounds(n, n_shards)
    return list(zip(cuts[:-1], cuts[1:]))


# ----------------------------------------------------------------------------- the PS run
def delayed_gd_critical_step(tau: int, iters: int = 60) -> float:
    """The largest stable ``eta h`` of gradient descent whose gradient is ``tau`` steps old, on ``f = h w^2 / 2``.

    ``w_{t+1} = w_t - eta h w_{t - tau}`` is stable iff ``0 < eta h < 2 sin(pi / (2 (2 tau + 1)))``
    (Levin & May 1976): 2 for tau = 0, 1 for tau = 1, about ``pi / (2 tau)`` for large tau, so the
    usable step falls as 1/tau. Computed here without the formula, by bisection on the spectral
    radius of the recursion's companion matrix, so the closed form can be checked against it.
    """
    if not isinstance(tau, int) or tau < 0:
        raise ValueError(f"tau must be an int >= 0 (steps of delay), got {tau!r}")

    def radius(a: float) -> float:  # state (w_t, ..., w_{t - tau})
        c = torch.zeros(tau + 1, tau + 1, dtype=torch.float64)
        c[0, 0] = 1.0
        c[0, -1] -= a
        for i in range(1, tau + 1):
            c[i, i - 1] = 1.0
        return torch.linalg.eigvals(c).abs().max().item()

    lo, hi = 0.0, 2.5
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if radius(mid) < 1 else (lo, mid)
    return lo


def _check_args(world_size: int, n_servers: int, mode: str, steps: int, lr: float) -> int:
    if mode not in ("sync", "async", "ssp"):
        raise ValueError(f"mode must be 'sync', 'async' or 'ssp', got {mode!r}")
    if n_servers < 1 or world_size - n_servers < 1:
        raise ValueError(f"world_size={world_size} must hold the {n_servers} server rank(s) and at "
                         "least one worker; launch with world_size = n_servers + n_workers")
    if mode != "sync" and n_servers != 1:
        raise ValueError("asynchronous and SSP modes use one server (n_servers=1); sharded servers "
                         "are implemented for mode='sync'")
    if steps < 1 or not lr > 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    return world_size - n_servers


def run_ps(rank: int, world_size: int, problem: Problem, steps: int, lr: float, mode: str = "sync",
           s: int | None = None, n_servers: int = 1, optimizer: str = "sgd",
           delays: list[float] | None = None, eval_every: int = 0,
           push_hook: Callable[[SSPBook, int], list[int]] = ssp.on_push) -> dict:
    """Launchable parameter-server training: ``launch(run_ps, S + W, problem=..., steps=..., lr=..., mode=...)``.

    Every worker computes ``steps`` gradients. ``mode``: ``"sync"`` (BSP, averaged), ``"async"``
    (ASP) or ``"ssp"`` with bound ``s``. ``delays[k]``: seconds worker k sleeps per step (a
    slow worker makes staleness visible). ``eval_every``: server 0 evaluates ``problem.loss``
    every that many gradients applied (0: only at the start and the end). ``push_hook``: the
    staleness bookkeeping (:func:`course_lib.ssp.on_push`; exercise 2 plugs the learner's in).

    Server rank j returns ``{"w": its slice, "lo", "hi", "history": [(gradients applied,
    seconds, loss)], "book": SSPBook or None, "stats": bytes}``; a worker returns
    ``{"losses": [...], "stats": ...}``.
    """
    n_workers = _check_args(world_size, n_servers, mode, steps, lr)
    if mode == "ssp" and s is None:
        raise ValueError("mode='ssp' needs the staleness bound s (an int >= 0)")
    if mode == "async":
        s = None
    delays = delays or [0.0] * n_workers
    if len(delays) != n_workers:
        raise ValueError(f"delays needs one entry per worker ({n_workers}), got {len(delays)}")
    w0 = problem.init()
    bounds = shard_bounds(w0.numel(), n_servers)
    if rank < n_servers:
        if mode == "sync":
            out = _sync_server(rank, problem, w0, bounds, n_servers=n_servers, n_workers=n_workers, steps=steps, lr=lr,
                               optimizer=optimizer, eval_every=eval_every)
        else:
            out = _async_server(problem, w0, n_workers=n_workers, steps=steps, lr=lr, optimizer=optimizer, s=s,
                                eval_every=eval_every, push_hook=push_hook)
    else:
        k = rank - n_servers
        if mode == "sync":
            out = _sync_worker(k, problem, w0, bounds, n_servers=n_servers, n_workers=n_workers, steps=steps,
                               delay=delays[k])
        else:
            out = _async_worker(k, problem, w0, n_workers=n_workers, steps=steps, delay=delays[k])
    st = comm.get_stats()
    out["stats"] = dict(sent=st.sent_bytes, recv=st.recv_bytes, collective=sum(st.collective_bytes.values()))
    return out


def _evaluate(problem: Problem, w: torch.Tensor, applied: int, t0: float, history: list) -> None:
    history.append((applied, time.perf_counter() - t0, problem.loss(w)))


def _sync_server(j, problem, w0, bounds, n_servers, n_workers, steps, lr, optimizer, eval_every) -> dict:
    lo, hi = bounds[j]
    p, opt = flat_optimizer(w0[lo:hi], optimizer, lr)
    grads = [torch.empty(hi - lo) for _ in range(n_workers)]
    history: list = []
    t0 = time.perf_counter()
    for t in range(steps):
        if n_servers == 1 and (t == 0 or (eval_every and t * n_workers % eval_every == 0)):
            _evaluate(problem, p.detach(), t * n_workers, t0, history)  # whole w only on 1 server
        w_now = p.detach().clone()  # isend needs a buffer nobody changes until the send completes
        reqs = [comm.isend(w_now, n_servers + k) for k in range(n_workers)]            # pull
        reqs += [comm.irecv(grads[k], n_servers + k) for k in range(n_workers)]        # push
        for r in reqs:
            r.wait()
        # BSP update: the *average* of the W gradients (a sum would multiply eta by W)
        p.grad = torch.stack(grads).mean(0)
        opt.step()
    if n_servers == 1:
        _evaluate(problem, p.detach(), steps * n_workers, t0, history)
    return dict(w=p.detach().clone(), lo=lo, hi=hi, history=history, book=None)


def _sync_worker(k, problem, w0, bounds, n_servers, n_workers, steps, delay) -> dict:
    w = w0.clone()
    losses = []
    for t in range(steps):
        reqs = [comm.irecv(w[lo:hi], j) for j, (lo, hi) in enumerate(bounds)]     # pull every slice
        for r in reqs:
            r.wait()
        loss, g = problem.grad(w, t, k, n_workers)
        if delay:
            time.sleep(delay)
        reqs = [comm.isend(g[lo:hi].contiguous(), j) for j, (lo, hi) in enumerate(bounds)]  # push
        for r in reqs:
            r.wait()
        losses.append(loss)
    return dict(losses=losses)


def _async_server(problem, w0, n_workers, steps, lr, optimizer, s, eval_every, push_hook) -> dict:
    p, opt = flat_optimizer(w0, optimizer, lr)
    book = SSPBook(n_workers, s)
    g = torch.empty_like(w0)
    history: list = []
    t0 = time.perf_counter()
    _evaluate(problem, p.detach(), 0, t0, history)
    for k in range(n_workers):  # everyone starts from version 0
        comm.send(p.detach(), 1 + k)
    busy = set(range(n_workers))  # workers computing a gradient right now
    total = n_workers * steps
    for applied in range(1, total + 1):
        src = comm.recv(g, None)  # whichever worker's gradient arrives first
        k = src - 1
        busy.discard(k)
        p.grad = g
        opt.step()
        released = push_hook(book, k)
        if book.version != applied or len(book.staleness) != applied:
            raise RuntimeError(f"after {applied} pushes the book says version={book.version} with "
                               f"{len(book.staleness)} staleness entries; on_push must count each push once")
        for j in released:
            if book.clock[j] < steps:  # a worker that is done gets nothing more
                comm.send(p.detach(), 1 + j)
                busy.add(j)
        if not busy and applied < total:  # nobody computes, nobody was released: we would wait forever
            raise RuntimeError(f"no worker was released after push {applied} (clocks {book.clock}, "
                               f"s={book.s}): the slowest worker must always be allowed to go on")
        if eval_every and applied % eval_every == 0 and applied != total:
            _evaluate(problem, p.detach(), applied, t0, history)
    _evaluate(problem, p.detach(), n_workers * steps, t0, history)
    return dict(w=p.detach().clone(), lo=0, hi=w0.numel(), history=history, book=book)


def _async_worker(k, problem, w0, n_workers, steps, delay) -> dict:
    w = torch.empty_like(w0)
    losses = []
    for c in range(steps):
        comm.recv(w, 0)
        loss, g = problem.grad(w, c, k, n_workers)
        if delay:
            time.sleep(delay)
        comm.send(g, 0)
        losses.append(loss)
    return dict(losses=losses)


# ----------------------------------------------------------------------------- results
def gather_params(results: list[dict], n_servers: int = 1) -> torch.Tensor:
    """The full trained vector ``w`` from the server ranks' slices."""
    return torch.cat([results[j]["w"] for j in range(n_servers)])


def expected_bytes(n_workers: int, n_params: int, n_servers: int = 1, steps: int = 1) -> dict:
    """Bytes of ``steps`` PS steps for float32: per server ``W 4 Psi / S`` in and out (the
    uneven last slice aside), per worker ``4 Psi`` in and out."""
    return dict(server=steps * n_workers * 4 * n_params / n_servers, worker=steps * 4 * n_params)


def staleness_histogram(staleness: list[int]) -> dict[int, int]:
    """``{tau: how many applied gradients had staleness tau}``, sorted by tau."""
    h: dict[int, int] = {}
    for t in staleness:
        h[t] = h.get(t, 0) + 1
    return dict(sorted(h.items()))


def sgd_reference(problem: Problem, steps: int, lr: float, optimizer: str = "sgd") -> torch.Tensor:
    """Single process, no communication: ``steps`` updates with the gradient of each whole
    global batch (``problem.grad(w, t, 0, 1)``) and the same optimizer. What BSP must match."""
    p, opt = flat_optimizer(problem.init(), optimizer, lr)
    for t in range(steps):
        p.grad = problem.grad(p.detach(), t, 0, 1)[1]
        opt.step()
    return p.detach().clone()
