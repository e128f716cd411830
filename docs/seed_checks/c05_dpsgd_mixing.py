"""05 §3.2.2: D-PSGD (Lian et al. 2017): x_i <- sum_j W_ij x_j - lr * grad f_i(x_i).
W must be symmetric (or at least doubly stochastic), non-negative, W_ij>0 only on graph edges, and
rho = max(|lambda_2|, |lambda_n|) < 1 (connected + aperiodic).  Lian et al. 2017 call the SQUARE of this rho;
this script reports the unsquared rho and its gap 1 - rho, and prints 1 - rho^2 beside it.  Row-stochastic-only W converges to the wrong point."""
import numpy as np
n = 8
def ring_W(n):
    W = np.zeros((n, n))
    for i in range(n): W[i, i] = W[i, (i - 1) % n] = W[i, (i + 1) % n] = 1 / 3
    return W
W = ring_W(n); lam = np.sort(np.abs(np.linalg.eigvalsh(W)))[::-1]
print("ring W: symmetric", np.allclose(W, W.T), "| rows sum 1", np.allclose(W.sum(1), 1), "| cols sum 1", np.allclose(W.sum(0), 1),
      f"| rho = {lam[1]:.4f}, spectral gap 1-rho = {1-lam[1]:.4f}")
for m in (8, 32, 128):
    l = np.sort(np.abs(np.linalg.eigvalsh(ring_W(m))))[::-1][1]
    print(f"  ring n={m:>3}: 1-rho = {1-l:.5f}  ~ (2/3)(1-cos(2 pi/n)) = {(2/3)*(1-np.cos(2*np.pi/m)):.5f}  (shrinks like 1/n^2)"
          f"  | squared (Lian et al.): 1-rho^2 = {1-l**2:.5f}")
a = np.arange(n, dtype=float)                         # f_i(x) = 0.5 (x - a_i)^2, optimum of the average = mean(a) = 3.5
def dpsgd(W, steps=20000, lr0=0.05):
    x = np.zeros(n)
    for t in range(steps): x = W @ x - lr0 / np.sqrt(t + 1) * (x - a)
    return x
x = dpsgd(W); print("doubly stochastic W: node models", np.round(x, 3), "mean", round(x.mean(), 4))
Wr = W.copy(); Wr[0] = [0.9] + [0.1 / (n - 1)] * (n - 1)   # row-stochastic, not column-stochastic
x = dpsgd(Wr); print("row-stochastic only: node models mean", round(x.mean(), 4), "(!= 3.5: biased fixed point)")
# per-node traffic: ring D-PSGD sends 2 model copies per node per step, independent of n (PS: server link carries 2nN)
