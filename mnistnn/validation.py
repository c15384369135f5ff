"""What the estimators accept, checked at the edge: constructor and training settings, images and
labels.  A bad value is refused with a ValueError that names it, before anything is allocated
or trained; a number is accepted in any NumPy or Python type, and refused when the network's
dtype would turn it into something else (0, or infinity).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._warn import warn

TRAINING_SETTINGS = (
    "alpha",
    "maxiterations",
    "batch_size",
    "epochs",
    "momentum",
    "early_stopping",
    "patience",
    "weight_decay",
    "decay_every",
    "decay_factor",
    "progress",
)


class PixelScaleWarning(UserWarning):
    """The images look scaled to 0..1, but the network expects raw pixels in 0..255."""


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (Python or NumPy integers; not bools)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def number(
    name: str, value: Any, low: float, high: float, what: str, dtype: str, name_in_words: str = ""
) -> float:
    """``value`` as a float in ``[low, high]`` (``what`` says the range in words), which the
    dtype keeps: a nonzero value that rounds to 0 in ``dtype``, or one beyond its largest, is
    refused (``name_in_words`` names it in the advice).  Python and NumPy reals; not bools,
    not NaN."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, np.complexfloating) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    value, largest = float(value), float(np.finfo(dtype).max)
    words = name_in_words or "value"
    if abs(value) > largest:
        raise ValueError(
            f"{name}={value!r} does not fit in {dtype} (largest {largest:.3g}); choose a smaller "
            f"{words}"
        )
    if value and not np.array(value, dtype=dtype):
        smallest = float(np.finfo(dtype).smallest_subnormal)
        raise ValueError(
            f"{name}={value!r} is 0 in {dtype} (smallest {smallest:.3g}): it would change "
            f"nothing; choose a larger {words}"
        )
    return value


def training_settings(
    dtype: str,
    validation_fraction: float,
    alpha: Any,
    maxiterations: Any,
    batch_size: Any,
    epochs: Any,
    momentum: Any,
    early_stopping: Any = False,
    patience: Any = 5,
    weight_decay: Any = 0.0,
    decay_every: Any = None,
    decay_factor: Any = 0.1,
) -> dict[str, Any]:
    """The training settings, validated and normalized (for ``__init__`` and ``set_params``)."""
    inf = math.inf
    if not isinstance(early_stopping, bool | np.bool_):
        raise ValueError(f"early_stopping must be True or False, got {early_stopping!r}")
    if early_stopping and not validation_fraction:
        raise ValueError(
            "early_stopping watches the validation loss: give validation_fraction > 0 too"
        )
    if not number("alpha", alpha, 0.0, inf, "a positive number", dtype, "learning rate"):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    return {
        "alpha": float(alpha),
        "maxiterations": positive_int("maxiterations", maxiterations),
        "batch_size": None if batch_size is None else positive_int("batch_size", batch_size),
        "epochs": positive_int("epochs", epochs),
        "momentum": number(
            "momentum", momentum, 0.0, math.nextafter(1.0, 0.0), "a number in [0, 1)", dtype
        ),  # fmt: skip
        "early_stopping": bool(early_stopping),
        "patience": positive_int("patience", patience),
        "weight_decay": number(
            "weight_decay", weight_decay, 0.0, inf, "a finite number >= 0", dtype
        ),  # fmt: skip
        "decay_every": None if decay_every is None else positive_int("decay_every", decay_every),
        "decay_factor": _decay_factor(decay_factor, dtype),
    }


def _decay_factor(value: Any, dtype: str) -> float:
    factor = number("decay_factor", value, 0.0, 1.0, "a number in (0, 1]", dtype)
    if not factor:
        raise ValueError(f"decay_factor must be a number in (0, 1], got {value!r}")
    return factor


def validation_fraction(value: Any) -> float:
    """The share of held-out images, in ``[0, 1)``."""
    return number("validation_fraction", value, 0.0, math.nextafter(1.0, 0.0), "in [0, 1)",
                  "float64")  # fmt: skip


