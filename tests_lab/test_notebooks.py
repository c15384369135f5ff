"""Every notebook run as a learner runs it: JupyterLab in headless Chromium, "Run All Cells".

For each notebook: open it from the file browser, choose Run > Run All Cells, wait until its
kernel is idle (asked of the server's REST API, since JupyterLab renders only the cells in view),
save it from the File menu, then check the saved file and the page: every code cell executed,
no error output, progress bars drawn as widgets (not as ``HBox(...)`` text) and finished, every
figure drawn.  Notebook 06's pad is then drawn on with the mouse: a vertical stroke must make
the chart show 1 as the most likely digit, a closed loop 0.  A screenshot of each notebook (and
of each drawing) goes to ``tests_lab/screenshots/``.

``make test-lab`` runs them all (notebooks 03 and 04 take many minutes);
``make test-lab-quick`` only the ones marked ``quick``, as CI does after ``make test``.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from labserver import ROOT, SCREENSHOTS, Lab, report
from playwright.sync_api import Locator, Page, expect

RUN_TIMEOUT = 3600  # seconds for one notebook's cells: notebook 03 takes 12 to 20 minutes
IDLE_FOR = 2.0  # seconds the kernel must stay idle, all cells done, before the run counts as over
QUICK = {"01_idx_format.ipynb", "02_forward_propagation.ipynb", "06_draw_a_digit.ipynb"}
NOTEBOOKS = sorted(path.name for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TQDM_TEXT = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # a tqdm bar as text: " 0%|     | 0/3 ["
PAD_SIDE = 280
DEAD = {"dead", "restarting", "autorestarting"}  # kernel states that end a run


def notebook_params() -> list[Any]:
    return [
        pytest.param(name, id=name.split("_")[0], marks=[pytest.mark.quick] * (name in QUICK))
        for name in NOTEBOOKS
    ]


# --------------------------------------------------------------------------- in the browser


def menu(page: Page, top: str, item: str) -> None:
    """Choose ``top`` > ``item`` from JupyterLab's menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def open_notebook(page: Page, lab: Lab, name: str) -> None:
    """Open ``name`` from the file browser, as a learner would, and wait for its kernel."""
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    page.locator(".jp-DirListing-item", has_text=name).dblclick(timeout=60_000)
    expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=60_000)
    deadline = time.monotonic() + 120
    while (kernel := lab.kernel_of(name)) is None or kernel["execution_state"] != "idle":
        assert time.monotonic() < deadline, f"the kernel of {name} did not start: {kernel}"
        time.sleep(0.3)


def run_all(page: Page, lab: Lab, name: str) -> float:
    """Run > Run All Cells, then wait until the kernel has been idle for ``IDLE_FOR`` seconds
    with no cell waiting ("[*]"); return the seconds the cells took."""
    started = time.monotonic()
    menu(page, "Run", "Run All Cells")
    queued = page.locator(".jp-InputArea-prompt", has_text="[*]")
    idle_since = None
    while True:
        now = time.monotonic()
        assert now - started < RUN_TIMEOUT, f"{name} still running after {RUN_TIMEOUT} s"
        kernel = lab.kernel_of(name)
        assert kernel and kernel["execution_state"] not in DEAD, f"{name}: kernel {kernel}"
        busy = kernel["execution_state"] != "idle" or queued.count() > 0
        if busy:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= IDLE_FOR:
            return idle_since - started
        time.sleep(0.25)


def save(page: Page, lab: Lab, name: str) -> dict[str, Any]:
    """File > Save Notebook; the notebook as saved on disk."""
    path = lab.root / name
    before = path.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + 60
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{name} was not saved"
        time.sleep(0.2)
    expect(page.locator(".jp-mod-dirty")).to_have_count(0)
    return nbformat.read(path, as_version=4)


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path)
    return path


# --------------------------------------------------------------------------- the checks


