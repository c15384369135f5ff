"""The first layer, on the images' nonzero pixels only (most pixels are zero: about 81% of MNIST,
half of Fashion-MNIST).  :func:`sparse_pixels` lists them once per ``fit``/``predict`` (compressed
rows); :func:`pixel_columns` lists a batch's by column, chunk by chunk, for the weight gradient.
The pixels stay raw (0..255); the kernels scale by ``1/255`` where the math needs it.

    forward   H = W . I + B             :func:`_sparse_forward`  (reference.forward, first layer)
    gradient  dW = dH . I^T             :func:`_sparse_grad_tiles` (reference.backward, dW_1)

Each unit's sum over an image's pixels is four interleaved partial sums (:func:`_pixels_times`,
:func:`_pixels_times_block`), the same order whether the layer has 16 units or 600.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cache  # noqa: F401  (Numba's cache locator, before any kernel below)
from .buffers import _padded
from .plan import BLOCK, LANES, TILE
from .simd import (
    compress_nonzero,
    vadd,
    vfma,
    vload,
    vmul,
    vrelu,
    vstore,
    vzeros,
)


def sparse_pixels(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzero pixels of ``X`` ``(N, n_in)`` in compressed-row form.

    Returns ``(indptr, indices, values)``: the nonzero pixels of image ``i`` are at columns
    ``indices[indptr[i]:indptr[i+1]]`` with values ``values[...]``.  Small types that the
    kernels read fast: ``indices`` uint16 (int32 from 65,537 columns on), ``values`` float32
    (exact for ``uint8`` pixels; float64 if ``X`` is), so a kernel multiplies each value as
    loaded instead of converting it first.  ``indptr`` ``(N + 1,)`` int64.
    """
    if X.ndim != 2 or X.dtype not in (np.uint8, np.float32, np.float64):
        raise ValueError(
            f"X must be 2-D uint8, float32 or float64 pixels; got {X.ndim}-D {X.dtype}"
        )
    index = np.uint16 if X.shape[1] <= 1 << 16 else np.int32
    value = np.float64 if X.dtype == np.float64 else np.float32
    return _sparse_pixels(X, index, value)


@njit(parallel=True, cache=True)
def _sparse_pixels(X, index, value):
    """:func:`sparse_pixels` with the dtypes of ``indices`` and ``values`` given."""
    N, n_in = X.shape
    counts = np.zeros(N, np.int64)
    for i in prange(N):
        c = 0
        for k in range(n_in):
            c += X[i, k] != 0
        counts[i] = c
    indptr = np.zeros(N + 1, np.int64)
    for i in range(N):
        indptr[i + 1] = indptr[i] + counts[i]
    indices = np.empty(indptr[N], index)
    values = np.empty(indptr[N], value)
    for i in prange(N):
        q = indptr[i]
        for k in range(0, n_in - LANES + 1, LANES):  # 16 pixels at a time
            q += compress_nonzero(X, i, k, indices, values, q)
        for k in range(n_in - n_in % LANES, n_in):
            if X[i, k] != 0:
                indices[q] = k
                values[q] = X[i, k]
                q += 1
    return indptr, indices, values


@njit(cache=True)
def chunks(m, n_tiles, size):
    """The sample tiles of a batch of ``m`` images cut in chunks of up to ``size`` images:
    ``(chunk_first, tile_chunk)``, int64; chunk ``c`` holds images ``chunk_first[c]`` to
    ``chunk_first[c + 1] - 1``, tile ``t`` (images ``t * m // n_tiles`` to ``(t + 1) * m //
    n_tiles - 1``) chunks ``tile_chunk[t]`` to ``tile_chunk[t + 1] - 1``."""
    tile_chunk = np.zeros(n_tiles + 1, np.int64)
    for t in range(n_tiles):
        images = (t + 1) * m // n_tiles - t * m // n_tiles
        tile_chunk[t + 1] = tile_chunk[t] + (images + size - 1) // size
    chunk_first = np.empty(tile_chunk[n_tiles] + 1, np.int64)
    for t in range(n_tiles):
        for c in range(tile_chunk[t], tile_chunk[t + 1]):
            chunk_first[c] = t * m // n_tiles + (c - tile_chunk[t]) * size
    chunk_first[tile_chunk[n_tiles]] = m
    return chunk_first, tile_chunk


