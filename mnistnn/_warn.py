"""``warnings.warn`` pointed at the user's line: the first caller outside the package."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)


def warn(message: str, category: type[Warning]) -> None:
    """Warn with ``category``, attributed to the first frame whose file is not in ``mnistnn``."""
    level, frame = 1, sys._getframe()
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
