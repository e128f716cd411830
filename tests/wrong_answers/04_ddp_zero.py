"""Plausible wrong answers for solutions/04_ddp_zero.ipynb, keyed by answer cell grade_id.

Each maps to (source of the answer cell, a fragment of the hint the check must give).
"""
WRONG = {
    "q1-answer": ('''
class BucketedAllReduce:
    def __init__(self, model, bucket_cap_bytes):
        self.world_size = comm.get_world_size()
        params = list(model.parameters())
        self.buckets = assign_buckets(params[::-1], bucket_cap_bytes)
        self.bucket_of = {p: b for b, bucket in enumerate(self.buckets) for p in bucket}
        self.ready = [0] * len(self.buckets)
        self.works = []
        for p in params:
            p.register_post_accumulate_grad_hook(self.on_grad_ready)

    def on_grad_ready(self, p):
        b = self.bucket_of[p]
        self.ready[b] += 1
        if self.ready[b] == len(self.buckets[b]):
            flat = torch.cat([q.grad.reshape(-1) for q in self.buckets[b]])
            self.works.append((comm.all_reduce(flat, async_op=True), flat, b))

    def finish(self):
        for work, flat, b in self.works:
            work.wait()
            offset = 0
            for q in self.buckets[b]:
                q.grad.copy_(flat[offset:offset + q.numel()].view_as(q.grad))
                offset += q.numel()
        self.works, self.ready = [], [0] * len(self.buckets)
''', "divide by world_size"),
    "q2-answer": ('''
def zero1_step(rank, world_size, params, grad, state, lr):
    comm.all_reduce(grad)
    grad /= world_size
    if not state:
        state.update(exp_avg=torch.zeros_like(params), exp_avg_sq=torch.zeros_like(params), step=0)
    state["step"] += 1
    adamw_update_(params, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr)
''', "only update your shard"),
}
