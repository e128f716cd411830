"""Binder readiness: ``environment.yml`` alone describes everything the course needs.

Its pip section is installed into a fresh virtual environment (nothing from ``.venv``); there
every module of ``course_lib`` and every package a lecture imports is imported, and the setup
check ``START_HERE.ipynb`` (a kernel, a 2-rank launch, an all-reduce) runs from top to bottom.
The lectures themselves run under nbval and in the browser test, in ``.venv``: what this test
adds is the environment, so it runs the smallest notebook that needs all of it. Packages come
from pip's cache after ``./course``'s own install, so this costs a minute, not a download.
"""
from __future__ import annotations

import json
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


def _lecture_imports() -> list[str]:
    """The top-level packages the lectures import (``import x`` / ``from x import``), course_lib aside."""
    found = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                found |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", "".join(cell["source"]), flags=re.M))
    return sorted(found - {"course_lib", "__future__"})


def test_environment_yml_alone_runs_the_setup_check_and_imports_everything(tmp_path):
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
    every = ("import importlib, pkgutil, course_lib\n"
             "for m in pkgutil.walk_packages(course_lib.__path__, 'course_lib.'):\n"
             "    importlib.import_module(m.name)\n"
             + "".join(f"import {name}\n" for name in _lecture_imports()))
    imported = subprocess.run([str(py), "-c", every], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, f"an import failed in the fresh environment:\n{imported.stderr[-3000:]}"
    out = tmp_path / "START_HERE.ipynb"
    run = subprocess.run(
        [str(env_dir / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--output", str(out),
         "--ExecutePreprocessor.timeout=300", str(ROOT / "START_HERE.ipynb")],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"START_HERE.ipynb failed in the fresh environment:\n{run.stderr[-3000:]}"
    assert "your setup works" in out.read_text()
    where = subprocess.run([str(py), "-c", "import course_lib, torch; print(course_lib.__file__, torch.__version__)"],
                           env=env, capture_output=True, text=True).stdout
    path, torch_version = where.split()
    assert path == str(ROOT / "course_lib" / "__init__.py") and torch_version.startswith("2.13.0")
