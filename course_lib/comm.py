"""Counted communication: the ``torch.distributed`` calls the course uses, with per-rank byte counters.

Every chapter asserts communication volume instead of describing it, so all course code
talks through these wrappers. They have the names and signatures of ``torch.distributed``
and forward to it; on the side they record, for this rank:

* point-to-point traffic, exactly: ``sent_bytes`` / ``recv_bytes`` and message counts, for
  ``send``, ``recv``, ``isend``, ``irecv`` and ``batch_isend_irecv``;
* per built-in collective, how many calls and how many bytes of this rank's input went in
  (``collective_bytes``). How many bytes gloo then puts on the wire depends on its internal
  algorithm, which we cannot see; chapter 3 builds the collectives from ``send``/``recv`` so
  that their traffic is measured exactly by the point-to-point counters;
* an optional timeline (``trace``) of (op, bytes, start, end) for timeline plots.

The launcher resets the counters when a rank starts and sends them back with the results
(``launch(...).comm[rank]``); inside a rank, :func:`get_stats` reads them.
"""
from __future__ import annotations

import functools
import inspect
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d
from torch.distributed import P2POp, ReduceOp  # noqa: F401  (re-exported for learners)


@dataclass
class CommStats:
    """What one rank moved through the course's communication helpers."""

    sent_bytes: int = 0
    recv_bytes: int = 0
    sent_messages: int = 0
    recv_messages: int = 0
    collective_calls: Counter = field(default_factory=Counter)
    collective_bytes: Counter = field(default_factory=Counter)
    trace: list = field(default_factory=list)  # (op, nbytes, t_start, t_end or None, peer)

    def summary(self) -> str:
        coll = ", ".join(f"{k} x{v}" for k, v in sorted(self.collective_calls.items()))
        return (f"sent {self.sent_bytes} B in {self.sent_messages} msgs, "
                f"received {self.recv_bytes} B in {self.recv_messages} msgs"
                + (f"; collectives: {coll}" if coll else ""))


_stats = CommStats()
tracing = False  # set comm.tracing = True inside a rank to record the timeline


def get_stats() -> CommStats:
    """This rank's counters since the last :func:`reset_stats`."""
    return _stats


def reset_stats() -> None:
    global _stats
    _stats = CommStats()


def _nbytes(t: torch.Tensor | list | None) -> int:
    if t is None:
        return 0
    if isinstance(t, (list, tuple)):
        return sum(_nbytes(x) for x in t)
    return t.numel() * t.element_size()


def _check_tensor(name: str, t: object) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: the tensor is not contiguous; pass t.contiguous() "
                         "(a view such as x[:, 0] or x.T must be copied before sending)")


def _check_peer(fn: str, name: str, peer: object, group=None, allow_self: bool = False) -> None:
    """``peer`` must be a rank that exists (and is in ``group``): gloo crashes or hangs otherwise."""
    if peer is None and name == "src" and fn in ("recv", "irecv"):
        return  # receive from any rank
    if not isinstance(peer, int) or isinstance(peer, bool):
        raise TypeError(f"{fn}: {name} must be an int rank, got {peer!r}")
    world = dist.get_world_size()
    if not 0 <= peer < world:
        raise ValueError(f"{fn}: {name}={peer} but world_size is {world}: ranks are 0..{world - 1}")
    if group is not None and peer not in dist.get_process_group_ranks(group):
        raise ValueError(f"{fn}: {name}={peer} is not in the group (its ranks are "
                         f"{dist.get_process_group_ranks(group)}); {name} is a global rank")
    if not allow_self and peer == dist.get_rank():
        raise ValueError(f"{fn}: {name}={peer} is this rank itself: a rank cannot send to or receive from "
                         "itself; copy the tensor instead")


def _check_sizes(fn: str, small: torch.Tensor, big: torch.Tensor, group, small_name: str, big_name: str) -> None:
    """``big`` holds one ``small`` per rank, of the same dtype (all-gather and reduce-scatter into one tensor)."""
    _check_tensor(fn, small)
    _check_tensor(fn, big)
    p = dist.get_world_size(group)
    if big.numel() != p * small.numel():
        raise ValueError(f"{fn}: {big_name} has {big.numel()} elements but must have world_size x {small_name} = "
                         f"{p} x {small.numel()} = {p * small.numel()}")
    if big.dtype != small.dtype:
        raise TypeError(f"{fn}: {big_name} is {big.dtype} but {small_name} is {small.dtype}; use one dtype")


