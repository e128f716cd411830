"""Chapter 2: bytes and seconds per step of the busiest node, for a single parameter server,
ring all-reduce and ring gossip on a flat float32 vector.

    ./course bench ps [--params N] [--steps K] [--ranks 3 4 6]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from course_lib import comm, gossip
from course_lib.gossip import expected_bytes_per_step
from course_lib.launcher import launch
from course_lib.parameter_server import run_ps
from course_lib.tables import format_table


def _bench_worker(rank: int, world_size: int, algorithm: str, n_params: int, steps: int) -> dict:
    """One rank of the benchmark: ``steps`` rounds of PS (rank 0 = server), ring all-reduce or
    ring gossip on an ``n_params`` float32 vector; returns bytes sent/received and seconds."""
    x = torch.randn(n_params)
    comm.barrier()
    t0 = time.perf_counter()
    if algorithm == "ps":
        run = run_ps(rank, world_size, problem=_Echo(n_params), steps=steps, lr=0.1, mode="sync")
        sent, recv = run["stats"]["sent"], run["stats"]["recv"]
    else:
        W = gossip.ring_mixing_matrix(world_size) if world_size >= 3 else gossip.complete_mixing_matrix(world_size)
        for _ in range(steps):
            x = gossip.ring_all_reduce_mean(x) if algorithm == "ring_all_reduce" else gossip.gossip_mix(x, W, rank)
        sent, recv = comm.get_stats().sent_bytes, comm.get_stats().recv_bytes
    return dict(sent=sent / steps, recv=recv / steps, seconds=(time.perf_counter() - t0) / steps)


@dataclass
class _Echo:
    """A problem whose gradient is free (``g = w``), so the benchmark times only communication."""

    n: int

    def init(self) -> torch.Tensor:
        return torch.zeros(self.n)

    def grad(self, w: torch.Tensor, step: int, worker: int, n_workers: int) -> tuple[float, torch.Tensor]:
        return 0.0, w.clone()

    def loss(self, w: torch.Tensor) -> float:
        return 0.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench ps", description=__doc__)
    ap.add_argument("--params", type=int, default=1 << 18, help="float32 parameters Psi (default 262144 = 1 MiB)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--ranks", type=int, nargs="+", default=[3, 4, 6])
    a = ap.parse_args(argv)
    print(f"Psi = {a.params} float32 = {4 * a.params / 2**20:.2f} MiB; busiest node per step "
          f"(PS: rank 0 is the server of p-1 workers)")
    rows = []
    for p in a.ranks:
        for alg, key in (("ps", "ps_server"), ("ring_all_reduce", "ring_all_reduce"), ("gossip", "gossip_ring")):
            res = launch(_bench_worker, p, algorithm=alg, n_params=a.params, steps=a.steps, timeout=120,
                         check_collectives=False)
            busiest = max(res, key=lambda r: r["sent"])
            n = p - 1 if alg == "ps" else p
            want = expected_bytes_per_step(n, a.params, key) if p >= 3 or alg != "gossip" else 4 * a.params
            rows.append({"p": p, "algorithm": alg, "sent MiB": busiest["sent"] / 2**20, "formula MiB": want / 2**20,
                         "ms/step": 1000 * max(r["seconds"] for r in res)})
    print(format_table(rows, {"sent MiB": "{:.3f}", "formula MiB": "{:.3f}", "ms/step": "{:.1f}"}))


if __name__ == "__main__":
    main()
