"""05 §5.1: (a) no optimizer.zero_grad(): .grad accumulates across iterations; (b) no DistributedSampler:
every rank iterates the SAME data (data.to(rank) only moves tensors, it does not shard)."""
import torch
from torch.utils.data import DistributedSampler
w = torch.zeros(3, requires_grad=True); x = torch.ones(3)
for it in range(3):
    (w @ x).backward()                      # the gradient of w@x is x = [1,1,1] every time
    print(f"iteration {it}: w.grad = {w.grad.tolist()}  (should be [1,1,1])")
data = list(range(16))
print("no sampler: rank0 and rank1 both see", data[:6], "...")
for r in range(2):
    s = DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=0); s.set_epoch(0)
    print(f"DistributedSampler rank {r}:", sorted(list(s)))