def _check_list(fn: str, tensors: list, like: torch.Tensor, group, name: str) -> None:
    """``tensors`` holds one tensor per rank, each of ``like``'s shape and dtype."""
    p = dist.get_world_size(group)
    if not isinstance(tensors, (list, tuple)) or len(tensors) != p:
        got = len(tensors) if isinstance(tensors, (list, tuple)) else type(tensors).__name__
        raise ValueError(f"{fn}: {name} must be a list of world_size = {p} tensors, got {got}")
    for i, t in enumerate(tensors):
        _check_tensor(fn, t)
        if t.shape != like.shape or t.dtype != like.dtype:
            raise ValueError(f"{fn}: {name}[{i}] is {tuple(t.shape)} {t.dtype} but must match "
                             f"{tuple(like.shape)} {like.dtype} (gloo refuses uneven sizes); pad the inputs first")


def check_raw_point_to_point(exchange_headers: bool = False) -> None:
    """Give ``torch.distributed``'s own send/recv the checks of this module's.

    The launcher calls this in every worker. A learner may call ``dist.send(t, dst=2)``
    directly; with a rank that does not exist gloo crashes the process or hangs, so the peer is
    checked first and a ValueError names the rank range instead.

    With ``exchange_headers=True`` (the launcher's ``check_collectives``), every message starts
    with a small header, the sent tensor's (dtype, number of elements, shape), on a tag of its
    own; the receiver compares it with its buffer before it takes the data, and raises a
    ValueError naming both sides instead of crashing (gloo aborts on a message larger than the
    buffer) or silently receiving garbage (a smaller one, or another dtype). A message of at most
    :data:`_INLINE_BYTES` travels inside its header message (one message, as without the check);
    a larger one follows its header. Headers are not counted in :func:`get_stats`.
    ``comm.send``/``recv``/``isend``/``irecv`` and ``batch_isend_irecv`` go through these functions.
    """
    global _exchange_headers
    _exchange_headers = exchange_headers
    if getattr(dist.send, "_course_checked", False):
        return
    originals = {name: getattr(dist, name) for name in ("send", "recv", "isend", "irecv")}
    isend0, irecv0 = originals["isend"], originals["irecv"]

    def p2p(name: str, tensor, peer, group, tag, group_peer):
        sending = name.endswith("send")
        _check_raw_peer(name, "dst" if sending else "src", peer, group)
        if not _exchange_headers:
            extra = {"group_dst" if sending else "group_src": group_peer}
            return originals[name](tensor, peer, group, tag, **extra)
        if sending:
            work = _send_with_header(isend0, tensor, peer, group, tag, group_peer)
        else:
            work = _CheckedRecv(irecv0, tensor, peer, group, tag, group_peer)
        if name.startswith("i"):
            return work
        if work is not None:  # blocking: wait here, as dist.send / dist.recv do
            work.wait()
        return None if sending else work.sender

    # The signatures of torch's own, so that calls by keyword (dst=, group_src=...) keep working.
    def checked_isend(tensor, dst=None, group=None, tag=0, group_dst=None):
        return p2p("isend", tensor, dst, group, tag, group_dst)

    def checked_send(tensor, dst=None, group=None, tag=0, group_dst=None):
        return p2p("send", tensor, dst, group, tag, group_dst)

    def checked_irecv(tensor, src=None, group=None, tag=0, group_src=None):
        return p2p("irecv", tensor, src, group, tag, group_src)

    def checked_recv(tensor, src=None, group=None, tag=0, group_src=None):
        return p2p("recv", tensor, src, group, tag, group_src)

    for name, checked in (("send", checked_send), ("recv", checked_recv), ("isend", checked_isend),
                          ("irecv", checked_irecv)):
        functools.update_wrapper(checked, originals[name])
        checked._course_checked = True
        # Both names: P2POp and batch_isend_irecv compare ops with distributed_c10d's own.
        setattr(dist, name, checked)
        setattr(distributed_c10d, name, checked)


_exchange_headers = False
_HEADER_TAG = 1 << 30  # header tags: far above any tag the course or a learner uses
_HEADER_LEN = 4 + 8  # dtype, numel, ndim, inline?, up to 8 dimensions (int64 each)
_HEADER_BYTES = 8 * _HEADER_LEN
_INLINE_BYTES = 1 << 16  # messages up to this size ride in their header message
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128]
_pending_sends: list = []  # header sends not yet completed (their buffers must stay alive)


