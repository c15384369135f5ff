"""Sums whose order must not depend on the number of threads: the tiles' partial gradients
(:func:`_reduce_tiles`), bias gradients (:func:`_bias_grad`), the mean loss (:func:`_mean`); and
the update step (:func:`update`, reference.update).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cache  # noqa: F401  (Numba's cache locator, before any kernel below)
from .buffers import grad_tiles


@njit(parallel=True, cache=True)
def _reduce_tiles(partial, transposed, scale, dW):
    """``dW = scale * (partial[0] + partial[1] + ...)`` ``(n_out, n_in)``, added in tile order so
    the result is the same for any thread count; ``transposed``: the partials are
    ``(n_in, n_out)``."""
    n_tiles, n_rows = partial.shape[0], partial.shape[1]
    n_cols = dW.shape[0] if transposed else dW.shape[1]  # transposed partials may be padded
    for r in prange(n_rows):  # read the partials in storage order
        for c in range(n_cols):
            s = partial[0, r, c]
            for t in range(1, n_tiles):
                s += partial[t, r, c]
            if transposed:
                dW[c, r] = s * scale
            else:
                dW[r, c] = s * scale


@njit(parallel=True, cache=True)
def _bias_grad(dZ, db):
    """``db = sum_i dZ[i]`` ``(n_out,)``: a partial sum per sample tile (:func:`grad_tiles`, rows
    read in order, all units at once), then the partials added in tile order."""
    m, n_out = dZ.shape
    n_tiles = grad_tiles(m)
    partial = np.zeros((n_tiles, n_out), db.dtype)
    for t in prange(n_tiles):
        acc = partial[t]
        for i in range(t * m // n_tiles, (t + 1) * m // n_tiles):
            for j in range(n_out):
                acc[j] += dZ[i, j]
    for j in range(n_out):
        s = partial[0, j]
        for t in range(1, n_tiles):
            s += partial[t, j]
        db[j] = s


@njit(cache=True)
def _mean(losses):
    """The mean of ``losses``, added in order, so it does not depend on the thread count."""
    total = 0.0
    for i in range(losses.shape[0]):
        total += losses[i]
    return total / losses.shape[0]


@njit(parallel=True, cache=True)
def update(theta, grad, velocity, alpha, momentum, decay):
    """SGD with momentum: ``v = momentum * v - alpha * g``, ``theta += v`` (plain GD if 0): the
    write-up's ``W = W - alpha dW``.  ``decay`` (laid out as ``theta``; empty for none) adds
    L2 weight decay to the gradient: ``g = grad + decay * theta``.

    Returns False, changing nothing, if the step would make any parameter non-finite.
    """
    decayed = decay.shape[0] > 0
    bad = 0
    for p in prange(theta.shape[0]):
        g = grad[p] + decay[p] * theta[p] if decayed else grad[p]
        bad += not np.isfinite(theta[p] + (momentum * velocity[p] - alpha * g))
    if bad:
        return False
    for p in prange(theta.shape[0]):
        g = grad[p] + decay[p] * theta[p] if decayed else grad[p]
        velocity[p] = momentum * velocity[p] - alpha * g
        theta[p] += velocity[p]
    return True
