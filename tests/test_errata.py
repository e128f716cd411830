"""The course's own slips found in review, each pinned by a test that would have caught it, and the
seed's DDP code run as written (chapter 4)."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from course_lib import seed_code
from course_lib.launcher import launch
from course_lib.parameter_server import delayed_gd_critical_step

ROOT = Path(__file__).resolve().parent.parent


def test_stale_gradient_step_edge_is_pi_over_2tau():
    # errata 02-2 once said pi/(4 tau) for large tau; the edge is 2 sin(pi/(2(2tau+1))) ~ pi/(2tau)
    for tau in (0, 1, 4, 10):
        assert delayed_gd_critical_step(tau) == pytest.approx(2 * math.sin(math.pi / (2 * (2 * tau + 1))), abs=1e-9)
    edge = delayed_gd_critical_step(50)
    assert edge == pytest.approx(math.pi / 100, rel=0.02)
    assert edge > 1.9 * math.pi / 200
    errata = (ROOT / "docs" / "seed-errata.md").read_text(encoding="utf-8")
    assert "π/(4τ) for large τ" not in errata and "≈ π/(2τ) for large τ" in errata
    with pytest.raises(ValueError, match="tau must be"):
        delayed_gd_critical_step(-1)


def test_errata_rho_is_unsquared_where_the_gap_is_quoted():
    # errata 05-6 once defined rho squared and quoted the unsquared gap 1 - rho = 0.1953
    errata = (ROOT / "docs" / "seed-errata.md").read_text(encoding="utf-8")
    assert "|λ_n(W)|)² < 1" not in errata
    assert "`ρ = max(|λ₂(W)|, |λ_n(W)|) < 1`" in errata and "1-rho^2 = 0.35240" in errata


def test_chapter3_table_gives_the_trees_bytes_as_measured():
    # the table once said up to 2 ceil(log2 p) n; tests/test_collectives.py measures ceil(log2 p) n
    nb = json.loads((ROOT / "notebooks" / "03_collectives_from_scratch.ipynb").read_text(encoding="utf-8"))
    rows = [line for c in nb["cells"] if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("| binomial tree")]
    assert len(rows) == 1
    bytes_cell = rows[0].split("|")[3]
    assert "up to $\\lceil\\log_2 p\\rceil n$" in bytes_cell and "2\\lceil" not in bytes_cell


def test_seed_ddp_loop_as_written_and_its_bugs():
    as_written = launch(seed_code.run_seed_ddp, 2, variant="as_written")
    assert all("nccl" in r["error"] for r in as_written)
    cpu = launch(seed_code.run_seed_ddp, 2, variant="cpu")
    fixed = launch(seed_code.run_seed_ddp, 2, variant="fixed")
    for r in cpu:
        assert r["error"] is None
        assert [g[0] for g in r["grads"]] == [2.0, 4.0, 6.0, 8.0]          # no zero_grad: they pile up
        assert r["seen"] == [[0, 1], [2, 3], [4, 5], [6, 7]]               # no sampler: the same data
    assert cpu[0]["weight"] == cpu[1]["weight"]
    assert [g[0] for g in fixed[0]["grads"]] == [2.0, 2.0]
    assert sorted(sum(fixed[0]["seen"] + fixed[1]["seen"], [])) == list(range(8))
    assert seed_code.seed_code("as_written") == seed_code.SEED_DDP_CODE
    assert "backend='gloo'" in seed_code.seed_code("cpu") and ".to(rank)" not in seed_code.seed_code("cpu")
    assert seed_code.first_error(seed_code.SEED_MODEL_PARALLEL_CODE).startswith("IndentationError")
    with pytest.raises(ValueError, match="variant must be one of"):
        seed_code.seed_code("tf")


def test_seed_tensorflow_blocks_read_without_tensorflow():
    # errata 02-8 and 03-11: what chapters 2 and 4 print about the seeds' TensorFlow code
    seed02 = seed_code.static_facts(seed_code.SEED_TF_MIRRORED_CODE)
    assert seed02["undefined"] == ["embedding_dim", "hidden_size", "num_classes", "train_data", "vocab_size"]
    assert seed02["made_in_scope"] == [] and {"model", "optimizer"} <= set(seed02["made_outside_scope"])
    fixed02 = seed_code.static_facts(seed_code.TF_MIRRORED_FIXED)
    assert fixed02["undefined"] == [] and {"model", "optimizer"} <= set(fixed02["made_in_scope"])
    seed03 = seed_code.static_facts(seed_code.SEED_TF_DATA_PARALLEL_CODE)
    assert seed03["placeholders"] == 4 and "run" not in seed03["calls"]
    fixed03 = seed_code.static_facts(seed_code.TF_DATA_PARALLEL_FIXED)
    assert fixed03["placeholders"] == 0 and fixed03["undefined"] == []
    assert fixed03["calls"]["run"] == 1 and fixed03["calls"]["experimental_distribute_dataset"] == 1
    with pytest.raises(ValueError, match="variant must be"):
        seed_code.run_tf_data_parallel(0, 1, variant="mirrored", config=None)


@pytest.mark.skipif(not os.environ.get("COURSE_SEEDS"), reason="needs the seed articles: set COURSE_SEEDS")
def test_seed_code_blocks_are_verbatim():
    folder = Path(os.environ["COURSE_SEEDS"])
    blocks = {name: re.findall(r"```python\n(.*?)```", (folder / name).read_text(encoding="utf-8"), re.S)
              for name in ("02-distributed-deployment.md", "03-parallel-computing.md", "05-communication-optimization.md")}
    assert blocks["02-distributed-deployment.md"][0] == seed_code.SEED_TF_MIRRORED_CODE
    assert blocks["03-parallel-computing.md"][:2] == [seed_code.SEED_TF_DATA_PARALLEL_CODE,
                                                      seed_code.SEED_MODEL_PARALLEL_CODE]
    assert seed_code.SEED_DDP_CODE in blocks["05-communication-optimization.md"]
