"""02 §4.3: BCE formula is right; d loss / d logit = sigmoid(z) - y.  §4.2: sum-loss gradient = m x mean-loss gradient."""
import torch, torch.nn.functional as F
torch.manual_seed(0)
z = torch.randn(8, requires_grad=True); y = torch.randint(0, 2, (8,)).float()
yh = torch.sigmoid(z)
seed = (-y * torch.log(yh) - (1 - y) * torch.log(1 - yh)).mean()
print("seed BCE == F.binary_cross_entropy:", torch.allclose(seed, F.binary_cross_entropy(yh, y)))
print("== BCE-with-logits (stable form):   ", torch.allclose(seed, F.binary_cross_entropy_with_logits(z, y)))
(g,) = torch.autograd.grad(seed * 8, z)
print("grad wrt logit == sigmoid(z)-y:      ", torch.allclose(g, torch.sigmoid(z) - y))
# unstable naive log: for big logits sigmoid saturates to 1.0 in fp32 and log(1-yh) = -inf
zb = torch.tensor([40.0]); print("naive BCE at z=40,y=0:", (-(torch.log(1 - torch.sigmoid(zb)))).item(),
      " stable:", F.binary_cross_entropy_with_logits(zb, torch.zeros(1)).item())
# sum vs mean: gradient of a sum over m samples is m times the mean's gradient -> eta must be rescaled
w = torch.randn(3, requires_grad=True); X = torch.randn(100, 3); t = torch.randn(100)
gs, = torch.autograd.grad(((X @ w - t) ** 2).sum(), w); gm, = torch.autograd.grad(((X @ w - t) ** 2).mean(), w)
# 6 significant digits: the last float32 digits depend on the CPU's vector width (AVX2 vs AVX-512)
print("||grad(sum)|| / ||grad(mean)|| =", f"{(gs.norm() / gm.norm()).item():.6g}", "(m = 100)")