@njit(parallel=True, cache=True)
def pixel_columns(pixels, rows, chunk_first, n_in, dtype):
    """The nonzero pixels of images ``rows``, chunk by chunk (:func:`chunks`), listed by column:
    ``(starts, image, value)``.  Column ``k`` of chunk ``c`` has its pixels at
    ``starts[c, k]:starts[c, k + 1]`` of ``image`` (uint8: the image's place in the chunk,
    ascending) and ``value`` (unscaled, of ``dtype``).  ``starts`` ``(n_chunks, n_in + 1)``."""
    indptr, indices, values = pixels
    n_chunks = chunk_first.shape[0] - 1
    offset = np.zeros(n_chunks + 1, np.int64)
    for c in prange(n_chunks):
        total = 0
        for r in range(chunk_first[c], chunk_first[c + 1]):
            total += indptr[rows[r] + 1] - indptr[rows[r]]
        offset[c + 1] = total
    for c in range(n_chunks):
        offset[c + 1] += offset[c]
    starts = np.empty((n_chunks, n_in + 1), np.int64)
    image = np.empty(offset[n_chunks], np.uint8)
    value = np.empty(offset[n_chunks], dtype)
    for c in prange(n_chunks):
        first, at = chunk_first[c], starts[c]
        at[:] = 0
        for r in range(first, chunk_first[c + 1]):
            for q in range(indptr[rows[r]], indptr[rows[r] + 1]):
                at[indices[q] + 1] += 1
        at[0] = offset[c]
        for k in range(n_in):
            at[k + 1] += at[k]
        free = at[:n_in].copy()  # the next free place of each column
        for r in range(first, chunk_first[c + 1]):
            for q in range(indptr[rows[r]], indptr[rows[r] + 1]):
                k = indices[q]
                image[free[k]] = r - first
                value[free[k]] = values[q]
                free[k] += 1
    return starts, image, value


