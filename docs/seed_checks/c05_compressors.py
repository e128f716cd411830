"""05 §3.1/§4.2: compression ratios, (un)biasedness, and why biased compressors need error feedback."""
import numpy as np
rng = np.random.default_rng(0)
d = 10_000
# ---- sizes: sign = 1 bit/coord regardless of sparsity; top-k = K*(value+index) bits
print("fp32 -> sign: ratio", 1 / 32, "| bf16 -> sign:", 1 / 16)
for K in (10, 100, 1000):
    print(f"top-{K} of d={d}: 32-bit idx ratio {K*64/(32*d):.4f} (=2K/d), log2(d)-bit idx ratio {K*(32+np.ceil(np.log2(d)))/(32*d):.4f}")

# ---- QSGD (Alistarh et al. 2017) stochastic quantizer with s levels: unbiased; E||Q(v)-v||^2 <= min(d/s^2, sqrt(d)/s)||v||^2
def qsgd(v, s):
    nv = np.linalg.norm(v); r = np.abs(v) / nv * s; l = np.floor(r)
    return nv * np.sign(v) * (l + (rng.random(v.shape) < r - l)) / s
v = rng.standard_normal(200); s = 4
Q = np.stack([qsgd(v, s) for _ in range(20000)])
print("QSGD  mean error ||E[Q]-v||/||v|| =", np.linalg.norm(Q.mean(0) - v) / np.linalg.norm(v),
      "| E||Q-v||^2/||v||^2 =", ((Q - v) ** 2).sum(1).mean() / (v ** 2).sum(), "<= bound", min(200 / s**2, np.sqrt(200) / s))
det = np.linalg.norm(v) * np.sign(v) * np.round(np.abs(v) / np.linalg.norm(v) * s) / s
print("deterministic rounding to the same grid: bias ||Q-v||/||v|| =", np.linalg.norm(det - v) / np.linalg.norm(v), "(biased, fixed)")
print("sign(v) is biased too: E[sign(g)] != g (and not even a scaled g)")

# ---- signSGD counterexample (Karimireddy et al. 2019, Counterexample 1): f(x) = <a1,x>^2 + <a2,x>^2, optimum x = 0
eps = 0.5; a = [np.array([1, -1 + eps]), np.array([-1 + eps, 1])]
def run(ef, steps=20000, lr=1e-3):
    x = np.array([1.0, 1.0]); e = np.zeros(2)
    for t in range(steps):
        ai = a[rng.integers(2)]; g = 2 * (ai @ x) * ai        # stochastic gradient of one term
        if not ef: x = x - lr * np.sign(g)
        else:                                                # EF-signSGD: p = lr g + e; delta = ||p||_1/d sign(p); e = p - delta
            p = lr * g + e; delta = np.abs(p).sum() / 2 * np.sign(p); x = x - delta; e = p - delta
    return x
print("signSGD    final x:", run(False), "(x1+x2 stays 2 forever: every step is along +-[1,-1])")
print("EF-signSGD final x:", run(True), "(-> optimum 0)")

# ---- distributed top-k WITHOUT error feedback can stall at a wrong point; with memory (Stich et al. 2018) it converges
A = np.array([[10.0, 1.0], [-10.0, 1.0]])     # worker k minimises 0.5||x - A_k||^2; global optimum = mean = [0, 1]
def topk1(v): out = np.zeros_like(v); i = np.argmax(np.abs(v)); out[i] = v[i]; return out
def dist_topk(ef, steps=20000, lr=0.01):
    x = np.zeros(2); mem = np.zeros((2, 2)); avg = np.zeros(2)
    for t in range(steps):
        msgs = []
        for k in range(2):
            g = x - A[k]
            if ef: p = mem[k] + lr * g; c = topk1(p); mem[k] = p - c; msgs.append(c)
            else: msgs.append(lr * topk1(g))
        x = x - np.mean(msgs, 0)
        if t >= steps // 2: avg += x / (steps - steps // 2)
    return avg          # average of the last half of the iterates (constant lr -> O(lr) oscillation)
print("top-1, no error feedback :", dist_topk(False), " (stuck; optimum is [0, 1])")
print("top-1, with error feedback:", dist_topk(True))
