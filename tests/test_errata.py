"""The course's own slips found in review, each pinned by a test that would have caught it, and the
seed's DDP code run as written (chapter 4)."""
from __future__ import annotations

import ast
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


def _placement_class_slips(text: str) -> list[str]:
    """What is wrong in `text` about the placement problem's class and why it is NP-hard."""
    flat = " ".join(text.replace("*", "").split())
    slips = []
    for need in ("uniformly related", "Q||Cmax", "P||Cmax", "special case"):
        if need not in flat:
            slips.append(f"does not say {need!r}")
    # the one right use of "unrelated": Q||Cmax is a special case of R||Cmax (an inclusion upward)
    if flat.count("unrelated") != flat.count("special case of unrelated machines, R||Cmax"):
        slips.append("calls the placement problem 'unrelated machines' (one speed per device: Q||Cmax)")
    # hardness comes downward: P||Cmax is a special case of ours, so a solver for ours solves it
    if not re.search(r"(solver|algorithm|method) for (our problem|ours) (would )?solves?", flat):
        slips.append("does not say that a solver for our problem solves P||Cmax (the reduction's direction)")
    if re.search(r"(contains|reduces? to|special case of)[^.;:]{0,40}\b(R\|\|Cmax|unrelated)[^.]*NP-hard", flat) \
            or re.search(r"NP-hard[^.]{0,60}(contains|reduces? to)[^.]{0,40}(R\|\|Cmax|unrelated)", flat):
        slips.append("derives NP-hardness from unrelated machines (backwards)")
    return slips


def test_placement_problem_is_uniformly_related_machines_and_hard_via_identical_ones():
    # slip 4: exercise 01 Q3, SEED_NOTES.md and milp.py once said "makespan on unrelated machines"
    def q3(folder: str) -> str:
        nb = json.loads((ROOT / folder / "01_allocation.ipynb").read_text(encoding="utf-8"))
        return next("".join(c["source"]) for c in nb["cells"]
                    if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Q3"))
    milp_doc = ast.get_docstring(ast.parse((ROOT / "course_lib" / "allocation" / "milp.py").read_text(encoding="utf-8")))
    texts = {"solutions Q3": q3("solutions"), "exercises Q3": q3("exercises"), "milp.py": milp_doc,
             "SEED_NOTES.md": (ROOT / "course_lib" / "allocation" / "SEED_NOTES.md").read_text(encoding="utf-8")}
    for where, text in texts.items():
        assert not _placement_class_slips(text), (where, _placement_class_slips(text))
    # the slip as it once read is caught
    old = ("Without communication, minimising the time per micro-batch under memory limits is scheduling on "
           "unrelated machines with capacities, NP-hard in general; it contains bin packing and makespan on "
           "unrelated machines (Lenstra, Shmoys & Tardos 1990).")
    assert any("unrelated" in slip for slip in _placement_class_slips(old))


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
