"""The course as a learner sees it: JupyterLab in headless Chromium.

Every notebook under ``notebooks/`` must open and render (title and cells). Every notebook
whose code uses widgets is run in its own tab, all tabs at once, up to the end of the
section holding its last widget (nbval already runs every cell; this test is about the
widgets). Then: no cell shows an error, every slider renders, moving it changes its
readout and the output it drives (the image, for a plot), clicking a button changes the
output, and the browser console has no error from the widgets. Screenshots of the widget
cells go to ``SCREENSHOTS``.

Needs Debian's ``chromium`` and the ``playwright`` package; skipped, with the reason,
without them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"browser test needs {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser test needs playwright (pip install playwright)")

pytestmark = pytest.mark.browser

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SCREENSHOTS = Path(tempfile.gettempdir()) / "dpolab-browser-screenshots"
RUN_TIMEOUT_S = 140  # all widget notebooks together, from when their tabs have loaded
STEP_TIMEOUT_S = 30  # one slider move or button click, until its output has changed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
LAB_SETTINGS = {  # user settings of the test's JupyterLab
    # Every cell in the DOM, so widgets far down a notebook render without scrolling.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
}

WIDGET_CODE = re.compile(r"\binteract(ive)?\b|\bipywidgets\b|\bwidgets\.")
SLIDER_CALL = re.compile(r"\b\w*Slider\s*\(")
BUTTON_CALL = re.compile(r"\bButton\s*\(")
WIDGET_JS_ERROR = re.compile(r"widget|jupyter-widgets|ipywidgets", re.IGNORECASE)
PYTHON_ERROR = re.compile(r"Traceback|\b\w*Error\b")


def cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def code(nb: Path) -> list[str]:
    return [source(c) for c in cells(nb) if c["cell_type"] == "code"]


def has_widgets(nb: Path) -> bool:
    """Whether ``nb``'s code uses widgets; a file that is no notebook fails its render test."""
    try:
        return any(WIDGET_CODE.search(src) for src in code(nb))
    except (ValueError, KeyError, TypeError):
        return False


def run_until(nb: Path) -> int:
    """Index of the first cell not to run: the heading after the last widget cell's section
    (which may still display or feed that widget), or the end of the notebook."""
    nb_cells = cells(nb)
    last = max(i for i, c in enumerate(nb_cells)
               if c["cell_type"] == "code" and WIDGET_CODE.search(source(c)))
    return next((i for i in range(last + 1, len(nb_cells)) if nb_cells[i]["cell_type"] ==
                 "markdown" and source(nb_cells[i]).lstrip().startswith("#")), len(nb_cells))


def count_calls(nb: Path, pattern: re.Pattern) -> int:
    return sum(len(pattern.findall(src)) for src in code(nb))


def title(nb: Path) -> str:
    """The ``# ...`` heading the notebook opens with."""
    first = source(cells(nb)[0]).lstrip()
    assert first.startswith("# "), f"{nb.name}: first cell must start with '# Title'"
    return first.splitlines()[0][2:].strip()


NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WIDGET_NOTEBOOKS = [nb for nb in NOTEBOOKS if has_widgets(nb)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


@dataclass
class Lab:
    url: str
    token: str

    def open_url(self, workspace: str, path: str = "") -> str:
        tree = f"/tree/{path}" if path else ""
        return f"{self.url}/lab/workspaces/{workspace}{tree}?token={self.token}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """JupyterLab on a free port over a copy of the notebooks; stopped afterwards."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name, values in LAB_SETTINGS.items():
        path = tmp / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    # Widget notebooks run side by side: one thread each keeps them from fighting over cores.
    threads = max(1, (os.cpu_count() or 1) // max(1, len(WIDGET_NOTEBOOKS)))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
           f"--LabApp.user_settings_dir={tmp / 'settings'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp / "lab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                get(f"{url}/api/status?token={token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 60 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield Lab(url, token)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@dataclass
class Tab:
    """A browser tab with one notebook open, and what its console said."""

    page: sync_api.Page
    console_errors: list[str] = field(default_factory=list)


def new_tab(browser, url: str) -> Tab:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    tab = Tab(page)
    page.on("console", lambda m: m.type == "error" and tab.console_errors.append(m.text))
    page.on("pageerror", lambda e: tab.console_errors.append(f"uncaught: {e}"))
    page.goto(url, timeout=90_000)
    return tab


def kernel_status(page) -> str | None:
    return page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


KERNEL_IDLE = """path => {
    try {
        const w = [...window.jupyterapp.shell.widgets('main')].find(w => w.context?.path === path);
        const kernel = w?.sessionContext.session?.kernel;
        return w.context.isReady && kernel.connectionStatus === 'connected'
            && kernel.status === 'idle';
    } catch { return false; } }"""


def run_widget_cells(page, nb: Path) -> None:
    """Run the cells up to the end of the last widget's section, from the Run menu."""
    page.wait_for_function(KERNEL_IDLE, arg=nb.name, timeout=90_000)
    until = run_until(nb)
    if until == len(cells(nb)):
        menu(page, "Run", "Run All Cells")
    else:
        page.locator(".jp-Notebook .jp-Cell").nth(until).locator(".jp-InputPrompt").click()
        menu(page, "Run", "Run All Above Selected Cell")


@pytest.fixture(scope="module")
def runs(lab: Lab, browser) -> dict[str, tuple[Tab, float]]:
    """One tab per widget notebook, all running at once: name -> (tab, deadline)."""
    tabs = {nb.name: new_tab(browser, lab.open_url(nb.stem, nb.name)) for nb in WIDGET_NOTEBOOKS}
    started = time.monotonic()
    for nb in WIDGET_NOTEBOOKS:
        run_widget_cells(tabs[nb.name].page, nb)
    return {name: (tab, started + RUN_TIMEOUT_S) for name, tab in tabs.items()}


@pytest.fixture(scope="module")
def viewer(lab: Lab, browser, runs) -> Tab:
    """A tab that opens notebooks without running them (after the widget runs started)."""
    tab = new_tab(browser, lab.open_url("viewer"))
    tab.page.wait_for_function("() => window.jupyterapp", timeout=90_000)
    tab.page.evaluate("() => window.jupyterapp.restored.then(() => true)")
    return tab


def wait_until(page, check: Callable[[], bool], timeout_s: float,
               what: str | Callable[[], str]) -> None:
    """Poll ``check`` until it holds; fail with ``what`` (a string, or made at the time)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s: {what() if callable(what) else what}")
        page.wait_for_timeout(250)


def idle(page) -> bool:
    running = page.locator(".jp-Notebook .jp-InputPrompt", has_text="[*]").count()
    return kernel_status(page) == "idle" and running == 0


def python_errors(page) -> list[str]:
    texts = page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
    shown = [t for t in texts if PYTHON_ERROR.search(t)]
    broken = page.locator(".jp-OutputArea-output", has_text="Error displaying widget")
    shown += broken.all_inner_texts()
    return shown


def assert_renders(page, nb: Path) -> None:
    notebook = page.locator(".jp-NotebookPanel:visible .jp-Notebook")
    h1 = notebook.locator(".jp-Cell").first.locator(".jp-RenderedMarkdown h1")
    h1.wait_for(state="visible", timeout=60_000)
    assert title(nb) in h1.inner_text(), f"{nb.name}: title {h1.inner_text()!r}"
    n = notebook.locator(".jp-Cell").count()
    assert n == len(cells(nb)), f"{nb.name}: {n} cells shown, {len(cells(nb))} in the file"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_renders(nb: Path, viewer: Tab, runs) -> None:
    if nb.name in runs:  # already open in its own tab, where it runs
        assert_renders(runs[nb.name][0].page, nb)
        return
    page = viewer.page
    title(nb)  # a file that is no notebook fails here, before Lab shows an error dialog
    panel_id = page.evaluate("""async path => {
        const w = await window.jupyterapp.commands.execute('docmanager:open', {path});
        return w.id; }""", nb.name)
    try:
        assert_renders(page, nb)
    finally:  # close it and stop its kernel (waiting at most 10 s)
        page.evaluate("""async id => {
            const w = [...window.jupyterapp.shell.widgets('main')].find(w => w.id === id);
            const stop = w.sessionContext.ready.then(() => w.sessionContext.shutdown());
            await Promise.race([stop, new Promise(r => setTimeout(r, 10000))]);
            w.dispose(); }""", panel_id)


def readout(slider) -> str:
    return slider.locator(".widget-readout").inner_text()


def driven(slider) -> tuple[list[str], str]:
    """Image sources and text of the output widgets ``slider`` drives: those of its interact
    box or cell, else every output widget of the notebook."""
    return slider.evaluate("""s => {
        const box = s.closest('.widget-interact') || s.closest('.jp-Cell');
        let outs = [...box.querySelectorAll('.widget-output')];
        if (!outs.length) outs = [...document.querySelectorAll('.jp-Notebook .widget-output')];
        return [outs.flatMap(o => [...o.querySelectorAll('img')].map(i => i.src)),
                outs.map(o => o.innerText).join('\\n')]; }""")


def all_outputs(page) -> tuple[list[str], str]:
    """Image sources and text of every output in the notebook of ``page``."""
    return page.evaluate("""() => {
        const outs = [...document.querySelectorAll('.jp-Notebook .jp-Cell-outputArea')];
        return [outs.flatMap(o => [...o.querySelectorAll('img')].map(i => i.src)),
                outs.map(o => o.innerText).join('\\n')]; }""")


def move(page, slider, name: str) -> None:
    """One keyboard step of ``slider``: its readout and the plot (or text) it drives change."""
    label = slider.locator(".widget-label").inner_text()
    handle = slider.locator(".noUi-handle").first
    before, shown = readout(slider), driven(slider)
    at_max = float(handle.get_attribute("aria-valuenow")) >= float(
        handle.get_attribute("aria-valuemax"))
    handle.focus()
    handle.press("ArrowLeft" if at_max else "ArrowRight")
    what = f"{name}: slider {label!r} moved from {before}"
    wait_until(page, lambda: readout(slider) != before, STEP_TIMEOUT_S,
               f"{what}, readout unchanged")
    if shown[0]:  # it drives a plot: the plot must change
        wait_until(page, lambda: driven(slider)[0] != shown[0], STEP_TIMEOUT_S,
                   f"{what} to {readout(slider)}, its plot did not change")
    else:
        wait_until(page, lambda: driven(slider)[1] != shown[1], STEP_TIMEOUT_S,
                   f"{what} to {readout(slider)}, its output did not change")
    wait_until(page, lambda: idle(page), STEP_TIMEOUT_S, f"{what}: kernel still busy")


def click(page, button, name: str) -> None:
    """Click ``button``; some output of the notebook must change."""
    label = button.inner_text()
    shown = all_outputs(page)
    button.click()
    wait_until(page, lambda: all_outputs(page) != shown, STEP_TIMEOUT_S,
               f"{name}: clicking {label!r} changed no output")
    wait_until(page, lambda: idle(page), STEP_TIMEOUT_S, f"{name}: kernel still busy")


@pytest.mark.parametrize("nb", WIDGET_NOTEBOOKS, ids=lambda p: p.name)
def test_widgets_work(nb: Path, runs, screenshots: Path, capsys) -> None:
    tab, deadline = runs[nb.name]
    page = tab.page
    try:
        wait_until(page, lambda: idle(page), deadline - time.monotonic(),
                   f"{nb.name} still running {RUN_TIMEOUT_S} s after the run started")
        errors = python_errors(page)
        assert not errors, f"{nb.name}: cells show errors:\n" + "\n---\n".join(errors)
        to_run = sum(1 for c in cells(nb)[: run_until(nb)]
                     if c["cell_type"] == "code" and source(c).strip())
        prompts = page.locator(".jp-Notebook .jp-InputPrompt").all_inner_texts()
        ran = sum(1 for p in prompts if re.fullmatch(r"\[\d+\]:", p.strip()))
        assert ran >= to_run, f"{nb.name}: {ran} of {to_run} code cells ran"

        sliders = page.locator(".jp-Notebook .widget-slider")
        buttons = page.locator(".jp-Notebook .widget-button")
        n_sliders, n_buttons = count_calls(nb, SLIDER_CALL), count_calls(nb, BUTTON_CALL)
        wait_until(page, lambda: sliders.count() >= n_sliders and buttons.count() >= n_buttons
                   and sliders.count() + buttons.count() >= 1, STEP_TIMEOUT_S,
                   lambda: f"{nb.name}: {sliders.count()} sliders and {buttons.count()} buttons "
                   f"shown, the code makes {n_sliders} and {n_buttons} (and at least one widget)")
        for i in range(sliders.count()):
            move(page, sliders.nth(i), nb.name)
        for cell in page.locator(".jp-Notebook .jp-Cell").filter(
                has=page.locator(".widget-button")).all():
            click(page, cell.locator(".widget-button").first, nb.name)

        errors = python_errors(page)
        assert not errors, f"{nb.name}: errors after interacting:\n" + "\n---\n".join(errors)
        widget_errors = [e for e in tab.console_errors if WIDGET_JS_ERROR.search(e)]
        assert not widget_errors, f"{nb.name}: widget errors in the console:\n" + "\n".join(
            widget_errors)
    finally:
        page.screenshot(path=screenshots / f"{nb.stem}.png")
        widget_cells = page.locator(".jp-Notebook .jp-Cell").filter(
            has=page.locator(".widget-slider, .widget-button"))
        for i, cell in enumerate(widget_cells.all()):
            cell.screenshot(path=screenshots / f"{nb.stem}-widget{i + 1}.png")
        with capsys.disabled():
            print(f"\n{nb.name}: screenshots in {screenshots}")
