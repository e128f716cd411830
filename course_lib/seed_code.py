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

The seeds' two TensorFlow blocks are kept too: ``SEED_TF_MIRRORED_CODE`` (article 02, section 5.2)
and ``SEED_TF_DATA_PARALLEL_CODE`` (article 03, section 5.1), with their corrections
``TF_MIRRORED_FIXED`` and ``TF_DATA_PARALLEL_FIXED``. TensorFlow is not installed here, so
:func:`static_facts` reads them with Python's ``ast`` (undefined names, ``...`` placeholders, what
is built inside ``strategy.scope()``, whether ``strategy.run`` is ever called), and
:func:`run_tf_data_parallel` runs in PyTorch what article 03's loop does on each replica, next to
what ``strategy.run`` on a distributed dataset does (errata 02-8, 03-11).
"""
from __future__ import annotations

import ast
import builtins
import types
from collections import Counter

import torch
import torch.distributed
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from course_lib import comm
from course_lib.data import get_batch_shard, load_dataset
from course_lib.model import GPT, GPTConfig
from course_lib.update_rules import flat_params

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

# Article 02, section 5.2, "使用 TensorFlow 分布式训练 LLM", character for character (errata 02-8).
SEED_TF_MIRRORED_CODE = """\
import tensorflow as tf

# 定义模型
model = tf.keras.Sequential([
    tf.keras.layers.Embedding(input_dim=vocab_size, output_dim=embedding_dim),
    tf.keras.layers.LSTM(units=hidden_size),
    tf.keras.layers.Dense(units=num_classes, activation='softmax')
])

# 定义优化器和损失函数
optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)
loss_fn = tf.keras.losses.CategoricalCrossentropy()

# 分布式训练
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
    model.compile(optimizer=optimizer, loss=loss_fn)
    model.fit(train_data, epochs=10)
"""

# Article 03, section 5.1, "使用 TensorFlow 进行数据并行训练", character for character (errata 03-11).
SEED_TF_DATA_PARALLEL_CODE = """\
import tensorflow as tf

# 定义模型
model = tf.keras.Sequential([...])

# 定义优化器
optimizer = tf.keras.optimizers.Adam()

# 定义损失函数
loss_fn = tf.keras.losses.CategoricalCrossentropy()

# 定义分布式训练策略
strategy = tf.distribute.MirroredStrategy()

with strategy.scope():
    # 构建模型和优化器
    model = ...
    optimizer = ...

    # 定义训练步骤
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            loss = loss_fn(labels, predictions)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

# 训练模型
def train(dataset, epochs):
    for epoch in range(epochs):
        for images, labels in dataset:
            loss = train_step(images, labels)
            # ...

# 加载数据集
dataset = ...

# 训练模型
train(dataset, epochs=10)
"""

# The corrections of errata 02-8 and 03-11, as whole programs. TensorFlow is not installed in the
# course's environment, so these are only read (``static_facts``), never run.
TF_MIRRORED_FIXED = """\
import tensorflow as tf

vocab_size, embedding_dim, hidden_size, num_classes = 1000, 64, 128, 4
tokens = tf.random.uniform((512, 32), maxval=vocab_size, dtype=tf.int32)
labels = tf.random.uniform((512,), maxval=num_classes, dtype=tf.int32)

strategy = tf.distribute.MirroredStrategy()             # synchronous all-reduce data parallelism
GLOBAL_BATCH = 64 * strategy.num_replicas_in_sync       # the dataset's batch is the global batch
train_data = tf.data.Dataset.from_tensor_slices((tokens, labels)).shuffle(512).batch(GLOBAL_BATCH)
with strategy.scope():                                  # every variable, model's AND optimizer's, made here
    model = tf.keras.Sequential([
        tf.keras.layers.Embedding(input_dim=vocab_size, output_dim=embedding_dim),
        tf.keras.layers.LSTM(units=hidden_size),
        tf.keras.layers.Dense(units=num_classes),
    ])
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)   # integer labels
    model.compile(optimizer=optimizer, loss=loss_fn)
model.fit(train_data, epochs=10)
"""

TF_DATA_PARALLEL_FIXED = """\
import tensorflow as tf

GLOBAL_BATCH = 64
images = tf.random.normal((512, 28, 28))
labels = tf.random.uniform((512,), maxval=10, dtype=tf.int32)
dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)

strategy = tf.distribute.MirroredStrategy()
with strategy.scope():                          # the model's and the optimizer's variables are mirrored
    model = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
    optimizer = tf.keras.optimizers.Adam()
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

def replica_step(images, labels):               # runs on every replica, on its 1/p of the batch
    with tf.GradientTape() as tape:
        per_example = loss_fn(labels, model(images, training=True))
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))   # sums the replicas' gradients
    return loss

@tf.function
def train_step(images, labels):
    per_replica = strategy.run(replica_step, args=(images, labels))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

