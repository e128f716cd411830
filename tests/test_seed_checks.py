"""The checks `docs/seed-errata.md` quotes: each script in `docs/seed_checks/` runs and prints exactly
its recorded output, `docs/seed_checks/outputs/NAME.txt`, so the numbers the document quotes stay
true. After changing a check on purpose, record it again:

    python docs/seed_checks/NAME.py > docs/seed_checks/outputs/NAME.txt

The single-process checks run in this process (a few seconds in all). The four that spawn gloo
processes of their own take 10-60 s each on a busy 2-core laptop; they run when
``COURSE_SEED_CHECKS=all`` is set (the course's own tests check the same facts on the launcher:
test_ddp, test_collectives, ...). ``c_all_code_blocks_compile.py`` needs the seed articles, which
are not in the repository (``COURSE_SEEDS=folder``).

Also here: no file of the course names a path of the machine it was written on.
"""
from __future__ import annotations

import contextlib
import io
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


@pytest.mark.parametrize("name", SCRIPTS)
def test_check_prints_its_recorded_output(name):
    if name in SPAWNS and os.environ.get("COURSE_SEED_CHECKS") != "all":
        pytest.skip("spawns its own gloo processes (slow): set COURSE_SEED_CHECKS=all")
    if name in NEEDS_SEEDS and not os.environ.get("COURSE_SEEDS"):
        pytest.skip("needs the seed articles: set COURSE_SEEDS to their folder")
    assert _run(name) == _recorded(name)


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
