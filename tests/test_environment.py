"""Binder readiness: ``environment.yml`` alone describes everything the course needs.

Its pip section is installed into a fresh virtual environment (nothing from ``.venv``), and
chapter 0 runs there from top to bottom. Packages come from pip's cache after ``./course``'s
own install, so this costs a minute, not a download.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pip_section(text: str) -> list[str]:
    """The requirement lines under ``- pip:`` in environment.yml."""
    lines, inside = [], False
    for ln in text.splitlines():
        if re.match(r"^\s*-\s+pip:\s*$", ln):
            inside = True
        elif inside and re.match(r"^\s{4,}-\s+\S", ln):
            lines.append(ln.split("-", 1)[1].strip())
        elif inside and ln.strip():
            inside = False
    return lines


def test_pip_section_is_read():
    reqs = pip_section((ROOT / "environment.yml").read_text())
    assert "torch==2.13.0" in reqs and "-e ." in reqs and len(reqs) > 10


def test_environment_yml_alone_runs_chapter_0(tmp_path):
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    reqs = pip_section((ROOT / "environment.yml").read_text())
    args = [a for r in reqs for a in (r.split(maxsplit=1) if r.startswith("-e ") else [r])]
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", *args],
                             cwd=ROOT, capture_output=True, text=True)
    assert install.returncode == 0, f"pip install of environment.yml's pip section failed:\n{install.stderr[-3000:]}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    out = tmp_path / "chapter0.ipynb"
    run = subprocess.run(
        [str(env_dir / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--output", str(out),
         "--ExecutePreprocessor.timeout=300", str(ROOT / "notebooks" / "00_processes_and_collectives.ipynb")],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"chapter 0 failed in the fresh environment:\n{run.stderr[-3000:]}"
    where = subprocess.run([str(py), "-c", "import course_lib, torch; print(course_lib.__file__, torch.__version__)"],
                           env=env, capture_output=True, text=True).stdout
    path, torch_version = where.split()
    assert path == str(ROOT / "course_lib" / "__init__.py") and torch_version.startswith("2.13.0")
