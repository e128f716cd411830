"""Run ``fn(rank, world_size, *args, **kwargs)`` on N real ``torch.distributed`` processes from a notebook cell.

    results = launch(fn, 4)                      # -> [fn's return on rank 0, ..., on rank 3]
    results = launch(train, 4, steps=20, lr=1e-3) # keyword arguments reach fn by name

What it takes care of, and why each matters in a classroom:

* ``fn`` may be defined in a notebook cell and close over notebook variables. The standard
  ``spawn`` start method pickles functions *by reference* (``__main__.fn``), which a fresh
  child cannot import. We serialise ``fn`` *by value* with cloudpickle and start the ranks
  from a ``forkserver`` that has imported torch once, so a later launch forks a warm process
  instead of importing torch again (``./course bench launch`` measures both).
* No fixed port, ever. Each launch rendezvous through a ``FileStore`` in a fresh temporary
  directory, so two notebooks (or parallel tests) can never join each other's process group.
* Each rank's output is captured (Python and C level) and printed in rank order, prefixed by
  ``[rank r]``, so notebook outputs are reproducible.
* A rank that raises: the others are ended at once and you get a :class:`WorkerError` naming
  the rank, with *its* traceback (its peers' consequent "Connection closed by peer" errors are
  recognised as consequences, not causes).
* A deadlock: after ``timeout`` seconds every unfinished rank dumps its Python stack
  (faulthandler), and you get a :class:`DeadlockError` naming each stuck rank, the
  ``torch.distributed`` call it was blocked in and the line of your code that called it.
  A run that is only slow because the machine is shared (load average above the core count,
  e.g. a test suite beside the notebook) is not a deadlock: while its ranks still use CPU it
  gets more time, up to ``BUSY_STRETCH`` times ``timeout``. Ranks blocked in a wait use none,
  so a real deadlock is still reported after ``timeout``.
* Ranks that call different collectives, or the same one with tensors of different shapes or
  dtypes: with ``check_collectives=True`` (the default) PyTorch compares every collective's
  fingerprint across ranks before running it (``TORCH_DISTRIBUTED_DEBUG=DETAIL``), and you get a
  :class:`CollectiveMismatchError` at once, naming each rank's call and your line, instead of
  a deadlock after ``timeout`` seconds. Ranks blocked in collectives on *different groups* (which
  PyTorch's check cannot see: each group checks itself) are reported the same way, within about
  a second. Messages are checked too: each ``send`` carries a small header (shape, dtype) that
  the receiving rank compares with its buffer, so a buffer of the wrong size or dtype is a
  ValueError naming both ranks, not a gloo crash or silent garbage (the byte counters of
  :mod:`course_lib.comm` do not include headers). The check costs a few milliseconds per
  collective call and little per small message; it is negligible for large tensors
  (``./course bench launch`` measures it). Benchmarks and timing cells pass
  ``check_collectives=False``, which sends nothing extra.
* A crash in C code (e.g. a send to a rank that does not exist): the crashed rank's Python
  stack at the moment of the crash, so you see your line.
* Misspelt or missing arguments of ``fn`` (``launch(train, 2, stpes=3)``): a TypeError naming
  them and ``fn``'s parameters, before any rank starts.
* Interrupting the kernel ends the workers too; a worker whose kernel dies kills itself.
  No process is ever left behind, and the next launch works.
"""
from __future__ import annotations

import atexit
import ctypes
import faulthandler
import inspect
import multiprocessing as mp
import multiprocessing.connection
from multiprocessing import forkserver
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import types
from dataclasses import dataclass
from datetime import timedelta
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import cloudpickle

from course_lib.launch_diagnosis import (GRACE, blocked_on_different_groups, deadlock_error, group_mismatch_error,
                                         has_root_cause, read, worker_error)
# The errors a learner catches are imported from here: ``from course_lib.launcher import DeadlockError``.
from course_lib.launch_errors import (CollectiveMismatchError, DeadlockError, LaunchError, WorkerError,  # noqa: F401
                                      echoes_peer_failure)

DEFAULT_TIMEOUT = 30.0  # seconds for a whole run; chapters with long training runs pass more
BUSY_STRETCH = 4.0  # on a machine busier than its cores, ranks still computing get up to 4 x timeout
CHECK_COLLECTIVES = True  # compare every collective across ranks first (see launch's docstring)


