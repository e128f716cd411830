"""Plausible wrong answers for solutions/01_allocation.ipynb (the format: wrong_answers/__init__.py)."""

WRONG = {
    # sum and max swapped: the seed's own confusion of "total time" with the bottleneck
    "q1-answer": ('''
def my_cost(problem, x, objective):
    load = np.zeros(problem.n)
    used = np.zeros(problem.n)
    for j, d in enumerate(x):
        load[d] += problem.w[j] / problem.s[d]
        used[d] += problem.m[j]
    if np.any(used > problem.M):
        return float("inf")
    for j, l, nbytes in problem.edges:
        if x[j] != x[l]:
            load[x[j]] += problem.alpha[x[j], x[l]] + nbytes / problem.B[x[j], x[l]]
    return float(load.max() if objective == "latency" else load.sum())
''', "latency (one input) is the SUM"),
    # memory never checked
    "q2-answer": ('''
def my_chain_dp(problem, objective):
    k, n = problem.k, problem.n
    combine = (lambda a, b: a + b) if objective == "latency" else max
    R = [[math.inf] * n for _ in range(k + 1)]
    choice = [[None] * n for _ in range(k)]
    for i in range(k - 1, -1, -1):
        for d in range(n):
            work = 0.0
            for j in range(i + 1, k + 1):
                work += problem.w[j - 1]
                t = work / problem.s[d]
                if j == k:
                    if t < R[i][d]:
                        R[i][d], choice[i][d] = t, (k, None)
                    continue
                nbytes = problem.T[j - 1, j]
                for e in range(d + 1, n):
                    v = combine(t + problem.alpha[d, e] + nbytes / problem.B[d, e], R[j][e])
                    if v < R[i][d]:
                        R[i][d], choice[i][d] = v, (j, e)
    d = min(range(n), key=lambda d: R[0][d])
    x, i = [], 0
    while i < k:
        j, e = choice[i][d]
        x += [d] * (j - i)
        i, d = j, e
    return tuple(x)
''', "memory: skip every block"),
    # the memory rows forgotten
    "q3-answer": ('''
def my_milp_bottleneck(problem):
    k, n = problem.k, problem.n
    nv = k * n + 1
    c = np.zeros(nv); c[-1] = 1.0
    rows, lo, hi = [], [], []
    for j in range(k):
        r = np.zeros(nv); r[j * n:(j + 1) * n] = 1
        rows.append(r); lo.append(1); hi.append(1)
    for d in range(n):
        r = np.zeros(nv); r[d:k * n:n] = problem.w / problem.s[d]; r[-1] = -1
        rows.append(r); lo.append(-np.inf); hi.append(0.0)
    res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi),
               integrality=np.r_[np.ones(k * n), 0],
               bounds=Bounds(np.zeros(nv), np.r_[np.ones(k * n), np.inf]), options={"mip_rel_gap": 1e-9})
    return tuple(int(d) for d in res.x[:k * n].reshape(k, n).argmax(axis=1))
''', "add one row per device"),
}

MORE_WRONG = {
    # the course's own functions, which never return inf
    "cost_ignores_memory": ("q1-answer", {
        "    if np.any(used > problem.M * (1 + 1e-9)):  # a hair of tolerance for rounding in sums\n"
        "        return float(\"inf\")\n": ""}, "must cost float('inf')"),
    "cost_no_communication": ("q1-answer", {
        "    for j, l, nbytes in problem.edges:\n        d, e = x[j], x[l]\n        if d != e:\n"
        "            load[d] += problem.alpha[d, e] + nbytes / problem.B[d, e]\n": ""},
        "left out communication"),
    "cost_raises": ("q1-answer", '''
def my_cost(problem, x, objective):
    raise ZeroDivisionError("oops")
''', "raised ZeroDivisionError"),
    # the general optimum is not a pipeline in device order
    "chain_dp_not_contiguous": ("q2-answer", '''
def my_chain_dp(problem, objective):
    return tuple(j % problem.n for j in range(problem.k))   # round robin: jumps back to device 0
''', "never decrease"),
    # contiguous, but not optimal (or infeasible)
    "chain_dp_all_on_last_device": ("q2-answer", '''
def my_chain_dp(problem, objective):
    return (problem.n - 1,) * problem.k
''', ""),
    "milp_all_on_device_0": ("q3-answer", '''
def my_milp_bottleneck(problem):
    return (0,) * problem.k
''', ""),
    "milp_one_module_short": ("q3-answer", '''
def my_milp_bottleneck(problem):
    return (0,) * (problem.k - 1)
''', "one device per module"),
}

# Borrowed answers: the course's own solvers, reached through the checker module or imported.
MORE_WRONG["cost_from_checker_module"] = ("q1-answer", '''
def my_cost(problem, x, objective):
    return ch01.cost(problem, x, objective)
''', "borrows course_lib.allocation.cost.cost")
MORE_WRONG["chain_dp_imported"] = ("q2-answer", '''
def my_chain_dp(problem, objective):
    from course_lib.allocation import chain_dp
    return chain_dp(problem, objective)
''', "borrows course_lib.allocation")
MORE_WRONG["milp_imported"] = ("q3-answer", '''
from course_lib.allocation import milp_assign as _milp
def my_milp_bottleneck(problem):
    return _milp(problem, "bottleneck")
''', "borrows course_lib.allocation.milp.milp_assign")
