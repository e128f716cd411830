"""04 §3.1/§4.1: Megatron-LM MLP (Shoeybi et al. 2019), Y = GeLU(X A) B with A column-parallel, B row-parallel.
 f: identity forward, all-reduce backward (before A);  g: all-reduce forward, identity backward (after B).
One all-reduce per forward, one per backward.  Real gloo processes; compare with the unsharded MLP."""
import os, tempfile, torch, torch.distributed as dist, torch.multiprocessing as mp
import torch.nn.functional as F

class _F(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x): return x
    @staticmethod
    def backward(ctx, g): g = g.clone(); dist.all_reduce(g); return g
class _G(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x): x = x.clone(); dist.all_reduce(x); return x
    @staticmethod
    def backward(ctx, g): return g

def worker(rank, T, path, X, A, Bm, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=T)
    A_i = A.chunk(T, dim=1)[rank].clone().requires_grad_()     # columns of A (output features of GEMM 1)
    B_i = Bm.chunk(T, dim=0)[rank].clone().requires_grad_()    # rows of B (input features of GEMM 2)
    x = X.clone().requires_grad_()
    y = _G.apply(F.gelu(_F.apply(x) @ A_i) @ B_i)              # GeLU is elementwise -> no comm between GEMMs
    y.pow(2).sum().backward()
    torch.save(dict(y=y.detach(), dx=x.grad, dA=A_i.grad, dB=B_i.grad), out.format(rank))
    dist.destroy_process_group()

if __name__ == "__main__":
    torch.manual_seed(0); T, b, h = 2, 3, 8
    X, A, Bm = torch.randn(b, h, dtype=torch.float64), torch.randn(h, 4 * h, dtype=torch.float64), torch.randn(4 * h, h, dtype=torch.float64)
    x, Ar, Br = (t.clone().requires_grad_() for t in (X, A, Bm))
    yref = F.gelu(x @ Ar) @ Br; yref.pow(2).sum().backward()
    d = tempfile.mkdtemp(); out = os.path.join(d, "r{}.pt")
    mp.spawn(worker, args=(T, os.path.join(d, "s"), X, A, Bm, out), nprocs=T)
    R = [torch.load(out.format(r)) for r in range(T)]
    print("output equal on every rank:        ", all(torch.allclose(r["y"], yref) for r in R))
    print("dL/dX equal on every rank (f's all-reduce):", all(torch.allclose(r["dx"], x.grad) for r in R))
    print("dA shards == column blocks of dA:  ", torch.allclose(torch.cat([r["dA"] for r in R], 1), Ar.grad))
    print("dB shards == row blocks of dB:     ", torch.allclose(torch.cat([r["dB"] for r in R], 0), Br.grad))
    # wrong placement: split GEMM1 by rows of A (input dim) -> GeLU of a partial sum != partial of GeLU
    parts = [X.chunk(T, 1)[i] @ A.chunk(T, 0)[i] for i in range(T)]
    print("row-split first GEMM then GeLU locally then sum == reference?",
          torch.allclose(sum(F.gelu(p) for p in parts) @ Bm, yref.detach()), "(needs an extra all-reduce before GeLU)")
