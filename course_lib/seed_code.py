"""The seed's PyTorch "distributed training" code (article 05, section 5.1), run as written.

Chapter 4 runs it to show what it really does. ``SEED_DDP_CODE`` is the article's code block,
character for character. It leaves four names undefined (``MyModel``, ``loss_fn``,
``num_epochs``, ``train_loader``); :func:`run_seed_ddp` supplies them: a 3-weight linear model, a
loss whose gradient is the sum of the batch's inputs (so a gradient shows how many batches it
holds), one epoch over 8 samples in batches of 2, and a plain ``DataLoader``, as the seed implies
(no sampler). Its three bugs (errata 05-11):

* ``backend='nccl'`` and ``data.to(rank)`` need CUDA GPUs (and ``to(rank)`` a GPU per global rank,
  wrong beyond one node); the model is never moved, so even on GPUs it would stay on the CPU;
* no ``optimizer.zero_grad()``: ``backward`` *adds* into ``.grad``, so step t applies the sum of
  all gradients so far;
* no ``DistributedSampler``: every rank iterates the same batches, so the p ranks train p
  identical copies of one single-process run (Li et al. 2020; PyTorch ``DistributedSampler`` docs).

``SEED_MODEL_PARALLEL_CODE`` (article 03, section 5.2) is kept too: :func:`first_error` shows it
does not even compile, and it wraps the model in ``nn.DataParallel``, which is data parallelism
(errata 03-12).

``SEED_DDP_FIXED`` is the corrected loop of errata 05-11 (gloo and CPU instead of nccl and
``LOCAL_RANK``, which this course's laptops do not have).
"""
from __future__ import annotations

import types

import torch
import torch.distributed
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

SEED_DDP_CODE = """\
import torch
import torch.distributed as dist

# 初始化分布式训练环境
dist.init_process_group(backend='nccl')

# 获取当前进程的 rank
rank = dist.get_rank()

# 加载模型
model = MyModel()

# 将模型转换为分布式数据并行模型
model = torch.nn.parallel.DistributedDataParallel(model)

# 定义优化器
optimizer = torch.optim.Adam(model.parameters())

# 训练循环
for epoch in range(num_epochs):
    # 训练数据迭代器
    for data, target in train_loader:
        # 将数据分配到不同的设备
        data = data.to(rank)
        target = target.to(rank)

        # 前向传播
        output = model(data)

        # 计算损失函数
        loss = loss_fn(output, target)

        # 反向传播
        loss.backward()

        # 更新模型参数
        optimizer.step()
"""

# Article 03, section 5.2, "model-parallel training with PyTorch", character for character.
SEED_MODEL_PARALLEL_CODE = """\
import torch
import torch.nn as nn
import torch.optim as optim

# 定义模型
class MyModel(nn.Module):
    def __init__(self):
        super(MyModel, self).__init__()
        # ...

    def forward(self, x):
        # ...

# 定义优化器
optimizer = optim.SGD(model.parameters(), lr=0.01)

# 定义损失函数
loss_fn = nn.CrossEntropyLoss()

# 定义并行设备
device_ids = [0, 1]

# 将模型分配到多个设备上
model = nn.DataParallel(model, device_ids=device_ids)

# 训练模型
def train(dataset, epochs):
    for epoch in range(epochs):
        for images, labels in dataset:
            # 将数据分配到多个设备上
            images = images.to(device_ids[0])
            labels = labels.to(device_ids[0])

            # 前向传播
            outputs = model(images)

            # 计算损失
            loss = loss_fn(outputs, labels)

            # 反向传播
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

# 加载数据集
dataset = ...

# 训练模型
train(dataset, epochs=10)
"""

# The smallest edits that let the seed's code run on a CPU: gloo instead of nccl, the CPU instead
# of GPU number ``rank``. Nothing else changes, so its other two bugs stay.
ON_CPU = [("backend='nccl'", "backend='gloo'"), (".to(rank)", ".to('cpu')")]