def code_cells(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def outputs_with(notebook: dict[str, Any], mime: str) -> list[dict[str, Any]]:
    return [
        output
        for cell in code_cells(notebook)
        for output in cell["outputs"]
        if mime in output.get("data", {})
    ]


def slowest_cell(notebook: dict[str, Any]) -> str:
    """ "the slowest, code cell N: S s", from the execution times JupyterLab recorded."""
    seconds = {}
    for number, cell in enumerate(code_cells(notebook), start=1):
        timing = cell["metadata"].get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            elapsed = datetime.fromisoformat(end) - datetime.fromisoformat(start)
            seconds[number] = elapsed.total_seconds()
    if not seconds:
        return "no cell timings recorded"
    worst = max(seconds, key=seconds.get)
    return f"the slowest, code cell {worst}: {seconds[worst]:.1f} s"


def check_saved(notebook: dict[str, Any], name: str) -> None:
    """Every code cell ran, in order, and none printed an error or anything on stderr."""
    cells = code_cells(notebook)
    counts = [cell["execution_count"] for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{name}: execution counts {counts}"
    for number, cell in enumerate(cells, start=1):
        for output in cell["outputs"]:
            source = cell["source"][:200]
            assert output["output_type"] != "error", (
                f"{name}, code cell {number}: {output['ename']}: {output['evalue']}\n{source}"
            )
            if output["output_type"] == "stream":
                assert output["name"] == "stdout", (
                    f"{name}, code cell {number} wrote on stderr: {output['text']}"
                )


def check_page(page: Page, notebook: dict[str, Any], name: str) -> tuple[int, int]:
    """Progress bars are widgets and finished, every widget and figure is drawn; returns the
    numbers of progress bars and figures."""
    bars = [
        output
        for output in outputs_with(notebook, WIDGET_VIEW)
        if TQDM_TEXT.search(output["data"].get("text/plain", ""))
    ]
    widgets = len(outputs_with(notebook, WIDGET_VIEW))
    figures = len(outputs_with(notebook, "image/png"))
    outputs = page.locator(".jp-OutputArea-output")
    expect(outputs.filter(has=page.locator(".jupyter-widgets"))).to_have_count(widgets)
    expect(page.locator(".jp-OutputArea-output .widget-hprogress")).to_have_count(len(bars))
    expect(page.locator(".jp-OutputArea-output .progress-bar-success")).to_have_count(len(bars))
    for text in (TQDM_TEXT, "HBox(children=", "Error displaying widget", "Loading widget"):
        expect(outputs.filter(has_text=text)).to_have_count(0)
    images = page.locator(".jp-RenderedImage img")
    expect(images).to_have_count(figures)
    drawn = images.evaluate_all("(imgs) => imgs.filter((i) => i.complete && i.naturalWidth > 0)")
    assert len(drawn) == figures, f"{name}: {figures - len(drawn)} figures not drawn"
    return len(bars), figures


# --------------------------------------------------------------------------- the drawing pad


def pad_point(canvas: Locator, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the canvas pixel ``(x, y)``."""
    box = canvas.bounding_box()
    assert box is not None
    return box["x"] + x * box["width"] / PAD_SIDE, box["y"] + y * box["height"] / PAD_SIDE


def draw(page: Page, canvas: Locator, points: list[tuple[float, float]]) -> None:
    """One stroke with the mouse's button held down, through canvas pixels ``points``."""
    page.mouse.move(*pad_point(canvas, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*pad_point(canvas, *point), steps=4)
    page.mouse.up()


def chart(page: Page, lab: Lab, name: str) -> tuple[str, dict[str, float]]:
    """The chart once the pad has caught up with the mouse (kernel idle, the chart unchanged for
    half a second): ``(headline, {class: probability})``."""
    element = page.locator(".mnistnn-chart")
    deadline = time.monotonic() + 30
    html = element.inner_html()
    while True:
        time.sleep(0.5)
        before, html = html, element.inner_html()
        if html == before and lab.kernel_of(name)["execution_state"] == "idle":
            break
        assert time.monotonic() < deadline, "the chart did not settle in 30 s"
    headline = re.search(r'class="mnistnn-verdict">([^<]*)<', html)
    bars = re.findall(r'data-class="([^"]*)" data-p="([^"]*)"', html)
    assert headline and bars, html
    return headline.group(1), {digit: float(p) for digit, p in bars}


def loop(n: int = 32) -> list[tuple[float, float]]:
    """A closed oval, 140 x 190 canvas pixels, clockwise from the top."""
    return [
        (140 + 70 * math.sin(2 * math.pi * k / n), 140 - 95 * math.cos(2 * math.pi * k / n))
        for k in range(n + 1)
    ]


def check_drawing(page: Page, lab: Lab, name: str) -> None:
    canvas = page.locator("canvas.mnistnn-canvas")
    expect(canvas).to_have_count(1)
    canvas.scroll_into_view_if_needed()
    verdict = page.locator(".mnistnn-verdict")
    expect(verdict).to_have_text("draw a digit on the canvas")
    strokes = {"a vertical stroke": ([(140, 40), (140, 240)], "1"), "a closed loop": (loop(), "0")}
    for what, (points, digit) in strokes.items():
        page.locator("button.mnistnn-clear").click()
        expect(verdict).to_have_text("draw a digit on the canvas")
        draw(page, canvas, points)
        expect(verdict).to_have_text(re.compile(rf"^most likely: {digit} "), timeout=30_000)
        headline, bars = chart(page, lab, name)
        assert max(bars, key=bars.get) == digit and sum(bars.values()) == pytest.approx(1, 1e-3)
        shot(page, f"{Path(name).stem}-{what.split()[-1]}")
        listed = ", ".join(f"{k} {p:.1%}" for k, p in sorted(bars.items(), key=lambda kp: -kp[1]))
        report(f"  drawn {what}: {headline}; {listed[:60]}")


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("name", notebook_params())
def test_notebook_runs_in_jupyterlab(page: Page, lab: Lab, name: str) -> None:
    open_notebook(page, lab, name)
    try:
        seconds = run_all(page, lab, name)
        notebook = save(page, lab, name)
        check_saved(notebook, name)
        bars, figures = check_page(page, notebook, name)
        report(
            f"{name}: {len(code_cells(notebook))} code cells ran in {seconds:.1f} s "
            f"({slowest_cell(notebook)}), {bars} progress bars, {figures} figures"
        )
        if page.locator("canvas.mnistnn-canvas").count():
            check_drawing(page, lab, name)
    finally:
        shot(page, Path(name).stem)
        lab.shut_down(name)
