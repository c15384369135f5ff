"""What a learner reads in the notebooks: text that renders, formulas that parse, answers kept
for after the attempt.

- No markdown cell holds a control character other than newline and tab. (A ``\\alpha`` typed
  into a Python string becomes BEL + ``lpha``, and JupyterLab shows "lpha".)
- Every ``$...$`` and ``$$...$$`` formula parses. Code spans and fenced code are not math, and
  ``\\$`` is a dollar sign. The parser is latex2mathml, with two checks added because it is
  lenient: a command it does not know comes out as text with its backslash (``\\alpah``), which we
  count as an error, and the braces must balance. Matplotlib's mathtext is not used: it rejects
  constructs that JupyterLab's MathJax renders and the notebooks need (``\\le``, ``\\tfrac``,
  ``\\begin{cases}``, ``\\underbrace``, ``\\xrightarrow``, ``\\lVert``).
- Solutions are hidden as a whole. A notebook with an "## Exercises" heading has a
  "## Solutions" section (up to the next heading of level 1 or 2); in it, every cell but the
  section's first and the one-line bold titles (``**2. Dead units.**``) is a solution cell, and
  its metadata has ``jupyter.source_hidden`` and ``jupyter.outputs_hidden`` both true.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest
from latex2mathml.converter import convert

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))

_FENCED = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
_UNKNOWN_COMMAND = re.compile(r"\\[A-Za-z]+")
_HEADING = re.compile(r"^#{1,2} ", re.M)
_TITLE = re.compile(r"^\*\*[^\n]+\*\*$")


def markdown_cells(path: Path) -> list[tuple[int, dict]]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` other than newline and tab, as ``repr``s."""
    return [repr(ch) for ch in text if ch not in "\n\t" and unicodedata.category(ch) == "Cc"]


def formulas(text: str) -> list[str]:
    """The formulas of a markdown text, ``$$...$$`` and ``$...$``, without their delimiters.

    Raises ``ValueError`` for a ``$`` or ``$$`` that is never closed (an inline formula may not
    run across a blank line, as a paragraph ends there)."""
    text = _CODE_SPAN.sub(" ", _FENCED.sub(" ", text))
    found, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] != "$":
            i += 1
            continue
        delimiter = "$$" if text.startswith("$$", i) else "$"
        start = i + len(delimiter)
        end = start
        while end < len(text) and not (text.startswith(delimiter, end) and text[end - 1] != "\\"):
            end += 1
        formula = text[start:end]
        if end >= len(text) or (delimiter == "$" and "\n\n" in formula):
            raise ValueError(f"{delimiter} opened but never closed: {text[i : i + 40]!r}")
        found.append(formula)
        i = end + len(delimiter)
    return found


def formula_problem(formula: str) -> str | None:
    """Why ``formula`` does not parse, or None when it does."""
    depth = 0
    for match in re.finditer(r"\\.|[{}]", formula, re.S):
        depth += {"{": 1, "}": -1}.get(match.group(), 0)
        if depth < 0:
            return "a } closes nothing"
    if depth:
        return "a { is never closed"
    try:
        mathml = convert(formula)
    except Exception as exc:  # latex2mathml's errors share no base class
        return f"{type(exc).__name__}: {exc}"
    unknown = _UNKNOWN_COMMAND.findall(mathml)
    return f"unknown command {', '.join(unknown)}" if unknown else None


