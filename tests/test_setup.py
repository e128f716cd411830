"""The setup the README promises: pins agree, commands exist, the package imports cleanly."""
from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import course_lib

ROOT = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for ln in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", ln)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_pins_equal_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = pins((ROOT / "environment.yml").read_text().splitlines())
    assert req["torch"] == "2.13.0"
    assert req == env, f"differ: {set(req.items()) ^ set(env.items())}"
    assert "- -e ." in (ROOT / "environment.yml").read_text()


def test_installed_versions_match_pins():
    for name, pinned in pins((ROOT / "requirements.txt").read_text().splitlines()).items():
        got = version(name).split("+")[0]
        assert got == pinned, f"{name}: installed {got}, pinned {pinned}; rerun ./course test to reinstall"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "./course lab" in readme and "./course test" in readme
    assert "./course test" in (ROOT / ".ci" / "run").read_text()
    help_text = subprocess.run(["bash", str(ROOT / "course"), "help"], capture_output=True, text=True).stdout
    assert "./course lab" in help_text


def test_every_module_imports_and_is_documented():
    for m in pkgutil.walk_packages(course_lib.__path__, "course_lib."):
        if m.name.endswith("__main__"):
            continue
        mod = importlib.import_module(m.name)
        assert (mod.__doc__ or "").strip(), f"{m.name} has no module docstring"


def test_python_version():
    assert sys.version_info >= (3, 11)


def test_course_lib_readme_maps_every_module():
    """course_lib/README.md is the map a learner reads first: it must name every module, and only those."""
    lib = ROOT / "course_lib"
    modules = {str(p.relative_to(lib)) for p in lib.rglob("*.py") if p.name != "__init__.py"}
    modules.add("collectives/__init__.py")  # holds the table of algorithms a learner reads first
    text = (lib / "README.md").read_text()
    named = {n for n in re.findall(r"`([\w/]+\.py)`", text) if not n.startswith("tests/")}
    ranges = re.findall(r"`grading/ch(\d\d)\.py` … `grading/ch(\d\d)\.py`", text)
    for lo, hi in ranges:
        named |= {f"grading/ch{i:02d}.py" for i in range(int(lo), int(hi) + 1)}
    assert modules - named == set(), f"modules missing from course_lib/README.md: {sorted(modules - named)}"
    assert named - modules == set(), f"course_lib/README.md names files that do not exist: {sorted(named - modules)}"


def _launch_calls_with_positional_lists() -> list[str]:
    """Every ``launch(fn, world_size, a, b, ...)`` in the course's code and notebooks, as ``file:line``.

    A call of ``launch`` (or ``launcher.launch``) may pass ``fn`` and ``world_size`` by position;
    everything else goes by name, so the call reads on its own. Notebook lines count within the cell.
    """
    sources: list[tuple[str, str]] = []
    for folder in ("course_lib", "tests"):
        sources += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / folder).rglob("*.py"))]
    notebooks = [*sorted((ROOT / "notebooks").glob("*.ipynb")), *sorted((ROOT / "solutions").glob("*.ipynb")),
                 ROOT / "START_HERE.ipynb"]
    for nb in notebooks:
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                # IPython magics and shell escapes are not Python; blank them out, keeping line numbers.
                src = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.split("\n"))
                sources.append((f"{nb.relative_to(ROOT)} cell {i}", src))
    found = []
    for name, src in sources:
        if not re.search(r"\blaunch\s*\(", src):  # most files and cells: nothing to parse
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:  # an exercise stub or a cell that shows a syntax error on purpose
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            is_launch = (isinstance(f, ast.Name) and f.id == "launch") or (
                isinstance(f, ast.Attribute) and f.attr == "launch"
                and isinstance(f.value, ast.Name) and f.value.id == "launcher")
            if is_launch and len(node.args) > 2:
                found.append((name, node.lineno, len(node.args)))
    return [f"{name} line {line}: {n} positional arguments" for name, line, n in sorted(found)]


def test_launch_calls_name_their_arguments():
    """``launch(fn, world_size, steps=20, lr=1e-3)``, never ``launch(fn, 2, 20, 1e-3)``: nobody can read the latter."""
    found = _launch_calls_with_positional_lists()
    assert not found, ("launch() calls that pass more than fn and world_size by position; name the rest "
                       "(launch(fn, 4, steps=20, lr=1e-3)):\n  " + "\n  ".join(found))
