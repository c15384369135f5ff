"""Numba kernels: the forward and backward passes of a dense ReLU network with a softmax output.

Plain functions on plain arrays (no classes, no I/O, no state), shared by every network class.
A network with layer sizes ``sizes = (n_0, n_1, ..., n_L)`` keeps all its parameters in one flat
vector ``theta``; layer ``l`` (1..L) owns a weight matrix ``W_l`` of shape ``(n_l, n_{l-1})``
followed by a bias vector ``b_l`` of shape ``(n_l,)`` (see :func:`layout`).  The gradient vector
has the same layout, so an update is one vector operation: ``theta -= alpha * grad``.

The math, with samples as rows (the write-up's matrices transposed, ``I = X.T``):

    forward   Z_l = A_{l-1} W_l^T + b_l          (m, n_l)
              A_l = ReLU(Z_l)  for l < L,   P = softmax(Z_L)
    backward  dZ_L = (P - onehot(y)) / m          (m, n_L)    the write-up's dO = Ô - L, averaged
              dW_l = dZ_l^T A_{l-1}               (n_l, n_{l-1})
              db_l = sum_i dZ_l[i]                (n_l,)
              dZ_{l-1} = (dZ_l W_l) * [A_{l-1} > 0]   (m, n_{l-1})   since ReLU'(z) = [z > 0]

The first layer reads the raw ``uint8`` pixels and scales them by ``1/255`` inside the kernel, so
no float copy of the dataset is ever made.  Most pixels are zero (about 81% in MNIST, 50% in
Fashion-MNIST) and contribute nothing to ``A_0 W_1^T`` or ``dZ_1^T A_0``, so the first layer
usually works on the nonzero pixels only: :func:`sparse_pixels` lists them once per
``fit``/``predict`` (compressed rows: a 2-byte column number and the value as a float per nonzero
pixel, unscaled, so the results are the same as from the ``uint8`` values).  A narrow first layer
(at most 16 units, like the write-up's 10) handles all its units at once per pixel, in one
:class:`~mnistnn.simd.Vec16`; a wide one (64 units or more) 64 at a time, in four (and for its
weight gradient it first sorts each chunk's nonzero pixels by column, so that a row of the
gradient is read and written once per chunk of images, not once per image); one in between
reads the dense pixels four images at a time (see :func:`uses_sparse_pixels`).

A network with one hidden layer, when both of its layers have at most 16 units (the write-up's
784 -> 10 -> 10), is trained in one pass over the images (:func:`_narrow_net_tiles`): each
image goes forward and backward through both layers while its activations and deltas stay in
vector registers, instead of a pass per layer and step with the ``(m, n)`` arrays in between.
Images go through it in pairs, so that the CPU works on the short chain of dependent steps
between an image's two reads of its pixels (softmax, two small products) for both at once.

Caching: every function here is compiled once per machine (Numba's on-disk cache, keyed to this
file and to :mod:`mnistnn.simd`, whose intrinsics are compiled into them), the driver functions
that call the parallel kernels (``forward``, ``backward``, ``full_batch_step``, ...) too: they
contain a copy of the kernels' code, which would otherwise be compiled again in every process
(about 20 s before a fresh notebook's first ``fit``).  Numba starts its threading layer when it
loads a parallel kernel, but not when it loads a driver that contains one, and the driver's
first call then fails ("Symbol not found: allocate_sched"); so importing this module starts it.

Determinism: every output element is computed by one thread with a fixed summation order, and
where partial sums are needed (the weight gradients) the samples are cut into tiles
whose number depends only on the batch size and are added up in tile order.  Results are
bit-identical whatever ``NUMBA_NUM_THREADS`` is, and whether this process compiled the kernels
or loaded them from the cache: the kernels let LLVM reorder sums, and multiply-adds are fused
only where the code says so (see ``FASTMATH`` and :mod:`mnistnn.simd`).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from mnistnn.simd import (
    LANES,
    compress_nonzero,
    fma,
    vadd,
    vany,
    vdiv,
    vexp,
    vfind,
    vfma,
    vgate,
    vlane,
    vload,
    vloadn,
    vmax,
    vmaxnum,
    vmul,
    vrelu,
    vsplat,
    vstore,
    vstoren,
    vsub,
    vsubat,
    vsum,
    vtimes,
    vwhere,
    vzeros,
)

__all__ = [
    "layout",
    "work_size",
    "grad_tiles",
    "sparse_pixels",
    "is_narrow",
    "forward",
    "narrow_backward",
    "layered_backward",
    "narrow_nets_backward",
    "chunks",
    "pixel_columns",
    "update",
    "predict_proba",
    "evaluate",
    "train_epoch",
]

TILE = 64  # samples per parallel work item
CHUNK = 256  # images of the one-pass kernel that go through each step together
MAX_GRAD_TILES = 16  # partial weight gradients per batch (fixed: independent of threads)
PIXEL_SCALE = 1.0 / 255.0
ALIGN_BYTES = 64  # a cache line
GROUP = 2  # images whose small steps overlap in the one-pass kernel (_narrow_net_tiles)
ALIGN = 16  # elements of slack that let an array start on a cache line (float32 or float64)
BLOCK = 4 * LANES  # units of a wide sparse first layer summed side by side (four Vec16)

numba.get_num_threads()  # starts the threading layer, which the cached drivers need (see above)


def layout(sizes: tuple[int, ...] | list[int]) -> np.ndarray:
    """Offsets of each layer's ``W`` and ``b`` in the flat parameter vector.

    Returns an int64 array of shape ``(L + 1,)``: layer ``l`` (1..L) occupies
    ``theta[off[l-1] : off[l]]``, its weights first (row-major ``(n_l, n_{l-1})``), then its biases.
    ``off[L]`` is the total parameter count.
    """
    off = [0]
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        off.append(off[-1] + n_out * n_in + n_out)
    return np.asarray(off, dtype=np.int64)


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


@njit(cache=True)
def _block_width(n):
    """``n`` units rounded up to whole blocks of ``BLOCK``: the padded width of a wide sparse
    first layer's transposed weights and partial gradients."""
    return (n + BLOCK - 1) // BLOCK * BLOCK


