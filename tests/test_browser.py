"""The course as a learner meets it: every lecture notebook run in JupyterLab, in a real browser.

``./course lab`` serves the course; headless Chromium (Debian's, driven by Playwright) opens each
lecture notebook, checks what the page shows before anything runs, runs all cells, and fails on
an error output, a browser console error or a server warning. Every widget control is then moved
to its minimum, maximum and a middle value: the output must update to a picture or a one-line
message. A screenshot per notebook lands in ``build/browser/``.

Needs ``/usr/bin/chromium`` (or ``COURSE_CHROMIUM``); ``.ci/run`` installs it. Without it the
test is skipped on a learner's machine and fails in CI.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.path.join(ROOT, "build", "browser")
NOTEBOOKS = ["START_HERE.ipynb"] * os.path.exists(os.path.join(ROOT, "START_HERE.ipynb")) + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
RUN_TIMEOUT_MS = 180_000  # a whole notebook; each runs in under a minute on 2 idle cores

if not os.path.exists(CHROMIUM):
    why = f"no Chromium at {CHROMIUM}: install Debian's chromium package or set COURSE_CHROMIUM"
    if os.environ.get("CI"):
        raise RuntimeError(why)  # in CI the browser test must run, not be skipped
    pytest.skip(why, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

# Server log lines a learner could not act on are bugs; these are the server's own chatter.
SERVER_NOISE = re.compile(r"^\[[IDC] |Skipped non-installed server|^\s")
# ipywidgets' front end logs this when it renders a view whose model was already closed: a
# progress bar or an interact output replaced (update_display, clear_output) while the browser
# was still drawing it. The cell's output is checked on its own (error outputs fail the test).
CONSOLE_NOISE = re.compile(r"^Error: widget model not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``./course lab`` on a free port, with a fresh workspace; yields (url, server log path)."""
    port, token = _free_port(), secrets.token_hex(16)
    work = tmp_path_factory.mktemp("lab")
    log = work / "server.log"
    # The test must not save the notebooks it runs: autosave off, in settings of its own.
    settings = work / "user-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    proc = subprocess.Popen(
        [os.path.join(ROOT, "course"), "lab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
         "--LabApp.expose_app_in_browser=True", f"--LabApp.workspaces_dir={work}",
         f"--LabApp.user_settings_dir={work / 'user-settings'}"],
        cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"./course lab did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", token, log
    # SIGTERM: the server shuts its kernels down and exits (one Ctrl-C would only ask to confirm)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in front (./course lab opens a second one)
KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel"
CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets.map((c, i) => {
    const outs = c.model.type === 'code' ? c.model.outputs.toJSON() : [];
    return {i, type: c.model.type, count: c.model.type === 'code' ? c.model.executionCount : 0,
            source: c.model.sharedModel.getSource().split('\\n')[0],
            errors: outs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
            stderr: outs.filter(o => o.name === 'stderr').map(o => [].concat(o.text).join(''))};
})"""


def _wait_idle(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    page.wait_for_function(f"{KERNEL} && {KERNEL}.status === 'idle'", timeout=timeout_ms)


def _open(page, url: str, token: str, path: str) -> None:
    page.goto(f"{url}/lab/tree/{path}?token={token}")
    page.wait_for_function(f"window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           f" && window.jupyterapp.shell.currentWidget.context?.path === '{path}'", timeout=60_000)
    _wait_idle(page, 60_000)


def _committed_view_problems(page) -> list[str]:
    """What the page shows before anything runs: widgets from their saved state, no raw reprs."""
    text = page.locator(PANEL).inner_text()
    problems = [f"committed output shows {bad!r}" for bad in ("Error displaying widget", "interactive(children=")
                if bad in text]
    if re.search(r"\b0/\d+ \[00:00<\?", text):
        problems.append("a progress bar committed at 0%")
    return problems


def _run_all(page) -> list[dict]:
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait_idle(page)
    return page.evaluate(CELLS)


# ------------------------------------------------------------------------------ widgets

CONTROLS = """(box) => {
    const out = [];
    box.querySelectorAll('.widget-hslider, .widget-dropdown').forEach((el, k) => {
        const label = (el.querySelector('.widget-label')?.textContent || '').trim();
        const handle = el.querySelector('.noUi-handle');
        if (handle) out.push({k, kind: 'slider', label, min: +handle.getAttribute('aria-valuemin'),
                              max: +handle.getAttribute('aria-valuemax'), now: +handle.getAttribute('aria-valuenow')});
        else { const s = el.querySelector('select');
               out.push({k, kind: 'dropdown', label, options: [...s.options].map(o => o.value), now: s.value}); }
    });
    return out;
}"""


def _output_settled(page, box) -> dict:
    """Wait for the interactive's output to be replaced and the kernel idle; describe it."""
    box.evaluate("b => b.dataset.waiting = '1'")
    page.wait_for_function(
        """(b) => { const o = b.querySelector('.widget-output .jp-OutputArea');
                    return o && o.querySelector('.jp-OutputArea-child:not([data-seen])'); }""",
        arg=box.element_handle(), timeout=60_000)
    _wait_idle(page, 60_000)
    time.sleep(0.3)  # the last output message may trail the idle status
    return box.evaluate("""(b) => { const o = b.querySelector('.widget-output .jp-OutputArea');
        return {images: o.querySelectorAll('img').length, text: o.innerText.trim()}; }""")


