"""Plausible wrong answers for solutions/06_pipeline_parallel.ipynb, keyed by answer cell grade_id.

Each maps to (source of the answer cell, a fragment of the hint the check must give).
"""
WRONG = {
    # GPipe's order: all forwards, then all backwards. Correct results, m micro-batches in flight.
    "q1-answer": ('''
def one_f_one_b_rank(rank, p, m):
    return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
''', "1F1B holds at most p - rank"),
    # Blocking sends on both ranks: rank 0 sends activation i+1 while rank 1 sends gradient i.
    "q2-answer": ('''
def two_stage_1f1b(rank, world_size, job):
    m = len(job.micro_batches)
    if rank == 0:
        acts = {0: job.stage(job.micro_batches[0][0])}
        comm.send(acts[0].detach(), 1)
        for i in range(m):
            if i + 1 < m:
                acts[i + 1] = job.stage(job.micro_batches[i + 1][0])
                comm.send(acts[i + 1].detach(), 1)
            grad = torch.empty(job.act_shape)
            comm.recv(grad, 1)
            acts.pop(i).backward(grad)
        return None
    total = 0.0
    for i in range(m):
        h = torch.empty(job.act_shape)
        comm.recv(h, 0)
        h.requires_grad_()
        loss = job.stage(h, job.micro_batches[i][1]) / m
        loss.backward()
        total += loss.item()
        comm.send(h.grad, 0)
    return total
''', "if both sends block, neither reaches its receive"),
}
