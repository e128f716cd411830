"""04 §4.1: y = W x, W in R^{d_out x d_in}, N shards.
 * row split (W_i = block of d_out/N rows): y_i = W_i x is a SLICE of y -> y = concat_i(W_i x)  (all-gather), NOT sum
 * column split (W^(i) = block of d_in/N columns, x_i matching slice of x): y = sum_i W^(i) x_i  (all-reduce)
 * grads: row split dL/dW_i = (dL/dy_i) x^T (needs only the slice dL/dy_i); column split dL/dW^(i) = (dL/dy) x_i^T.
   Weight grads stay local. What needs communication in backward is dL/dx for the row split: sum_i W_i^T dL/dy_i."""
import torch
torch.manual_seed(0)
N, d_in, d_out = 4, 8, 12
W, x = torch.randn(d_out, d_in, dtype=torch.float64), torch.randn(d_in, dtype=torch.float64)
y = W @ x
rows = W.chunk(N, dim=0)
seed_formula = sum(Wi @ x for Wi in rows)                       # the seed's  y = sum_i W_i x
print("seed formula shape", tuple(seed_formula.shape), "vs y shape", tuple(y.shape), "-> wrong")
print("row split:    y == cat_i(W_i x):        ", torch.allclose(torch.cat([Wi @ x for Wi in rows]), y))
cols, xs = W.chunk(N, dim=1), x.chunk(N)
print("column split: y == sum_i W^(i) x_i:     ", torch.allclose(sum(Wc @ xc for Wc, xc in zip(cols, xs)), y))
# gradients with L = 0.5 ||y - t||^2
t = torch.randn(d_out, dtype=torch.float64)
Wg = W.clone().requires_grad_(); xg = x.clone().requires_grad_()
(0.5 * ((Wg @ xg - t) ** 2).sum()).backward()
dy = (y - t)
print("row split:    dL/dW_i == dL/dy_i x^T:    ", all(torch.allclose(g, dyi[:, None] * x[None, :])
      for g, dyi in zip(Wg.grad.chunk(N, 0), dy.chunk(N))))
print("  seed's dL/dy x^T has shape", tuple(torch.outer(dy, x).shape), "!= W_i shape", tuple(rows[0].shape))
print("row split:    dL/dx == SUM_i W_i^T dL/dy_i (all-reduce in backward):",
      torch.allclose(sum(Wi.T @ dyi for Wi, dyi in zip(rows, dy.chunk(N))), xg.grad))
print("column split: dL/dW^(i) == dL/dy x_i^T:  ", all(torch.allclose(g, torch.outer(dy, xi))
      for g, xi in zip(Wg.grad.chunk(N, 1), xs)))
