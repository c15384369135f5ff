"""Views into the work buffer and the flat parameter vector, and the padded copies of weights the
vector kernels read: ``W.T`` padded to whole vectors, rows that start on a cache line.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import (
    cache,  # noqa: F401  (Numba's cache locator, before any kernel below)
    plan,
)
from .plan import ALIGN, ALIGN_BYTES, LANES


@njit(cache=True)
def _wb(theta, off, sizes, layer):
    """Views ``(W, b)`` of layer ``layer`` (1-based): ``(n_out, n_in)`` and ``(n_out,)``."""
    n_in = sizes[layer - 1]
    n_out = sizes[layer]
    start = off[layer - 1]
    W = theta[start : start + n_out * n_in].reshape((n_out, n_in))
    b = theta[start + n_out * n_in : start + n_out * n_in + n_out]
    return W, b


@njit(cache=True)
def _act(buf, sizes, layer, m):
    """View of the activation block of ``layer`` (1-based) in ``buf``: ``(m, n_layer)``."""
    start = 0
    for l_ in range(1, layer):
        start += m * sizes[l_]
    return buf[start : start + m * sizes[layer]].reshape((m, sizes[layer]))


@njit(cache=True)
def _act_size(sizes, m):
    """Floats of all activation blocks of ``m`` samples: ``m * sum(sizes[1:])``."""
    total = 0
    for layer in range(1, sizes.shape[0]):
        total += m * sizes[layer]
    return total


@njit(cache=True)
def _partials(tiles, n_tiles, n_rows, n_cols):
    """View of the start of ``tiles`` as ``n_tiles`` partial gradients ``(n_rows, n_cols)``."""
    return tiles[: n_tiles * n_rows * n_cols].reshape((n_tiles, n_rows, n_cols))


@njit(cache=True)
def _aligned(a):
    """``a[s:]`` (1-D), with ``0 <= s < ALIGN`` chosen so that it starts on a cache line: a row of
    16 lanes is then read in one piece, not two."""
    skip = (-(a.ctypes.data // a.itemsize)) % (ALIGN_BYTES // a.itemsize)
    return a[skip:]


@njit(cache=True)
def _aligned_zeros(rows, cols, dtype):
    """A new zero array ``(rows, cols)`` that starts on a cache line (see :func:`_aligned`)."""
    return _aligned(np.zeros(rows * cols + ALIGN, dtype))[: rows * cols].reshape((rows, cols))


@njit(parallel=True, cache=True)
def _transposed(W, width):
    """``W.T`` as a new C-ordered array ``(n_in, width)``, ``width >= n_out``, padded with zero
    columns; copied in parallel blocks of 16 columns of ``W`` (one cache line of each row)."""
    n_out, n_in = W.shape
    WT = _aligned_zeros(n_in, width, W.dtype)
    for kb in prange((n_in + 15) // 16):
        for k in range(kb * 16, min(n_in, kb * 16 + 16)):
            for j in range(n_out):
                WT[k, j] = W[j, k]
    return WT


@njit(cache=True)
def _padded(W, width, fill):
    """``W`` ``(n_out, n_in)`` as a new array ``(n_out, width)``, ``width >= n_in``, padded with
    columns of ``fill``."""
    n_out, n_in = W.shape
    Wp = _aligned_zeros(n_out, width, W.dtype)
    Wp[:, :n_in] = W
    Wp[:, n_in:] = fill
    return Wp


@njit(cache=True)
def _padded_bias(b, fill):
    """The bias ``b`` ``(n,)``, ``n <= 16``, as one row ``(1, 16)`` padded with ``fill``, for
    :func:`~.simd.vload`."""
    return _padded(b.reshape((1, -1)), LANES, fill)


grad_tiles = njit(cache=True)(plan.grad_tiles)  # for the compiled drivers; see plan.grad_tiles
_block_width = njit(cache=True)(plan.block_width)

