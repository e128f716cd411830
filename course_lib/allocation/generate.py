"""Instances: seeded random problems for tests and benchmarks, and the seed's worked example."""

from __future__ import annotations

import numpy as np

from .problem import Device, Links, Module, Problem, check_fraction, check_int, check_number


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
    k = check_int(k, "random_problem: k (modules)", 1)
    n = check_int(n, "random_problem: n (devices)", 1)
    seed = check_int(seed, "random_problem: seed", 0)
    memory_slack = check_number(memory_slack, "random_problem: memory_slack",
                                "give total device memory / total module memory, e.g. 1.5", positive=True)
    skip_prob = check_fraction(skip_prob, "random_problem: skip_prob (a probability)")
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
    t12 = check_number(t12, "seed_example: t12 (bytes from module 1 to module 2)", "give a size in bytes >= 0")
    if t12 < 0:
        raise ValueError(f"seed_example: t12 must be >= 0 bytes, got {t12!r}; a message cannot have negative size")
    if isinstance(bandwidth, (bool, np.bool_)) or not isinstance(bandwidth, (int, float, np.floating, np.integer)) \
            or np.isnan(bandwidth) or not bandwidth > 0:
        raise ValueError(f"seed_example: bandwidth must be a number > 0 bytes/s (np.inf for a free link), "
                         f"got {bandwidth!r}")
    devices = (Device("device1", 10.0, 1.0), Device("device2", 5.0, 1.0))
    modules = (Module("module1", 8.0, 0.1, 0.0, t12), Module("module2", 4.0, 0.1, 0.0, 0.0))
    return Problem(devices, modules, Links.uniform(2, bandwidth, 0.0))


# Instance kinds that stress a solver's numerics and edge cases (used by the randomised
# cross-check in tests/test_allocation.py and by the lecture).
KINDS = ("random", "equal_speeds", "wide_speeds", "tight_memory", "infeasible", "slow_links",
         "free_links", "scaled_links", "skips", "ties", "zero_fields", "zero_compute",
         "memory_at_limit")


def stress_problem(kind: str, k: int, n: int, seed: int) -> Problem:
    """A seeded instance of one of `KINDS`, built from `random_problem(k, n, seed)`:

    random          as random_problem (memory slack 1.2 .. 2.5)
    equal_speeds    every device as fast as device 0 (links still differ)
    wide_speeds     speeds 10^U(9, 17) FLOP/s: a module takes 10 us on one device, days on another
    tight_memory    memory slack 1.0 .. 1.15: few placements fit
    infeasible      memory slack 0.5 .. 0.95: nothing fits (every module still fits somewhere)
    slow_links      bandwidths 10^U(-3, 1) bytes/s: a transfer costs 1e11..1e13 x the compute
    free_links      infinite bandwidth and zero latency: messages cost nothing
    scaled_links    every link 1e10 times slower than in random_problem
    skips           skip connections j -> l (l > j + 1) with probability 0.5
    ties            identical devices, identical modules, uniform links: many exact ties
    zero_fields     each work, weight, activation and message size is 0 with probability 1/2
    zero_compute    no compute at all, messages of about 1 us, memory slack 1.0 .. 1.3 (so
                    modules must be split): all costs are tiny
    memory_at_limit device 0 (100 x faster than the rest) has exactly the memory of a group of modules times
                    1/(1 + eps), eps in {0, 5e-10, 9.9e-10} (fits: the tolerance is 1e-9) or
                    {2e-9, 1e-8, 1e-7} (does not fit)
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"stress_problem: kind must be one of {KINDS}, got {kind!r}")
    seed = check_int(seed, "stress_problem: seed", 0)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    slack = {"tight_memory": rng.uniform(1.0, 1.15), "infeasible": rng.uniform(0.5, 0.95),
             "zero_compute": rng.uniform(1.0, 1.3)}.get(kind, rng.uniform(1.2, 2.5))
    p = random_problem(k, n, seed, memory_slack=slack, skip_prob=0.5 if kind == "skips" else 0.0)
    devs, mods, links, extra = list(p.devices), list(p.modules), p.links, p.extra_traffic
    if kind == "equal_speeds":
        devs = [Device(dv.name, devs[0].speed, dv.memory) for dv in devs]
    elif kind == "wide_speeds":
        devs = [Device(dv.name, float(10.0 ** rng.uniform(9, 17)), dv.memory) for dv in devs]
    elif kind == "slow_links":
        links = Links(10.0 ** rng.uniform(-3, 1, (n, n)), links.latency)
    elif kind == "free_links":
        links = Links.uniform(n, np.inf, 0.0)
    elif kind == "scaled_links":
        links = Links(links.bandwidth / 1e10, links.latency * 1e10)
    elif kind == "ties":
        mem = 1.5 * k / n + 1.0
        devs = [Device(f"dev{d}", 1e14, mem) for d in range(n)]
        mods = [Module(f"layer{j}", 1e12, 1.0, 0.0, 1e8) for j in range(k)]
        links = Links.uniform(n, 1e10, 1e-5)
    elif kind == "zero_fields":
        z = rng.random((k, 4)) < 0.5
        mods = [Module(m.name, 0.0 if z[j, 0] else m.work, 0.0 if z[j, 1] else m.param_bytes,
                       0.0 if z[j, 2] else m.act_bytes, 0.0 if z[j, 3] else m.out_bytes)
                for j, m in enumerate(mods)]
    elif kind == "zero_compute":
        mods = [Module(m.name, 0.0, m.param_bytes, m.act_bytes, float(rng.uniform(1e3, 1e4)))
                for m in mods]
        links = Links(np.full((n, n), 1e10), rng.uniform(0.5e-6, 1.5e-6, (n, n)))
    elif kind == "memory_at_limit":
        group = [j for j in range(k) if rng.random() < 0.5] or [0]
        eps = float(rng.choice([0.0, 5e-10, 9.9e-10, 2e-9, 1e-8, 1e-7]))
        limit = float(sum(mods[j].memory for j in group)) / (1.0 + eps)
        biggest = max(m.memory for m in mods)
        if n == 1:  # the only device must still hold the largest module
            limit = max(limit, biggest)
        devs[0] = Device(devs[0].name, 100.0 * max(dv.speed for dv in devs), limit)
        if n > 1 and all(dv.memory < biggest for dv in devs):
            devs[-1] = Device(devs[-1].name, devs[-1].speed, biggest)
    return Problem(tuple(devs), tuple(mods), links, extra)