class RankResults(list):
    """``fn``'s return values in rank order, plus what the run measured.

    ``comm[r]`` is rank r's :class:`course_lib.comm.CommStats` (bytes through the course's
    communication helpers) and ``seconds`` the wall time of the whole launch.
    """

    comm: list
    seconds: float


# ----------------------------------------------------------------------------- worker side
@dataclass
class _Job:
    rank: int
    world_size: int
    payload: bytes  # cloudpickle of (fn, args, kwargs)
    run_dir: str
    parent_pid: int
    threads: int
    backend: str
    pg_timeout: float
    check_collectives: bool
    done: Any  # SimpleQueue: a rank puts its number here when it has written its result
    release: Any  # Event: set by the parent once every rank is done


def _die_with_parent(parent_pid: int) -> None:
    """Make sure a worker never outlives the kernel that launched it.

    PR_SET_PDEATHSIG kills us when our parent (the forkserver) dies; the forkserver exits
    when the kernel dies. The watchdog thread covers the remaining case (kernel killed while
    the forkserver lingers).
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _redirect_output(path: str) -> None:
    """Send this process's stdout and stderr, Python and C level, to one line-buffered file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _write_atomic(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(obj)
    os.replace(tmp, path)


def _worker_main(job: _Job) -> None:
    # torch is imported in the worker, not at the top: a learner's kernel imports the launcher,
    # and the launcher itself needs only the standard library (the forkserver preloads torch).
    import torch
    import torch.distributed as dist

    from course_lib import comm

    _die_with_parent(job.parent_pid)
    rank, ws, d = job.rank, job.world_size, job.run_dir
    _redirect_output(os.path.join(d, f"rank{rank}.out"))
    stack_file = open(os.path.join(d, f"rank{rank}.stack"), "w")
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    crash_file = open(os.path.join(d, f"rank{rank}.crash"), "w")
    # SIGSEGV, SIGABRT & co: every thread's stack at the crash. All threads, because gloo aborts from its
    # own thread (a message larger than the receive buffer) while the main thread holds the learner's line.
    faulthandler.enable(file=crash_file, all_threads=True)
    torch.set_num_threads(job.threads)
    # The same variables torchrun sets, so worker code can be written once for both.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(ws), LOCAL_RANK=str(rank))
    comm.reset_stats()
    try:
        fn, args, kwargs = cloudpickle.loads(job.payload)
        store = dist.FileStore(os.path.join(d, "store"), ws)
        # DETAIL wraps the process group so that each collective first compares its op, shapes
        # and dtypes across ranks; a mismatch raises at once instead of hanging.
        os.environ["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL" if job.check_collectives else "OFF"
        dist.set_debug_level_from_env()
        dist.init_process_group(
            job.backend, store=store, rank=rank, world_size=ws,
            timeout=timedelta(seconds=job.pg_timeout),
        )
        comm.check_raw_point_to_point(exchange_headers=job.check_collectives)
        if job.check_collectives:
            _unchecked_twin_group()
            comm.set_call_log(os.open(os.path.join(d, f"rank{rank}.call"), os.O_WRONLY | os.O_CREAT, 0o644))
        result = fn(rank, ws, *args, **kwargs)
        try:
            blob = cloudpickle.dumps((result, comm.get_stats()))
        except Exception as e:  # noqa: BLE001 - we want to report any pickling failure
            raise TypeError(
                f"rank {rank} returned a {type(result).__name__} that cannot be sent back to "
                f"the notebook ({e}). Return tensors, numbers, lists or dicts instead."
            ) from e
        _write_atomic(os.path.join(d, f"rank{rank}.result"), blob)
        sys.stdout.flush()
        sys.stderr.flush()
        job.done.put(rank)
        # Stay alive until every rank is done: a peer still waiting on us (a recv we never
        # match) should be reported as stuck in that recv, not as "connection closed".
        job.release.wait()
        code = 0
    except BaseException as e:  # noqa: BLE001 - report everything, including SystemExit
        report = dict(exc_type=type(e).__name__, message=str(e),
                      traceback=traceback.format_exc(), time=time.time())
        _write_atomic(os.path.join(d, f"rank{rank}.error"), pickle.dumps(report))
        code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    # os._exit skips atexit handlers and process-group teardown, which can block on a peer
    # that is already gone; the parent cleans up the rendezvous directory.
    os._exit(code)


def _unchecked_twin_group():
    """A plain gloo group of every rank, made while the checks are off so that it is not wrapped.

    It carries what the check must not see: messages (:func:`course_lib.comm.set_point_to_point_group`)
    and torch's own DDP, whose C++ logger crashes (SIGSEGV, torch 2.13) on a checked group.
    """
    # Imported here for the same reason as in _worker_main: the launcher itself needs no torch.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from course_lib import comm

    level = dist.get_debug_level()
    dist.set_debug_level(dist.DebugLevel.OFF)  # groups made now are not wrapped
    try:
        twin = dist.new_group(backend="gloo")
    finally:
        dist.set_debug_level(level)
    comm.set_point_to_point_group(twin)
    original = getattr(DDP.__init__, "_course_original", DDP.__init__)

    def __init__(self, module, *args, **kwargs):
        if kwargs.get("process_group") is None and len(args) < 6:  # process_group is DDP's 7th parameter
            kwargs["process_group"] = twin
        original(self, module, *args, **kwargs)

    __init__._course_original = original
    DDP.__init__ = __init__


# ----------------------------------------------------------------------------- parent side
_ctx: mp.context.BaseContext | None = None


# Two forkservers, so that the first launch is quick and later ones are quicker still. The first
# (started when the launcher is imported in a kernel) preloads torch.distributed only. After the
# first launch, a second one starts in the background that also preloads torch._dynamo, which
# every torch.optim step imports (torch 2.13) and which takes seconds in each fresh rank. A launch
# switches to it only once it is ready and never waits for it: until then the first server serves.
# Both fork their workers from memory: no rank imports torch itself. Each imports
# course_lib._forkserver_ready last, which marks that its imports are done.
_PRELOAD = ["course_lib.launcher", "course_lib.comm", "torch.distributed", "course_lib._forkserver_ready"]
_PRELOAD_FULL = _PRELOAD[:-1] + ["torch._dynamo", "course_lib._forkserver_ready"]
# A launch waits for the first server's imports before its clock starts (at most this long,
# then it goes on as if ready): on a busy machine they took 28 s, a run's whole default timeout.
SERVER_START_LIMIT = 300.0
_ctx_lock = threading.Lock()
_full_server: Any = None  # the second forkserver, once started
_switched = False  # True once new workers come from the second forkserver
_first_ready = os.path.join(tempfile.gettempdir(), f"course-forkserver-first-{os.getpid()}")
_full_ready = os.path.join(tempfile.gettempdir(), f"course-forkserver-ready-{os.getpid()}")


def _remove_ready_files() -> None:
    for path in (_first_ready, _full_ready):
        if os.path.exists(path):
            os.unlink(path)


_remove_ready_files()  # left by an earlier process with the same pid, whose server is gone
atexit.register(_remove_ready_files)


def _context() -> mp.context.BaseContext:
    """The forkserver context; switches to the fully preloaded server if it is ready (never waits)."""
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _ctx = ctx
        if _full_server is not None and os.path.exists(_full_ready):
            _switch_to_full_server()
    return _ctx


def _start_full_server() -> None:
    """Start the fully preloaded forkserver in the background (once per process)."""
    global _full_server
    with _ctx_lock:
        if _full_server is not None or _switched:
            return
        server = forkserver.ForkServer()
        server.set_forkserver_preload(_PRELOAD_FULL)
        _full_server = server
    threading.Thread(target=_without_ctrl_c, args=(lambda: _spawn(server, _full_ready),),
                     name="course-forkserver-full", daemon=True).start()


def _without_ctrl_c(start_server: Callable[[], None]) -> None:
    """Start a forkserver with SIGINT blocked, as :func:`_start` does for the first one.

    Ctrl-C (or Jupyter stopping its kernels) signals the whole process group; a server still
    importing torch would print a long KeyboardInterrupt traceback that means nothing to a
    learner. The blocked mask is per thread and inherited by the spawned server and its workers;
    the launcher ends workers itself, with SIGTERM.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    start_server()


def _switch_to_full_server() -> None:
    """Route new workers to the full server and stop the first one (no worker of it is alive:
    called at the start of a launch, and every launch ends its workers)."""
    global _full_server, _switched
    old, new = forkserver._forkserver, _full_server
    for name in ("ensure_running", "get_inherited_fds", "connect_to_new_process", "set_forkserver_preload"):
        setattr(forkserver, name, getattr(new, name))
    forkserver._forkserver = new
    _full_server, _switched = None, True
    old._stop()
    os.unlink(_full_ready)
    if os.path.exists(_first_ready):
        os.unlink(_first_ready)


def warm_up() -> None:
    """Start the forkserver now, in the background, so the first launch does not wait for its
    imports. Called when this module is imported in a notebook kernel; safe to call again."""
    def start() -> None:
        _context()
        _without_ctrl_c(_ensure_server)

    threading.Thread(target=start, name="course-forkserver-warm-up", daemon=True).start()


def _spawn(server: Any, ready: str) -> None:
    """``server.ensure_running()``: if it is not running, spawn (exec) it; it imports its preload
    list, then course_lib._forkserver_ready creates the file ``ready``. The path travels in the
    environment the server is spawned with, hence the lock: one server spawned at a time."""
    with _ctx_lock:
        os.environ["COURSE_FORKSERVER_READY"] = ready
        server.ensure_running()


def _ensure_server() -> None:
    """Start the forkserver new workers come from, if it is not running."""
    _spawn(forkserver._forkserver, _full_ready if _switched else _first_ready)


def _server_ready(limit: float = SERVER_START_LIMIT) -> None:
    """Start the forkserver and wait until its imports are done (at most ``limit`` seconds), so
    that its start, which a busy machine stretches to tens of seconds, never counts against a
    run's timeout. A later launch finds the file there and does not wait."""
    _context()
    with _ctrl_c_held():  # the server inherits the mask: Ctrl-C is the launcher's to handle
        _ensure_server()
    deadline = time.time() + limit
    while not _switched and not os.path.exists(_first_ready) and time.time() < deadline:
        time.sleep(0.02)


def default_threads(world_size: int) -> int:
    """Intra-op threads per rank: ranks share the machine's cores, so cores // world_size.

    Oversubscription is expensive: threads that outnumber the cores spin while they wait for
    each other, and every rank slows down.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // world_size)


def _start(procs: list) -> None:
    """Start the workers without making them re-import ``__main__``.

    multiprocessing normally re-runs the parent's main script in every child (the reason
    scripts need ``if __name__ == "__main__":``). Our workers get ``fn`` by value and never need
    ``__main__``, so we hide it while starting them: faster, and safe in scripts and kernels.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    # Hold Ctrl-C back while starting: a KeyboardInterrupt inside Process.start() can leave a
    # worker that exists but is not yet registered (p._popen unset), so nobody would end it.
    try:
        with _ctrl_c_held():
            for p in procs:
                p.start()
    finally:
        sys.modules["__main__"] = main


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Block SIGINT in this thread for the duration; a Ctrl-C pressed meanwhile is delivered
    right after. Processes spawned meanwhile inherit the blocked mask."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _end(procs: list) -> None:
    """Terminate, then kill, every worker that is still alive; reap them all."""
    procs = [p for p in procs if p._popen is not None]  # skip any that never started
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.time() + 1.0
    for p in procs:
        p.join(max(0.0, deadline - time.time()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def _print_outputs(run_dir: str, world_size: int, already: list[int]) -> None:
    for r in range(world_size):
        text = read(os.path.join(run_dir, f"rank{r}.out"))[already[r]:]
        for line in text.splitlines():
            if not echoes_peer_failure(line):
                print(f"[rank {r}] {line}")


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = DEFAULT_TIMEOUT,
    backend: str = "gloo",
    threads: int | None = None,
    stream: bool = False,
    check_collectives: bool | None = None,
    **kwargs: Any,
) -> RankResults:
    """Run ``fn(rank, world_size, *args, **kwargs)`` on ``world_size`` gloo processes; return results in rank order.

    Pass ``fn``'s own arguments by name, so the call reads on its own:
    ``launch(train_data_parallel, 2, config=cfg, steps=8, batch_size=32)``. The five names below
    belong to the launcher and are not passed on.

    ``timeout`` bounds the whole run (seconds); on a machine busier than its cores, ranks that
    are still computing get up to :data:`BUSY_STRETCH` times as long. ``threads`` is the
    intra-op thread count per rank (default :func:`default_threads`). ``stream=True`` prints
    each rank's output as it arrives (handy for long runs) instead of in rank order at the end.
    ``check_collectives``:
    compare every collective across ranks before running it, report ranks blocked in collectives
    on different groups, and check every message's shape and dtype against its receive buffer
    (default :data:`CHECK_COLLECTIVES`, on; the environment variable ``COURSE_CHECK_COLLECTIVES=0``
    turns the default off). Pass ``False`` where you measure speed: then nothing extra is sent.
    """
    if not callable(fn):
        raise TypeError(f"launch() needs a function fn(rank, world_size, ...), got {type(fn).__name__}")
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if world_size > 64:
        raise ValueError(f"world_size={world_size} is far more processes than a laptop can run; use at most 64")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if backend != "gloo":
        raise ValueError(
            f"launch() runs CPU processes with backend='gloo' (got {backend!r}). For nccl on GPUs "
            "run the same function under torchrun: python -m course_lib.torchrun_entry --help"
        )
    _bind_arguments(fn, world_size, args, kwargs)
    threads = threads or default_threads(world_size)
    if check_collectives is None:
        check_collectives = CHECK_COLLECTIVES and os.environ.get("COURSE_CHECK_COLLECTIVES", "1") != "0"
    try:
        payload = cloudpickle.dumps((fn, args, kwargs))
    except Exception as e:
        raise TypeError(
            f"cannot send fn or its arguments to the workers: {e}. Everything fn uses must be "
            "picklable (tensors, numbers, functions); open files, locks and widgets are not."
        ) from e

    _server_ready()  # may wait for the forkserver to finish preloading: not part of the run's timeout
    ctx = _context()
    t0 = time.time()
    run_dir = tempfile.mkdtemp(prefix="course-launch-")
    done, release = ctx.SimpleQueue(), ctx.Event()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(_Job(r, world_size, payload, run_dir, os.getpid(), threads, backend, BUSY_STRETCH * timeout + 30,
                       bool(check_collectives), done, release),),
            name=f"course-rank{r}", daemon=True,
        )
        for r in range(world_size)
    ]
    printed = [0] * world_size
    try:
        _start(procs)
        failure = _supervise(procs, run_dir, world_size, timeout, t0, stream, printed, done,
                             bool(check_collectives))
        if failure is None:
            release.set()
            for p in procs:
                p.join(2.0)
        _end(procs)
        _print_outputs(run_dir, world_size, printed)
        if failure is not None:
            raise failure
        results = RankResults()
        results.comm = []
        for r in range(world_size):
            with open(os.path.join(run_dir, f"rank{r}.result"), "rb") as f:
                value, stats = pickle.load(f)
            results.append(value)
            results.comm.append(stats)
        results.seconds = time.time() - t0
        _start_full_server()
        return results
    except KeyboardInterrupt:
        _end(procs)
        _print_outputs(run_dir, world_size, printed)
        print(f"launch interrupted: ended all {world_size} workers", file=sys.stderr)
        raise
    finally:
        _end(procs)
        shutil.rmtree(run_dir, ignore_errors=True)
        # An error raised here keeps this frame alive in its traceback (a notebook keeps the last
        # one). Drop the queue and event now, so their semaphores are freed now, not reported as
        # "leaked" by multiprocessing's resource tracker when the kernel shuts down.
        del procs, done, release


