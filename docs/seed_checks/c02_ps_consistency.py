"""02 §3 / §9.2: a parameter server can run BSP (s=0), SSP with bound s (Ho et al. 2013) or fully async (ASP,
Downpour SGD, Dean et al. 2012).  Async does not 'solve' consistency, it creates staleness.  Event simulation:
P workers, one straggler 3x slower, server applies each push immediately; staleness = #server updates between a
worker's pull and its push; SSP: a worker may start clock c only if c <= min(clocks) + s."""
import heapq, numpy as np
def simulate(P=8, s=None, horizon=500.0, seed=0):
    rng = np.random.default_rng(seed); speed = np.ones(P); speed[0] = 3.0
    clock = [0] * P; version = 0; stale = []; waiting = []
    ev = [(rng.exponential(speed[k]), k, 0) for k in range(P)]; heapq.heapify(ev)
    while ev and ev[0][0] < horizon:
        t_now, k, v_read = heapq.heappop(ev)
        stale.append(version - v_read); version += 1; clock[k] += 1
        for w in [k] + list(waiting):
            if s is None or clock[w] <= min(clock) + s:
                if w in waiting: waiting.remove(w)
                heapq.heappush(ev, (t_now + rng.exponential(speed[w]), w, version))
            elif w not in waiting: waiting.append(w)
    return np.mean(stale), max(stale), version / horizon, max(clock) - min(clock)
for name, s in [("SSP s=0", 0), ("SSP s=3", 3), ("SSP s=10", 10), ("ASP (async)", None)]:
    m, M, thr, gap = simulate(s=s)
    print(f"{name:12}: mean staleness {m:5.2f}  max {M:4d}  updates/time {thr:4.2f}  final clock gap {gap}")