def _sweep_widgets(page) -> tuple[int, list[str]]:
    """Move every control of every interactive picture to min, max and middle; report failures."""
    problems, moves = [], 0
    boxes = page.locator(f"{PANEL} .widget-interact")
    for b in range(boxes.count()):
        box = boxes.nth(b)
        box.scroll_into_view_if_needed()
        for c in box.evaluate(CONTROLS):
            if c["kind"] == "slider":
                lo, hi = c["min"], c["max"]
                targets = [lo, hi, (lo + hi) / 2]
            else:
                opts = c["options"]
                targets = [opts[0], opts[-1], opts[len(opts) // 2]]
            for value in targets:
                box.evaluate("b => b.querySelectorAll('.widget-output .jp-OutputArea-child')"
                             ".forEach(c => c.dataset.seen = '1')")
                control = box.locator(".widget-hslider, .widget-dropdown").nth(c["k"])
                if c["kind"] == "slider":
                    now = float(control.locator(".noUi-handle").get_attribute("aria-valuenow"))
                    if abs(now - value) <= 1e-9 * max(1.0, abs(value)):
                        continue
                    readout = control.locator(".widget-readout")
                    readout.click()
                    page.keyboard.press("Control+A")
                    page.keyboard.type(f"{value:g}")
                    page.keyboard.press("Enter")
                else:
                    if control.locator("select").input_value() == value:
                        continue
                    control.locator("select").select_option(value)
                moves += 1
                try:
                    seen = _output_settled(page, box)
                except sync_api.TimeoutError:
                    problems.append(f"widget {b} {c['label']}={value}: the output did not update")
                    continue
                lines = [ln for ln in seen["text"].splitlines() if ln.strip()]
                if "Traceback" in seen["text"] or "Error" in seen["text"] and not seen["images"] and len(lines) > 1:
                    problems.append(f"widget {b} {c['label']}={value}: an error instead of a picture: {lines[-1][:200]}")
                elif not seen["images"] and len(lines) != 1:
                    problems.append(f"widget {b} {c['label']}={value}: neither a picture nor a one-line message: "
                                    f"{seen['text'][:200]!r}")
    return moves, problems


def _shut_down_kernel(page) -> None:
    page.evaluate(f"{KERNEL}?.shutdown()")


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(lab, browser, path):
    url, token, log = lab
    log_start = len(log.read_text()) if log.exists() else 0
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    problems = []
    committed = open(os.path.join(ROOT, path), "rb").read()
    t0 = time.time()
    try:
        _open(page, url, token, path)
        problems += _committed_view_problems(page)
        cells = _run_all(page)
        ran = time.time() - t0
        for c in cells:
            where = f"cell {c['i']} ({c['source'][:60]!r})"
            if c["type"] == "code" and c["count"] is None:
                problems.append(f"{where} did not run")
            problems += [f"{where}: {e.splitlines()[0][:300]}" for e in c["errors"]]
            problems += [f"{where} wrote a traceback to stderr: {s[-300:]}" for s in c["stderr"] if "Traceback" in s]
        moves, widget_problems = _sweep_widgets(page)
        problems += widget_problems
        # The screenshot shows the first widget (after its sweep), else the first picture.
        for shown in (f"{PANEL} .widget-interact", f"{PANEL} .jp-OutputArea-output img"):
            if page.locator(shown).count():
                page.locator(shown).first.scroll_into_view_if_needed()
                break
        os.makedirs(SHOTS, exist_ok=True)
        shot = os.path.join(SHOTS, os.path.basename(path).replace(".ipynb", ".png"))
        page.screenshot(path=shot)
        print(f"{path}: ran in {ran:.0f} s, {moves} widget moves, screenshot {os.path.relpath(shot, ROOT)}")
        _shut_down_kernel(page)
    finally:
        context.close()
    if open(os.path.join(ROOT, path), "rb").read() != committed:
        problems.append("the committed notebook was overwritten (autosave must be off in the test)")
    problems += [f"browser console error: {m[:300]}" for m in console if not CONSOLE_NOISE.search(m)]
    server = log.read_text()[log_start:]
    problems += [f"server log: {ln[:300]}" for ln in server.splitlines() if ln.strip() and not SERVER_NOISE.search(ln)]
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)
