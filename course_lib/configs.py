"""Every model size the course uses, in one place.

    reference_config(vocab)  4 layers, width 64: the chapter-0b reference run (207k parameters)
    small_config(vocab)      2 layers, width 32: multi-rank runs and tests (28k parameters)
    toy_config()             2 layers, width 16, vocabulary 16: graded checks, instant on any laptop
    tp_config(vocab)         small_config with 4 heads: tensor parallelism at degrees 1, 2, 4
    mlp_config(width)        one MLP of the given width: the parallel-MLP timing of chapter 5
    pipeline_config(vocab)   8 layers, width 128: pipeline stages whose compute dwarfs a message
"""
from __future__ import annotations

from course_lib.model import GPTConfig


def reference_config(vocab_size: int) -> GPTConfig:
    """The course's default model: 4 layers, 4 heads, width 64, context 64.

    Width 64 rather than 128: on 2 CPU threads more steps of a narrower model beat fewer
    steps of a wider one within the one-minute budget (``./course bench train``).
    """
    return GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=64,
                     dropout=0.0, bias=True)


def small_config(vocab_size: int) -> GPTConfig:
    """2 layers, 2 heads, width 32, context 32: fast multi-rank runs and tests."""
    return GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)


def toy_config(vocab_size: int = 16) -> GPTConfig:
    """2 layers, 2 heads, width 16, context 8: graded checks that must run in milliseconds."""
    return GPTConfig(vocab_size=vocab_size, block_size=8, n_layer=2, n_head=2, n_embd=16)


def tp_config(vocab_size: int) -> GPTConfig:
    """2 layers, 4 heads, width 32, context 32: small_config with 4 heads, so that tensor
    parallelism (which splits attention by whole heads) runs at degrees 1, 2 and 4."""
    return GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32)


def mlp_config(width: int) -> GPTConfig:
    """Only the MLP matters (width -> 4 width -> width): 1 head, vocabulary 2; chapter 5 times
    one tensor-parallel MLP built from it."""
    return GPTConfig(vocab_size=2, n_head=1, n_embd=width)


def pipeline_config(vocab_size: int = 64, n_layer: int = 8) -> GPTConfig:
    """``n_layer`` layers (8: up to 8 stages), 4 heads, width 128, context 64: chapter 6's pipeline.

    Wide enough that a stage's compute (milliseconds) dwarfs a gloo message (~0.1 ms), so the
    schedules' bubbles, not the messages, decide the step time.
    """
    return GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=n_layer, n_head=4, n_embd=128)