def _check_raw_peer(fn: str, name: str, peer, group) -> None:
    if peer is not None:  # None: a group-relative peer (group_dst=...), which torch checks, or any source
        _check_peer(fn, name, peer, group)


def _header_of(tensor: torch.Tensor, inline: bool = False) -> list[int]:
    code = _DTYPES.index(tensor.dtype) if tensor.dtype in _DTYPES else len(_DTYPES) + 1
    shape = list(tensor.shape)[:8]
    return [code, tensor.numel(), tensor.dim(), int(inline)] + shape + [0] * (8 - len(shape))


def _describe(code: int, numel: int, shape: list[int]) -> str:
    dtype = str(_DTYPES[code]).replace("torch.", "") if 0 <= code < len(_DTYPES) else "another dtype"
    return f"shape {list(shape)} {dtype}" if len(shape) <= 8 else f"{numel} elements of {dtype}"


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def _send_with_header(isend0, tensor, dst, group, tag, group_dst):
    """Send the header (with the data inside when small); return the Work that completes the message."""
    _pending_sends[:] = [w for w in _pending_sends if not w.is_completed()]
    nbytes = tensor.numel() * tensor.element_size()
    inline = nbytes <= _INLINE_BYTES
    message = torch.empty(_HEADER_BYTES + (nbytes if inline else 0), dtype=torch.uint8)
    message[:_HEADER_BYTES] = torch.tensor(_header_of(tensor, inline), dtype=torch.int64).view(torch.uint8)
    if inline:
        message[_HEADER_BYTES:] = _as_bytes(tensor)
    header_work = isend0(message, dst, group, _HEADER_TAG + tag, group_dst=group_dst)
    if inline:
        return header_work
    if header_work is not None:
        _pending_sends.append(header_work)  # keeps it alive until done; the payload follows it
    return isend0(tensor, dst, group, tag, group_dst=group_dst)


def _global(group, group_rank: int) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


class _CheckedRecv:
    """A receive that compares the sender's header with its buffer before it takes the data.

    Small buffers receive the header message (with the data inside) into a buffer of the largest
    inline size, so that any sender's message fits. A large buffer posts its own receive at once,
    as without the check, so that a peer's blocking send completes before we wait.
    """

    def __init__(self, irecv0, tensor, src, group, tag, group_src):
        self._tensor, self._group, self._irecv0, self._tag = tensor, group, irecv0, tag
        self.sender = src if src is not None else (None if group_src is None else _global(group, group_src))
        self._message = torch.empty(_HEADER_BYTES + _INLINE_BYTES, dtype=torch.uint8)
        self._header_work = irecv0(self._message, src, group, _HEADER_TAG + tag, group_src=group_src)
        nbytes = tensor.numel() * tensor.element_size()
        self._payload_work = (irecv0(tensor, self.sender, group, tag)
                              if nbytes > _INLINE_BYTES and self.sender is not None else None)
        self._checked = False

    def wait(self, timeout=None) -> bool:
        if not self._checked:
            self._header_work.wait()
            self._checked = True
            if self.sender is None:  # any source: the header says who
                self.sender = _global(self._group, self._header_work._source_rank())
            code, numel, ndim, inline, *dims = self._message[:_HEADER_BYTES].view(torch.int64).tolist()
            mine = _header_of(self._tensor)
            if code != mine[0] or numel != mine[1]:
                raise ValueError(
                    f"rank {dist.get_rank()} receives into {_describe(mine[0], mine[1], list(self._tensor.shape))} "
                    f"but rank {self.sender} sent {_describe(code, numel, dims[:ndim])}: the receive buffer must "
                    "have the sender's shape and dtype")
            if inline:
                _as_bytes(self._tensor).copy_(self._message[_HEADER_BYTES:_HEADER_BYTES + _as_bytes(self._tensor).numel()])
                return True
            if self._payload_work is None:
                self._payload_work = self._irecv0(self._tensor, self.sender, self._group, self._tag)
        if self._payload_work is None:
            return True
        return self._payload_work.wait() if timeout is None else self._payload_work.wait(timeout)

    def is_completed(self) -> bool:
        return self._checked and (self._payload_work is None or self._payload_work.is_completed())

    def _source_rank(self) -> int:
        if self.sender is None:
            self.sender = _global(self._group, self._header_work._source_rank())
        return self.sender if self._group is None else dist.get_group_rank(self._group, self.sender)


