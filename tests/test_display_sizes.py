"""Sizes a caller passes to a figure: bounded before they cost minutes (issue 31 #8)."""

from __future__ import annotations

import pytest

from mnistnn import plotting


def test_network_diagram_bounds_the_units_drawn(deadline) -> None:  # type: ignore[no-untyped-def]
    """max_units=10**6 used to draw about 10**12 connections (the run never ended)."""
    deadline(10)
    for max_units in (51, 10**6):
        with pytest.raises(ValueError, match="max_units must be at least 3 and at most 50"):
            plotting.network_diagram((10**12, 10**12, 10), max_units=max_units)
