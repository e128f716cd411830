"""03 §3.3 / 04 §3.3: pipeline parallelism splits LAYERS into p stages; each stage runs forward AND backward of its
own layers; a mini-batch is cut into m micro-batches.  Simulate GPipe (all-F then all-B, Huang et al. 2019) and
1F1B / PipeDream-Flush (Narayanan et al. 2019/2021): idle ('bubble') fraction = (p-1)/(m+p-1) for both;
peak stored activations per stage: GPipe m, 1F1B <= p."""
def schedule(p, m, kind):
    orders = []
    for s in range(p):
        if kind == "gpipe":
            orders.append([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
        else:                                               # 1F1B with flush
            w = min(p - s - 1, m); o = [("F", i) for i in range(w)]
            f, b = w, 0
            while f < m: o += [("F", f), ("B", b)]; f += 1; b += 1
            o += [("B", i) for i in range(b, m)]; orders.append(o)
    return orders

def simulate(p, m, kind, tf=1.0, tb=2.0):
    orders, done, ptr, free = schedule(p, m, kind), {}, [0] * p, [0.0] * p
    live, peak = [0] * p, [0] * p
    while any(ptr[s] < len(orders[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            if ptr[s] == len(orders[s]): continue
            op, i = orders[s][ptr[s]]
            if op == "F": dep = [("F", s - 1, i)] if s > 0 else []
            else:         dep = [("B", s + 1, i)] if s < p - 1 else [("F", s, i)]  # last stage: B after own F
            if all(d in done for d in dep):
                start = max([free[s]] + [done[d] for d in dep])
                free[s] = done[(op, s, i)] = start + (tf if op == "F" else tb)
                live[s] += 1 if op == "F" else -1; peak[s] = max(peak[s], live[s])
                ptr[s] += 1; progressed = True
        assert progressed, "deadlock"
    T = max(free); busy = m * (tf + tb)
    return 1 - busy / T, max(peak)

for p, m in [(4, 1), (4, 4), (4, 8), (4, 32), (8, 16)]:
    for kind in ("gpipe", "1f1b"):
        bub, peak = simulate(p, m, kind)
        print(f"p={p} m={m:>2} {kind:5}: bubble={bub:.4f}  (p-1)/(m+p-1)={(p-1)/(m+p-1):.4f}  peak in-flight micro-batches/stage={peak}")