@njit(cache=True)
def grad_tiles(m):
    """Sample tiles (partial weight gradients) of a batch of ``m`` images:
    ``min(MAX_GRAD_TILES, ceil(m / TILE))``, whatever the number of threads."""
    return min(MAX_GRAD_TILES, (m + TILE - 1) // TILE)


def work_size(sizes, m: int, gradients: bool = True) -> int:
    """Floats of work buffer the kernels need for batches of up to ``m`` images: the activations,
    plus (for :func:`backward`) the partial gradients of the largest weight matrix."""
    sizes = np.asarray(sizes, dtype=np.int64)
    widths = sizes[1:].copy()
    widths[0] = _block_width(sizes[1])  # the first layer's partials are padded to whole blocks
    largest = int(np.max(widths * sizes[:-1]))
    partials = int(grad_tiles(m)) * largest + ALIGN  # + room to start them on a cache line
    return int(_act_size(sizes, m)) + (partials if gradients else 0)


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
    :func:`~mnistnn.simd.vload`."""
    return _padded(b.reshape((1, -1)), LANES, fill)


@njit(parallel=True, cache=True)
def _sparse_forward(pixels, rows, scale, WT, b, relu, Z):
    """Wide first layer: ``Z[i] = act(scale * W @ x_i + b)``, ``x_i`` the pixels of image
    ``rows[i]``, summed over its nonzero pixels only.  ``WT`` ``(n_in, width)``: ``W.T`` padded
    with zero columns to whole blocks (:func:`_block_width`; the weights *from* one pixel are
    contiguous); ``Z`` ``(m, n_out)``.  A block of 64 units is four :class:`~mnistnn.simd.Vec16`
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


@njit(cache=True, inline="always")
def _store_units(z, r, j, out, relu):
    """``z[r, j:j+16] = ReLU(out)`` (``out`` itself if not ``relu``)."""
    vstore(z, r, j, vrelu(out) if relu else out)


@njit(cache=True, inline="always")
def _pixels_times_block(pixels, image, WT, j):
    """``x @ WT[:, j:j+64]`` as four :class:`~mnistnn.simd.Vec16`, ``x`` the nonzero pixels of
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
    """``s + v * M[k, j:j+64]`` for a block ``s`` of four :class:`~mnistnn.simd.Vec16`."""
    return (
        vfma(v, vload(M, k, j), s[0]),
        vfma(v, vload(M, k, j + LANES), s[1]),
        vfma(v, vload(M, k, j + 2 * LANES), s[2]),
        vfma(v, vload(M, k, j + 3 * LANES), s[3]),
    )


@njit(cache=True, inline="always")
def _first_layer(wx, scale, bp, j=0):
    """``W x / 255 + b`` (multiplied, then added: never fused) from ``W x``, the unscaled pixels
    of an image times ``W`` (a :class:`~mnistnn.simd.Vec16` of units ``j..j+15``); ``bp``
    ``(1, width)``: ``b`` padded with zeros."""
    return vadd(vmul(scale, wx), vload(bp, 0, j))


@njit(cache=True)
def _pixels_times(pixels, image, WT):
    """``x @ WT`` as a :class:`~mnistnn.simd.Vec16`, ``x`` the nonzero pixels of image ``image``
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


@njit(cache=True)
def _add_pixels_times(acc, pixels, image, delta):
    """``acc[k] += x[k] * delta`` for every nonzero pixel ``x[k]`` of image ``image``; ``acc``
    ``(n_in, 16)``, ``delta`` a :class:`~mnistnn.simd.Vec16`."""
    indptr, indices, values = pixels
    lo, hi = indptr[image], indptr[image + 1]
    cols, vals = indices[lo:hi], values[lo:hi]
    for p in range(hi - lo):
        k = cols[p]
        vstore(acc, k, 0, vfma(acc.dtype.type(vals[p]), delta, vload(acc, k, 0)))


@njit(cache=True)
def _row_times(a, i, M):
    """``a[i, :n] @ M`` as a :class:`~mnistnn.simd.Vec16`: the first ``n`` entries of row ``i`` of
    ``a`` times ``M`` ``(n, 16)``, one vector multiply-add per entry."""
    s = vzeros(M)
    for k in range(M.shape[0]):
        s = vfma(a[i, k], vload(M, k, 0), s)
    return s


@njit(parallel=True, cache=True)
def _sparse_grad_tiles(dZ, columns, chunks, partial):
    """Wide first layer: tile ``t`` of the ``partial.shape[0]`` sample tiles sets ``partial[t]``
    ``(n_in, width)`` (transposed, so one pixel's row is contiguous; padded to whole blocks, see
    :func:`_block_width`) to ``X[tile]^T dZ[tile]``, summed over the nonzero pixels only.

    The tile's images go in chunks of up to ``TILE`` (:func:`chunks`), whose nonzero pixels
    ``columns`` lists by column (:func:`pixel_columns`): each row ``k`` of the sum gets all its
    terms (the chunk's images with pixel ``k``, in image order) while 64 units of it stay in four
    :class:`~mnistnn.simd.Vec16`: one load and one store of the row per chunk, not per image.
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


@njit(cache=True, inline="always")
def _store_block(a, i, j, s0, s1, s2, s3):
    """``a[i, j:j+64] = (s0, s1, s2, s3)``: a block of four :class:`~mnistnn.simd.Vec16`."""
    vstore(a, i, j, s0)
    vstore(a, i, j + LANES, s1)
    vstore(a, i, j + 2 * LANES, s2)
    vstore(a, i, j + 3 * LANES, s3)


@njit(cache=True)
def _add_chunk_terms(acc, g, columns, c, fresh):
    """``acc += X_c^T g`` ``(n_in, width)``, ``width`` whole blocks of 64, for chunk ``c`` of
    ``columns`` (:func:`pixel_columns`), ``g`` its images' deltas; from zero if ``fresh``.

    Row ``k`` gets the terms of the chunk's images with pixel ``k`` one after another, while 64
    of its units stay in four :class:`~mnistnn.simd.Vec16`: one load and one store of the row
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


@njit(parallel=True, cache=True)
def _dense_forward(A, WT, b, relu, Z):
    """A later layer of more than 16 units: ``Z[i] = act(W @ A[i] + b)``; ``A`` ``(m, n_in)``
    activations, ``WT`` ``(n_in, width)``: ``W.T`` padded with zero columns to whole blocks
    (:func:`_block_width`), ``Z`` ``(m, n_out)``.

    Two samples at a time, 64 units of each in four :class:`~mnistnn.simd.Vec16` sums over the
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


@njit(cache=True)
def _softmax_parts(z):
    """``(e, sum(e), max(z), argmax(z))`` with ``e = exp(z - max(z))`` for the logits ``z`` of one
    image, a :class:`~mnistnn.simd.Vec16` padded with ``-inf`` (whose ``exp`` is 0)."""
    zmax = vmax(z)
    e = vexp(vadd(z, vsplat(-zmax)))
    return e, vsum(e), zmax, vfind(z, zmax)


@njit(cache=True)
def _softmax_delta(e, total, label, inv_m):
    """``(softmax(z) - onehot(label)) * inv_m`` from ``e`` and ``total`` of :func:`_softmax_parts`,
    a :class:`~mnistnn.simd.Vec16`; a ``label`` outside 0..15 leaves the probabilities alone."""
    return vsubat(vmul(inv_m / total, e), label, inv_m)


@njit(parallel=True, cache=True)
def _softmax_xent(Z, y, rows, inv_m, losses, correct):
    """Turn logits ``Z`` ``(m, K)`` into ``dZ = (softmax(Z) - onehot(y)) * inv_m`` in place.

    Stable: the row maximum is subtracted before ``exp``.  ``losses[i]`` gets the cross-entropy
    ``log(sum(exp(Z[i]))) - Z[i, y]`` and ``correct[i]`` whether ``argmax Z[i] == y``.  Without
    labels (``y`` empty) it leaves ``losses`` and ``correct`` alone and ``Z`` becomes
    ``softmax(Z) * inv_m``: the probabilities of :func:`predict_proba`, from the same code.

    Up to 16 classes, a row is one :class:`~mnistnn.simd.Vec16` (padded with ``-inf``, whose
    ``exp`` is 0).  A tile's results go to a scratch block first and are copied to ``Z`` after its
    last row is read (reading a row right after writing the one before it stalls the CPU), and
    its logarithms are taken then too (a call to ``log`` would push the vectors out of registers).
    """
    m, K = Z.shape
    low = Z.dtype.type(-np.inf)
    labelled = y.shape[0] > 0
    for t in prange((m + TILE - 1) // TILE):
        first, stop = t * TILE, min(m, (t + 1) * TILE)
        out = np.empty((TILE, LANES), Z.dtype)
        totals = np.empty(TILE, Z.dtype)
        for i in range(first, stop):
            r = i - first
            label = y[rows[i]] if labelled else 0
            z_label = Z[i, label]
            if K <= LANES:
                e, total, zmax, arg = _softmax_parts(vloadn(Z, i, 0, K, low))
                vstore(out, r, 0, _softmax_delta(e, total, label if labelled else -1, inv_m))
            else:
                zmax = Z[i, 0]
                arg = 0
                for j in range(1, K):
                    if Z[i, j] > zmax:
                        zmax = Z[i, j]
                        arg = j
                total = Z.dtype.type(0)
                for j in range(K):
                    Z[i, j] = np.exp(Z[i, j] - zmax)
                    total += Z[i, j]
                for j in range(K):
                    Z[i, j] = Z[i, j] * (inv_m / total)
                if labelled:
                    Z[i, label] -= inv_m
            if labelled:
                totals[r] = total
                losses[i] = z_label - zmax
                correct[i] = arg == label
        for i in range(first, stop):
            if K <= LANES:
                vstoren(Z, i, 0, K, vload(out, i - first, 0))
            if labelled:
                losses[i] = np.log(totals[i - first]) - losses[i]  # logsumexp(Z[i]) - Z[i, y]


@njit(cache=True, inline="always")
def _narrow_head(h_hat, label, W2T, W2p, b2p, inv_m, h, o, r, dw2):
    """One image of :func:`_narrow_net_tiles`, from its hidden activations ``H_hat`` (a
    :class:`~mnistnn.simd.Vec16`, lanes ``n_h..15`` zero) to ``dH``; adds ``H_hat dO^T`` to
    ``dw2`` ``(n_h, 16)``.

    ``b2p`` ``(1, 16)``: ``b2`` padded with ``-inf`` (so the padding lanes of ``O`` are ``-inf``,
    whose ``exp`` is 0).  Row ``r`` of the scratch arrays ``h`` and ``o`` ``(GROUP, 16)`` is this
    image's.  Returns ``(dH, dO, sum(exp(O - max O)), O[label] - max O, argmax O == label)``.
    """
    vstore(h, r, 0, h_hat)
    out = vadd(_row_times(h, r, W2T), vload(b2p, 0, 0))  # O = W2 H_hat + b2              (K,)
    e, total, omax, arg = _softmax_parts(out)
    d_o = _softmax_delta(e, total, label, inv_m)  # dO = (softmax(O) - onehot(y)) / m     (K,)
    vstore(o, r, 0, d_o)
    for k in range(dw2.shape[0]):  # dW2 += H_hat dO^T, one row of dW2^T per hidden unit
        vstore(dw2, k, 0, vfma(h[r, k], d_o, vload(dw2, k, 0)))
    d_h = vgate(h_hat, _row_times(o, r, W2p))  # dH = (W2^T dO) * ReLU'(H)               (n_h,)
    return d_h, d_o, total, vlane(out, label) - omax, arg == label


@njit(parallel=True, cache=True)
def _narrow_net_tiles(
    pixels, rows, y, scale, W1T, b1p, W2T, W2p, b2p, inv_m, losses, correct, parts
):
    """The whole forward and backward pass of a network ``n_in -> n_h (ReLU) -> K (softmax)``
    with ``n_h, K <= 16`` (the write-up's 784 -> 10 -> 10), ``GROUP`` images at a time: their
    activations and deltas stay in vector registers, their nonzero pixels are read twice while
    they are in the cache, and the steps between the two reads (two small matrix products and a
    softmax, each waiting on the one before) of the images of a group overlap in the CPU.  The
    same arithmetic, in the same order, as the layer-by-layer kernels (:func:`backward`'s other
    path), so both give the same numbers, bit for bit (tested).

    ``W1T`` ``(n_in, 16)`` and ``W2T`` ``(n_h, 16)``: ``W.T`` padded with zero columns; ``W2p``
    ``(K, 16)``: ``W2`` padded; ``b1p`` ``(1, 16)``: ``b1`` padded with zeros, ``b2p`` as in
    :func:`_narrow_head`.  Tile ``t`` of the
    ``parts[0].shape[0]`` sample tiles sets ``parts[0][t]`` ``(n_in, 16)`` to ``X^T dH`` (unscaled
    pixels), ``parts[1][t]`` ``(n_h, 16)`` to ``H_hat^T dO`` and ``parts[2][t]`` ``(2, 16)`` to
    the sums of ``dH`` and ``dO``, over its images; ``losses``, ``correct`` as in
    :func:`_softmax_xent`.
    """
    p1, p2, pb = parts
    m, n_tiles = rows.shape[0], p1.shape[0]
    totals = np.empty(m, W1T.dtype)
    for t in prange(n_tiles):
        lo, hi = t * m // n_tiles, (t + 1) * m // n_tiles
        dw1, dw2 = p1[t], p2[t]
        for k in range(dw1.shape[0]):
            vstore(dw1, k, 0, vzeros(W1T))
        for k in range(dw2.shape[0]):
            vstore(dw2, k, 0, vzeros(W1T))
        sum_dh, sum_do = vzeros(W1T), vzeros(W1T)
        w1x = np.empty((GROUP, LANES), W1T.dtype)  # W1 x of each image of the group
        d_h = np.empty((GROUP, LANES), W1T.dtype)
        h, o = np.empty((GROUP, LANES), W1T.dtype), np.empty((GROUP, LANES), W1T.dtype)
        active = np.empty(GROUP, np.bool_)
        for first in range(lo, hi, GROUP):
            n = min(GROUP, hi - first)
            for r in range(n):  # forward through the first layer      W1 x   (n_h,)
                vstore(w1x, r, 0, _pixels_times(pixels, rows[first + r], W1T))
            for r in range(n):  # the images' chains of small steps, one after another
                i = first + r
                label = y[rows[i]]
                h_hat = vrelu(_first_layer(vload(w1x, r, 0), scale, b1p))  # ReLU(W1 x/255 + b1)
                dh, do, totals[i], losses[i], correct[i] = _narrow_head(
                    h_hat, label, W2T, W2p, b2p, inv_m, h, o, r, dw2
                )
                sum_dh, sum_do = vadd(sum_dh, dh), vadd(sum_do, do)
                vstore(d_h, r, 0, dh)
                active[r] = vany(dh)
            for r in range(n):  # dW1 += x dH^T over the nonzero pixels
                if active[r]:
                    _add_pixels_times(dw1, pixels, rows[first + r], vload(d_h, r, 0))
        vstore(pb[t], 0, 0, sum_dh)
        vstore(pb[t], 1, 0, sum_do)
        for i in range(lo, hi):
            losses[i] = np.log(totals[i]) - losses[i]  # logsumexp(O) - O[y]


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


@njit(parallel=True, cache=True)
def _dense_backprop(dZ, W, A_prev):
    """Overwrite ``A_prev`` ``(m, n_in)`` with ``dZ_prev = (dZ W) * [A_prev > 0]``.

    64 inputs of a sample at a time stay in four :class:`~mnistnn.simd.Vec16` while the rows of
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


def is_narrow(sizes) -> bool:
    """Whether a network of layer sizes ``sizes`` is trained in one pass over the images
    (:func:`narrow_backward`): one hidden layer, it and the output of at most 16 units."""
    return len(sizes) == 3 and max(int(sizes[1]), int(sizes[2])) <= LANES


@njit(cache=True)
def forward(theta, off, sizes, pixels, rows, buf):
    """Forward pass of images ``rows``; returns the logits view ``(m, n_L)`` of ``buf``.

    ``pixels`` the images' :func:`sparse_pixels`; ``rows`` ``(m,)`` int64; ``buf`` a float work
    buffer of at least ``m * sum(sizes[1:])`` elements.  Hidden activations stay in ``buf`` for
    :func:`layered_backward`.
    """
    m = rows.shape[0]
    L = sizes.shape[0] - 1
    scale = theta.dtype.type(PIXEL_SCALE)
    W, b = _wb(theta, off, sizes, 1)
    Z = _act(buf, sizes, 1, m)
    _sparse_forward(pixels, rows, scale, _transposed(W, _block_width(W.shape[0])), b, L > 1, Z)
    for layer in range(2, L + 1):
        W, b = _wb(theta, off, sizes, layer)
        A = Z
        Z = _act(buf, sizes, layer, m)
        _dense_forward(A, _transposed(W, _block_width(W.shape[0])), b, layer < L, Z)
    return Z


@njit(cache=True)
def layered_backward(theta, off, sizes, pixels, y, rows, buf, grad, losses, correct):
    """The gradients of the mean cross-entropy on images ``rows``, one layer at a time, for any
    layer sizes: :func:`forward`, the softmax
    and its ``dZ``, then each layer's gradients and the ``dZ`` of the layer below.

    ``buf`` (:func:`work_size` floats) is destroyed: activations are overwritten by their deltas,
    and the rest holds the partial weight gradients.
    """
    m = rows.shape[0]
    L = sizes.shape[0] - 1
    one = theta.dtype.type(1.0)
    dZ = forward(theta, off, sizes, pixels, rows, buf)
    _softmax_xent(dZ, y, rows, theta.dtype.type(1.0 / m), losses, correct)
    tiles = _aligned(buf[_act_size(sizes, m) :])  # the partial weight gradients of the tiles
    n_tiles = grad_tiles(m)
    for layer in range(L, 1, -1):  # dW_l = dZ_l^T A_{l-1}; dZ_{l-1} = (dZ_l W_l) * [A_{l-1} > 0]
        dW, db = _wb(grad, off, sizes, layer)
        _bias_grad(dZ, db)
        A_prev = _act(buf, sizes, layer - 1, m)
        partial = _partials(tiles, n_tiles, dW.shape[0], dW.shape[1])
        _dense_grad_tiles(dZ, A_prev, partial)
        _reduce_tiles(partial, False, one, dW)
        _dense_backprop(dZ, _wb(theta, off, sizes, layer)[0], A_prev)
        dZ = A_prev
    dW, db = _wb(grad, off, sizes, 1)  # dW_1 = dZ_1^T X / 255, from the nonzero pixels
    _bias_grad(dZ, db)
    partial = _partials(tiles, n_tiles, dW.shape[1], _block_width(dW.shape[0]))  # transposed
    parts = chunks(m, n_tiles, TILE)
    columns = pixel_columns(pixels, rows, parts[0], dW.shape[1], dW.dtype)
    _sparse_grad_tiles(dZ, columns, parts, partial)
    _reduce_tiles(partial, True, theta.dtype.type(PIXEL_SCALE), dW)
    return _mean(losses)


@njit(cache=True)
def _mean(losses):
    """The mean of ``losses``, added in order, so it does not depend on the thread count."""
    total = 0.0
    for i in range(losses.shape[0]):
        total += losses[i]
    return total / losses.shape[0]


@njit(cache=True)
def narrow_backward(theta, off, sizes, pixels, y, rows, buf, grad, losses, correct):
    """The gradients of a network ``n_in -> n_h -> K`` with ``n_h, K <= 16`` (see
    :func:`is_narrow`), as :func:`layered_backward`'s, bit for bit, but in one pass over the
    images (:func:`_narrow_net_tiles`), then the tiles' partial gradients added in tile order.
    Returns the mean loss."""
    m = rows.shape[0]
    n_tiles = grad_tiles(m)
    one, scale = theta.dtype.type(1.0), theta.dtype.type(PIXEL_SCALE)
    (W1, b1), (W2, b2) = _wb(theta, off, sizes, 1), _wb(theta, off, sizes, 2)
    (dW1, db1), (dW2, db2) = _wb(grad, off, sizes, 1), _wb(grad, off, sizes, 2)
    tiles = _aligned(buf[_act_size(sizes, m) :])
    parts = (
        _partials(tiles, n_tiles, W1.shape[1], LANES),  # X^T dH per tile
        np.empty((n_tiles, W2.shape[1], LANES), theta.dtype),  # H_hat^T dO per tile
        np.empty((n_tiles, 2, LANES), theta.dtype),  # sums of dH and dO per tile
    )
    W1T, W2T, W2p = _transposed(W1, LANES), _transposed(W2, LANES), _padded(W2, LANES, 0.0)
    b1p = _padded_bias(b1, 0.0)
    b2p = _padded_bias(b2, -np.inf)  # exp(-inf) = 0: no padding class
    inv_m = theta.dtype.type(1.0 / m)
    _narrow_net_tiles(
        pixels, rows, y, scale, W1T, b1p, W2T, W2p, b2p, inv_m, losses, correct, parts
    )
    _reduce_tiles(parts[0], True, scale, dW1)
    _reduce_tiles(parts[1], True, one, dW2)
    for layer, db in ((0, db1), (1, db2)):
        for j in range(db.shape[0]):
            s = parts[2][0, layer, j]
            for t in range(1, n_tiles):
                s += parts[2][t, layer, j]
            db[j] = s
    return _mean(losses)


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


@njit(cache=True)
def train_epoch(
    theta,
    off,
    sizes,
    pixels,
    y,
    order,
    batch_size,
    buf,
    grad,
    velocity,
    alpha,
    momentum,
    decay,
    losses,
    correct,
):
    """One epoch of mini-batch SGD over images ``order`` in batches of ``batch_size``
    (:func:`update` with ``alpha``, ``momentum`` and ``decay`` after each).

    Returns ``(mean loss, accuracy, batches done)`` over the batches seen (measured before each
    batch's update).  Stops early, without updating, at the first batch whose loss or updated
    parameters would not be finite; then ``batches done`` is smaller than the number of batches
    and the loss is that batch's.
    """
    n = order.shape[0]
    narrow = sizes.shape[0] == 3 and max(sizes[1], sizes[2]) <= LANES  # is_narrow(sizes)
    total_loss = 0.0
    hits = 0
    done = 0
    for start in range(0, n, batch_size):
        rows = order[start : min(n, start + batch_size)]
        m = rows.shape[0]
        args = (theta, off, sizes, pixels, y, rows, buf, grad, losses[:m], correct[:m])
        loss = narrow_backward(*args) if narrow else layered_backward(*args)
        if not (np.isfinite(loss) and update(theta, grad, velocity, alpha, momentum, decay)):
            return loss, 0.0, done
        total_loss += loss * m
        for i in range(m):
            hits += correct[i]
        done += 1
    return total_loss / n, hits / n, done


def predict_proba(theta, off, sizes, pixels, rows, buf):
    """Softmax probabilities ``(m, n_L)`` of images ``rows``: a view of ``buf``, valid until
    ``buf`` is used again."""
    Z = forward(theta, off, sizes, pixels, rows, buf)
    unused = np.empty(0, theta.dtype)  # no labels: no losses, no hits
    _softmax_xent(Z, NO_LABELS, rows, theta.dtype.type(1.0), unused, unused == 0)
    return Z


def evaluate(theta, off, sizes, pixels, y, rows, buf, losses, correct) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on images ``rows`` without computing gradients;
    ``losses`` and ``correct`` ``(m,)`` get them image by image."""
    Z = forward(theta, off, sizes, pixels, rows, buf)
    m = rows.shape[0]
    _softmax_xent(Z, y, rows, theta.dtype.type(1.0 / m), losses, correct)
    return _mean(losses), np.count_nonzero(correct) / m


NO_LABELS = np.empty(0, np.int64)


# ---------------------------------------------------------------- narrow networks, one pass

@njit(cache=True)
def _image_forward(pixels, image, WT, scale, bp, Z, r):
    """``Z[r] = ReLU(W x / 255 + b)`` ``(width,)`` for image ``image`` (its nonzero ``pixels``),
    ``WT`` ``(n_in, width)``, ``bp`` ``(1, width)``, ``width`` whole blocks of 64: 64 units at a
    time (:func:`_pixels_times_block`)."""
    for j in range(0, WT.shape[1], BLOCK):
        s = _pixels_times_block(pixels, image, WT, j)
        for u in range(4):
            vstore(Z, r, j + u * LANES, vrelu(_first_layer(s[u], scale, bp, j + u * LANES)))


@njit(cache=True)
def _transpose(A, r0, n, c0, n_cols, B):
    """``B[:n_cols, :n] = A[r0:r0 + n, c0:c0 + n_cols].T``, and ``B[:n_cols, n:]`` zero."""
    zero = B.dtype.type(0)
    for k in range(n_cols):
        for r in range(n):
            B[k, r] = A[r0 + r, c0 + k]
        for r in range(n, B.shape[1]):
            B[k, r] = zero


@njit(cache=True)
def _heads(H, n, W2, b2, labels, inv_m, S, D):
    """One network's steps from ``H_hat`` to ``dH`` for ``n`` images at once, 16 images to a
    :class:`~mnistnn.simd.Vec16` (lane ``r`` of every vector is image ``r``): the same arithmetic,
    entry by entry, as one image at a time in :func:`_narrow_head`.

    ``H`` ``(16, TILE)``: row ``u`` the images' hidden unit ``u``; ``W2`` ``(K, n_h)``, ``b2``
    ``(K,)``; ``labels`` ``(1, TILE)`` as floats.  Fills ``D`` ``(16, TILE)`` with ``dO`` (rows
    ``0..K-1``), ``S`` ``(56, TILE)`` with ``dH`` (rows ``0..n_h-1``), ``sum(exp(O - max O))`` (row
    48), ``O[label] - max O`` (row 49) and ``argmax O`` (row 50); rows 16..47 are scratch.
    """
    K, n_h = W2.shape
    dt = W2.dtype.type
    for c0 in range(0, n, LANES):
        lab = vload(labels, 0, c0)
        for c in range(K):  # O = W2 H_hat + b2                                        (K,)
            o = vzeros(S)
            for u in range(n_h):
                o = vfma(W2[c, u], vload(H, u, c0), o)
            vstore(S, 16 + c, c0, vadd(o, vsplat(b2[c])))
        omax = vload(S, 16, c0)
        for c in range(1, K):
            omax = vmaxnum(omax, vload(S, 16 + c, c0))
        arg, o_label = vsplat(dt(LANES)), vzeros(S)
        for c in range(K - 1, -1, -1):  # the first class with the largest logit; O[label]
            o = vload(S, 16 + c, c0)
            arg = vwhere(o, omax, vsplat(dt(c)), arg)
            o_label = vwhere(lab, vsplat(dt(c)), o, o_label)
        vstore(S, 49, c0, vsub(o_label, omax))
        vstore(S, 50, c0, arg)
        for c in range(LANES):  # exp(O - max O), then its sum in vsum's order
            e = vexp(vsub(vload(S, 16 + c, c0), omax)) if c < K else vzeros(S)
            vstore(S, 32 + c, c0, e)
            vstore(S, 16 + c, c0, e)
        half = LANES // 2
        while half:
            for c in range(half):
                vstore(S, 32 + c, c0, vadd(vload(S, 32 + c, c0), vload(S, 32 + c + half, c0)))
            half //= 2
        total = vload(S, 32, c0)
        vstore(S, 48, c0, total)
        scale = vdiv(vsplat(inv_m), total)
        for c in range(K):  # dO = (softmax(O) - onehot(y)) / m                          (K,)
            d = vtimes(scale, vload(S, 16 + c, c0))
            vstore(D, c, c0, vwhere(lab, vsplat(dt(c)), vsub(d, vsplat(inv_m)), d))
        for u in range(n_h):  # dH = (W2^T dO) * ReLU'(H)                               (n_h,)
            s = vzeros(S)
            for c in range(K):
                s = vfma(W2[c, u], vload(D, c, c0), s)
            vstore(S, u, c0, vgate(vload(H, u, c0), s))


@njit(parallel=True, cache=True)
def _narrow_nets_tiles(
    pixels, columns, chunks, rows, y, scale, W1T, b1p, n_h, W2, b2, inv_m, losses, correct, parts
):
    """The whole forward and backward pass of ``G`` networks ``n_in -> n_h (ReLU) -> K
    (softmax)``, ``n_h, K <= 16`` (the write-up's 784 -> 10 -> 10), on the same images, in one
    pass over them: a chunk of up to ``CHUNK`` images at a time (:func:`chunks`) goes forward and
    backward through every network while its activations and deltas stay in the cache.  A
    network gets the same bits whatever ``G`` is (tested): only the pixels are read once for
    all the networks.

    Their first layers side by side are one layer of ``G * n_h`` units: ``W1T`` ``(n_in,
    width)`` holds network ``q``'s ``W1.T`` in columns ``q * n_h ...`` (zero beyond ``G * n_h``;
    ``width`` 16 or whole blocks of 64), ``b1p`` ``(1, width)`` its biases; an image goes through it
    in :func:`_image_forward`.  Then each network takes the chunk's steps
    to ``dH`` 16 images at a time (:func:`_heads`, with ``W2[q]`` ``(K, n_h)``, ``b2[q]``), and
    ``dH`` is added to ``X^T dH`` image by image (one network of up to 16 units), or one pixel
    row at a time over ``columns`` (:func:`pixel_columns`, several networks).

    Tile ``t`` sets ``parts[0][t]`` ``(n_in, width)`` to ``X^T dH`` (unscaled pixels),
    ``parts[1][q, t]`` ``(n_h, 16)`` to network ``q``'s ``H_hat^T dO``, ``parts[2][t, 0]`` to the
    sum of ``dH`` ``(width,)`` and ``parts[2][t, 1 + q, :16]`` to network ``q``'s sum of ``dO``;
    ``losses``, ``correct`` ``(G, m)`` as :func:`_softmax_xent`'s, per network.
    """
    chunk_first, tile_chunk = chunks
    p1, p2, pb = parts
    n_tiles, n_in, width = p1.shape
    G = losses.shape[0]
    K = W2.shape[1]
    dt = W1T.dtype
    for t in prange(n_tiles):
        acc, sums = p1[t], pb[t]
        for r in range(G + 1):
            for j in range(0, width, LANES):
                vstore(sums, r, j, vzeros(W1T))
        for q in range(G):
            for k in range(n_h):
                vstore(p2[q, t], k, 0, vzeros(W1T))
        Z = np.empty((CHUNK, width), dt)  # the chunk's H_hat
        g = np.zeros((CHUNK, width), dt)  # the chunk's dH
        H, D = np.empty((LANES, TILE), dt), np.empty((LANES, TILE), dt)
        S = np.empty((56, TILE), dt)
        d_o = np.zeros((TILE, LANES), dt)  # dO image by image
        labels = np.empty((1, TILE), dt)
        for c in range(tile_chunk[t], tile_chunk[t + 1]):
            first, n = chunk_first[c], chunk_first[c + 1] - chunk_first[c]
            for r in range(n):  # H_hat = ReLU(W1 x / 255 + b1)
                _image_forward(pixels, rows[first + r], W1T, scale, b1p, Z, r)
            for r0 in range(0, n, TILE):  # each network's steps to dH, 64 images at a time
                nr = min(TILE, n - r0)
                for r in range(nr):
                    labels[0, r] = y[rows[first + r0 + r]]
                for q in range(G):
                    _transpose(Z, r0, nr, q * n_h, n_h, H)
                    _heads(H, nr, W2[q], b2[q], labels, inv_m, S, D)
                    for r in range(nr):
                        i = first + r0 + r
                        losses[q, i] = np.log(S[48, r]) - S[49, r]  # logsumexp(O) - O[y]
                        correct[q, i] = S[50, r] == labels[0, r]
                        for u in range(n_h):
                            g[r0 + r, q * n_h + u] = S[u, r]
                        for k in range(K):
                            d_o[r, k] = D[k, r]
                    dw2 = p2[q, t]
                    for r in range(nr):  # dW2 += H_hat dO^T; the sum of dO
                        do = vload(d_o, r, 0)
                        for k in range(n_h):
                            vstore(dw2, k, 0, vfma(H[k, r], do, vload(dw2, k, 0)))
                        vstore(sums, 1 + q, 0, vadd(vload(sums, 1 + q, 0), do))
            for r in range(n):
                for j in range(0, width, LANES):
                    vstore(sums, 0, j, vadd(vload(sums, 0, j), vload(g, r, j)))
            _add_chunk_terms(acc, g, columns, c, c == tile_chunk[t])  # dW1 += X^T dH


@njit(cache=True)
def narrow_nets_backward(
    thetas, off, sizes, pixels, columns, chunks, y, rows, grads, losses, correct
):
    """:func:`backward` of ``G`` networks ``n_in -> n_h -> K`` (``n_h, K <= 16``) with the same
    layer sizes on the same images ``rows``, in one pass (:func:`_narrow_nets_tiles`).

    ``thetas`` and ``grads`` ``(G, n_params)``, ``losses`` and ``correct`` ``(G, m)``;
    ``pixels`` the images' :func:`sparse_pixels`, ``columns`` their :func:`pixel_columns` in the
    :func:`chunks` of ``grad_tiles(m)`` tiles (not read if ``G * n_h <= 16``).  Network ``q``
    gets the same bits in ``grads[q]``, ``losses[q]`` and ``correct[q]`` whatever ``G`` is.
    Returns the mean losses ``(G,)``.
    """
    G, m = losses.shape
    n_in, n_h, K = sizes[0], sizes[1], sizes[2]
    n_tiles = grad_tiles(m)
    dtype = thetas.dtype
    one, scale = dtype.type(1.0), dtype.type(PIXEL_SCALE)
    width = _block_width(G * n_h)
    W1T = _aligned_zeros(n_in, width, dtype)
    b1p = np.zeros((1, width), dtype)
    W2 = np.empty((G, K, n_h), dtype)
    b2 = np.empty((G, K), dtype)
    for q in range(G):
        (W1, b1), (W2q, b2q) = _wb(thetas[q], off, sizes, 1), _wb(thetas[q], off, sizes, 2)
        W1T[:, q * n_h : (q + 1) * n_h] = W1.T
        b1p[0, q * n_h : (q + 1) * n_h] = b1
        W2[q] = W2q
        b2[q] = b2q
    parts = (
        _aligned_zeros(n_tiles * n_in, width, dtype).reshape((n_tiles, n_in, width)),
        np.empty((G, n_tiles, n_h, LANES), dtype),
        np.empty((n_tiles, G + 1, width), dtype),
    )
    _narrow_nets_tiles(
        pixels, columns, chunks, rows, y, scale, W1T, b1p, n_h, W2, b2, dtype.type(1.0 / m),
        losses, correct, parts,
    )
    means = np.empty(G)
    for q in range(G):
        (dW1, db1), (dW2, db2) = _wb(grads[q], off, sizes, 1), _wb(grads[q], off, sizes, 2)
        _reduce_tiles(parts[0][:, :, q * n_h : (q + 1) * n_h], True, scale, dW1)
        _reduce_tiles(parts[1][q], True, one, dW2)
        for db, row, start in ((db1, 0, q * n_h), (db2, 1 + q, 0)):
            for j in range(db.shape[0]):
                s = parts[2][0, row, start + j]
                for t in range(1, n_tiles):
                    s += parts[2][t, row, start + j]
                db[j] = s
        means[q] = _mean(losses[q])
    return means
