"""The course's own slips found in review, each pinned by a test that would have caught it, and the
seed's DDP code run as written (chapter 4)."""
from __future__ import annotations

import json
import math
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