def _bind_arguments(fn: Callable[..., Any], world_size: int, args: tuple, kwargs: dict) -> None:
    """Check ``fn(rank, world_size, *args, **kwargs)`` against fn's signature here, before any rank
    starts, so that a misspelt or missing argument is one clear TypeError instead of N rank errors."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C functions have no signature to check
        return
    try:
        sig.bind(0, world_size, *args, **kwargs)
    except TypeError as e:
        name = getattr(fn, "__name__", "fn")
        params = ", ".join(str(p) for p in sig.parameters.values())
        unknown = [k for k in kwargs if k not in sig.parameters] if not any(
            p.kind is p.VAR_KEYWORD for p in sig.parameters.values()) else []
        what = f"{name}() has no parameter {unknown[0]!r}" if unknown else f"{name}(rank, world_size, ...): {e}"
        raise TypeError(f"launch({name}, {world_size}, ...): {what}. {name}'s parameters are ({params}); "
                        "the launcher passes rank and world_size first, then your arguments") from None


def _supervise(procs, run_dir, world_size, timeout, t0, stream, printed, done, checked) -> LaunchError | None:
    """Wait for the workers; return the error to raise (or None when every rank succeeded)."""
    first_failure_at: float | None = None
    deadline = t0 + timeout
    last_notes: dict | None = None
    finished: set[int] = set()
    while True:
        while not done._reader.closed and done._reader.poll():
            finished.add(done.get())
        # A rank's result file is written before it reports on ``done``: trust the file too, so a
        # report delayed on a busy machine never turns a finished run into a "deadlock".
        finished |= {r for r in range(world_size) if r not in finished
                     and os.path.exists(os.path.join(run_dir, f"rank{r}.result"))}
        alive = [p for p in procs if p.exitcode is None]
        if stream:
            for r in range(world_size):
                text = read(os.path.join(run_dir, f"rank{r}.out"))
                end = text.rfind("\n", printed[r]) + 1
                for line in text[printed[r]:end].splitlines():
                    if not echoes_peer_failure(line):
                        print(f"[rank {r}] {line}", flush=True)
                printed[r] = max(printed[r], end)
        failed = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
        if len(finished) == world_size:
            return None
        waiting = [r for r, p in enumerate(procs) if p.exitcode is None and r not in finished]
        if failed:
            now = time.time()
            first_failure_at = first_failure_at or now
            # Give the peers a moment: if the failing rank only reports "connection closed",
            # the real cause may be about to arrive from another rank.
            if not waiting or now - first_failure_at > GRACE or has_root_cause(run_dir, failed):
                return worker_error(procs, run_dir, failed)
        if time.time() > deadline:
            if (time.time() - t0 < BUSY_STRETCH * timeout and _machine_busy()
                    and _still_computing([procs[r] for r in waiting])):
                deadline = min(t0 + BUSY_STRETCH * timeout, time.time() + 0.1 * timeout)
                continue
            return deadlock_error(procs, run_dir, timeout, finished, waited=time.time() - t0)
        if checked and not failed and time.time() - t0 > 0.5:
            # The same calls twice in a row, a tick apart: no rank is between two notes.
            notes = blocked_on_different_groups(procs, run_dir, finished)
            if notes and notes == last_notes:
                return group_mismatch_error(procs, run_dir, notes)
            last_notes = notes
        tick = 0.05 if (stream or failed) else min(0.25 if checked else 1.0, max(0.01, deadline - time.time()))
        mp.connection.wait([p.sentinel for p in alive] + [done._reader], timeout=tick)


def _machine_busy() -> bool:
    """More runnable processes than cores, averaged over the last minute."""
    return hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1)


def _still_computing(procs, window: float = 0.5) -> bool:
    """Did these processes run in the last ``window`` seconds? A rank blocked in a receive or a
    collective sleeps in the kernel: no CPU time, state "sleeping". A rank doing work (or looping)
    uses CPU, or at least waits in the run queue ("running") when the machine is very busy."""
    try:
        import psutil  # installed with Jupyter; without it the timeout is never stretched
        handles = [psutil.Process(p.pid) for p in procs]
        before = sum(sum(h.cpu_times()[:2]) for h in handles)
        runnable = False
        for _ in range(5):
            runnable = runnable or any(h.status() in (psutil.STATUS_RUNNING, psutil.STATUS_DISK_SLEEP) for h in handles)
            time.sleep(window / 5)
        used = sum(sum(h.cpu_times()[:2]) for h in handles) - before
    except Exception:  # psutil missing, or a rank exited meanwhile: let the loop look again
        return False
    return runnable or used > 0.1 * window


# In a notebook kernel, warm the forkserver while the learner reads. Not in scripts, tests'
# worker processes or the forkserver itself (none of them has ipykernel imported).
if "ipykernel" in sys.modules and os.environ.get("COURSE_NO_WARM_UP") != "1":
    warm_up()
