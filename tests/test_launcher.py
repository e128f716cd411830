"""The launcher under every fault a learner produces: results, errors, deadlocks, interrupts, leftovers."""
from __future__ import annotations

import ctypes
import multiprocessing.forkserver as mpfs
import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import psutil
import pytest
import torch

from course_lib import comm, launcher
from course_lib.launcher import CollectiveMismatchError, DeadlockError, WorkerError, default_threads, launch

PY = sys.executable
# Send this module's worker functions by value, as a notebook's are: by reference, every rank would
# import this module, and with it pytest, before it could run.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def worker_pids() -> list[int]:
    """Live children of the launcher's forkserver: the workers. Zombies count as left behind."""
    pid = getattr(mpfs._forkserver, "_forkserver_pid", None)
    if pid is None or not psutil.pid_exists(pid):
        return []
    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def assert_no_leftovers(timeout: float = 3.0) -> None:
    deadline = time.time() + timeout
    while worker_pids() and time.time() < deadline:
        time.sleep(0.05)
    assert worker_pids() == [], f"worker processes left behind: {worker_pids()}"


def test_results_in_rank_order_with_closure_and_output(capfd):
    offset = torch.tensor([10.0])  # closed over, like a notebook variable

    def fn(rank, world_size, scale):
        print(f"hello {rank}")
        return (offset * scale + rank).item()

    out = launch(fn, 4, scale=2.0)
    assert out == [20.0, 21.0, 22.0, 23.0]
    printed = capfd.readouterr().out.splitlines()
    assert printed == [f"[rank {r}] hello {r}" for r in range(4)]
    assert out.seconds > 0 and len(out.comm) == 4
    assert_no_leftovers()


