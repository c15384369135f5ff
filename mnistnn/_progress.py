"""What the package shows while it works: whether progress output is on, the one-line notice while
Numba compiles the kernels, and a progress bar that ends full when early stopping ends a run.

Imported by :mod:`mnistnn.datasets`, :mod:`mnistnn.network` and :mod:`mnistnn.training`, none of
which imports another for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm

PROGRESS_ENV = "MNISTNN_PROGRESS"
_PROGRESS_OFF = frozenset({"0", "false", "no"})

COMPILING = (
    "mnistnn: compiling the kernels for this machine (once; later runs load them from Numba's "
    "cache) ..."
)

_announced = False  # whether this process said COMPILING already


def progress_enabled(default: bool | None = None) -> bool:
    """Whether to show progress messages and bars.

    An explicit ``default`` (True or False, e.g. a function's ``progress`` argument) is returned
    as is.  ``None`` means "not chosen": then ``$MNISTNN_PROGRESS`` decides, off when it is
    ``0``, ``false`` or ``no`` (any case), on when it is unset or anything else.  Every
    ``progress=None`` default in the package goes through here, so ``MNISTNN_PROGRESS=0``
    silences notebooks and test runs without changing any call.
    """
    if default is not None:
        return bool(default)
    return os.environ.get(PROGRESS_ENV, "").strip().lower() not in _PROGRESS_OFF


@contextlib.contextmanager
def compile_notice(show: bool) -> Iterator[None]:
    """Within it, with ``show``, the first compilation of the kernels in this process is
    announced on standard error (:data:`COMPILING`): a fresh machine's first ``fit`` otherwise
    waits several seconds with nothing on screen."""
    if _announced or not show:
        yield
        return
    from numba.core import event

    class Notice(event.Listener):
        def on_start(self, ev: Any) -> None:
            global _announced
            if not _announced:
                _announced = True
                print(COMPILING, file=sys.stderr, flush=True)

        def on_end(self, ev: Any) -> None:
            pass

    with event.install_listener("numba:compile", Notice()):
        yield


def announces_compiling(method: Callable) -> Callable:
    """An estimator method that announces a compilation of the kernels (see
    :func:`compile_notice`) when the estimator's progress output (its ``_show()``) is on."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with compile_notice(self._show()):
            return method(self, *args, **kwargs)

    return wrapper


def end_stopped_early(bar: tqdm) -> None:
    """End ``bar`` at the step where early stopping ended the run, as a finished bar: JupyterLab
    draws a bar closed short of its total in red, as if the run had failed."""
    if bar.disable:
        return
    done, started = bar.n, bar.start_t
    bar.set_description("training (stopped early)", refresh=False)
    bar.reset(total=done)  # the public way to change the total; it also zeroes the count ...
    bar.start_t = started  # ... and the clock, which get their values back
    bar.update(done)
