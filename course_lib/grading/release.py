"""Write the learners' copy of the course: everything but the solutions and hidden tests.

    python -m course_lib.grading.release DIR      # ./course release DIR

The copy has the lectures, ``course_lib``, the generated ``exercises/`` (checked up to date
first) and the tests that learners can run; it leaves out ``solutions/``, the wrong answers
the checks are tested on (``tests/wrong_answers/``, which quote the solutions) and every test
file that reads them. It then checks that no file in the copy contains a solution or hidden
test marker. Files are those git tracks (or, outside a git checkout, every file except
``.venv``, ``.git`` and caches).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from course_lib.grading import assign

ROOT = Path(__file__).resolve().parents[2]
LEFT_OUT = ("solutions/", "tests/wrong_answers/")
MARKERS = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


def course_files(root: Path = ROOT) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
        return [f for f in out.splitlines() if (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts))


def left_out(rel: str, root: Path = ROOT) -> str | None:
    """Why ``rel`` stays out of the learners' copy, or None."""
    if rel.startswith(LEFT_OUT):
        return "solutions"
    if rel.startswith("tests/") and rel.endswith(".py"):
        text = (root / rel).read_text(errors="replace")
        if "wrong_answers" in text or '"solutions"' in text or "'solutions'" in text:
            return "a test that reads the solutions"
    return None


def release(dest: Path, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """Copy the course into ``dest`` (which must not exist); (copied, left out)."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists; give a new folder (the release never overwrites)")
    if assign.main(["--check", "--solutions", str(root / "solutions"), "--exercises", str(root / "exercises")]):
        raise RuntimeError("exercises/ is out of date with solutions/: run ./course exercises first")
    copied, skipped = [], []
    for rel in course_files(root):
        if left_out(rel, root):
            skipped.append(rel)
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
        copied.append(rel)
    leaks = [rel for rel in copied if any(m in (dest / rel).read_text(errors="replace") for m in MARKERS)
             and not rel.startswith("course_lib/grading/") and not rel.endswith(".md")]
    if leaks:
        shutil.rmtree(dest)
        raise RuntimeError(f"solution or hidden-test markers in {leaks}; nothing was released")
    return copied, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path, help="a new folder for the learners' copy")
    a = ap.parse_args(argv)
    copied, skipped = release(a.dest)
    print(f"released {len(copied)} files to {a.dest}; left out {len(skipped)}: solutions/, "
          f"tests/wrong_answers/ and {sum(not s.startswith(LEFT_OUT) for s in skipped)} test files that read them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