def _point_to_point(fn: str, tensor: torch.Tensor, role: str, peer: object, group) -> int:
    """Check a message to (``role="dst"``) or from (``"src"``) ``peer`` and count its bytes."""
    _check_tensor(fn, tensor)
    _check_peer(fn, role, peer, group)
    nbytes = _nbytes(tensor)
    if role == "dst":
        _stats.sent_bytes += nbytes
        _stats.sent_messages += 1
    else:
        _stats.recv_bytes += nbytes
        _stats.recv_messages += 1
    return nbytes


def _check_rooted(fn: str, tensor: torch.Tensor, root_name: str, root: object, tensors: list | None,
                  list_name: str, group) -> None:
    """gather and scatter: a root that exists and, on the root, one tensor per rank."""
    _check_tensor(fn, tensor)
    _check_peer(fn, root_name, root, group, allow_self=True)
    if tensors is not None:
        _check_list(fn, tensors, tensor, group, list_name)


def _record(op: str, nbytes: int, t0: float, t1: float | None, peer: int | None = None) -> None:
    if tracing:
        _stats.trace.append((op, nbytes, t0, t1, peer))


def _collective(op: str, nbytes: int) -> float:
    _stats.collective_calls[op] += 1
    _stats.collective_bytes[op] += nbytes
    return time.perf_counter()


def _counted(op: str, nbytes: int, async_op: bool, call) -> object:
    """Count ``op`` and run ``call()``; a blocking call also goes into the timeline."""
    t0 = _collective(op, nbytes)
    work = call()
    _record(op, nbytes, t0, None if async_op else time.perf_counter())
    return work


# ----------------------------------------------------------------------------- point to point
# When the launcher checks collectives across ranks, the checked process group numbers every call
# it carries, messages included; ranks that send different numbers of messages (a pipeline stage,
# a parameter server) would then look like ranks calling different collectives. So messages sent
# without a group travel on an unchecked twin of the default group, which the launcher sets.
_p2p_group = None


def set_point_to_point_group(group) -> None:
    """The group that carries messages sent with ``group=None`` (None: the default group)."""
    global _p2p_group
    _p2p_group = group


def _route(group):
    return _p2p_group if group is None else group


def send(tensor: torch.Tensor, dst: int, group=None, tag: int = 0) -> None:
    """Blocking send of ``tensor`` to rank ``dst``."""
    nbytes = _point_to_point("send", tensor, "dst", dst, group)
    t0 = time.perf_counter()
    dist.send(tensor, dst, group=_route(group), tag=tag)
    _record("send", nbytes, t0, time.perf_counter(), dst)


def recv(tensor: torch.Tensor, src: int | None = None, group=None, tag: int = 0) -> int:
    """Blocking receive into ``tensor`` (its shape and dtype must match what is sent)."""
    nbytes = _point_to_point("recv", tensor, "src", src, group)
    t0 = time.perf_counter()
    sender = dist.recv(tensor, src, group=_route(group), tag=tag)
    _record("recv", nbytes, t0, time.perf_counter(), src)
    return sender


def isend(tensor: torch.Tensor, dst: int, group=None, tag: int = 0):
    """Non-blocking send; returns a Work whose ``wait()`` completes it."""
    _record("isend", _point_to_point("isend", tensor, "dst", dst, group), time.perf_counter(), None, dst)
    return dist.isend(tensor, dst, group=_route(group), tag=tag)


def irecv(tensor: torch.Tensor, src: int | None = None, group=None, tag: int = 0):
    """Non-blocking receive; the data is in ``tensor`` only after ``wait()``."""
    _record("irecv", _point_to_point("irecv", tensor, "src", src, group), time.perf_counter(), None, src)
    return dist.irecv(tensor, src, group=_route(group), tag=tag)


def batch_isend_irecv(ops: list[P2POp]) -> list:
    """Start a list of ``P2POp(dist.isend/irecv, tensor, peer)`` together; returns their Works."""
    for op in ops:
        _point_to_point("batch_isend_irecv", op.tensor, "dst" if op.op is dist.isend else "src", op.peer, op.group)
        op.group = _route(op.group)
    return dist.batch_isend_irecv(ops)


# ----------------------------------------------------------------------------- collectives
# With the launcher's check_collectives on, each rank notes the collective it is in (and when it
# has left it) in a small file the launcher reads: ranks blocked in collectives on different
# groups wait on each other forever, and torch's own check cannot see it (each group checks itself).
_call_log: int | None = None  # a file descriptor, set by the launcher
_call_count = 0


