"""05 §5.2 code bugs, single process (simulate P workers' gradients)."""
import torch
torch.manual_seed(0)
P, d = 4, 1000
g = torch.randn(P, d)
# --- SignSGD as written: all_reduce(fp32 grad, SUM) THEN sign -> full 32-bit payload is sent
seed_payload_bits = 32 * d
seed_update = torch.sign(g.sum(0))                 # = sign of the averaged full-precision gradient
mv_update = torch.sign(torch.sign(g).sum(0))       # signSGD with majority vote: workers send sign(g_k) (1 bit/coord)
print(f"seed 'SignSGD' sends {seed_payload_bits} bits/worker (no compression); majority vote sends {d} bits (32x less)")
print("seed update == majority-vote update on", (seed_update == mv_update).float().mean().item()*100, "% of coords (they are different algorithms)")

# --- Top-K as written, on a 2-D weight
W = torch.nn.Linear(300, 50).weight                 # shape (50, 300)
grad = torch.randn_like(W)
abs_grad = grad.abs()
_, idx = torch.topk(abs_grad, k=100)               # along LAST dim: 100 per row -> 5000 entries, not 100
print("topk on 2-D grad returns indices of shape", tuple(idx.shape), "=", idx.numel(), "entries, not k=100")
mask = torch.zeros_like(abs_grad)
try:
    mask.scatter_(0, idx, 1); print("seed mask nnz:", int(mask.sum()))
except Exception as e:
    print("seed mask.scatter_(0, idx, 1) fails:", type(e).__name__, str(e).splitlines()[0][:90])
small = torch.randn(64)                              # e.g. a bias / LayerNorm vector with < 100 entries
try: torch.topk(small.abs(), k=100)
except Exception as e: print("topk(k=100) on a 64-element bias:", type(e).__name__, str(e)[:60])
# correct: flatten, pick K of the whole tensor, send (values, int32 indices)
k = 100; flat = grad.flatten(); vals, ind = flat.abs().topk(k); vals = flat[ind]
m2 = torch.zeros_like(flat).scatter_(0, ind, 1.0)
print("flattened top-k: nnz", int(m2.sum()), "| keeps the", k, "largest |g|:", bool(flat.abs()[m2.bool()].min() >= flat.abs()[~m2.bool()].max()))
dense_bits, sparse_bits = 32 * flat.numel(), k * (32 + 32)
print(f"all_reduce of the masked DENSE tensor still sends {dense_bits} bits; (value,index) pairs: {sparse_bits} bits "
      f"-> ratio 2K/d = {sparse_bits/dense_bits:.4f}")
# summing P workers' top-k sets: supports differ -> up to P*K non-zeros; a sparse all-reduce is not 'K per worker'
tops = [torch.zeros(d).scatter_(0, g[p].abs().topk(50).indices, 1.0) for p in range(P)]
print("union of 4 workers' top-50 supports:", int((sum(tops) > 0).sum()), "coordinates (<= P*K = 200)")
# silent variant: weight (300, 100): topk(k=100) along dim -1 selects EVERY entry; scatter along dim 0 marks rows 0..99
g2 = torch.randn(300, 100); _, i2 = torch.topk(g2.abs(), k=100)
m3 = torch.zeros_like(g2); m3.scatter_(0, i2, 1)
print("weight (300,100): seed mask nnz =", int(m3.sum()), "| rows marked:", int((m3.sum(1) > 0).sum()),
      "| overlap with true top-100 of |g|:", int(m3.flatten()[g2.abs().flatten().topk(100).indices].sum()), "/ 100")
