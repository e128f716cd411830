"""The course's tiny dataset: a synthetic story corpus, a character tokenizer, and batches.

Where the text comes from
-------------------------
``course_lib/data/tiny.txt`` is *generated*, not downloaded: :func:`generate_corpus`
below writes short children's-story paragraphs from a small template grammar with a
fixed seed (``CORPUS_SEED``). It was written for this course, contains no third-party
text, and is dedicated to the public domain (CC0 1.0). Regenerate it with::

    python -m course_lib.data          # rewrites course_lib/data/tiny.txt, byte-identical

Why synthetic text? The course must run offline, on a laptop CPU, in about a minute
per training run. A grammar gives text with *learnable structure* at several ranges
(spelling, "she"/"he" agreeing with a name said earlier, the pet of the story coming
back, small word arithmetic such as "three ... gave one ... has two") so the loss
curve keeps falling and generated samples visibly improve, while staying small
(about 0.4 MB) and free of licensing questions.

Batches and ranks
-----------------
Every parallel chapter compares itself with a single-process run. For that, each rank
must see *exactly* the rows of the global batch the single process sees. So batches are
always drawn globally with :func:`get_batch` (one shared ``torch.Generator`` seed on
every rank), and a rank keeps its contiguous slice with :func:`shard_batch`
(or both at once with :func:`get_batch_shard`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent / "data"
TINY_PATH = DATA_DIR / "tiny.txt"
CORPUS_SEED = 1234
CORPUS_STORIES = 1500

# --------------------------------------------------------------------------------------
# 1. The corpus generator (a tiny template grammar)
# --------------------------------------------------------------------------------------

_NAMES = [("Mia", "she", "her"), ("Tom", "he", "his"), ("Lily", "she", "her"),
          ("Sam", "he", "his"), ("Anna", "she", "her"), ("Ben", "he", "his"),
          ("Rosa", "she", "her"), ("Max", "he", "his"), ("Ella", "she", "her"),
          ("Leo", "he", "his"), ("Nora", "she", "her"), ("Jack", "he", "his")]
_PETS = ["cat", "dog", "fox", "owl", "frog", "duck", "goat", "bird", "bunny", "puppy"]
_PLACES = ["the park", "the forest", "the river", "the garden", "the market",
           "the beach", "the hill", "the farm", "the lake", "school"]
_COLORS = ["red", "blue", "green", "yellow", "little", "big", "shiny", "old"]
_THINGS = ["ball", "kite", "hat", "box", "book", "cup", "drum", "boat", "shell", "key"]
_FRUITS = ["apple", "pear", "plum", "cookie", "cake", "nut"]
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_FEELINGS = ["happy", "sad", "sleepy", "hungry", "brave", "scared", "excited"]
_WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"]


def _story(rng: random.Random) -> str:
    """One paragraph. Each sentence reuses entities fixed at the top of the story,
    which is the long-range structure a model can only learn with attention."""

    def a(word: str) -> str:  # "a red ball" but "an old ball"
        return ("an " if word[0] in "aeiou" else "a ") + word

    def count(n: int, noun: str) -> str:  # "one apple", "two apples"
        return f"{_NUMBERS[n]} {noun}" + ("" if n == 1 else "s")

    (name, he, his), (friend, _, _) = rng.sample(_NAMES, 2)
    pet, place = rng.choice(_PETS), rng.choice(_PLACES)
    color, thing = rng.choice(_COLORS), rng.choice(_THINGS)
    He = he.capitalize()
    s = [f"One {rng.choice(_WEATHER)} day, {name} went to {place} with {his} {pet}."]
    for kind in rng.sample(range(6), rng.randint(2, 5)):  # no event twice per story
        if kind == 0:
            s.append(f"{He} found {a(color)} {thing} under a tree.")
            s.append(f"The {pet} liked the {thing} too.")
        elif kind == 1:
            have, give = rng.randint(2, 9), rng.randint(1, 2)
            fruit = rng.choice(_FRUITS)
            s.append(f"{name} had {count(have, fruit)}. {He} gave {_NUMBERS[give]} "
                     f"to {friend}. Now {name} has {count(have - give, fruit)}.")
        elif kind == 2:
            feel = rng.choice(_FEELINGS)
            s.append(f"The {pet} was {feel}, so {name} sat with it.")
        elif kind == 3:
            s.append(f'{friend} said, "Can I play with your {pet}?" '
                     f'{name} said, "Yes, you can!"')
        elif kind == 4:
            s.append(f"{He} saw {_NUMBERS[rng.randint(2, 9)]} birds in the sky.")
        else:
            s.append(f"{name} and {friend} ran to {place} and laughed.")
    s.append(f"At night, {name} and the {pet} went home. {He} was {rng.choice(_FEELINGS)}.")
    return " ".join(s)


def generate_corpus(n_stories: int = CORPUS_STORIES, seed: int = CORPUS_SEED) -> str:
    """Return ``n_stories`` paragraphs separated by blank lines, deterministic in ``seed``.

    Uses ``random.Random`` (Mersenne Twister), whose sequence for ``randrange``/``choice``/
    ``sample`` is stable across CPython 3.x releases, so the shipped file can be re-made.
    """
    rng = random.Random(seed)
    return "\n\n".join(_story(rng) for _ in range(n_stories)) + "\n"


def load_text(path: Path | str = TINY_PATH) -> str:
    """Read the corpus (UTF-8) from ``path``; defaults to the shipped ``tiny.txt``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset file {path} not found. Regenerate it with `python -m course_lib.data`.")
    return path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------
