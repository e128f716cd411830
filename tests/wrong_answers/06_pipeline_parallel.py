"""Plausible wrong answers for solutions/06_pipeline_parallel.ipynb (the format:
tests/wrong_answers/__init__.py). Most of MORE_WRONG are edits of the solution's cell, so each
shows only its mistake.
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

MORE_WRONG = {
    # rank 1 takes the micro-batches in the reverse order: it waits for activation 3, rank 0 for gradient 0
    "q1_reversed_on_rank_1": ("q1-answer", {"    return ops\n": "    return [(k, m - 1 - i) for k, i in ops] if rank == 1 else ops\n"},
                              "rank 0 is blocked in RECV_B0@s0<-r1"),
    # no warm-up: F0 B0 F1 B1 ... on every rank, so each rank waits for every gradient
    "q1_no_warmup": ("q1-answer", {"    w = min(p - rank - 1, m)\n": "    w = 0\n"}, "warm-up forwards, not fewer"),
    # rank 0 forgets its last backward
    "q1_missing_backward": ("q1-answer", {"    return ops\n": "    return ops[:-1] if rank == 0 else ops\n"},
                            "rank 0 never runs B3@s0"),
    "q1_borrowed": ("q1-answer", '''
from course_lib.pipeline_schedules import one_f_one_b
def one_f_one_b_rank(rank, p, m):
    return [(a.kind, a.mb) for a in one_f_one_b(p, m).ranks[rank] if a.is_compute]
''', "borrows course_lib.pipeline_schedules.one_f_one_b"),
    # all forwards first on rank 0: GPipe's order, m activations in flight
    "q2_gpipe_order": ("q2-answer", {"        forward(0)\n        for i in range(m):\n            if i + 1 < m:\n                forward(i + 1)\n":
                                     "        for i in range(m):\n            forward(i)\n        for i in range(m):\n"},
                       "that is GPipe's order"),
    # each micro-batch's whole loss backpropagated (and the mean returned): gradients m times too large
    "q2_no_division": ("q2-answer", {"        loss = job.stage(h, job.micro_batches[i][1]) / m\n        loss.backward()\n        total += loss.item()\n":
                                     "        loss = job.stage(h, job.micro_batches[i][1])\n        loss.backward()\n        total += loss.item() / m\n"},
                       "m = 4 times too large"),
    # torch.distributed's own point-to-point calls: not counted by comm, and not the learner's to use here
    "q2_torch_distributed": ("q2-answer", {"def two_stage_1f1b(rank, world_size, job):\n":
                                           "import torch.distributed as dist\n\n\ndef two_stage_1f1b(rank, world_size, job):\n",
                                           "            comm.recv(grad, 1)\n": "            dist.recv(grad, 1)\n"},
                             "borrows torch.distributed"),
}
