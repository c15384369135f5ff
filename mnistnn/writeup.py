"""The write-up's training iteration as it wrote it: its equations, one NumPy line each, with
``np.dot`` for every matrix product, float64, samples as columns, biases as ``(10, 1)`` columns.

The write-up says it put this code under Numba's ``@njit`` and doubts that this helped.
:func:`compiled` returns the same functions compiled by ``numba.njit``, so notebook 05 can time
both, and the tests check that the two agree with each other and with :mod:`mnistnn.reference`.
Inside ``@njit``, ``np.dot`` calls the same BLAS routine as NumPy does (Numba reaches it through
SciPy, which it therefore needs).  Like the write-up, the softmax does not subtract the column
maximum, which is safe for the small scores of these networks (see notebook 02).

Shapes: ``I`` ``(784, N)``, ``L`` (one-hot labels) ``(10, N)``, ``W`` ``(10, 784)``, ``B``
``(10, 1)``, ``w`` ``(10, 10)``, ``b`` ``(10, 1)``.
"""

from __future__ import annotations

from types import FunctionType, SimpleNamespace

import numpy as np

Array = np.ndarray


def relu(H: Array) -> Array:
    """``max(H, 0)`` entry by entry."""
    return np.maximum(H, 0.0)


def softmax(O: Array) -> Array:  # noqa: E741 (the write-up's name)
    """``e^O / sum_j e^O_j`` down each column of ``O`` ``(10, N)``."""
    E = np.exp(O)
    return E / E.sum(axis=0)


def forward(
    W: Array, B: Array, w: Array, b: Array, I: Array  # noqa: E741
) -> tuple[Array, Array, Array]:
    """``H = W . I + B``, ``H_hat = ReLU(H)``, ``O = w . H_hat + b``, ``O_hat = softmax(O)``;
    returns ``(H, H_hat, O_hat)``, each ``(10, N)``."""
    H = np.dot(W, I) + B
    H_hat = relu(H)
    O = np.dot(w, H_hat) + b  # noqa: E741
    return H, H_hat, softmax(O)


def backward(
    H: Array, H_hat: Array, O_hat: Array, w: Array, I: Array, L: Array  # noqa: E741
) -> tuple[Array, Array, Array, Array]:
    """The write-up's gradients ``(dW, dB, dw, db)``, shaped like ``(W, B, w, b)``."""
    N = I.shape[1]
    dO = O_hat - L
    dw = np.dot(dO, H_hat.T) / N
    db = dO.sum(axis=1).reshape(-1, 1) / N
    dH = np.dot(w.T, dO) * (H > 0)
    dW = np.dot(dH, I.T) / N
    dB = dH.sum(axis=1).reshape(-1, 1) / N
    return dW, dB, dw, db


def update(
    W: Array, B: Array, w: Array, b: Array, dW: Array, dB: Array, dw: Array, db: Array,
    alpha: float,
) -> tuple[Array, Array, Array, Array]:
    """``W = W - alpha . dW`` and likewise for ``B``, ``w`` and ``b``; new arrays."""
    return W - alpha * dW, B - alpha * dB, w - alpha * dw, b - alpha * db


def iteration(
    W: Array, B: Array, w: Array, b: Array, I: Array, L: Array, alpha: float  # noqa: E741
) -> tuple[Array, Array, Array, Array]:
    """One full-batch step of gradient descent: ``(W, B, w, b)`` after it."""
    H, H_hat, O_hat = forward(W, B, w, b, I)
    dW, dB, dw, db = backward(H, H_hat, O_hat, w, I, L)
    return update(W, B, w, b, dW, dB, dw, db, alpha)


def compiled() -> SimpleNamespace:
    """This module's functions under ``numba.njit``, as the write-up ran them: ``relu``,
    ``softmax``, ``forward``, ``backward``, ``update`` and ``iteration``.  Each is compiled on
    its first call (no cache on disk)."""
    import numba

    fast = {}
    for name, fn in [("relu", relu), ("softmax", softmax), ("update", update)]:
        fast[name] = numba.njit(fn)
    # The compiled functions must call each other's compiled versions: rebind the globals.
    scope = {"np": np, "relu": fast["relu"], "softmax": fast["softmax"], "update": fast["update"]}
    for name, fn in [("forward", forward), ("backward", backward)]:
        fast[name] = numba.njit(_rebound(fn, scope))
        scope[name] = fast[name]
    fast["iteration"] = numba.njit(_rebound(iteration, scope))
    return SimpleNamespace(**fast)


def _rebound(fn: FunctionType, scope: dict) -> FunctionType:
    """``fn`` with its global names looked up in ``scope`` instead of this module."""
    return FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
