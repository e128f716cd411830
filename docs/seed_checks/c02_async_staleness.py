"""02: async SGD with staleness tau on f(w)=h/2 w^2: w_{t+1} = w_t - eta*h*w_{t-tau}.
Stable iff 0 < eta*h < 2 sin(pi / (2(2 tau + 1))).  tau=0 -> 2 (plain GD), tau=1 -> 1, ..."""
import numpy as np

def spectral_radius(a, tau):
    # companion matrix of x_{t+1} = x_t - a x_{t-tau}, state (x_t, ..., x_{t-tau})
    n = tau + 1
    C = np.zeros((n, n)); C[0, 0] = 1.0; C[0, -1] -= a
    for i in range(1, n): C[i, i - 1] = 1.0
    return max(abs(np.linalg.eigvals(C)))

for tau in range(0, 6):
    lo, hi = 1e-6, 2.5
    for _ in range(60):                      # bisection on the stability edge
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spectral_radius(mid, tau) < 1 else (lo, mid)
    print(f"tau={tau}: critical eta*h numeric={lo:.5f}  formula={2*np.sin(np.pi/(2*(2*tau+1))):.5f}")

# large tau: 2 sin(pi/(2(2tau+1))) ~ pi/(2tau+1) ~ pi/(2tau); NOT pi/(4tau), which is half of it
for tau in (10, 50):
    lo, hi = 1e-6, 2.5
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spectral_radius(mid, tau) < 1 else (lo, mid)
    print(f"tau={tau}: critical eta*h numeric={lo:.5f}  pi/(2tau+1)={np.pi/(2*tau+1):.5f}  "
          f"pi/(2tau)={np.pi/(2*tau):.5f}  pi/(4tau)={np.pi/(4*tau):.5f}")

# same learning rate: sync converges, async with tau=4 diverges
a, T = 0.5, 200
for tau in (0, 4):
    w = [1.0] * (tau + 1)
    for t in range(T): w.append(w[-1] - a * w[-1 - tau])
    print(f"eta*h={a}, tau={tau}: |w_T| = {abs(w[-1]):.3e}")