def set_call_log(fd: int | None) -> None:
    """Note every collective this rank enters and leaves in file ``fd`` (None: do not)."""
    global _call_log
    _call_log = fd


def describe_group(group) -> str:
    """``the default group`` or ``group [0, 1] (new_group #2)``: the same words on every rank."""
    if group is None or group is dist.GroupMember.WORLD or group is _p2p_group:
        return "the default group"
    made = [g for g in distributed_c10d._world.pg_group_ranks
            if g is not dist.GroupMember.WORLD and g is not _p2p_group]
    number = made.index(group) + 1 if group in made else "?"
    return f"group {dist.get_process_group_ranks(group)} (new_group #{number})"


def _noted(fn):
    """Write ``count|in|op|group ranks|group|shape dtype`` before ``fn`` and ``count|out|...`` after it."""
    names = list(inspect.signature(fn).parameters)
    where = names.index("group")

    @functools.wraps(fn)
    def noted(*args, **kwargs):
        global _call_count
        if _call_log is None:
            return fn(*args, **kwargs)
        group = args[where] if len(args) > where else kwargs.get("group")
        tensor = next((a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)), None)
        ranks = (dist.get_process_group_ranks(group) if group not in (None, dist.GroupMember.WORLD)
                 else list(range(dist.get_world_size())))
        what = f"shape {list(tensor.shape)}, {str(tensor.dtype).replace('torch.', '')}" if tensor is not None else ""
        _call_count += 1
        note = f"{_call_count}|{{}}|{fn.__name__}|{ranks}|{describe_group(group)}|{what}"
        os.pwrite(_call_log, note.format("in").encode().ljust(512), 0)
        out = fn(*args, **kwargs)
        os.pwrite(_call_log, note.format("out").encode().ljust(512), 0)
        return out

    return noted


@_noted
def broadcast(tensor: torch.Tensor, src: int, group=None, async_op: bool = False):
    _check_tensor("broadcast", tensor)
    _check_peer("broadcast", "src", src, group, allow_self=True)
    return _counted("broadcast", _nbytes(tensor), async_op,
                    lambda: dist.broadcast(tensor, src, group=group, async_op=async_op))


@_noted
def all_reduce(tensor: torch.Tensor, op=ReduceOp.SUM, group=None, async_op: bool = False):
    _check_tensor("all_reduce", tensor)
    return _counted("all_reduce", _nbytes(tensor), async_op,
                    lambda: dist.all_reduce(tensor, op=op, group=group, async_op=async_op))


@_noted
def reduce(tensor: torch.Tensor, dst: int, op=ReduceOp.SUM, group=None, async_op: bool = False):
    _check_tensor("reduce", tensor)
    _check_peer("reduce", "dst", dst, group, allow_self=True)
    _collective("reduce", _nbytes(tensor))
    return dist.reduce(tensor, dst, op=op, group=group, async_op=async_op)


@_noted
def all_gather(tensor_list: list[torch.Tensor], tensor: torch.Tensor, group=None, async_op: bool = False):
    _check_tensor("all_gather", tensor)
    _check_list("all_gather", tensor_list, tensor, group, "tensor_list")
    _collective("all_gather", _nbytes(tensor))
    return dist.all_gather(tensor_list, tensor, group=group, async_op=async_op)


@_noted
def all_gather_single(output: torch.Tensor, input: torch.Tensor, group=None, async_op: bool = False):
    """``output = cat(input of rank 0, ..., input of rank p-1)``: torch 2.13's name for
    ``all_gather_into_tensor``."""
    _check_sizes("all_gather_single", input, output, group, "input", "output")
    return _counted("all_gather_single", _nbytes(input), async_op,
                    lambda: dist.all_gather_single(output, input, group=group, async_op=async_op))


@_noted
def all_gather_into_tensor(output: torch.Tensor, input: torch.Tensor, group=None, async_op: bool = False):
    """The pre-2.13 name of :func:`all_gather_single` (same operation, without torch's
    deprecation warning printed by every rank)."""
    _check_sizes("all_gather_into_tensor", input, output, group, "input", "output")
    return _counted("all_gather_into_tensor", _nbytes(input), async_op,
                    lambda: dist.all_gather_single(output, input, group=group, async_op=async_op))


