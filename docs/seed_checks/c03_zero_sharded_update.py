"""03 §4.2 '每个设备更新一部分参数' is ZeRO-1/2 (Rajbhandari et al. 2020), not plain ring all-reduce:
reduce-scatter grads -> each rank runs Adam on its 1/P shard (keeps 1/P of optimizer state) -> all-gather params.
Equal to the replicated update because Adam is elementwise (global grad-norm clipping would need one more all-reduce)."""
import torch
torch.manual_seed(0); P, N = 4, 1000
w0 = torch.randn(N); grads = torch.randn(P, N)
g = grads.mean(0)                                                        # what all-reduce(avg) gives every rank
full = w0.clone().requires_grad_(); opt = torch.optim.Adam([full], lr=0.1); full.grad = g.clone(); opt.step()
shards = []
for r in range(P):                                                        # rank r after reduce-scatter owns shard r
    p = w0.chunk(P)[r].clone().requires_grad_(); o = torch.optim.Adam([p], lr=0.1)
    p.grad = grads[:, r * N // P:(r + 1) * N // P].mean(0); o.step(); shards.append(p.detach())
print("all-gather(sharded Adam) == replicated Adam:", torch.allclose(torch.cat(shards), full.detach()))
print("optimizer state per rank: replicated", 2 * N, "floats, ZeRO-1", 2 * N // P, "floats")