def solution_cells(path: Path) -> list[tuple[int, dict]]:
    """The solution cells of a notebook, as the module docstring defines them."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found, inside = [], False
    for i, cell in enumerate(cells):
        text = source(cell).strip()
        heading = cell["cell_type"] == "markdown" and _HEADING.search(text)
        if heading and re.search(r"^## Solutions\b", text, re.M):
            inside = True
            continue
        if heading:
            inside = False
        if inside and not (cell["cell_type"] == "markdown" and _TITLE.match(text)):
            found.append((i, cell))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_has_no_control_characters(path: Path) -> None:
    bad = [f"cell {i}: {', '.join(chars)}" for i, cell in markdown_cells(path)
           if (chars := control_characters(source(cell)))]
    assert not bad, f"{path.name}: control characters in markdown: {'; '.join(bad)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_formula_parses(path: Path) -> None:
    bad = []
    for i, cell in markdown_cells(path):
        try:
            found = formulas(source(cell))
        except ValueError as exc:
            bad.append(f"cell {i}: {exc}")
            continue
        bad += [f"cell {i}: {problem} in ${f}$" for f in found if (problem := formula_problem(f))]
    assert not bad, f"{path.name}: " + "; ".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_are_hidden_as_a_whole(path: Path) -> None:
    texts = [source(cell) for _, cell in markdown_cells(path)]
    if any(re.search(r"^## Exercises\b", t, re.M) for t in texts):
        assert solution_cells(path), f"{path.name}: exercises without a '## Solutions' section"
    shown = [
        f"cell {i} ({cell['cell_type']})"
        for i, cell in solution_cells(path)
        if not all(cell["metadata"].get("jupyter", {}).get(key) is True
                   for key in ("source_hidden", "outputs_hidden"))
    ]
    assert not shown, f"{path.name}: solution cells not hidden as a whole: {', '.join(shown)}"


# The checks themselves: each catches what it is meant to catch.


def test_control_characters_found() -> None:
    assert control_characters("$\x07lpha$ and \x0crac, a\tb\nc") == ["'\\x07'", "'\\x0c'"]


def test_formulas_skip_code_and_escaped_dollars() -> None:
    text = "Cost \\$5; `x = $a$` and\n```\n$b$\n```\nthen $c^2$ and $$\n\\frac{1}{2}\n$$ end"
    assert formulas(text) == ["c^2", "\n\\frac{1}{2}\n"]
    assert formulas("`` a ` $x$ `` $y$") == ["y"]


@pytest.mark.parametrize("text", ["an unclosed $x + 1", "$x\n\ny$", "$$ x $"])
def test_unclosed_formula_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="never closed"):
        formulas(text)


@pytest.mark.parametrize(
    ("formula", "problem"),
    [
        ("\\alpah", "unknown command"),
        ("\\frac{1}{2", "never closed"),
        ("x}", "closes nothing"),
        ("x^", "MissingSuperScriptOrSubscriptError"),
        ("\\left( x", "ExtraLeftOrMissingRightError"),
    ],
)
def test_bad_formula_is_named(formula: str, problem: str) -> None:
    assert problem in (formula_problem(formula) or "")


@pytest.mark.parametrize(
    "formula",
    [
        "\\alpha \\le 0.5 \\ge \\tfrac12",
        "\\begin{cases} z & z > 0 \\\\ 0 & \\text{otherwise} \\end{cases}",
        "\\underbrace{W}_{10 \\times 784} \\xrightarrow{f} \\lVert x \\rVert \\{a\\}",
    ],
)
def test_good_formula_parses(formula: str) -> None:
    assert formula_problem(formula) is None


def test_solution_cells_found(tmp_path: Path) -> None:
    def cell(kind: str, text: str, hidden: bool = False) -> dict:
        meta = {"jupyter": {"source_hidden": True, "outputs_hidden": True}} if hidden else {}
        return {"cell_type": kind, "source": [text], "metadata": meta}

    cells = [cell("markdown", "## Exercises\n\n1. Try."), cell("markdown", "## Solutions"),
             cell("markdown", "**1. Try.**"), cell("code", "x = 1", hidden=True),
             cell("markdown", "Because.", hidden=False), cell("markdown", "## What is next"),
             cell("code", "y = 2")]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    assert [i for i, _ in solution_cells(path)] == [3, 4]
    with pytest.raises(AssertionError, match=r"cell 4 \(markdown\)"):
        test_solutions_are_hidden_as_a_whole(path)