@_noted
def gather(tensor: torch.Tensor, gather_list: list[torch.Tensor] | None = None, dst: int = 0,
           group=None, async_op: bool = False):
    """Rank ``dst`` receives every rank's ``tensor`` into ``gather_list``; counted: ``tensor``."""
    _check_rooted("gather", tensor, "dst", dst, gather_list, "gather_list", group)
    _collective("gather", _nbytes(tensor))
    return dist.gather(tensor, gather_list, dst=dst, group=group, async_op=async_op)


@_noted
def scatter(tensor: torch.Tensor, scatter_list: list[torch.Tensor] | None = None, src: int = 0,
            group=None, async_op: bool = False):
    """Rank r receives ``scatter_list[r]`` of rank ``src`` into ``tensor``; counted: the list
    (its bytes on the root, 0 elsewhere)."""
    _check_rooted("scatter", tensor, "src", src, scatter_list, "scatter_list", group)
    _collective("scatter", _nbytes(scatter_list))
    return dist.scatter(tensor, scatter_list, src=src, group=group, async_op=async_op)


@_noted
def reduce_scatter(output: torch.Tensor, input_list: list[torch.Tensor], op=ReduceOp.SUM,
                   group=None, async_op: bool = False):
    """``output = sum over ranks of input_list[rank]``. Note: gloo implements reduce-scatter as
    a full all-reduce followed by a local slice, i.e. twice the traffic of a ring reduce-scatter."""
    _check_tensor("reduce_scatter", output)
    _check_list("reduce_scatter", input_list, output, group, "input_list")
    _collective("reduce_scatter", _nbytes(input_list))
    return dist.reduce_scatter(output, input_list, op=op, group=group, async_op=async_op)


@_noted
def reduce_scatter_single(output: torch.Tensor, input: torch.Tensor, op=ReduceOp.SUM,
                          group=None, async_op: bool = False):
    """``output = chunk r of (sum over ranks of input)`` on rank r: torch 2.13's name for
    ``reduce_scatter_tensor``. gloo runs it as a full all-reduce (twice a ring's traffic)."""
    _check_sizes("reduce_scatter_single", output, input, group, "output", "input")
    return _counted("reduce_scatter_single", _nbytes(input), async_op,
                    lambda: dist.reduce_scatter_single(output, input, op=op, group=group, async_op=async_op))


@_noted
def reduce_scatter_tensor(output: torch.Tensor, input: torch.Tensor, op=ReduceOp.SUM,
                          group=None, async_op: bool = False):
    """The pre-2.13 name of :func:`reduce_scatter_single` (same operation, no warning)."""
    _check_sizes("reduce_scatter_tensor", output, input, group, "output", "input")
    return _counted("reduce_scatter_tensor", _nbytes(input), async_op,
                    lambda: dist.reduce_scatter_single(output, input, op=op, group=group, async_op=async_op))


@_noted
def all_to_all(output_tensor_list: list[torch.Tensor], input_tensor_list: list[torch.Tensor],
               group=None, async_op: bool = False):
    p = dist.get_world_size(group)
    if len(output_tensor_list) != p or len(input_tensor_list) != p:
        raise ValueError(f"all_to_all: output_tensor_list and input_tensor_list must each hold world_size = {p} "
                         f"tensors, got {len(output_tensor_list)} and {len(input_tensor_list)}")
    _collective("all_to_all", _nbytes(input_tensor_list))
    return dist.all_to_all(output_tensor_list, input_tensor_list, group=group, async_op=async_op)


@_noted
def barrier(group=None) -> None:
    _collective("barrier", 0)
    dist.barrier(group=group)


def new_group(ranks: list[int] | None = None):
    """Make a sub-group; every rank must call it with the same ``ranks``, even ranks outside it."""
    return dist.new_group(ranks)


def _require_process_group(what: str) -> None:
    if not dist.is_initialized():
        raise RuntimeError(f"{what}: torch.distributed is not initialised in this process. Call it "
                           "inside a function run by course_lib.launcher.launch(fn, world_size) (or "
                           "under torchrun), on every rank, not in the notebook's own process.")


def get_rank(group=None) -> int:
    _require_process_group("comm.get_rank")
    return dist.get_rank(group)


def get_world_size(group=None) -> int:
    _require_process_group("comm.get_world_size")
    return dist.get_world_size(group)


def device() -> torch.device:
    """The device this rank's tensors belong on: ``cuda:LOCAL_RANK`` under nccl, else the CPU.

    Write worker functions with ``x = torch.ones(4, device=comm.device())`` and they run
    unchanged on gloo CPU ranks (the launcher, torchrun) and on nccl GPU ranks (torchrun).
    """
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