def train(dataset, epochs):
    dist_dataset = strategy.experimental_distribute_dataset(dataset)   # splits every global batch
    for epoch in range(epochs):
        for images, labels in dist_dataset:
            loss = train_step(images, labels)

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


def static_facts(code: str) -> dict:
    """What a reader can check in a block of code without running it (Python's ``ast``), for code
    whose library (TensorFlow) is not installed:

    * ``undefined``: names the block reads but never binds, and that are not builtins; each one
      raises ``NameError`` when the line that reads it runs;
    * ``placeholders``: how many ``...`` stand where code should be (``model = ...``, ``[...]``);
    * ``made_in_scope``: names assigned inside a ``with <strategy>.scope():`` block, and
      ``made_outside_scope``: names assigned at the top level outside it (a ``MirroredStrategy``
      mirrors only the variables created inside its scope);
    * ``calls``: how often each function or method name is called (``"run"`` counts
      ``strategy.run``).
    """
    if not isinstance(code, str):
        raise TypeError(f"static_facts reads Python source text (a str), got {type(code).__name__}")
    tree = ast.parse(code)  # a SyntaxError here says where; first_error() reports it as text
    bound, read = set(dir(builtins)), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            read.append(node.id)
        elif isinstance(node, ast.Name):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)

    def assigned(statements) -> list[str]:  # by these statements and the blocks inside them, not by defs
        names = []
        for n in statements:
            if isinstance(n, ast.Assign):
                names += [t.id for t in n.targets if isinstance(t, ast.Name)]
            elif not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names += assigned(getattr(n, "body", []) + getattr(n, "orelse", []))
        return names

    def is_scope(node) -> bool:
        return isinstance(node, ast.With) and any(
            isinstance(i.context_expr, ast.Call) and isinstance(i.context_expr.func, ast.Attribute)
            and i.context_expr.func.attr == "scope" for i in node.items)

    scopes = [n for n in ast.walk(tree) if is_scope(n)]
    calls = Counter(n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "?")
                    for n in ast.walk(tree) if isinstance(n, ast.Call))
    return dict(undefined=sorted(set(read) - bound),
                placeholders=sum(isinstance(n, ast.Constant) and n.value is Ellipsis for n in ast.walk(tree)),
                made_in_scope=sorted({name for s in scopes for name in assigned(s.body)}),
                made_outside_scope=sorted(set(assigned(n for n in tree.body if n not in scopes))),
                calls=dict(calls))


def run_tf_data_parallel(rank: int, world_size: int, variant: str, config: GPTConfig, steps: int = 3,
                         batch_size: int = 8, lr: float = 0.1) -> dict:
    """Worker: article 03's TensorFlow training loop transcribed to PyTorch, one rank per replica
    (GPU) of a ``MirroredStrategy``, on the course's GPT with plain SGD.

    ``"as_written"``: the loop calls ``train_step(images, labels)`` directly, never through
    ``strategy.run`` and on a dataset that was never distributed, so the step is ordinary
    one-device code: the first replica computes on the whole batch of ``batch_size`` rows, the
    others compute nothing, and no gradient is exchanged.

    ``"fixed"``: ``strategy.run(replica_step)`` on ``strategy.experimental_distribute_dataset``:
    replica k takes its ``b = batch_size / p`` rows, its loss is ``tf.nn.compute_average_loss``
    (the sum of its per-example losses divided by the *global* batch), and ``apply_gradients``
    sums the replicas' gradients: ``sum_k (b / B) g_k``, the global batch's mean gradient
    (TensorFlow guide "Custom training with tf.distribute.Strategy").

    Returns ``samples`` (rows this rank computed on, per step), ``all_reduced`` (gradient bytes
    this rank all-reduced, all steps) and ``params`` (its parameters after ``steps`` steps, as one
    vector).
    """
    if variant not in ("as_written", "fixed"):
        raise ValueError(f"variant must be 'as_written' or 'fixed', got {variant!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {world_size} replicas")
    data = load_dataset()
    torch.manual_seed(0)
    model = GPT(config)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)        # the single process's batch stream
    comm.reset_stats()
    samples = []
    for _ in range(steps):
        if variant == "as_written":
            x, y = get_batch_shard(data.train, batch_size, config.block_size, gen, 0, 1)   # the whole batch
            if rank > 0:                              # train_step runs once, on the first device
                samples.append(0)
                continue
            loss = model(x, y)[1]
        else:
            x, y = get_batch_shard(data.train, batch_size, config.block_size, gen, rank, world_size)
            loss = model(x, y)[1] * x.shape[0] / batch_size   # compute_average_loss: / global batch
        samples.append(x.shape[0])
        opt.zero_grad()
        loss.backward()
        if variant == "fixed":
            for p in model.parameters():
                comm.all_reduce(p.grad)               # apply_gradients: SUM over the replicas
        opt.step()
    return dict(samples=samples, all_reduced=sum(comm.get_stats().collective_bytes.values()),
                params=flat_params(model))


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
