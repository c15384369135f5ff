"""environment.yml (conda) must ask for what pyproject.toml asks for.

Every requirement of ``[project.dependencies]`` and of the ``lab`` and ``test`` extras must
appear in environment.yml with the same version bounds, and environment.yml must list nothing
else besides ``python`` (whose bound must match ``requires-python``), ``pip`` and the
``pip: [-e .]`` line that installs the package itself.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("lab", "test")

# PyPI name -> conda-forge name, where conda spells it differently (canonical names both sides).
CONDA_NAMES: dict[str, str] = {
    # conda's "matplotlib" adds a Qt GUI the notebooks do not need; "-base" is the library.
    "matplotlib": "matplotlib-base",
}
# Conda entries that are the tools, not dependencies of the package.
CONDA_ONLY = {"python", "pip"}
# What environment.yml may hand to pip: the package itself, in editable mode.
PIP_SELF = {"-e .", "--editable .", "-e ./", "."}

_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def pyproject_requirements(pyproject: Mapping[str, Any]) -> dict[str, SpecifierSet]:
    """Canonical name -> version bounds over the runtime dependencies and the EXTRAS.

    A name listed in several groups (ipykernel in lab and test) gets all its bounds combined.
    """
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    lines: list[str] = list(project.get("dependencies", []))
    for extra in EXTRAS:
        lines += extras.get(extra, [])
    found: dict[str, SpecifierSet] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        found[name] = found.get(name, SpecifierSet()) & req.specifier
    return found


def _conda_requirement(entry: str) -> tuple[str, SpecifierSet]:
    """Parse a conda match spec of the simple kind used here: ``name>=1,<2`` (spaces allowed)."""
    match = _CONDA_SPEC.match(entry)
    if match is None:
        raise ValueError(f"environment.yml: cannot read the dependency {entry!r}")
    name, spec = match.groups()
    try:
        return canonicalize_name(name), SpecifierSet(spec.replace(" ", ""))
    except ValueError:  # InvalidSpecifier; e.g. conda's "numpy=1.26" or a build string
        raise ValueError(
            f"environment.yml: {entry!r} is not a plain PEP 440 range; write e.g. 'numpy>=1.26,<3'"
        ) from None


def conda_requirements(env: Mapping[str, Any]) -> tuple[dict[str, SpecifierSet], list[str]]:
    """(canonical conda name -> bounds, the ``pip:`` entries) from a parsed environment.yml."""
    found: dict[str, SpecifierSet] = {}
    pip: list[str] = []
    for entry in env.get("dependencies") or []:
        if isinstance(entry, Mapping):
            pip += [str(item).strip() for item in entry.get("pip") or []]
            continue
        name, spec = _conda_requirement(str(entry))
        if name in found:
            raise ValueError(f"environment.yml lists {name!r} twice")
        found[name] = spec
    return found, pip


def _bounds(spec: SpecifierSet) -> str:
    return ",".join(sorted(str(s) for s in spec)) or "(no bounds)"


def drift(
    pyproject: Mapping[str, Any],
    env: Mapping[str, Any],
    conda_names: Mapping[str, str] = CONDA_NAMES,
) -> list[str]:
    """Every way ``env`` (environment.yml) differs from ``pyproject``; empty when in step."""
    problems: list[str] = []
    wanted = pyproject_requirements(pyproject)
    conda, pip = conda_requirements(env)

    if "conda-forge" not in (env.get("channels") or []):
        problems.append("environment.yml does not use the conda-forge channel")

    python = conda.get("python")
    requires_python = SpecifierSet(pyproject["project"].get("requires-python", ""))
    if python is None:
        problems.append(f"python {_bounds(requires_python)} is missing from environment.yml")
    elif python != requires_python:
        problems.append(
            f"python: environment.yml has {_bounds(python)}, "
            f"requires-python is {_bounds(requires_python)}"
        )

    expected = {canonicalize_name(conda_names.get(n, n)): (n, s) for n, s in wanted.items()}
    for conda_name, (pypi_name, spec) in sorted(expected.items()):
        label = pypi_name if conda_name == pypi_name else f"{pypi_name} (conda: {conda_name})"
        if conda_name not in conda:
            problems.append(f"{label} {_bounds(spec)} is missing from environment.yml")
        elif conda[conda_name] != spec:
            problems.append(
                f"{label}: environment.yml has {_bounds(conda[conda_name])}, "
                f"pyproject.toml has {_bounds(spec)}"
            )
    for name in sorted(set(conda) - set(expected) - CONDA_ONLY):
        problems.append(f"{name} is in environment.yml but not in pyproject.toml")

    if "pip" in conda or pip:
        if "pip" not in conda:
            problems.append("environment.yml has a pip: section but does not list pip itself")
        for entry in pip:
            if entry not in PIP_SELF:
                problems.append(f"pip: {entry!r}: only the package itself ('-e .') goes there")
        if not any(entry in PIP_SELF for entry in pip):
            problems.append("environment.yml does not install the package itself (pip: - -e .)")
    else:
        problems.append("environment.yml does not install the package itself (pip: - -e .)")
    return problems


def _read() -> tuple[dict[str, Any], dict[str, Any]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    with open(ROOT / "environment.yml", encoding="utf-8") as f:
        env = yaml.safe_load(f)
    return pyproject, env


def _lines(items: Iterable[str]) -> str:
    return "\n".join(f"  - {item}" for item in items)


# --------------------------------------------------------------------------- the real files


def test_environment_yml_matches_pyproject() -> None:
    pyproject, env = _read()
    problems = drift(pyproject, env)
    assert not problems, "environment.yml and pyproject.toml drifted apart:\n" + _lines(problems)


def test_environment_yml_is_named_mnistnn() -> None:
    _, env = _read()
    assert env.get("name") == "mnistnn"


def test_every_extra_checked_exists() -> None:
    pyproject, _ = _read()
    assert set(EXTRAS) <= set(pyproject["project"]["optional-dependencies"])


# --------------------------------------------------------------------------- the comparison


PYPROJECT = {
    "project": {
        "requires-python": ">=3.11",
        "dependencies": ["numpy>=1.26,<3", "Matplotlib>=3.8,<4", "typing_extensions>=4"],
        "optional-dependencies": {
            "lab": ["ipykernel>=6.29,<8"],
            "test": ["pytest>=8", "PyYAML>=6,<7", "ipykernel>=6.29,<8"],
            "docs": ["sphinx>=7"],  # not an extra the environment must carry
        },
    }
}
IN_STEP = {
    "name": "mnistnn",
    "channels": ["conda-forge"],
    "dependencies": [
        "python >=3.11",
        "pip",
        "numpy >=1.26,<3",
        "matplotlib-base>=3.8,<4",
        "typing-extensions>=4",
        "ipykernel>=6.29,<8",
        "pytest>=8",
        "pyyaml>=6,<7",
        {"pip": ["-e ."]},
    ],
}


def _with_deps(*deps: Any) -> dict[str, Any]:
    return {**IN_STEP, "dependencies": list(deps)}


def test_in_step_pair_has_no_drift() -> None:
    assert drift(PYPROJECT, IN_STEP) == []


def test_drifted_pair_reports_every_difference() -> None:
    drifted = _with_deps(
        "python>=3.10",  # looser than requires-python
        "pip",
        "numpy>=1.26,<2",  # other upper bound
        "matplotlib>=3.8,<4",  # PyPI's name where conda-forge's is expected
        "typing-extensions>=4",
        "pytest>=8",
        "pyyaml>=6,<7",
        "scipy>=1.11",  # not in pyproject
        {"pip": ["-e .", "requests"]},  # a dependency smuggled through pip
    )  # ipykernel missing
    problems = drift(PYPROJECT, drifted)
    text = "\n".join(problems)
    assert "python: environment.yml has >=3.10, requires-python is >=3.11" in text
    assert "numpy: environment.yml has <2,>=1.26, pyproject.toml has <3,>=1.26" in text
    assert "matplotlib (conda: matplotlib-base) <4,>=3.8 is missing from environment.yml" in text
    assert "matplotlib is in environment.yml but not in pyproject.toml" in text
    assert any(p.startswith("ipykernel") and "missing" in p for p in problems)
    assert "scipy is in environment.yml but not in pyproject.toml" in text
    assert "pip: 'requests'" in text
    assert "sphinx" not in text
    assert len(problems) == 7, _lines(problems)


def test_bounds_must_match_exactly_not_just_overlap() -> None:
    looser = _with_deps(*IN_STEP["dependencies"][:2], "numpy>=1.26", *IN_STEP["dependencies"][3:])
    assert drift(PYPROJECT, looser) == [
        "numpy: environment.yml has >=1.26, pyproject.toml has <3,>=1.26"
    ]


def test_names_are_normalized() -> None:
    # PyYAML / pyyaml, typing_extensions / typing-extensions / Typing.Extensions
    renamed = _with_deps(
        *[d for d in IN_STEP["dependencies"] if not str(d).startswith("typing")],
        "Typing.Extensions>=4",
    )
    assert drift(PYPROJECT, renamed) == []


def test_missing_package_install_is_reported() -> None:
    no_pip = _with_deps(*IN_STEP["dependencies"][:-1])
    assert drift(PYPROJECT, no_pip) == [
        "environment.yml does not install the package itself (pip: - -e .)"
    ]


@pytest.mark.parametrize("entry", ["numpy=1.26", "numpy 1.26.* py311_0", ">=1"])
def test_conda_only_syntax_is_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="environment.yml"):
        drift(PYPROJECT, _with_deps(entry))


# --------------------------------------------------------------------------- nbval sanitizers

SANITIZE_CFG = ROOT / "tests" / "nbval_sanitize.cfg"


def _sanitizers() -> list[tuple[str, str]]:
    from nbval.plugin import get_sanitize_patterns  # the parser nbval itself uses

    return get_sanitize_patterns(SANITIZE_CFG.read_text(encoding="utf-8"))


def _sanitize(text: str) -> str:
    for regex, replace in _sanitizers():
        text = re.sub(regex, replace, text)
    return text


def test_sanitize_cfg_is_read_whole_by_nbval() -> None:
    text = SANITIZE_CFG.read_text(encoding="utf-8")
    pairs = _sanitizers()
    # every "regex:" line is paired with the "replace:" line right after it
    assert len(pairs) == len(re.findall(r"^regex: ", text, flags=re.MULTILINE))
    assert len(pairs) == len(re.findall(r"^replace: ", text, flags=re.MULTILINE))
    for regex, replace in pairs:
        re.compile(regex)
        assert replace.strip() and replace == replace.strip(), f"replacement {replace!r}"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Wall time: 1.25 s, sys: 12.3 ms", "Wall time: <DURATION>, sys: <DURATION>"),
        (
            "1.23 ms ± 45.6 µs per loop (mean ± std. dev. of 7 runs, 1,000 loops each)",
            "<DURATION> ± <DURATION> per loop (mean ± std. dev. of <N> runs, <N> loops each)",
        ),
        ("trained in 0:00:12.345678", "trained in <H:MM:SS>"),
        (
            "100%|██████████| 938/938 [00:03<00:00, 280.12it/s]",
            "100%|██████████| 938/938 [<ELAPSED>]",
        ),
        ("1.2e+06 samples/s, 85.2x faster", "<RATE>, <N>x faster"),
        (
            "verified  /tmp/x/data/fashion-mnist/t10k-labels-idx1-ubyte",
            "verified  <DATA>/fashion-mnist/t10k-labels-idx1-ubyte",
        ),
        ("PosixPath('/home/ana/mnistnn/data')", "PosixPath('<PATH>')"),
        ("/Users/ana/x.npz /work/main/images/a.png", "<PATH> <PATH>"),
        ("<function forward at 0x7f3a2b1c4d60>", "<function forward at 0x<ADDRESS>>"),
        # numbers that matter are kept
        ("magic 0x00000803, sha256 ba891046e650, 60000 images", None),
        ("accuracy 97.83 %, loss 0.3124, shape (60000, 28, 28), 28 x 28", None),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", None),
    ],
)
def test_sanitize_cfg_masks_what_varies_and_keeps_what_matters(
    output: str, expected: str | None
) -> None:
    assert _sanitize(output) == (output if expected is None else expected)
