"""The checks `docs/seed-errata.md` quotes: each script in `docs/seed_checks/` runs and prints exactly
its recorded output, `docs/seed_checks/outputs/NAME.txt`, so the numbers the document quotes stay
true. After changing a check on purpose, record it again:

    python docs/seed_checks/NAME.py > docs/seed_checks/outputs/NAME.txt

The single-process checks run in this process (a few seconds in all). Two of the four that start
gloo processes of their own, ``c03_ring_allreduce.py`` and ``c04_megatron_mlp_fg.py``, run too, in
one child interpreter whose ``mp.spawn`` forks instead of spawning (the same code, without a fresh
``import torch`` per rank: about a second instead of 10-60 s on a busy 2-core laptop). The other two,
``c03_dp_mean.py`` (its DDP imports ``torch._dynamo`` in every rank, several seconds each) and
``c05_correct_compression_ddp.py`` (600 steps on 4 ranks, twice), run as written, with ``mp.spawn``,
when ``COURSE_SEED_CHECKS=all`` is set; the course's own tests check the same facts on the launcher
(test_ddp, test_compression). ``c_all_code_blocks_compile.py`` needs the seed articles, which are
not in the repository (``COURSE_SEEDS=folder``).

Also here: no file of the course names a path of the machine it was written on.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "docs" / "seed_checks"
SCRIPTS = sorted(p.name for p in CHECKS.glob("c*.py"))
SPAWNS = {name for name in SCRIPTS if "mp.spawn" in (CHECKS / name).read_text(encoding="utf-8")}
NEEDS_SEEDS = {"c_all_code_blocks_compile.py"}
FORKED = ["c03_ring_allreduce.py", "c04_megatron_mlp_fg.py"]  # spawning checks cheap enough to run always
# Runs the named checks in one interpreter, mp.spawn forking the ranks, and prints {name: output} as JSON.
_FORK_RUNNER = """
import contextlib, io, json, runpy, sys
import torch.multiprocessing as mp
mp.spawn = lambda fn, args=(), nprocs=1, **kw: mp.start_processes(fn, args, nprocs, start_method="fork")
outputs = {}
for name in sys.argv[1:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(name, run_name="__main__")
    outputs[name] = out.getvalue()
print(json.dumps(outputs))
"""


def _recorded(name: str) -> str:
    return (CHECKS / "outputs" / name.replace(".py", ".txt")).read_text(encoding="utf-8")


def _run(name: str) -> str:
    if name in SPAWNS or name in NEEDS_SEEDS:
        args = [str(CHECKS / name)] + ([os.environ["COURSE_SEEDS"]] if name in NEEDS_SEEDS else [])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, *args], cwd=CHECKS, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(CHECKS / name), run_name="__main__")
    return out.getvalue()


def test_every_check_has_a_recording_and_the_document_points_at_it():
    errata = (ROOT / "docs" / "seed-errata.md").read_text(encoding="utf-8")
    for name in SCRIPTS:
        assert (CHECKS / "outputs" / name.replace(".py", ".txt")).exists(), f"no recorded output for {name}"
        assert f"docs/seed_checks/{name}" in errata, f"docs/seed-errata.md never points at docs/seed_checks/{name}"


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n not in FORKED])
def test_check_prints_its_recorded_output(name):
    if name in SPAWNS and os.environ.get("COURSE_SEED_CHECKS") != "all":
        pytest.skip("spawns its own gloo processes (10-60 s): set COURSE_SEED_CHECKS=all")
    if name in NEEDS_SEEDS and not os.environ.get("COURSE_SEEDS"):
        pytest.skip("needs the seed articles: set COURSE_SEEDS to their folder")
    assert _run(name) == _recorded(name)


def test_process_checks_print_their_recorded_output_with_forked_ranks():
    assert set(FORKED) <= SPAWNS
    if os.environ.get("COURSE_SEED_CHECKS") == "all":
        for name in FORKED:  # as written, mp.spawn and all
            assert _run(name) == _recorded(name)
        return
    done = subprocess.run([sys.executable, "-c", _FORK_RUNNER, *FORKED], cwd=CHECKS, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = json.loads(done.stdout.splitlines()[-1])
    for name in FORKED:
        assert outputs[name] == _recorded(name), name


_NUMBER = r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"


def _rounds_to(value: float, quoted: str) -> bool:
    """True if `value` printed with the precision of `quoted` (e.g. '0.35', '7.18e-05') gives it."""
    mantissa, _, exponent = quoted.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return abs(value - float(quoted)) <= 0.5 * 10.0 ** (int(exponent or 0) - decimals) * (1 + 1e-9)


def test_the_document_quotes_the_recordings():
    # every number a Check line quotes from its scripts (in a `...` fragment, or with a decimal point or an
    # exponent anywhere in the line) is, rounded as quoted, a number of those scripts' recorded output
    errata = (ROOT / "docs" / "seed-errata.md").read_text(encoding="utf-8")
    wrong = []
    for line in errata.splitlines():
        names = re.findall(r"docs/seed_checks/(c\w+\.py)", line)
        if not line.startswith("* **Check.**") or not names:
            continue
        recorded = [float(v) for name in names for v in re.findall(_NUMBER, _recorded(name))]
        text = re.sub(r"docs/seed_checks/\w+\.py", "SCRIPT", line)
        quoted = [q for frag in re.findall(r"`([^`]+)`", text) for q in re.findall(_NUMBER, frag)]
        quoted += [q for q in re.findall(_NUMBER, text) if "." in q or "e" in q]
        wrong += [f"{q} ({', '.join(names)})" for q in quoted if not any(_rounds_to(v, q) for v in recorded)]
    assert not wrong, "numbers in docs/seed-errata.md that no recording prints: " + "; ".join(wrong)
    assert _rounds_to(99.99999237060547, "99.99999") and not _rounds_to(99.99999237060547, "99.99998")


# Absolute paths of an authoring machine, in any file a learner gets (sources, notebooks and their
# committed outputs, documents). Tracebacks in notebook outputs are the usual way they creep in.
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|tmp|home|root|Users|mnt|opt/conda)/[\w.-]")
SEARCHED = ["notebooks", "solutions", "exercises", "docs", "course_lib", "tests", "jupyter_config"]


def test_no_path_of_the_authoring_machine():
    hits = []
    files = [p for folder in SEARCHED for p in sorted((ROOT / folder).rglob("*"))]
    for path in files + sorted(ROOT.glob("*.md")) + sorted(ROOT.glob("*.ipynb")):
        if path.suffix not in {".py", ".ipynb", ".md", ".txt", ".cfg", ".json"} or not path.is_file():
            continue
        for k, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if path.name != "test_seed_checks.py" and MACHINE_PATH.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()[:120]}")
    assert not hits, "absolute paths of the authoring machine:\n" + "\n".join(hits)
