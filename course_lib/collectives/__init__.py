"""All-reduce, reduce-scatter and all-gather built from point-to-point messages (chapter 3).

Read in this order, one algorithm per file:

1. ``common.py``              the chunk convention (:func:`chunk_bounds`), the group, argument checks
2. ``naive.py``               gather to a root, add, send back
3. ``tree.py``                binomial tree: reduce up, broadcast down
4. ``recursive_doubling.py``  log2 p pairwise exchanges of the whole vector
5. ``ring.py``                the ring, plainly: one chunk per message, 2(p-1) steps
6. ``pipelined_ring.py``      the same ring, tuned: chunks cut into pieces that are forwarded
                              as soon as they are reduced (what gloo and NCCL do)
7. ``rabenseifner.py``        recursive halving, then recursive doubling: the ring's bytes in
                              2 log2 p steps

Every function is called by *every* rank of a group, like ``torch.distributed``'s collectives,
works **in place** on a tensor of any shape and size (its element count need not be divisible
by the number of ranks) and talks only through :mod:`course_lib.comm`'s
``isend``/``irecv``/``send``/``recv``, so the byte counters measure exactly what each algorithm
puts on the wire.

=========================  =================================  ======================================
algorithm                  alpha-beta time                    bytes sent by one rank
=========================  =================================  ======================================
naive (gather+broadcast)   2(p-1)(alpha + n beta)             root (p-1)n, others n
binomial tree              2 ceil(log2 p)(alpha + n beta)     at most ceil(log2 p) n
recursive doubling         log2 p (alpha + n beta)            log2 p * n (p a power of two)
ring all-reduce            2(p-1) alpha + 2(p-1)/p n beta     2(p-1)/p n
Rabenseifner               2 log2 p alpha + 2(p-1)/p n beta   2(p-1)/p n (p a power of two)
ring reduce-scatter        (p-1) alpha + (p-1)/p n beta       (p-1)/p n
ring all-gather            (p-1) alpha + (p-1)/p n beta       (p-1)/p n
=========================  =================================  ======================================

(Thakur, Rabenseifner & Gropp 2005, "Optimization of collective communication operations in
MPICH"; the ring's bandwidth term is optimal: Patarasuk & Yuan 2009.) For p not a power of two,
recursive doubling and Rabenseifner fold the first 2(p - p') ranks in pairs first (p' the
largest power of two <= p): two extra steps, 2(alpha + n beta).
"""
from __future__ import annotations

from typing import Callable

import torch

from course_lib.collectives.common import chunk_bounds
from course_lib.collectives.naive import naive_all_reduce
from course_lib.collectives.pipelined_ring import (PIECE_BYTES, WINDOW, auto_piece_bytes, ring_all_gather,
                                                   ring_all_reduce, ring_reduce_scatter)
from course_lib.collectives.rabenseifner import rabenseifner_all_reduce, rabenseifner_bytes_sent
from course_lib.collectives.recursive_doubling import recursive_doubling_all_reduce
from course_lib.collectives.ring import ring_all_reduce_steps, ring_bytes_sent
from course_lib.collectives.tree import tree_all_reduce

ALL_REDUCE: dict[str, Callable[..., torch.Tensor]] = {
    "naive": naive_all_reduce,
    "tree": tree_all_reduce,
    "recursive_doubling": recursive_doubling_all_reduce,
    "ring": ring_all_reduce,
    "rabenseifner": rabenseifner_all_reduce,
}

__all__ = ["ALL_REDUCE", "PIECE_BYTES", "WINDOW", "auto_piece_bytes", "chunk_bounds", "naive_all_reduce",
           "rabenseifner_all_reduce", "rabenseifner_bytes_sent", "recursive_doubling_all_reduce", "ring_all_gather", "ring_all_reduce", "ring_all_reduce_steps",
           "ring_bytes_sent", "ring_reduce_scatter", "tree_all_reduce"]