SEED_DDP_FIXED = """\
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

dist.init_process_group(backend='gloo')
model = torch.nn.parallel.DistributedDataParallel(MyModel())
optimizer = torch.optim.Adam(model.parameters())
sampler = DistributedSampler(dataset, shuffle=True, seed=0)    # each rank its own 1/p of the data
loader = DataLoader(dataset, batch_size=2, sampler=sampler)
for epoch in range(num_epochs):
    sampler.set_epoch(epoch)                                    # a new shuffle every epoch
    for data, target in loader:
        optimizer.zero_grad(set_to_none=True)                   # forget the last step's gradient
        loss = loss_fn(model(data), target)
        loss.backward()                                         # DDP averages the gradients here
        optimizer.step()
dist.destroy_process_group()
"""

VARIANTS = ("as_written", "gloo", "cpu", "fixed")


def seed_code(variant: str) -> str:
    """The code a variant runs: the seed's text, with ``ON_CPU``'s edits applied as far as named.

    ``as_written``: untouched; ``gloo``: nccl -> gloo only; ``cpu``: both edits; ``fixed``: the
    corrected loop.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "fixed":
        return SEED_DDP_FIXED
    code = SEED_DDP_CODE
    for old, new in ON_CPU[: {"as_written": 0, "gloo": 1, "cpu": 2}[variant]]:
        code = code.replace(old, new)
    return code


class _Dist(types.SimpleNamespace):
    """``torch.distributed`` as the seed sees it: the launcher has already made the process
    group, so ``init_process_group`` only checks that the requested backend can run here and
    ``destroy_process_group`` leaves the group to the launcher."""

    def __getattr__(self, name):
        return getattr(torch.distributed, name)

    @staticmethod
    def init_process_group(backend: str | None = None, **_) -> None:
        if backend == "nccl" and not (torch.cuda.is_available() and torch.distributed.is_nccl_available()):
            raise RuntimeError("backend='nccl' needs CUDA GPUs and a torch built with NCCL; this machine has "
                               "neither (use backend='gloo' on CPUs)")

    @staticmethod
    def destroy_process_group(*_, **__) -> None:
        pass


def first_error(code: str) -> str | None:
    """Compile ``code`` and report its first syntax error as ``"Type: message (line n)"``, or None."""
    try:
        compile(code, "seed", "exec")
    except SyntaxError as e:
        return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
    return None


def run_seed_ddp(rank: int, world_size: int, variant: str = "as_written", samples: int = 8) -> dict:
    """Worker: run one variant of the seed's code on this rank and record what happened.

    Returns ``error`` (``"Type: message"``, or None), ``grads`` (the gradient each
    ``optimizer.step()`` applied), ``seen`` (sample ids of each batch this rank trained on) and
    ``weight`` (the final parameters).
    """
    if samples < 2 or samples % 2:
        raise ValueError(f"samples must be an even number >= 2 (batches of 2), got {samples}")
    seen: list[list[int]] = []
    grads: list[list[float]] = []

    class MyModel(nn.Linear):
        def __init__(self):
            super().__init__(3, 1, bias=False)
            nn.init.constant_(self.weight, 0.5)

    def loss_fn(output, target):  # d loss / d w = sum of the batch's inputs (rows of ones: the batch size)
        seen.append(target.tolist())
        return output.sum()

    dataset = TensorDataset(torch.ones(samples, 3), torch.arange(samples))
    names = dict(MyModel=MyModel, loss_fn=loss_fn, num_epochs=1, dataset=dataset,
                 train_loader=DataLoader(dataset, batch_size=2))
    names["__builtins__"] = __builtins__
    code = seed_code(variant).replace("import torch.distributed as dist", "dist = _dist")
    names["_dist"] = _Dist()

    def record(optimizer, args, kwargs):  # what each optimizer.step() is about to apply
        grads.append(torch.cat([p.grad.reshape(-1) for p in optimizer.param_groups[0]["params"]]).tolist())

    error = None
    hook = register_optimizer_step_pre_hook(record)
    try:
        exec(compile(code, f"seed 05 section 5.1 ({variant})", "exec"), names)
    except Exception as e:  # the seed's own failures are the lesson: report them, compactly
        error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    finally:
        hook.remove()
    model = names.get("model")
    weight = model.module.weight.detach().reshape(-1).tolist() if hasattr(model, "module") else None
    return dict(error=error, grads=grads, seen=seen, weight=weight)