@njit(cache=True)
def _pixels_times(pixels, image, WT):
    """``x @ WT`` as a :class:`~.simd.Vec16`, ``x`` the nonzero pixels of image ``image``
    (unscaled), ``WT`` ``(n_in, 16)``: one vector multiply-add per nonzero pixel.

    Four sums (over every fourth nonzero pixel) run side by side, so one multiply-add need not
    wait for the one before it.
    """
    indptr, indices, values = pixels
    lo, hi = indptr[image], indptr[image + 1]
    cols, vals = indices[lo:hi], values[lo:hi]  # from 0: no negative-index checks
    s0, s1, s2, s3 = vzeros(WT), vzeros(WT), vzeros(WT), vzeros(WT)
    for h in range((hi - lo) // 4):
        p = 4 * h
        s0 = vfma(WT.dtype.type(vals[p]), vload(WT, cols[p], 0), s0)
        s1 = vfma(WT.dtype.type(vals[p + 1]), vload(WT, cols[p + 1], 0), s1)
        s2 = vfma(WT.dtype.type(vals[p + 2]), vload(WT, cols[p + 2], 0), s2)
        s3 = vfma(WT.dtype.type(vals[p + 3]), vload(WT, cols[p + 3], 0), s3)
    for p in range((hi - lo) // 4 * 4, hi - lo):
        s0 = vfma(WT.dtype.type(vals[p]), vload(WT, cols[p], 0), s0)
    return vadd(vadd(s0, s1), vadd(s2, s3))


@njit(cache=True, inline="always")
def _pixels_times_block(pixels, image, WT, j):
    """``x @ WT[:, j:j+64]`` as four :class:`~.simd.Vec16`, ``x`` the nonzero pixels of
    image ``image`` (unscaled): in each lane the same four interleaved sums, added up the same
    way, as :func:`_pixels_times`, so a unit gets the same bits in a narrow or a wide layer."""
    indptr, indices, values = pixels
    lo, hi = indptr[image], indptr[image + 1]
    cols, vals = indices[lo:hi], values[lo:hi]  # from 0: no negative-index checks
    z = vzeros(WT)
    s0 = s1 = s2 = s3 = (z, z, z, z)
    for h in range((hi - lo) // 4):
        p = 4 * h
        s0 = _add_row_block(s0, WT.dtype.type(vals[p]), WT, cols[p], j)
        s1 = _add_row_block(s1, WT.dtype.type(vals[p + 1]), WT, cols[p + 1], j)
        s2 = _add_row_block(s2, WT.dtype.type(vals[p + 2]), WT, cols[p + 2], j)
        s3 = _add_row_block(s3, WT.dtype.type(vals[p + 3]), WT, cols[p + 3], j)
    for p in range((hi - lo) // 4 * 4, hi - lo):
        s0 = _add_row_block(s0, WT.dtype.type(vals[p]), WT, cols[p], j)
    return (
        vadd(vadd(s0[0], s1[0]), vadd(s2[0], s3[0])),
        vadd(vadd(s0[1], s1[1]), vadd(s2[1], s3[1])),
        vadd(vadd(s0[2], s1[2]), vadd(s2[2], s3[2])),
        vadd(vadd(s0[3], s1[3]), vadd(s2[3], s3[3])),
    )


@njit(cache=True, inline="always")
def _add_row_block(s, v, M, k, j):
    """``s + v * M[k, j:j+64]`` for a block ``s`` of four :class:`~.simd.Vec16`."""
    return (
        vfma(v, vload(M, k, j), s[0]),
        vfma(v, vload(M, k, j + LANES), s[1]),
        vfma(v, vload(M, k, j + 2 * LANES), s[2]),
        vfma(v, vload(M, k, j + 3 * LANES), s[3]),
    )


@njit(cache=True)
def _add_pixels_times(acc, pixels, image, delta):
    """``acc[k] += x[k] * delta`` for every nonzero pixel ``x[k]`` of image ``image``; ``acc``
    ``(n_in, 16)``, ``delta`` a :class:`~.simd.Vec16`."""
    indptr, indices, values = pixels
    lo, hi = indptr[image], indptr[image + 1]
    cols, vals = indices[lo:hi], values[lo:hi]
    for p in range(hi - lo):
        k = cols[p]
        vstore(acc, k, 0, vfma(acc.dtype.type(vals[p]), delta, vload(acc, k, 0)))


@njit(cache=True, inline="always")
def _first_layer(wx, scale, bp, j=0):
    """``W x / 255 + b`` (multiplied, then added: never fused) from ``W x``, the unscaled pixels
    of an image times ``W`` (a :class:`~.simd.Vec16` of units ``j..j+15``); ``bp``
    ``(1, width)``: ``b`` padded with zeros."""
    return vadd(vmul(scale, wx), vload(bp, 0, j))


@njit(cache=True, inline="always")
def _store_units(z, r, j, out, relu):
    """``z[r, j:j+16] = ReLU(out)`` (``out`` itself if not ``relu``)."""
    vstore(z, r, j, vrelu(out) if relu else out)


@njit(cache=True, inline="always")
def _store_block(a, i, j, s0, s1, s2, s3):
    """``a[i, j:j+64] = (s0, s1, s2, s3)``: a block of four :class:`~.simd.Vec16`."""
    vstore(a, i, j, s0)
    vstore(a, i, j + LANES, s1)
    vstore(a, i, j + 2 * LANES, s2)
    vstore(a, i, j + 3 * LANES, s3)


@njit(parallel=True, cache=True)
def _sparse_forward(pixels, rows, scale, WT, b, relu, Z):
    """Wide first layer: ``Z[i] = act(scale * W @ x_i + b)``, ``x_i`` the pixels of image
    ``rows[i]``, summed over its nonzero pixels only.  ``WT`` ``(n_in, width)``: ``W.T`` padded
    with zero columns to whole blocks (:func:`_block_width`; the weights *from* one pixel are
    contiguous); ``Z`` ``(m, n_out)``.  A block of 64 units is four :class:`~.simd.Vec16`
    sums kept in registers over the image's pixels.
    """
    m, n_out = Z.shape
    width = WT.shape[1]
    bp = _padded(b.reshape((1, -1)), width, 0.0)
    for t in prange((m + TILE - 1) // TILE):
        z = np.empty((1, width), WT.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            for j in range(0, width, BLOCK):
                s0, s1, s2, s3 = _pixels_times_block(pixels, rows[i], WT, j)
                _store_units(z, 0, j, _first_layer(s0, scale, bp, j), relu)
                _store_units(z, 0, j + LANES, _first_layer(s1, scale, bp, j + LANES), relu)
                _store_units(z, 0, j + 2 * LANES, _first_layer(s2, scale, bp, j + 2 * LANES), relu)
                _store_units(z, 0, j + 3 * LANES, _first_layer(s3, scale, bp, j + 3 * LANES), relu)
            for j in range(n_out):
                Z[i, j] = z[0, j]


@njit(parallel=True, cache=True)
def _sparse_grad_tiles(dZ, columns, chunks, partial):
    """Wide first layer: tile ``t`` of the ``partial.shape[0]`` sample tiles sets ``partial[t]``
    ``(n_in, width)`` (transposed, so one pixel's row is contiguous; padded to whole blocks, see
    :func:`_block_width`) to ``X[tile]^T dZ[tile]``, summed over the nonzero pixels only.

    The tile's images go in chunks of up to ``TILE`` (:func:`chunks`), whose nonzero pixels
    ``columns`` lists by column (:func:`pixel_columns`): each row ``k`` of the sum gets all its
    terms (the chunk's images with pixel ``k``, in image order) while 64 units of it stay in four
    :class:`~.simd.Vec16`: one load and one store of the row per chunk, not per image.
    """
    m, n_out = dZ.shape
    n_tiles, n_in, width = partial.shape
    chunk_first, tile_chunk = chunks
    for t in prange(n_tiles):
        acc = partial[t]
        g = np.zeros((TILE, width), partial.dtype)  # the chunk's deltas, padded with zeros
        for c in range(tile_chunk[t], tile_chunk[t + 1]):
            first = chunk_first[c]
            for i in range(first, chunk_first[c + 1]):
                for j in range(n_out):
                    g[i - first, j] = dZ[i, j]
            _add_chunk_terms(acc, g, columns, c, c == tile_chunk[t])


@njit(cache=True)
def _add_chunk_terms(acc, g, columns, c, fresh):
    """``acc += X_c^T g`` ``(n_in, width)``, ``width`` whole blocks of 64, for chunk ``c`` of
    ``columns`` (:func:`pixel_columns`), ``g`` its images' deltas; from zero if ``fresh``.

    Row ``k`` gets the terms of the chunk's images with pixel ``k`` one after another, while 64
    of its units stay in four :class:`~.simd.Vec16`: one load and one store of the row
    per chunk, not per image; two rows at a time, so that eight sums are on their way together.
    """
    starts = columns[0][c]
    n_in = acc.shape[0]
    for k in range(0, n_in - 1, 2):
        if starts[k] == starts[k + 2] and not fresh:
            continue  # no term in this chunk: the rows stay as they are
        for j in range(0, acc.shape[1], BLOCK):
            _add_column_pair(acc, k, j, g, columns, starts, fresh)
    if n_in % 2:
        for j in range(0, acc.shape[1], BLOCK):
            _add_column_terms(acc, n_in - 1, j, g, columns, starts[n_in - 1], starts[n_in], fresh)


@njit(cache=True, inline="always")
def _add_column_pair(acc, k, j, g, columns, starts, fresh):
    """:func:`_add_column_terms` of rows ``k`` and ``k + 1`` side by side."""
    _, image, value = columns
    lo, mid, hi = starts[k], starts[k + 1], starts[k + 2]
    if fresh:
        s0 = s1 = s2 = s3 = u0 = u1 = u2 = u3 = vzeros(acc)
    else:
        s0, s1 = vload(acc, k, j), vload(acc, k, j + LANES)
        s2, s3 = vload(acc, k, j + 2 * LANES), vload(acc, k, j + 3 * LANES)
        u0, u1 = vload(acc, k + 1, j), vload(acc, k + 1, j + LANES)
        u2, u3 = vload(acc, k + 1, j + 2 * LANES), vload(acc, k + 1, j + 3 * LANES)
    both = min(mid - lo, hi - mid)
    for e in range(both):
        v, r = value[lo + e], image[lo + e]
        w, q = value[mid + e], image[mid + e]
        s0 = vfma(v, vload(g, r, j), s0)
        u0 = vfma(w, vload(g, q, j), u0)
        s1 = vfma(v, vload(g, r, j + LANES), s1)
        u1 = vfma(w, vload(g, q, j + LANES), u1)
        s2 = vfma(v, vload(g, r, j + 2 * LANES), s2)
        u2 = vfma(w, vload(g, q, j + 2 * LANES), u2)
        s3 = vfma(v, vload(g, r, j + 3 * LANES), s3)
        u3 = vfma(w, vload(g, q, j + 3 * LANES), u3)
    for e in range(lo + both, mid):
        v, r = value[e], image[e]
        s0 = vfma(v, vload(g, r, j), s0)
        s1 = vfma(v, vload(g, r, j + LANES), s1)
        s2 = vfma(v, vload(g, r, j + 2 * LANES), s2)
        s3 = vfma(v, vload(g, r, j + 3 * LANES), s3)
    for e in range(mid + both, hi):
        w, q = value[e], image[e]
        u0 = vfma(w, vload(g, q, j), u0)
        u1 = vfma(w, vload(g, q, j + LANES), u1)
        u2 = vfma(w, vload(g, q, j + 2 * LANES), u2)
        u3 = vfma(w, vload(g, q, j + 3 * LANES), u3)
    _store_block(acc, k, j, s0, s1, s2, s3)
    _store_block(acc, k + 1, j, u0, u1, u2, u3)


@njit(cache=True, inline="always")
def _add_column_terms(acc, k, j, g, columns, lo, hi, fresh):
    """``acc[k, j:j+64] += sum_e value[e] * g[image[e], j:j+64]`` over the terms ``lo..hi-1`` of
    ``columns`` (:func:`pixel_columns`), added one after another; from zero if ``fresh``."""
    _, image, value = columns
    if fresh:
        s0, s1, s2, s3 = vzeros(acc), vzeros(acc), vzeros(acc), vzeros(acc)
    else:
        s0, s1 = vload(acc, k, j), vload(acc, k, j + LANES)
        s2, s3 = vload(acc, k, j + 2 * LANES), vload(acc, k, j + 3 * LANES)
    for e in range(lo, hi):
        v, r = value[e], image[e]
        s0 = vfma(v, vload(g, r, j), s0)
        s1 = vfma(v, vload(g, r, j + LANES), s1)
        s2 = vfma(v, vload(g, r, j + 2 * LANES), s2)
        s3 = vfma(v, vload(g, r, j + 3 * LANES), s3)
    _store_block(acc, k, j, s0, s1, s2, s3)
