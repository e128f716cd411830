"""Tests for the reference dataset, model and training loop (course_lib.data/model/train).

Everything here runs the real code on tiny configurations; the whole file should take
well under 20 s on a 2-core CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.data import (TINY_PATH, CharTokenizer, generate_corpus, get_batch,
                             get_batch_shard, load_dataset, load_text, shard_batch,
                             train_val_split)
from course_lib.configs import reference_config
from course_lib.model import GPT, MLP, Block, CausalSelfAttention, GPTConfig
from course_lib.train import (compute_loss_and_grads, estimate_loss,
                              make_optimizer, sample, train, train_step)

VOCAB = 46


def tiny_config(**overrides) -> GPTConfig:
    kw = dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32)
    kw.update(overrides)
    return GPTConfig(**kw)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides))


@pytest.fixture(scope="module")
def data():
    return load_dataset()


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# ---------------------------------------------------------------------------- data


def test_shipped_corpus_is_the_generators_output():
    # The text file must be re-creatable from the code (its provenance), and small.
    text = load_text()
    assert text == generate_corpus()
    assert TINY_PATH.stat().st_size < 1_000_000


def test_tokenizer_round_trip(data):
    text = load_text()
    tok = CharTokenizer(text)
    assert tok.vocab_size == len(set(text)) == data.vocab_size
    snippet = text[:500]
    ids = tok.encode(snippet)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == snippet
    assert tok.decode(torch.tensor(ids)) == snippet
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_tokenizer_errors():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")


def test_train_val_split(data):
    n = len(data.train) + len(data.val)
    assert len(data.val) == n - int(n * 0.9)
    full = torch.cat([data.train, data.val])
    a, b = train_val_split(full, 0.1)
    assert torch.equal(a, data.train) and torch.equal(b, data.val)
    with pytest.raises(ValueError):
        train_val_split(full, 1.0)


def test_get_batch_targets_are_shifted_inputs_and_deterministic(data):
    x, y = get_batch(data.train, 8, 32, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted left by one
    x2, y2 = get_batch(data.train, 8, 32, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = get_batch(data.train, 8, 32, torch.Generator().manual_seed(4))
    assert not torch.equal(x, x3)
    # every row is a real window of the data: compare with all windows at once
    windows = data.train.unfold(0, 32, 1)  # (N - 31, 32) view, no copy
    for row in x:
        assert (windows == row).all(dim=1).any(), "a batch row is not a window of the data"


def test_shards_reproduce_the_global_batch(data):
    seed, B, T, W = 7, 12, 16, 4
    gx, gy = get_batch(data.train, B, T, torch.Generator().manual_seed(seed))
    xs, ys = [], []
    for rank in range(W):
        # each "rank" has its own generator with the same seed, as separate processes would
        x, y = get_batch_shard(data.train, B, T, torch.Generator().manual_seed(seed), rank, W)
        assert x.shape == (B // W, T)
        xs.append(x)
        ys.append(y)
    assert torch.equal(torch.cat(xs), gx) and torch.equal(torch.cat(ys), gy)
    # and the generators stay in lock-step for the next batch too
    g_ref, g_r1 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    get_batch(data.train, B, T, g_ref)
    get_batch_shard(data.train, B, T, g_r1, 1, W)
    nx, _ = get_batch(data.train, B, T, g_ref)
    rx, _ = get_batch_shard(data.train, B, T, g_r1, 1, W)
    assert torch.equal(rx, nx[3:6])


def test_shard_batch_errors():
    batch = torch.arange(10).view(10, 1)
    with pytest.raises(ValueError, match="not divisible by world_size=4"):
        shard_batch(batch, 0, 4)
    with pytest.raises(ValueError, match="rank"):
        shard_batch(batch, 2, 2)


# ---------------------------------------------------------------------------- model


def test_forward_shapes_and_structure():
    model = tiny_model()
    idx = torch.randint(VOCAB, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, VOCAB) and loss is None
    logits, loss = model(idx[:, :5], idx[:, 1:6])
    assert logits.shape == (3, 5, VOCAB) and loss.dim() == 0
    assert isinstance(model.blocks, torch.nn.ModuleList) and len(model.blocks) == 2
    assert isinstance(model.blocks[0], Block)
    assert isinstance(model.blocks[0].attn, CausalSelfAttention)
    assert isinstance(model.blocks[0].mlp, MLP)
    assert model.lm_head.weight is model.tok_emb.weight  # weight tying
    # tied weight counted once: 2 blocks of 12 C^2 + 13 C (with biases), embeddings, 2 final
    C = 32
    expected = 2 * (12 * C * C + 13 * C) + VOCAB * C + 16 * C + 2 * C
    assert model.num_params() == expected


def test_stages_compose_to_forward():
    model = tiny_model()
    idx = torch.randint(VOCAB, (2, 16))
    h = model.embed(idx)
    h = model.run_blocks(h, 0, 1)  # "stage 0"
    h = model.run_blocks(h, 1, 2)  # "stage 1"
    assert torch.equal(model.head(h), model(idx)[0])
    with pytest.raises(ValueError):
        model.run_blocks(h, 1, 3)


def test_attention_runs_on_a_subset_of_heads():
    # Tensor parallelism gives each rank some heads; attention must infer H from its input.
    torch.manual_seed(0)
    cfg = tiny_config()
    attn = CausalSelfAttention(cfg)
    x = torch.randn(2, 8, cfg.n_embd)
    full = attn.out_proj.weight
    d = cfg.head_dim
    # Run each head alone (its rows of q/k/v, its columns of out_proj), sum the partial
    # outputs, add the bias once: must equal the full layer (Megatron-style split).
    outs = []
    for h in range(cfg.n_head):
        part = CausalSelfAttention(cfg)
        rows = slice(h * d, (h + 1) * d)
        with torch.no_grad():
            for name in ("q_proj", "k_proj", "v_proj"):
                src, dst = getattr(attn, name), getattr(part, name)
                dst.weight = torch.nn.Parameter(src.weight[rows].clone())
                dst.bias = torch.nn.Parameter(src.bias[rows].clone())
            part.out_proj.weight = torch.nn.Parameter(full[:, rows].clone())
            part.out_proj.bias = torch.nn.Parameter(torch.zeros(cfg.n_embd))
        outs.append(part(x))
    recombined = sum(outs) + attn.out_proj.bias
    torch.testing.assert_close(recombined, attn(x), rtol=1e-5, atol=1e-6)


def test_causality_future_tokens_do_not_change_past_logits():
    model = tiny_model()
    idx = torch.randint(VOCAB, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % VOCAB
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=0)
    assert not torch.allclose(a[:, 10:], b[:, 10:])  # and the future did change


def test_determinism_given_seed():
    m1, m2, m3 = tiny_model(0), tiny_model(0), tiny_model(1)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert not torch.equal(m1.tok_emb.weight, m3.tok_emb.weight)
    idx = torch.randint(VOCAB, (2, 16))
    assert torch.equal(m1(idx)[0], m2(idx)[0])


def test_loss_at_init_is_about_ln_vocab(data):
    torch.manual_seed(0)
    model = GPT(reference_config(data.vocab_size))
    x, y = get_batch(data.train, 16, 64, torch.Generator().manual_seed(0))
    _, loss = model(x, y)
    # near-uniform predictions from the small GPT-2 init: loss = ln V (3.83 for V=46)
    assert abs(loss.item() - math.log(data.vocab_size)) < 0.1


def test_gpt2_init_scales_residual_projections():
    model = GPT(tiny_config(n_layer=8, n_embd=128, n_head=4))
    std = model.blocks[0].attn.out_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert abs(model.blocks[0].mlp.up_proj.weight.std().item() - 0.02) < 0.002
    assert torch.all(model.blocks[0].mlp.up_proj.bias == 0)


def test_config_errors():
    with pytest.raises(ValueError, match="n_embd=30 is not divisible by n_head=4"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(vocab_size=10, dropout=1.0)


def test_input_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 45\]"):
        model(torch.full((1, 4), VOCAB, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must be"):
        model(torch.full((1, 4), -1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="targets shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target ids"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), 99, dtype=torch.long))


def test_generate_is_reproducible_and_respects_block_size():
    model = tiny_model()
    idx = torch.zeros(1, 3, dtype=torch.long)
    a = model.generate(idx, 20, generator=torch.Generator().manual_seed(0))
    b = model.generate(idx, 20, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 23) and torch.equal(a, b)  # longer than block_size=16: cropped
    greedy = model.generate(idx, 5, temperature=0)
    assert torch.equal(greedy, model.generate(idx, 5, temperature=0))
    assert model.training  # generate restores the mode


# ---------------------------------------------------------------------------- training


def test_train_step_equals_compute_grads_then_step(data):
    x, y = get_batch(data.train, 4, 16, torch.Generator().manual_seed(0))
    m1, m2 = tiny_model(), tiny_model()
    o1, o2 = make_optimizer(m1, "sgd", lr=0.1), make_optimizer(m2, "sgd", lr=0.1)
    loss = train_step(m1, o1, x, y)
    l2 = compute_loss_and_grads(m2, x, y)
    with torch.no_grad():  # SGD by hand: p <- p - lr * grad (add_ with alpha, as torch does)
        for p in m2.parameters():
            p.add_(p.grad, alpha=-0.1)
    assert loss == l2.item()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(m1, "adam2")


def test_short_training_decreases_loss_and_is_deterministic(data):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=48)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GPT(cfg)
        hist = train(model, data, steps=100, batch_size=16, lr=1e-2, eval_every=50,
                     eval_iters=2, progress=False)
        runs.append(hist)
    hist = runs[0]
    assert len(hist.train_loss) == 100 and [s for s, _ in hist.val_loss] == [0, 50, 100]
    assert hist.val_loss[0][1] > 3.5  # ~ln 46 at the start
    # Below the corpus' unigram entropy (3.09 nats): the model uses context, not just
    # character frequencies. (Measured: 2.60.)
    assert hist.final_val_loss < 2.8
    assert sum(hist.train_loss[-10:]) / 10 < hist.train_loss[0] - 1.0
    assert runs[0].train_loss == runs[1].train_loss  # bit-identical reruns
    assert len(hist.val_seconds) == 3 and hist.val_seconds == sorted(hist.val_seconds)
    assert hist.seconds_to(10.0) == hist.val_seconds[0] and hist.seconds_to(0.0) is None
    assert estimate_loss(model, data.val, 16, 2) == pytest.approx(runs[1].final_val_loss)
    text = sample(model, data.tokenizer, "One ", max_new_tokens=30)
    assert text.startswith("One ") and len(text) == 34
