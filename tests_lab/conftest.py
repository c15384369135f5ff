"""Fixtures for the browser tests: a JupyterLab of their own (:mod:`labserver`) and headless
Chromium: ``$MNISTNN_CHROMIUM`` (the Makefile passes Debian's ``/usr/bin/chromium``) or, when
that is empty, Playwright's own (``python -m playwright install chromium``).

Each notebook's time and what the drawn strokes gave are listed at the end of the run, and
written with the screenshots to ``tests_lab/screenshots/``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labserver import REPORT, SCREENSHOTS, Lab, start_lab
from playwright.sync_api import Browser, Page, sync_playwright

# Headless Chromium on a machine without a display, a GPU or a network beyond the test's own.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: part of the quick run (make test-lab-quick, CI)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("notebooks in JupyterLab")
        for line in REPORT:
            terminalreporter.write_line(line)
        SCREENSHOTS.mkdir(exist_ok=True)
        (SCREENSHOTS / "summary.txt").write_text("\n".join(REPORT) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    server = start_lab(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    chromium = os.environ.get("MNISTNN_CHROMIUM", "")
    if chromium and not Path(chromium).is_file():
        pytest.fail(
            f"no Chromium at {chromium}: run `make test-lab` (it installs Debian's chromium), "
            "or `python -m playwright install chromium` and set MNISTNN_CHROMIUM="
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium or None, args=CHROMIUM_FLAGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