def hidden_layers(value: Any) -> tuple[int, ...]:
    """The widths of the hidden layers, in order, as a tuple of positive ints (at least one): a
    sequence or a 1-D array, not a set (whose order is not the caller's)."""
    ordered = isinstance(value, Sequence) or (isinstance(value, np.ndarray) and value.ndim == 1)
    if isinstance(value, str | bytes) or not ordered:
        raise ValueError(
            "hidden_layers must be a sequence of layer widths in order, such as (128, 64), "
            f"got {value!r}"
        )
    widths = tuple(positive_int("hidden_layers", h) for h in value)
    if not widths:
        raise ValueError("hidden_layers must list at least one layer width, e.g. (128,)")
    return widths


def nodes_out(value: Any) -> int:
    """The number of classes, at least 2."""
    n = positive_int("nodes_out", value)
    if n < 2:
        raise ValueError(f"nodes_out must be at least 2 classes, got {value}")
    return n


def dtype_name(value: Any) -> str:
    """``"float32"`` or ``"float64"`` for any spelling NumPy understands (``np.float32``,
    ``np.dtype("f8")``, ...), so that the model stays JSON-serialisable."""
    try:
        name = None if value is None else np.dtype(value).name
    except (TypeError, ValueError):
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return name


def seed(value: Any) -> int | None:
    """A non-negative integer seed, or None."""
    if value is not None and (
        isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or value < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, got {value!r}")
    return value


def choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value``, one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be {' or '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_memory(sizes: tuple[int, ...], dtype: str) -> None:
    """Refuse, before allocating, a network whose parameters and their velocity (what the
    constructor allocates) need more than this machine's memory."""
    n = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))
    need = 2 * n * np.dtype(dtype).itemsize
    total = _physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"a {arrows(sizes)} network has {n:,} parameters, {need / 1e9:,.1f} GB in {dtype} "
            f"with their velocity: more than this machine's {total / 1e9:,.1f} GB of memory; "
            "choose smaller layers"
        )


def _physical_memory() -> int | None:
    """Bytes of RAM, where the OS tells (Linux, macOS); else None."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def arrows(sizes: Sequence[int]) -> str:
    """Layer sizes as ``784 -> 10 -> 10``."""
    return " -> ".join(map(str, sizes))


def check_X(X: Any, nodes_in: int, dtype: str, any_numbers: bool) -> np.ndarray:
    """Images as a C-contiguous ``(N, nodes_in)`` array: uint8 kept, other numbers as ``dtype``.
    Raw pixels in 0..255, unless ``any_numbers`` (the NumPy backend: e.g. centred images)."""
    X = np.asarray(X)
    if X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(
            f"X must be a non-empty array of images, shape (N, {nodes_in}) or "
            f"(N, rows, cols); got shape {X.shape}"
        )
    if math.prod(X.shape[1:]) != nodes_in:
        raise ValueError(
            f"each image must have {nodes_in} pixels; X has shape {X.shape} "
            f"({math.prod(X.shape[1:])} pixels per image)"
        )
    X = X.reshape(X.shape[0], nodes_in)
    if X.dtype == np.uint8:
        return np.ascontiguousarray(X)
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise ValueError(f"X must hold numbers (pixels 0..255), got dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    low, high = X.min(), X.max()
    if any_numbers:
        return np.ascontiguousarray(X, dtype=dtype)
    if low < 0 or high > 255:
        raise ValueError(
            f"X must hold raw pixels in 0..255 (the network divides by 255 itself); "
            f"got values from {low} to {high} (backend='numpy' takes any numbers)"
        )
    if np.issubdtype(X.dtype, np.floating) and 0 < high <= 1:
        warn(
            f"every value of X is at most 1 (largest {high:g}), as if scaled to 0..1; the "
            "network expects raw pixels in 0..255 and divides by 255 itself: pass the uint8 "
            "images (or X * 255)",
            PixelScaleWarning,
        )
    return np.ascontiguousarray(X, dtype=dtype)


def check_y(y: Any, n: int, nodes_out: int) -> np.ndarray:
    """Labels as int64 ``(n,)`` in ``0..nodes_out-1``, one per image."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"X has {n} images but y has {y.shape[0]} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= nodes_out:
        raise ValueError(
            f"labels must be in 0..{nodes_out - 1}; got values from {y.min()} to {y.max()}"
        )
    return np.ascontiguousarray(y, dtype=np.int64)
