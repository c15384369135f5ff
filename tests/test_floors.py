"""tests/constraints-min.txt must pin every requirement of pyproject.toml to its lower bound.

``make test-min`` installs the package with those constraints, so the floors it tests are the
ones pyproject.toml promises only while the two files agree: one ``name==version`` line for each
requirement of ``[project.dependencies]`` and of every extra, that version being the
requirement's lower bound, and no other lines.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "tests" / "constraints-min.txt"


def requirements(pyproject: Mapping[str, Any]) -> dict[str, SpecifierSet]:
    """Canonical name -> combined bounds over the dependencies and all extras (not the package's
    own name, which an extra such as ``dev = ["mnistnn[lab,test]"]`` uses to gather others)."""
    project = pyproject["project"]
    lines = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    found: dict[str, SpecifierSet] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name != canonicalize_name(project["name"]):
            found[name] = found.get(name, SpecifierSet()) & req.specifier
    return found


def lower_bound(spec: SpecifierSet) -> Version | None:
    """The highest of the ``>=``, ``==`` and ``~=`` versions in ``spec`` (None without one)."""
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    return max(floors, default=None)


def pins(text: str) -> dict[str, Version]:
    """Canonical name -> pinned version from a constraints file of ``name==version`` lines."""
    found: dict[str, Version] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{CONSTRAINTS.name}: {line!r} is not a pin (name==version)")
        spec = specs[0]
        name = canonicalize_name(req.name)
        if name in found:
            raise ValueError(f"{CONSTRAINTS.name} pins {name!r} twice")
        found[name] = Version(spec.version)
    return found


def drift(wanted: Mapping[str, SpecifierSet], pinned: Mapping[str, Version]) -> list[str]:
    """Every way the pins differ from the requirements' lower bounds; empty when in step."""
    problems: list[str] = []
    for name, spec in sorted(wanted.items()):
        floor = lower_bound(spec)
        if floor is None:
            problems.append(f"{name} {spec or '(no bounds)'} has no lower bound: give it one")
        elif name not in pinned:
            problems.append(f"{name} is not pinned; add {name}=={floor}")
        elif pinned[name] != floor or not spec.contains(pinned[name], prereleases=True):
            problems.append(f"{name} is pinned to {pinned[name]}, its lower bound is {floor}")
    for name in sorted(set(pinned) - set(wanted)):
        problems.append(f"{name} is pinned but pyproject.toml does not require it")
    return problems


def test_constraints_pin_every_lower_bound() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    assert drift(requirements(pyproject), pins(CONSTRAINTS.read_text(encoding="utf-8"))) == []


def test_drift_names_each_difference() -> None:
    wanted = {
        "numpy": SpecifierSet(">=1.26,<3"),
        "numba": SpecifierSet(">=0.60"),
        "ruff": SpecifierSet(""),
        "tqdm": SpecifierSet(">=4.66"),
    }
    pinned = {"numpy": Version("1.26.4"), "numba": Version("0.60.0"), "torch": Version("2")}
    assert drift(wanted, pinned) == [
        "numpy is pinned to 1.26.4, its lower bound is 1.26",
        "ruff (no bounds) has no lower bound: give it one",
        "tqdm is not pinned; add tqdm==4.66",
        "torch is pinned but pyproject.toml does not require it",
    ]


def test_requirements_gather_the_extras_but_not_the_package_itself() -> None:
    pyproject = {
        "project": {
            "name": "mnistnn",
            "dependencies": ["numpy>=1.26,<3"],
            "optional-dependencies": {
                "lab": ["ipykernel>=6.29"],
                "test": ["ipykernel<8", "pytest>=8"],
                "dev": ["mnistnn[lab,test]"],
            },
        }
    }
    assert requirements(pyproject) == {
        "numpy": SpecifierSet(">=1.26,<3"),
        "ipykernel": SpecifierSet(">=6.29,<8"),
        "pytest": SpecifierSet(">=8"),
    }


def test_pins_refuse_ranges() -> None:
    assert pins("# floors\nnumpy==1.26.0  # the oldest\n\n") == {"numpy": Version("1.26.0")}
    for line in ("numpy>=1.26", "numpy", "numpy==1.26,<2"):
        with pytest.raises(ValueError, match="not a pin"):
            pins(line)
