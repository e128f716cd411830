"""When compression pays: the step time of each compressor on a modelled cluster (chapter 7).

Chapter 3's alpha-beta model prices the collectives a compressor's :meth:`~course_lib.
compression.Compressor.plan` calls; chapter 1's FLOP count at a stated device speed prices the
compute. The clusters in :data:`CLUSTERS` are stated assumptions, not measurements:

    T_step = flop / speed + sum over tensors of T_comm(compressor, tensor)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from course_lib.alpha_beta import AlphaBeta, predict
from course_lib.compression import Compressor, check_compressor, check_shape, int_arg, real_arg


def _check_link(link) -> None:
    if not isinstance(link, AlphaBeta):
        raise TypeError(f"link must be an AlphaBeta (chapter 3's fit, e.g. AlphaBeta(5e-6, 1 / 100e9)), "
                        f"got {type(link).__name__}")


def predict_comm_seconds(compressor: Compressor, shape: tuple[int, ...], p: int, link: AlphaBeta) -> float:
    """Alpha-beta time of ``compressor``'s collectives for one tensor on p ranks (chapter 3):
    a ring all-reduce of b bytes ``2(p-1) alpha + 2(p-1)/p b beta``, a ring all-gather of b
    bytes per rank ``(p-1)(alpha + b beta)``."""
    check_compressor(compressor)
    int_arg("p", p, 1, "the number of ranks")
    _check_link(link)
    total = 0.0
    for m in compressor.plan(check_shape(shape)):
        if m.op == "all_reduce":
            total += predict("ring", m.nbytes, p, link)
        else:
            total += predict("all_gather", p * m.nbytes, p, link)
    return total


# ----------------------------------------------------------------------------- modelled clusters
@dataclass(frozen=True)
class Cluster:
    """A modelled cluster: ``devices`` ranks, each computing at ``flops`` FLOP/s, joined by a
    network with the alpha-beta ``link`` of chapter 3."""

    name: str
    devices: int
    link: AlphaBeta
    flops: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str describing the cluster, got {type(self.name).__name__}")
        int_arg("devices", self.devices, 1, "the number of ranks")
        _check_link(self.link)
        real_arg("flops", self.flops, 0, math.inf, "each device's speed in FLOP/s, e.g. 20e12", low_open=True,
                  high_open=True)


# Stated, not measured: round numbers of the usual kind of hardware. Effective FLOP/s of a
# GPU on a small model are far below its peak; 20 TFLOP/s is an assumption.
CLUSTERS = (
    Cluster("8 GPUs, one node (NVLink-class: 5 us, 100 GB/s)", 8, AlphaBeta(5e-6, 1 / 100e9), 20e12),
    Cluster("64 GPUs, 10 Gb/s Ethernet (50 us, 1.25 GB/s)", 64, AlphaBeta(50e-6, 1 / 1.25e9), 20e12),
)


def predict_step_seconds(compressor: Compressor, shapes: list[tuple[int, ...]], cluster: Cluster,
                         flop_per_device: float) -> float:
    """``T_step = flop / speed + sum over tensors of T_comm(compressor, tensor)``: compute
    (chapter 1's FLOP count at the cluster's speed) then the compressor's collectives on the
    cluster's link (:func:`predict_comm_seconds`), with no overlap and no encoding time
    (both are simplifications: overlap favours the dense all-reduce, encoding costs the
    compressors)."""
    check_compressor(compressor)
    if not isinstance(cluster, Cluster):
        raise TypeError(f"cluster must be a Cluster, e.g. CLUSTERS[0], got {type(cluster).__name__}")
    real_arg("flop_per_device", flop_per_device, 0, math.inf, "the FLOP one device computes per step",
              high_open=True)
    if isinstance(shapes, (str, bytes)) or not hasattr(shapes, "__iter__"):
        raise ValueError(f"shapes must be a list of tensor shapes, e.g. [(1000,), (40, 30)], got {shapes!r}")
    comm_s = sum(predict_comm_seconds(compressor, s, cluster.devices, cluster.link) for s in shapes)
    return flop_per_device / cluster.flops + comm_s
