"""Plausible wrong answers for solutions/07_compression.ipynb, keyed by answer cell grade_id
(format: tests/wrong_answers/__init__.py)."""
WRONG = {
    "q1-answer": ('''
def majority_vote(grad):
    signs = torch.where(grad >= 0, 1.0, -1.0)
    comm.all_reduce(signs)
    return torch.sign(signs)
''', 'you all-reduced the dense gradient: the counters show'),
    "q2-answer": ('''
def topk_ef(grad, residual, k):
    p = grad.reshape(-1) + residual
    idx = p.abs().topk(k).indices
    mask = torch.zeros_like(p)
    mask[idx] = 1
    sent = p * mask
    comm.all_reduce(sent)
    return sent / comm.get_world_size(), p - p * mask
''', 'you all-reduced the dense masked tensor: the counters show'),
    "q3-answer": ('''
def powersgd_step(M, Q):
    world = comm.get_world_size()
    P = M @ Q
    comm.all_reduce(P)
    P /= world
    Q_new = M.T @ P
    comm.all_reduce(Q_new)
    Q_new /= world
    return P @ Q_new.T, Q_new
''', 'P was not orthonormalised'),
}

MORE_WRONG = {
    "int8_signs_not_packed": ("q1-answer", '''
def majority_vote(grad):
    signs = (grad >= 0).to(torch.int8)
    p = comm.get_world_size()
    out = torch.empty(p * grad.numel(), dtype=torch.int8)
    comm.all_gather_into_tensor(out, signs)
    return torch.sign((out.view(p, -1).float() * 2 - 1).sum(0))
''', 'Pack 8 signs into each uint8'),
    "bit_order_reversed_on_unpack": ("q1-answer", '''
def majority_vote(grad):
    n = grad.numel()
    bits = (grad.reshape(-1) >= 0).to(torch.uint8)
    bits = torch.cat([bits, bits.new_zeros(-n % 8)])
    weights = 2 ** torch.arange(8, dtype=torch.uint8)
    packed = (bits.view(-1, 8) * weights).sum(1, dtype=torch.uint8)
    p = comm.get_world_size()
    out = torch.empty(p * packed.numel(), dtype=torch.uint8)
    comm.all_gather_into_tensor(out, packed)
    unpacked = (out.view(p, -1, 1) & weights.flip(0)) > 0
    signs = unpacked.reshape(p, -1)[:, :n].float() * 2 - 1
    return torch.sign(signs.sum(0))
''', 'bit order'),
    "imports_the_course_compressor": ("q1-answer", '''
from course_lib.compression import SignMajority
def majority_vote(grad):
    return SignMajority().reduce(grad)
''', 'borrows course_lib.compression.SignMajority'),
    "no_error_feedback": ("q2-answer", '''
def topk_ef(grad, residual, k):
    p = grad.reshape(-1)
    idx = p.abs().topk(k).indices
    world = comm.get_world_size()
    vals, ids = torch.empty(world * k), torch.empty(world * k, dtype=torch.int32)
    comm.all_gather_into_tensor(vals, p[idx].contiguous())
    comm.all_gather_into_tensor(ids, idx.to(torch.int32))
    return torch.zeros(p.numel()).index_add_(0, ids.long(), vals) / world, residual
''', 'no error feedback'),
    "sum_not_mean": ("q2-answer", '''
def topk_ef(grad, residual, k):
    p = grad.reshape(-1) + residual
    idx = p.abs().topk(k).indices
    world = comm.get_world_size()
    vals, ids = torch.empty(world * k), torch.empty(world * k, dtype=torch.int32)
    comm.all_gather_into_tensor(vals, p[idx].contiguous())
    comm.all_gather_into_tensor(ids, idx.to(torch.int32))
    return torch.zeros(p.numel()).index_add_(0, ids.long(), vals), p.index_fill(0, idx, 0.0)
''', "divide the sum of the ranks' values by world_size"),
    "all_reduce_whole_matrix": ("q3-answer", '''
def powersgd_step(M, Q):
    comm.all_reduce(M)
    M /= comm.get_world_size()
    P = torch.linalg.qr(M @ Q).Q
    Q_new = M.T @ P
    return P @ Q_new.T, Q_new
''', 'you all-reduced M itself'),
    "no_division_by_world_size": ("q3-answer", '''
def powersgd_step(M, Q):
    P = M @ Q
    comm.all_reduce(P)
    P = torch.linalg.qr(P).Q
    Q_new = M.T @ P
    comm.all_reduce(Q_new)
    return P @ Q_new.T, Q_new
''', 'too large'),
    "topk_from_the_course": ("q2-answer", '''
from course_lib.compression import TopK
def topk_ef(grad, residual, k):
    return TopK(ratio=k / grad.numel()).reduce(grad).reshape(-1), residual
''', 'borrows course_lib.compression.TopK'),
    "powersgd_from_the_course": ("q3-answer", '''
from course_lib.compression import PowerSGD
def powersgd_step(M, Q):
    return PowerSGD(rank=Q.shape[1]).reduce(M), Q
''', 'borrows course_lib.compression.PowerSGD'),
}
