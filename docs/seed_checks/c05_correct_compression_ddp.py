"""05 §5.2 corrected: compress BEFORE communicating.  Real gloo processes, linear regression, no DDP wrapper
(DDP would already all-reduce full fp32 grads; to change what DDP sends, use model.register_comm_hook).
 (a) signSGD with majority vote: all_reduce int8 signs (1 byte/coord here; bit-packing gives 1 bit), then sign of the sum.
 (b) top-k with error feedback (Stich et al. 2018): all_gather (values, int32 indices) of the flattened tensor."""
import os, tempfile, torch, torch.distributed as dist, torch.multiprocessing as mp

def majority_vote_(grads):
    for g in grads:
        s = torch.sign(g).to(torch.int8)              # payload: d bytes (int8), 1/4 of fp32; bit-pack for 1/32
        dist.all_reduce(s)                             # sum of P votes in [-P, P]; int8 ok for P <= 127
        g.copy_(torch.sign(s.float()))

def topk_ef_(grads, mems, lr, ratio=0.05):
    P = dist.get_world_size()
    for g, m in zip(grads, mems):
        p = (m + lr * g).flatten()                     # error-compensated step (memory holds what was not sent)
        k = max(1, int(ratio * p.numel()))
        idx = p.abs().topk(k).indices; val = p[idx]
        m.copy_(p.index_fill(0, idx, 0.0).view_as(m))  # new memory = p - compressed(p)
        vals = [torch.empty_like(val) for _ in range(P)]; idxs = [torch.empty_like(idx, dtype=torch.int32) for _ in range(P)]
        dist.all_gather(vals, val); dist.all_gather(idxs, idx.to(torch.int32))
        upd = torch.zeros_like(p)
        for v, i in zip(vals, idxs): upd.index_add_(0, i.long(), v / P)   # sparse sum of P sparse vectors, averaged
        g.copy_(upd.view_as(g))                        # here g already holds the step (lr included)

def worker(rank, P, path, mode, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=P)
    torch.manual_seed(0); w_true = torch.randn(50)
    torch.manual_seed(100 + rank); X = torch.randn(256, 50); y = X @ w_true   # each rank: its own data shard
    w = torch.zeros(50, requires_grad=True); mem = [torch.zeros(50)]
    for t in range(600):
        loss = ((X @ w - y) ** 2).mean(); w.grad = None; loss.backward()
        with torch.no_grad():
            if mode == "signsgd":
                majority_vote_([w.grad]); w -= 0.05 * (0.99 ** t) * w.grad
            else:
                topk_ef_([w.grad], mem, lr=0.05, ratio=0.1); w -= w.grad
    err = (w.detach() - w_true).norm() / w_true.norm()
    if rank == 0: torch.save(err, out)
    dist.destroy_process_group()

if __name__ == "__main__":
    for mode in ("signsgd", "topk_ef"):
        d = tempfile.mkdtemp(); out = os.path.join(d, "e.pt")
        mp.spawn(worker, args=(4, os.path.join(d, "s"), mode, out), nprocs=4)
        print(f"{mode:8}: relative error ||w - w*||/||w*|| after 600 steps = {torch.load(out).item():.2e}")