def test_collective_result_and_threads():
    def fn(rank, world_size):
        x = torch.tensor([float(rank + 1)])
        comm.all_reduce(x)
        return x.item(), torch.get_num_threads()

    out = launch(fn, 4)
    assert [v for v, _ in out] == [10.0] * 4
    assert {t for _, t in out} == {default_threads(4)}
    assert default_threads(4) == max(1, len(os.sched_getaffinity(0)) // 4)


def test_p2p_byte_counters_are_exact():
    def fn(rank, world_size):
        x = torch.zeros(1000, dtype=torch.float32)
        if rank == 0:
            comm.send(x, 1)
            comm.send(x[:10].clone(), 1)
        else:
            comm.recv(x, 0)
            comm.recv(x[:10].contiguous(), 0)
        comm.all_reduce(x)
        return None

    out = launch(fn, 2)
    s0, s1 = out.comm
    assert (s0.sent_bytes, s0.recv_bytes, s0.sent_messages) == (4040, 0, 2)
    assert (s1.sent_bytes, s1.recv_bytes, s1.recv_messages) == (0, 4040, 2)
    assert s0.collective_calls["all_reduce"] == 1 and s0.collective_bytes["all_reduce"] == 4000


def test_rank_that_raises_is_named_and_peers_are_ended():
    def fn(rank, world_size):
        if rank == 2:
            raise IndexError("chunk 7 out of range")
        comm.all_reduce(torch.ones(3))  # the others wait for rank 2 forever
        return rank

    launch(lambda r, w: r, 2)  # the forkserver is warm: what follows times the failure alone
    t = time.time()
    with pytest.raises(WorkerError) as e:
        launch(fn, 4, timeout=20)
    assert time.time() - t < 5 + fault_limit()  # ended by the failure, not by the timeout (20 s, stretched up to 80 s)
    assert e.value.rank == 2 and e.value.exc_type == "IndexError"
    assert "rank 2 raised IndexError: chunk 7 out of range" in str(e.value)
    assert "in fn" in e.value.worker_traceback
    assert_no_leftovers()
    assert launch(lambda r, w: r, 2) == [0, 1]  # the next launch works


def test_recv_from_a_rank_that_never_sends_is_a_deadlock_naming_rank_and_call():
    def fn(rank, world_size):
        t = torch.zeros(2)
        if rank == 0:
            comm.recv(t, src=1)  # rank 1 never sends
        return rank

    launch(lambda r, w: r, 2)  # the forkserver is warm: the 2 s are the run's, not the ranks' start
    t = time.time()
    with pytest.raises(DeadlockError) as e:
        launch(fn, 2, timeout=2)
    assert time.time() - t < 2 + fault_limit()  # ranks still starting on a busy machine get more time
    assert e.value.finished == [1] and list(e.value.stuck) == [0]
    assert "recv" in e.value.stuck[0] and "comm.recv(t, src=1)" in e.value.stuck[0]
    assert_no_leftovers()


def test_busy_machine_stretches_the_timeout_only_for_ranks_still_computing(monkeypatch):
    """A run slowed by a shared machine is not a deadlock; a real deadlock still is, on time."""
    monkeypatch.setattr(launcher, "_machine_busy", lambda: True)  # as under a test suite on 2 cores

    def slow(rank, world_size):  # 4 s of work against a 2 s timeout
        t = time.time()
        while time.time() - t < 4:
            pass
        return rank

    def spin(rank, world_size):
        while True:
            pass

    def blocked(rank, world_size):
        if rank == 0:
            comm.recv(torch.zeros(2), src=1)  # rank 1 never sends

    launch(lambda r, w: r, 2)  # the forkserver is warm: what follows times the runs alone
    assert launch(slow, 2, timeout=2) == [0, 1]
    t = time.time()
    with pytest.raises(DeadlockError, match="stretched to"):
        launch(spin, 2, timeout=2)
    assert launcher.BUSY_STRETCH * 2 <= time.time() - t < launcher.BUSY_STRETCH * 2 + fault_limit()
    t = time.time()
    with pytest.raises(DeadlockError) as e:
        launch(blocked, 2, timeout=3)
    assert time.time() - t < 3 + fault_limit() and list(e.value.stuck) == [0]
    assert_no_leftovers()


def test_ranks_in_different_collectives_end_with_a_clear_error():
    launch(lambda r, w: r, 2)  # the forkserver is warm: the 2 s are the run's, not the ranks' start
    with pytest.raises(DeadlockError) as e:  # unchecked: the mismatch shows as a deadlock
        launch(_mismatched_op, 2, timeout=2, check_collectives=False)
    assert "all_reduce" in e.value.stuck[0] and "broadcast" in e.value.stuck[1]
    assert_no_leftovers()


def test_worker_killed_by_signal_is_reported():
    def fn(rank, world_size):
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        comm.barrier()

    with pytest.raises(WorkerError) as e:
        launch(fn, 2, timeout=10)
    assert e.value.rank == 1 and "SIGKILL" in str(e.value)
    assert_no_leftovers()


def test_unpicklable_result_and_bad_arguments():
    with pytest.raises(WorkerError, match="cannot be sent back"):
        launch(lambda r, w: (x for x in range(3)), 1)
    with pytest.raises(ValueError, match="world_size must be a positive int"):
        launch(lambda r, w: r, 0)
    with pytest.raises(TypeError, match="needs a function"):
        launch(3, 2)
    with pytest.raises(ValueError, match="timeout"):
        launch(lambda r, w: r, 2, timeout=-1)
    with pytest.raises(TypeError, match="picklable"):
        import threading

        lock = threading.Lock()
        launch(lambda r, w: lock, 2)


SCRIPT = textwrap.dedent(
    """
    import os, sys, time, torch
    from course_lib.launcher import launch
    from course_lib import comm, launcher
    def fn(rank, world_size, path):
        open(f"{path}/pid{rank}", "w").write(str(os.getpid()))
        time.sleep(1000)
    print("parent", os.getpid(), flush=True)
    launch(fn, 3, path=sys.argv[1], timeout=600)
    """
)


def _run_and_stop(tmp_path, sig) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    # Restore Ctrl-C's default action in the child: a shell starting `./course test &` in the
    # background hands every child an *ignored* SIGINT (and Python then installs no handler).
    p = subprocess.Popen([PY, str(script), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # A fresh interpreter imports torch, then its forkserver does: many seconds on a busy CI box.
    deadline = time.time() + 180
    # a pid file may be seen before its number is written: wait for three complete ones
    while sum(f.read_text().strip().isdigit() for f in tmp_path.glob("pid*")) < 3 and time.time() < deadline:
        if p.poll() is not None:
            break
        time.sleep(0.1)
    pids = [int(f.read_text()) for f in tmp_path.glob("pid*") if f.read_text().strip().isdigit()]
    if len(pids) < 3:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"the script's 3 ranks did not start in {180} s (exit {p.returncode}):\n{out}\n{err}")
    assert all(psutil.pid_exists(x) for x in pids)
    p.send_signal(sig)
    return p, pids


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        if not any(psutil.pid_exists(x) and psutil.Process(x).status() != psutil.STATUS_ZOMBIE for x in pids):
            return True
        time.sleep(0.1)
    return False


def test_interrupt_ends_workers(tmp_path):
    """Ctrl-C / 'Interrupt kernel' raises KeyboardInterrupt in the parent: the workers go too."""
    p, pids = _run_and_stop(tmp_path, signal.SIGINT)
    assert _gone(pids, 15)  # the workers go at once...
    # ...while the interpreter's own exit (torch teardown) can take many seconds on a loaded CI box
    _, err = p.communicate(timeout=90)
    assert "KeyboardInterrupt" in err and "ended all 3 workers" in err


def test_killed_parent_takes_workers_with_it(tmp_path):
    """A kernel that dies (SIGKILL, 'Restart kernel') leaves no orphan workers behind."""
    p, pids = _run_and_stop(tmp_path, signal.SIGKILL)
    p.wait(10)
    assert _gone(pids, 8)


def test_two_concurrent_launches_never_collide(tmp_path):
    """No fixed port: two jobs started together each see only their own ranks."""
    script = tmp_path / "c.py"
    script.write_text(textwrap.dedent(
        """
        import sys, torch
        from course_lib.launcher import launch
        from course_lib import comm, launcher
        def fn(rank, world_size, base):
            x = torch.tensor([base + rank], dtype=torch.float64)
            for _ in range(20):
                comm.all_reduce(x)
                x /= world_size
            return x.item()
        base = float(sys.argv[1])
        for _ in range(3):
            out = launch(fn, 2, base=base)
            assert all(abs(v - (base + 0.5)) < 1e-9 for v in out), out
        print("ok")
        """
    ))
    procs = [subprocess.Popen([PY, str(script), str(b)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for b in (100, 200)]
    for p in procs:
        try:  # two interpreters, each importing torch and starting its ranks, on a busy CI box
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"a job did not finish in 300 s; its output:\n{out[-1000:]}\n{err[-3000:]}")
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]


def test_same_function_runs_under_torchrun():
    r = subprocess.run(
        [PY, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "course_lib.torchrun_entry",
         "course_lib.demos:hello_all_reduce"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[rank 0] hello_all_reduce returned 3.0 (backend gloo)" in r.stdout
    assert "[rank 1] hello_all_reduce returned 3.0 (backend gloo)" in r.stdout
    assert launch(__import__("course_lib.demos").demos.hello_all_reduce, 2) == [3.0, 3.0]


# ----------------------------------------------------------------------------- faults at their cause
def fault_limit() -> float:
    """5 s to report a fault, stretched on a machine loaded beyond its cores (shared CI, 2 cores)."""
    return 5.0 * min(4.0, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


def fails_fast(fn, error=WorkerError, **kwargs):
    """Run ``fn`` on 2 ranks: it must fail with ``error`` within :func:`fault_limit`, leave no
    process behind, and the next launch must work. Returns the error."""
    launch(lambda r, w: r, 2)  # the forkserver is warm: what follows times the fault alone
    t0 = time.time()
    with pytest.raises(error) as e:
        launch(fn, 2, timeout=20, **kwargs)
    took = time.time() - t0
    assert took < fault_limit(), f"{fn.__name__} took {took:.1f} s to fail"
    assert_no_leftovers()
    assert launch(lambda r, w: r * 10, 2) == [0, 10]
    return e.value


def _mismatched_op(rank, world_size):
    t = torch.zeros(4)
    if rank == 0:
        comm.all_reduce(t)
    else:
        comm.broadcast(t, src=1)


def _mismatched_shape(rank, world_size):
    t = torch.ones(3 + rank)
    torch.distributed.all_reduce(t)


def _mismatched_dtype(rank, world_size):
    t = torch.ones(3, dtype=torch.float32 if rank == 0 else torch.float64)
    comm.all_reduce(t)


@pytest.mark.parametrize("fn, calls, rule", [
    (_mismatched_op, ["all_reduce(shape [4], float32)", "broadcast(shape [4], float32)"], "same collective"),
    (_mismatched_shape, ["all_reduce(shape [3], float32)", "all_reduce(shape [4], float32)"], "same shape"),
    (_mismatched_dtype, ["all_reduce(shape [3], float32)", "all_reduce(shape [3], float64)"], "same dtype"),
])
def test_mismatched_collectives_fail_at_once_naming_each_rank_and_line(fn, calls, rule):
    msg = str(fails_fast(fn, CollectiveMismatchError))
    assert f"rank 0 called {calls[0]} while rank 1 called {calls[1]}" in msg and rule in msg
    for r in (0, 1):
        assert f"rank {r}: {calls[r]}, called from {fn.__name__}() line" in msg, msg


def _different_groups(rank, world_size):
    a, b = comm.new_group([0, 1]), comm.new_group([0, 1])
    comm.all_reduce(torch.ones(3), group=a if rank == 0 else b)


def test_collectives_on_different_groups_fail_at_once_naming_each_group():
    msg = str(fails_fast(_different_groups, CollectiveMismatchError))
    assert ("rank 0 called all_reduce on group [0, 1] (new_group #1) while rank 1 called all_reduce on group "
            "[0, 1] (new_group #2): every rank must call each collective on the same group") in msg, msg
    for r in (0, 1):
        assert (f"rank {r}: all_reduce(shape [3], float32) on group [0, 1] (new_group #{r + 1}), called from "
                "_different_groups() line") in msg, msg


def _send_5_recv_3(rank, world_size):
    if rank == 0:
        comm.send(torch.arange(5.0), dst=1)
    else:
        comm.recv(torch.full((3,), -1.0), src=0)


def _send_f32_recv_f64(rank, world_size):
    if rank == 0:
        comm.isend(torch.arange(3.0), dst=1).wait()
    else:
        comm.irecv(torch.full((3,), -1.0, dtype=torch.float64), src=0).wait()


@pytest.mark.parametrize("fn, mine, theirs", [
    (_send_5_recv_3, "shape [3] float32", "shape [5] float32"),
    (_send_f32_recv_f64, "shape [3] float64", "shape [3] float32"),
])
def test_a_message_that_does_not_fit_its_receive_buffer_is_named_on_both_ends(fn, mine, theirs):
    e = fails_fast(fn)
    msg = str(e)
    assert e.rank == 1 and e.exc_type == "ValueError"
    assert (f"rank 1 receives into {mine} but rank 0 sent {theirs}: the receive buffer must have the "
            "sender's shape and dtype") in msg, msg
    assert f"rank 1: received, called from {fn.__name__}() line" in msg, msg
    assert "rank 0: sent" in msg


def test_headers_only_with_the_check_and_never_counted():
    def fn(rank, world_size):
        x, big = torch.arange(6.0), torch.zeros(20000)  # big: larger than a header carries inline
        if rank == 0:
            comm.send(x, 1)
            comm.isend(big, 1).wait()
        else:
            x, big = torch.zeros(6), torch.ones(20000)
            comm.recv(x, 0)
            comm.irecv(big, 0).wait()
        mine, theirs = torch.full((2,), float(rank)), torch.empty(2)  # both ways at once, in a batch
        for w in comm.batch_isend_irecv([comm.P2POp(torch.distributed.isend, mine, 1 - rank),
                                         comm.P2POp(torch.distributed.irecv, theirs, 1 - rank)]):
            w.wait()
        return x.tolist(), big.sum().item(), theirs.tolist(), comm._exchange_headers

    for check in (True, False):
        out = launch(fn, 2, check_collectives=check)
        assert out[1] == ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 0.0, [0.0, 0.0], check) and out[0][2] == [1.0, 1.0]
        assert out.comm[0].sent_bytes == out.comm[1].recv_bytes == 24 + 80000 + 8
        assert out.comm[0].sent_messages == out.comm[1].recv_messages == 3


def _send_to(rank, world_size, raw):
    t = torch.ones(3)
    if rank == 0:
        (torch.distributed.send if raw else comm.send)(t, dst=world_size)


def _recv_from(rank, world_size):
    t = torch.ones(3)
    if rank == 1:
        comm.recv(t, src=-1)


@pytest.mark.parametrize("fn, kwargs, rank, message, line", [
    (_send_to, {"raw": True}, 0, "send: dst=2 but world_size is 2: ranks are 0..1", "send if raw else comm.send"),
    (_send_to, {"raw": False}, 0, "send: dst=2 but world_size is 2: ranks are 0..1", "send if raw else comm.send"),
    (_recv_from, {}, 1, "recv: src=-1 but world_size is 2: ranks are 0..1", "comm.recv(t, src=-1)"),
])
def test_a_peer_that_does_not_exist_is_named(fn, kwargs, rank, message, line):
    e = fails_fast(fn, **kwargs)
    assert e.rank == rank and message in str(e)
    assert f"in {fn.__name__}" in e.worker_traceback and line in e.worker_traceback


def test_a_misspelt_or_missing_argument_is_named_before_any_rank_starts():
    def train(rank, world_size, steps, lr=0.1):
        return steps

    with pytest.raises(TypeError, match=r"train\(\) has no parameter 'stpes'. train's parameters are "
                                        r"\(rank, world_size, steps, lr=0.1\)"):
        launch(train, 2, stpes=3)
    with pytest.raises(TypeError, match="missing a required argument: 'steps'"):
        launch(train, 2)


def test_collective_arguments_are_checked_before_gloo_sees_them():
    def fn(rank, world_size):
        errors = []
        for call in (lambda: comm.all_gather_single(torch.empty(5), torch.ones(3)),
                     lambda: comm.reduce_scatter_single(torch.empty(2), torch.ones(3)),
                     lambda: comm.all_gather([torch.empty(3)], torch.ones(3)),
                     lambda: comm.broadcast(torch.ones(2), src=7),
                     lambda: comm.send(torch.ones(2), dst=rank)):
            try:
                call()
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        return errors

    errors = launch(fn, 2)[0]
    assert errors == [
        "all_gather_single: output has 5 elements but must have world_size x input = 2 x 3 = 6",
        "reduce_scatter_single: input has 3 elements but must have world_size x output = 2 x 2 = 4",
        "all_gather: tensor_list must be a list of world_size = 2 tensors, got 1",
        "broadcast: src=7 but world_size is 2: ranks are 0..1",
        "send: dst=0 is this rank itself: a rank cannot send to or receive from itself; copy the tensor instead",
    ]


def _crash(rank, world_size):
    if rank == 1:
        ctypes.string_at(0)  # reads address 0: SIGSEGV inside C code
    comm.barrier()


def test_a_crash_in_c_code_shows_the_learners_line():
    e = fails_fast(_crash)
    assert e.rank == 1 and e.exc_type == "WorkerCrashed"
    msg = str(e)
    assert "SIGSEGV" in msg and "_crash() line" in msg and "ctypes.string_at(0)" in msg
    assert "course_lib.comm" not in msg.split("---")[0]  # the hint does not blame comm for a crash outside it
    checkout_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + "/"
    assert checkout_parent not in msg and os.path.expanduser("~") + "/" not in e.worker_traceback


def test_only_c10_echoes_of_a_dead_peer_are_held_back_from_the_output():
    from course_lib.launch_errors import echoes_peer_failure

    gloo = ("[rank0]:[E1201 22:37:32.596473771 ProcessGroupGloo.cpp:67] Gloo connectFullMesh failed with "
            "[pair.cc:553] Connection closed by peer [127.0.0.1]:36541.")
    assert echoes_peer_failure(gloo)
    # the learner's own prints stay, even when they mention a failure
    assert not echoes_peer_failure("read failed: connection closed by peer")
    assert not echoes_peer_failure("[E1201 loss is nan]")
