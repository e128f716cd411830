"""Instances: seeded random problems for tests and benchmarks, and the seed's worked example."""

from __future__ import annotations

import numpy as np

from .problem import Device, Links, Module, Problem


def random_problem(k: int, n: int, seed: int, *, memory_slack: float = 1.5,
                   skip_prob: float = 0.0) -> Problem:
    """A random heterogeneous instance with k modules and n devices, reproducible from `seed`.

    Scales are chosen so compute and communication are comparable (~10 ms each):
    s_d ~ 10^U(13.5, 14.5) FLOP/s, w_j ~ 1e12 lognormal FLOP, B_de ~ 10^U(9.5, 11) bytes/s
    (asymmetric), alpha_de ~ U(1, 20) us, activations T_{j,j+1} ~ 1e8 lognormal bytes.
    Device memories split `memory_slack` x (total module memory) at random (Dirichlet), and
    the largest device is grown if needed so that every module fits somewhere (so the
    instance is valid; it may still have no feasible assignment when the slack is small).
    `skip_prob` adds a skip-connection message j -> l (l > j + 1) with that probability.
    """
    if k < 1 or n < 1:
        raise ValueError(f"need k >= 1 modules and n >= 1 devices, got k={k}, n={n}")
    if memory_slack <= 0:
        raise ValueError(f"memory_slack must be > 0, got {memory_slack}")
    rng = np.random.default_rng(seed)
    work = 1e12 * rng.lognormal(0.0, 0.6, k)
    params = 1e9 * rng.lognormal(0.0, 0.6, k)
    acts = 0.25 * params * rng.uniform(0.5, 1.5, k)
    out = 1e8 * rng.lognormal(0.0, 0.8, k)
    modules = [Module(f"layer{j}", float(work[j]), float(params[j]), float(acts[j]), float(out[j]))
               for j in range(k)]
    need = params + acts
    mem = memory_slack * need.sum() * rng.dirichlet(np.full(n, 2.0))
    big = int(mem.argmax())
    mem[big] = max(mem[big], 1.05 * need.max())
    speed = 10.0 ** rng.uniform(13.5, 14.5, n)
    devices = [Device(f"dev{d}", float(speed[d]), float(mem[d])) for d in range(n)]
    links = Links(10.0 ** rng.uniform(9.5, 11.0, (n, n)), rng.uniform(1e-6, 2e-5, (n, n)))
    extra = {(j, l): float(1e8 * rng.lognormal(0.0, 0.8))
             for j in range(k) for l in range(j + 2, k) if rng.random() < skip_prob}
    return Problem(tuple(devices), tuple(modules), links, extra)


def seed_example(t12: float = 0.0, bandwidth: float = np.inf) -> Problem:
    """The seed's section 4.4: c_1 = 10, c_2 = 5 (FLOP/s), w_1 = 8, w_2 = 4 (FLOP).

    The seed gives no memory, traffic or link, so memory is ample (it never binds), and the
    message from module 1 to module 2 is `t12` bytes over a link of `bandwidth` bytes/s with
    no latency; the defaults (no traffic) reproduce the seed's numbers.
    """
    devices = (Device("device1", 10.0, 1.0), Device("device2", 5.0, 1.0))
    modules = (Module("module1", 8.0, 0.1, 0.0, t12), Module("module2", 4.0, 0.1, 0.0, 0.0))
    return Problem(devices, modules, Links.uniform(2, bandwidth, 0.0))
