"""03 §4.1: data-parallel rule. Mean of per-worker mean gradients == full-batch mean gradient
(equal shards); SUM all-reduce gives P x; unequal shards need weights B_k/B.  Then real DDP (gloo, CPU)."""
import os, tempfile, torch, torch.nn as nn, torch.distributed as dist, torch.multiprocessing as mp
P, B, D = 4, 32, 5

def single_process():
    torch.manual_seed(0)
    global model
    model = nn.Linear(D, 1); X, Y = torch.randn(B, D), torch.randn(B, 1)
    def grad(xs, ys):
        model.zero_grad(); nn.functional.mse_loss(model(xs), ys).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
    g_full = grad(X, Y)
    shards = [grad(x, y) for x, y in zip(X.chunk(P), Y.chunk(P))]
    print("mean of shard grads == full-batch grad:", torch.allclose(torch.stack(shards).mean(0), g_full, atol=1e-6))
    print("sum  of shard grads / full-batch grad :", (torch.stack(shards).sum(0) / g_full).mean().item())
    sizes = [2, 6, 8, 16]; idx = torch.split(torch.arange(B), sizes)
    gs = [grad(X[i], Y[i]) for i in idx]
    print("unequal shards: plain mean ok?", torch.allclose(torch.stack(gs).mean(0), g_full, atol=1e-6),
          "| weighted by B_k/B ok?", torch.allclose(sum(b / B * g for b, g in zip(sizes, gs)), g_full, atol=1e-6))
    
    return model, X, Y, g_full

def worker(rank, world, path, state, X, Y, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    m = nn.Linear(D, 1); m.load_state_dict(state)
    ddp = nn.parallel.DistributedDataParallel(m)
    xs, ys = X.chunk(world)[rank], Y.chunk(world)[rank]
    nn.functional.mse_loss(ddp(xs), ys).backward()
    g = torch.cat([p.grad.flatten() for p in m.parameters()])
    if rank == 0: torch.save(g, out)
    dist.destroy_process_group()

if __name__ == "__main__":
    model, X, Y, g_full = single_process()
    d = tempfile.mkdtemp(); out = os.path.join(d, "g.pt")
    mp.spawn(worker, args=(P, os.path.join(d, "store"), model.state_dict(), X, Y, out), nprocs=P)
    print("DDP (gloo, 4 procs) grad == single-process full-batch grad:", torch.allclose(torch.load(out), g_full, atol=1e-6))
