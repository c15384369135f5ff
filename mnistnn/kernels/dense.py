"""Later layers (inputs: the previous layer's activations), in blocks of 64 units (four
:class:`~.simd.Vec16`), every sum in the order of its inputs.

    forward   H_l = W_l . A_{l-1} + B_l          :func:`_dense_forward`   (reference.forward)
    gradient  dW_l = dH_l . A_{l-1}^T            :func:`_dense_grad_tiles` (reference.backward)
    backprop  dH_{l-1} = W_l^T . dH_l * [H > 0]  :func:`_dense_backprop`  (reference.backward)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cache  # noqa: F401  (Numba's cache locator, before any kernel below)
from .buffers import _block_width, _padded
from .pixels import _store_block, _store_units
from .plan import BLOCK, LANES, TILE
from .simd import (
    fma,
    vadd,
    vfma,
    vload,
    vzeros,
)


@njit(cache=True)
def _row_times(a, i, M):
    """``a[i, :n] @ M`` as a :class:`~.simd.Vec16`: the first ``n`` entries of row ``i`` of
    ``a`` times ``M`` ``(n, 16)``, one vector multiply-add per entry."""
    s = vzeros(M)
    for k in range(M.shape[0]):
        s = vfma(a[i, k], vload(M, k, 0), s)
    return s


@njit(parallel=True, cache=True)
def _dense_forward(A, WT, b, relu, Z):
    """A later layer of more than 16 units: ``Z[i] = act(W @ A[i] + b)``; ``A`` ``(m, n_in)``
    activations, ``WT`` ``(n_in, width)``: ``W.T`` padded with zero columns to whole blocks
    (:func:`_block_width`), ``Z`` ``(m, n_out)``.

    Two samples at a time, 64 units of each in four :class:`~.simd.Vec16` sums over the
    inputs in order: four loads of ``WT`` per eight multiply-adds.
    """
    m, n_out = Z.shape
    n_in, width = WT.shape
    bp = _padded(b.reshape((1, -1)), width, 0.0)
    for t in prange((m + TILE - 1) // TILE):
        z = np.empty((2, width), WT.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE), 2):
            i1 = min(i + 1, m - 1)  # an odd m computes its last sample twice
            for j in range(0, width, BLOCK):
                s0, s1, s2, s3 = vzeros(WT), vzeros(WT), vzeros(WT), vzeros(WT)
                u0, u1, u2, u3 = vzeros(WT), vzeros(WT), vzeros(WT), vzeros(WT)
                for k in range(n_in):
                    a, c = A[i, k], A[i1, k]
                    w0, w1 = vload(WT, k, j), vload(WT, k, j + LANES)
                    w2, w3 = vload(WT, k, j + 2 * LANES), vload(WT, k, j + 3 * LANES)
                    s0, s1 = vfma(a, w0, s0), vfma(a, w1, s1)
                    s2, s3 = vfma(a, w2, s2), vfma(a, w3, s3)
                    u0, u1 = vfma(c, w0, u0), vfma(c, w1, u1)
                    u2, u3 = vfma(c, w2, u2), vfma(c, w3, u3)
                for r, (v0, v1, v2, v3) in enumerate(((s0, s1, s2, s3), (u0, u1, u2, u3))):
                    _store_units(z, r, j, vadd(v0, vload(bp, 0, j)), relu)
                    _store_units(z, r, j + LANES, vadd(v1, vload(bp, 0, j + LANES)), relu)
                    _store_units(z, r, j + 2 * LANES, vadd(v2, vload(bp, 0, j + 2 * LANES)), relu)
                    _store_units(z, r, j + 3 * LANES, vadd(v3, vload(bp, 0, j + 3 * LANES)), relu)
            for j in range(n_out):
                Z[i, j] = z[0, j]
                Z[i1, j] = z[1, j]


@njit(parallel=True, cache=True)
def _dense_grad_tiles(dZ, A, partial):
    """A later layer of more than 16 units: tile ``t`` of the ``partial.shape[0]`` sample tiles
    sets ``partial[t]`` ``(n_out, n_in)`` to ``dZ[tile]^T A[tile]``.

    Four samples at a time are added to two units' rows at a time: six loads per eight
    multiply-adds.
    """
    m, n_out = dZ.shape
    n_tiles, n_in = partial.shape[0], partial.shape[2]
    zero = partial.dtype.type(0)
    for t in prange(n_tiles):
        acc = partial[t]
        for j in range(n_out):
            for k in range(n_in):
                acc[j, k] = zero
        x = np.empty((4, n_in), partial.dtype)
        g = np.zeros((n_out + 1, 4), partial.dtype)  # the deltas; row n_out stays zero
        spare = np.zeros(n_in, partial.dtype)  # the last unit's partner when n_out is odd
        lo = t * m // n_tiles
        hi = (t + 1) * m // n_tiles
        for i0 in range(lo, hi, 4):
            nb = min(4, hi - i0)
            for r in range(4):
                for k in range(n_in):
                    x[r, k] = A[i0 + min(r, nb - 1), k]
                for j in range(n_out):
                    g[j, r] = dZ[i0 + r, j] if r < nb else zero
            for j in range(0, n_out, 2):
                u = min(j + 1, n_out)
                active = False
                for r in range(4):
                    active |= g[j, r] != zero or g[u, r] != zero
                if not active:
                    continue  # inactive ReLUs: nothing to add
                g0, g1, g2, g3 = g[j, 0], g[j, 1], g[j, 2], g[j, 3]
                h0, h1, h2, h3 = g[u, 0], g[u, 1], g[u, 2], g[u, 3]
                a = acc[j]
                c = acc[u] if u < n_out else spare
                for k in range(n_in):
                    x0, x1, x2, x3 = x[0, k], x[1, k], x[2, k], x[3, k]
                    a[k] = fma(g3, x3, fma(g2, x2, fma(g1, x1, fma(g0, x0, a[k]))))
                    c[k] = fma(h3, x3, fma(h2, x2, fma(h1, x1, fma(h0, x0, c[k]))))


@njit(parallel=True, cache=True)
def _dense_backprop(dZ, W, A_prev):
    """Overwrite ``A_prev`` ``(m, n_in)`` with ``dZ_prev = (dZ W) * [A_prev > 0]``.

    64 inputs of a sample at a time stay in four :class:`~.simd.Vec16` while the rows of
    ``W`` (padded with zero columns to whole blocks) are added in, each times its delta.
    """
    m, n_out = dZ.shape
    n_in = W.shape[1]
    zero = W.dtype.type(0)
    Wp = _padded(W, _block_width(n_in), 0.0)
    width = Wp.shape[1]
    for t in prange((m + TILE - 1) // TILE):
        row = np.empty((1, width), W.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            for k in range(0, width, BLOCK):
                s0, s1, s2, s3 = vzeros(Wp), vzeros(Wp), vzeros(Wp), vzeros(Wp)
                for j in range(n_out):
                    g = dZ[i, j]
                    if g != zero:
                        s0 = vfma(g, vload(Wp, j, k), s0)
                        s1 = vfma(g, vload(Wp, j, k + LANES), s1)
                        s2 = vfma(g, vload(Wp, j, k + 2 * LANES), s2)
                        s3 = vfma(g, vload(Wp, j, k + 3 * LANES), s3)
                _store_block(row, 0, k, s0, s1, s2, s3)
            for k in range(n_in):
                A_prev[i, k] = row[0, k] if A_prev[i, k] > zero else zero