# 2. Character tokenizer
# --------------------------------------------------------------------------------------


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters in ``text``.

    ``encode(s)[i] = stoi[s[i]]`` and ``decode(ids) = "".join(itos[i] for i in ids)``.
    Character-level modelling as in Karpathy's char-rnn / nanoGPT ``shakespeare_char``:
    no merges to learn, so the tokenizer cannot be a source of bugs in later chapters.
    """

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary.")
        self.chars: list[str] = sorted(set(text))
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        self.itos: dict[int, str] = dict(enumerate(self.chars))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        try:
            return [self.stoi[c] for c in s]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in the vocabulary ({self.vocab_size} chars "
                f"seen in the training text); use only characters from the corpus.") from None

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            return "".join(self.itos[i] for i in ids)
        except KeyError as e:
            raise ValueError(
                f"token id {e.args[0]} is out of range: valid ids are 0..{self.vocab_size - 1}."
            ) from None


# --------------------------------------------------------------------------------------
# 3. Dataset: encoded train / val tensors
# --------------------------------------------------------------------------------------


@dataclass
class TextDataset:
    """The encoded corpus, split by position: first ``1 - val_fraction`` is train."""

    tokenizer: CharTokenizer
    train: torch.Tensor  # 1-D int64 token ids
    val: torch.Tensor    # 1-D int64 token ids

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def train_val_split(data: torch.Tensor,
                    val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D token tensor into a leading train part and a trailing val part.

    A contiguous split (not a random one) so no validation window overlaps a training
    window: the stories at the end are never trained on.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    n_train = int(len(data) * (1.0 - val_fraction))
    return data[:n_train], data[n_train:]


def load_dataset(path: Path | str = TINY_PATH, val_fraction: float = 0.1) -> TextDataset:
    """Read, tokenize and split the corpus. Deterministic: no randomness involved."""
    text = load_text(path)
    tok = CharTokenizer(text)
    data = torch.tensor(tok.encode(text), dtype=torch.long)
    train, val = train_val_split(data, val_fraction)
    return TextDataset(tok, train, val)


# --------------------------------------------------------------------------------------
# 4. Batches, and a rank's shard of a batch
# --------------------------------------------------------------------------------------


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the *global* batch: ``batch_size`` random windows of ``block_size`` tokens.

    ``x[b] = data[o_b : o_b + T]``, ``y[b] = data[o_b + 1 : o_b + T + 1]`` (next-token
    targets), offsets ``o_b ~ U{0, len(data) - T - 1}`` drawn from ``generator`` only, so
    two processes with equally seeded generators draw identical batches.
    Returns ``(x, y)``, both ``(batch_size, block_size)`` int64.
    """
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}.")
    if batch_size < 1 or block_size < 1:
        raise ValueError(
            f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}.")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens, need more than block_size={block_size} "
                         "to cut one (input, target) window; use a smaller block_size.")
    offsets = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    # Build an index matrix (B, T) instead of a Python loop of slices: one gather.
    idx = offsets[:, None] + torch.arange(block_size)[None, :]
    return data[idx], data[idx + 1]


def shard_batch(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of the global batch along dim 0.

    Rows ``[rank * B/W, (rank + 1) * B/W)``. Concatenating the shards of ranks
    0..W-1 in order gives back the global batch exactly (what data parallelism relies on).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    b = batch.shape[0]
    if b % world_size != 0:
        raise ValueError(
            f"batch_size={b} is not divisible by world_size={world_size}: every rank must get "
            f"the same number of rows. Use a batch_size that is a multiple of {world_size} "
            f"(e.g. {(b // world_size + 1) * world_size}).")
    per_rank = b // world_size
    return batch[rank * per_rank:(rank + 1) * per_rank]


def get_batch_shard(data: torch.Tensor, batch_size: int, block_size: int,
                    generator: torch.Generator, rank: int,
                    world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the global batch (advancing ``generator`` exactly as the single process does)
    and keep only this rank's shard. ``batch_size`` is the *global* batch size."""
    x, y = get_batch(data, batch_size, block_size, generator)
    return shard_batch(x, rank, world_size), shard_batch(y, rank, world_size)


if __name__ == "__main__":
    text = generate_corpus()
    DATA_DIR.mkdir(exist_ok=True)
    TINY_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {TINY_PATH}: {len(text):,} characters, {len(set(text))} distinct")
