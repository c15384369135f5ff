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
    vexp,
    vfind,
    vfma,
    vgate,
    vlane,
    vload,
    vloadn,
    vmax,
    vmul,
    vrelu,
    vsplat,
    vstore,
    vstoren,
    vsubat,
    vsum,
    vzeros,
)

__all__ = [
    "layout",
    "work_size",
    "grad_tiles",
    "sparse_pixels",
    "uses_sparse_pixels",
    "forward",
    "backward",
    "predict_proba",
    "evaluate",
    "full_batch_step",
    "train_epoch",
]

TILE = 64  # samples per parallel work item
MAX_GRAD_TILES = 16  # partial weight gradients per batch (fixed: independent of threads)
PIXEL_SCALE = 1.0 / 255.0
ALIGN_BYTES = 64  # a cache line
GROUP = 2  # images whose small steps overlap in the one-pass kernel (_narrow_net_tiles)
ALIGN = 16  # elements of slack that let an array start on a cache line (float32 or float64)
SPARSE_MIN_WIDTH = 64  # wider first layers than LANES work on the nonzero pixels from this width
BLOCK = 4 * LANES  # units of a wide sparse first layer summed side by side (four Vec16)
# LLVM may reorder sums (to vectorize dot products) and ignore the sign of zero, but not fuse
# a*b + c into one FMA on its own.  A parallel kernel's loop body is optimized once on its own and
# once more inside the kernel; the compiling process runs the first copy, Numba's cache keeps the
# second.  With fusing left to LLVM the two copies fuse differently and round differently (with
# "fastmath=True" a process that compiled the kernels trained to other weights than one that
# loaded them).  The multiply-adds that matter are fused on purpose instead (simd.fma, vfma).
FASTMATH = {"reassoc", "nsz"}

numba.get_num_threads()  # starts the threading layer, which the cached drivers need (see above)


def uses_sparse_pixels(sizes) -> bool:
    """Whether the first layer works on the nonzero pixels only (:func:`sparse_pixels`).

    Yes for a narrow layer (at most ``LANES`` units: one vector multiply-add per nonzero pixel)
    and for a wide one (``SPARSE_MIN_WIDTH`` units or more: hundreds of operations per pixel).
    In between, reading every pixel four images at a time is quicker than looping over units.
    """
    return int(sizes[1]) <= LANES or int(sizes[1]) >= SPARSE_MIN_WIDTH


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
    widths = np.maximum(sizes[1:], LANES)  # a narrow layer's partials are padded to LANES
    if sizes[1] >= SPARSE_MIN_WIDTH:  # a wide first layer's, to whole blocks
        widths[0] = _block_width(sizes[1])
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
def _padded(W, width, fill=0.0):
    """``W`` ``(n_out, n_in)`` as a new array ``(n_out, width)``, ``width >= n_in``, padded with
    columns of ``fill``."""
    n_out, n_in = W.shape
    Wp = _aligned_zeros(n_out, width, W.dtype)
    Wp[:, :n_in] = W
    Wp[:, n_in:] = fill
    return Wp


@njit(cache=True)
def _padded_bias(b, fill=0.0):
    """The bias ``b`` ``(n,)``, ``n <= 16``, as one row ``(1, 16)`` padded with ``fill``, for
    :func:`~mnistnn.simd.vload`."""
    return _padded(b.reshape((1, -1)), LANES, fill)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _sparse_forward(pixels, rows, scale, WT, b, relu, Z):
    """Wide first layer: ``Z[i] = act(scale * W @ x_i + b)``, ``x_i`` the pixels of image
    ``rows[i]``, summed over its nonzero pixels only.  ``WT`` ``(n_in, width)``: ``W.T`` padded
    with zero columns to whole blocks (:func:`_block_width`; the weights *from* one pixel are
    contiguous); ``Z`` ``(m, n_out)``.  A block of 64 units is four :class:`~mnistnn.simd.Vec16`
    sums kept in registers over the image's pixels.
    """
    m, n_out = Z.shape
    width = WT.shape[1]
    bp = _padded(b.reshape((1, -1)), width)
    for t in prange((m + TILE - 1) // TILE):
        z = np.empty((1, width), WT.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            for j in range(0, width, BLOCK):
                s0, s1, s2, s3 = _pixels_times_block(pixels, rows[i], WT, j)
                _store_units(z, j, _first_layer(s0, scale, bp, j), relu)
                _store_units(z, j + LANES, _first_layer(s1, scale, bp, j + LANES), relu)
                _store_units(z, j + 2 * LANES, _first_layer(s2, scale, bp, j + 2 * LANES), relu)
                _store_units(z, j + 3 * LANES, _first_layer(s3, scale, bp, j + 3 * LANES), relu)
            for j in range(n_out):
                Z[i, j] = z[0, j]


@njit(cache=True, inline="always")
def _store_units(z, j, out, relu):
    """``z[0, j:j+16] = ReLU(out)`` (``out`` itself if not ``relu``)."""
    vstore(z, 0, j, vrelu(out) if relu else out)


@njit(cache=True, inline="always")
def _pixels_times_block(pixels, image, WT, j):
    """``x @ WT[:, j:j+64]`` as four :class:`~mnistnn.simd.Vec16`, ``x`` the nonzero pixels of
    image ``image`` (unscaled), each lane summed over the pixels in order."""
    indptr, indices, values = pixels
    lo, hi = indptr[image], indptr[image + 1]
    cols, vals = indices[lo:hi], values[lo:hi]  # from 0: no negative-index checks
    s0, s1, s2, s3 = vzeros(WT), vzeros(WT), vzeros(WT), vzeros(WT)
    for p in range(hi - lo):
        v, k = WT.dtype.type(vals[p]), cols[p]
        s0 = vfma(v, vload(WT, k, j), s0)
        s1 = vfma(v, vload(WT, k, j + LANES), s1)
        s2 = vfma(v, vload(WT, k, j + 2 * LANES), s2)
        s3 = vfma(v, vload(WT, k, j + 3 * LANES), s3)
    return s0, s1, s2, s3


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _narrow_forward(pixels, rows, scale, WT, b, relu, Z):
    """First layer of at most 16 units: ``Z[i] = act(scale * W @ x_i + b)`` over the nonzero
    pixels of image ``rows[i]``, all units at once in a :class:`~mnistnn.simd.Vec16`.
    ``WT`` ``(n_in, 16)``: ``W.T`` padded with zero columns; ``Z`` ``(m, n_out)``.
    """
    m = rows.shape[0]
    n_out = Z.shape[1]
    bp = _padded_bias(b)
    for t in prange((m + TILE - 1) // TILE):
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            z = _first_layer(_pixels_times(pixels, rows[i], WT), scale, bp)
            vstoren(Z, i, n_out, vrelu(z) if relu else z)


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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _narrow_grad_tiles(dZ, pixels, rows, partial):
    """First layer of at most 16 units: tile ``t`` of the ``partial.shape[0]`` sample tiles sets
    ``partial[t]`` ``(n_in, 16)`` to ``X[tile]^T dZ[tile]`` (columns ``n_out..15`` zero), one
    :class:`~mnistnn.simd.Vec16` multiply-add per nonzero pixel."""
    m, n_out = dZ.shape
    n_tiles, n_in = partial.shape[0], partial.shape[1]
    zero = partial.dtype.type(0)
    for t in prange(n_tiles):
        acc = partial[t]
        for k in range(n_in):
            vstore(acc, k, 0, vzeros(acc))
        for i in range(t * m // n_tiles, (t + 1) * m // n_tiles):
            g = vloadn(dZ, i, n_out, zero)
            if vany(g):  # else every unit is inactive (ReLU): nothing to add
                _add_pixels_times(acc, pixels, rows[i], g)


@njit(cache=True)
def _row_times(a, i, M):
    """``a[i, :n] @ M`` as a :class:`~mnistnn.simd.Vec16`: the first ``n`` entries of row ``i`` of
    ``a`` times ``M`` ``(n, 16)``, one vector multiply-add per entry."""
    s = vzeros(M)
    for k in range(M.shape[0]):
        s = vfma(a[i, k], vload(M, k, 0), s)
    return s


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _narrow_dense_forward(A, WT, b, relu, Z):
    """A later layer of at most 16 units: ``Z[i] = act(W @ A[i] + b)``, all units at once per
    input in a :class:`~mnistnn.simd.Vec16`.  ``A`` ``(m, n_in)`` activations, ``WT``
    ``(n_in, 16)``: ``W.T`` padded with zero columns; ``Z`` ``(m, n_out)``."""
    m, n_out = Z.shape
    zero = WT.dtype.type(0)
    for t in prange((m + TILE - 1) // TILE):
        z = np.empty((1, LANES), WT.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            vstore(z, 0, 0, _row_times(A, i, WT))
            for j in range(n_out):
                out = z[0, j] + b[j]
                Z[i, j] = max(out, zero) if relu else out


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _narrow_dense_grad_tiles(dZ, A, partial):
    """A later layer of at most 16 units: tile ``t`` of the ``partial.shape[0]`` sample tiles
    sets ``partial[t]`` ``(n_in, 16)`` to ``A[tile]^T dZ[tile]`` (columns ``n_out..15`` zero)."""
    m, n_out = dZ.shape
    n_tiles, n_in = partial.shape[0], partial.shape[1]
    for t in prange(n_tiles):
        acc = partial[t]
        for k in range(n_in):
            vstore(acc, k, 0, vzeros(acc))
        g = np.zeros((1, LANES), partial.dtype)
        for i in range(t * m // n_tiles, (t + 1) * m // n_tiles):
            for j in range(n_out):
                g[0, j] = dZ[i, j]
            delta = vload(g, 0, 0)
            for k in range(n_in):
                vstore(acc, k, 0, vfma(A[i, k], delta, vload(acc, k, 0)))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _narrow_backprop(dZ, Wp, A_prev):
    """Overwrite ``A_prev`` ``(m, n_in)``, ``n_in <= 16``, with ``dZ_prev = (dZ W) * [A_prev > 0]``;
    ``Wp`` ``(n_out, 16)``: ``W`` padded with zero columns."""
    m, n_in = A_prev.shape
    zero = Wp.dtype.type(0)
    for t in prange((m + TILE - 1) // TILE):
        row = np.empty((1, LANES), Wp.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            vstore(row, 0, 0, _row_times(dZ, i, Wp))  # dZ[i] @ W, padded
            for k in range(n_in):
                A_prev[i, k] = row[0, k] if A_prev[i, k] > zero else zero


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _sparse_grad_tiles(dZ, pixels, rows, partial):
    """Wide first layer: tile ``t`` of the ``partial.shape[0]`` sample tiles sets ``partial[t]``
    ``(n_in, width)`` (transposed, so one pixel's row is contiguous; padded to whole blocks, see
    :func:`_block_width`) to ``X[tile]^T dZ[tile]``, summed over the nonzero pixels only.

    The tile's images go in chunks of ``TILE``.  A chunk's nonzero pixels are sorted by column
    (:func:`_pixels_by_column`), and then each row ``k`` of the sum gets all its terms (the
    chunk's images with pixel ``k``, in image order) while 64 units of it stay in four
    :class:`~mnistnn.simd.Vec16`: one load and one store of the row per chunk, not per image.
    """
    m, n_out = dZ.shape
    n_tiles, n_in, width = partial.shape
    for t in prange(n_tiles):
        acc = partial[t]
        lo, hi = t * m // n_tiles, (t + 1) * m // n_tiles
        g = np.zeros((TILE, width), partial.dtype)  # the chunk's deltas, padded with zeros
        for first in range(lo, hi, TILE):
            stop = min(hi, first + TILE)
            for i in range(first, stop):
                for j in range(n_out):
                    g[i - first, j] = dZ[i, j]
            starts, image, value = _pixels_by_column(pixels, rows[first:stop], n_in, acc.dtype)
            for k in range(n_in):
                if first > lo and starts[k] == starts[k + 1]:
                    continue  # no term in this chunk: the row stays as it is
                for j in range(0, width, BLOCK):
                    _add_column_terms(acc, k, j, g, image, value, starts, first == lo)


@njit(cache=True)
def _pixels_by_column(pixels, rows, n_in, dtype):
    """The nonzero pixels of images ``rows`` grouped by column: ``(starts, image, value)``, where
    column ``k``'s pixels are at ``starts[k]:starts[k+1]`` of ``image`` (positions in ``rows``,
    ascending) and ``value`` (unscaled, of ``dtype``)."""
    indptr, indices, values = pixels
    starts = np.zeros(n_in + 1, np.int64)
    for r in range(rows.shape[0]):
        for q in range(indptr[rows[r]], indptr[rows[r] + 1]):
            starts[indices[q] + 1] += 1
    for k in range(n_in):
        starts[k + 1] += starts[k]
    image = np.empty(starts[n_in], np.int64)
    value = np.empty(starts[n_in], dtype)
    free = starts[:n_in].copy()  # the next free place of each column
    for r in range(rows.shape[0]):
        for q in range(indptr[rows[r]], indptr[rows[r] + 1]):
            k = indices[q]
            image[free[k]] = r
            value[free[k]] = values[q]
            free[k] += 1
    return starts, image, value


@njit(cache=True, inline="always")
def _add_column_terms(acc, k, j, g, image, value, starts, fresh):
    """``acc[k, j:j+64] += sum_e value[e] * g[image[e], j:j+64]`` over the terms ``e`` of column
    ``k`` (see :func:`_pixels_by_column`), added one after another; from zero if ``fresh``."""
    if fresh:
        s0, s1, s2, s3 = vzeros(acc), vzeros(acc), vzeros(acc), vzeros(acc)
    else:
        s0, s1 = vload(acc, k, j), vload(acc, k, j + LANES)
        s2, s3 = vload(acc, k, j + 2 * LANES), vload(acc, k, j + 3 * LANES)
    for e in range(starts[k], starts[k + 1]):
        v, r = value[e], image[e]
        s0 = vfma(v, vload(g, r, j), s0)
        s1 = vfma(v, vload(g, r, j + LANES), s1)
        s2 = vfma(v, vload(g, r, j + 2 * LANES), s2)
        s3 = vfma(v, vload(g, r, j + 3 * LANES), s3)
    vstore(acc, k, j, s0)
    vstore(acc, k, j + LANES, s1)
    vstore(acc, k, j + 2 * LANES, s2)
    vstore(acc, k, j + 3 * LANES, s3)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _dense_forward(A, rows, scale, W, b, relu, Z):
    """``Z[i] = act(scale * W @ A[rows[i]] + b)``; ``A`` ``(N, n_in)`` (uint8 pixels or float
    activations), ``W`` ``(n_out, n_in)``, ``Z`` ``(m, n_out)`` with ``m = len(rows)``.

    Two units times four samples at a time: six loads per eight multiply-adds.
    """
    m = rows.shape[0]
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    for t in prange((m + TILE - 1) // TILE):
        x = np.empty((4, n_in), W.dtype)  # four samples, converted once
        s = np.empty((n_out, 4), W.dtype)  # their dot products with every unit
        for i0 in range(t * TILE, min(m, (t + 1) * TILE), 4):
            nb = min(4, m - i0)
            for r in range(4):
                src = rows[i0 + min(r, nb - 1)]
                for k in range(n_in):
                    x[r, k] = A[src, k]
            for j in range(0, n_out, 2):
                u = min(j + 1, n_out - 1)  # an odd n_out computes its last unit twice
                s0 = s1 = s2 = s3 = zero
                u0 = u1 = u2 = u3 = zero
                for k in range(n_in):
                    x0, x1, x2, x3 = x[0, k], x[1, k], x[2, k], x[3, k]
                    w, v = W[j, k], W[u, k]
                    s0 = fma(w, x0, s0)
                    s1 = fma(w, x1, s1)
                    s2 = fma(w, x2, s2)
                    s3 = fma(w, x3, s3)
                    u0 = fma(v, x0, u0)
                    u1 = fma(v, x1, u1)
                    u2 = fma(v, x2, u2)
                    u3 = fma(v, x3, u3)
                s[j, 0], s[j, 1], s[j, 2], s[j, 3] = s0, s1, s2, s3
                s[u, 0], s[u, 1], s[u, 2], s[u, 3] = u0, u1, u2, u3
            for r in range(nb):
                for j in range(n_out):
                    z = s[j, r] * scale + b[j]
                    Z[i0 + r, j] = max(z, zero) if relu else z


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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
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
                e, total, zmax, arg = _softmax_parts(vloadn(Z, i, K, low))
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
                vstoren(Z, i, K, vload(out, i - first, 0))
            if labelled:
                losses[i] = np.log(totals[i - first]) - losses[i]  # logsumexp(Z[i]) - Z[i, y]


@njit(cache=True, inline="always")
def _narrow_image(w1x, label, scale, b1p, W2T, W2p, b2p, inv_m, h, o, r, dw2):
    """One image of :func:`_narrow_net_tiles`, from ``W1 x`` (its unscaled pixels times ``W1``, a
    :class:`~mnistnn.simd.Vec16`) to ``dH``; adds ``H_hat dO^T`` to ``dw2`` ``(n_h, 16)``.

    ``b1p`` ``(1, 16)``: ``b1`` padded with zeros; ``b2p``: ``b2`` padded with ``-inf`` (so the
    padding lanes of ``O`` are ``-inf``, whose ``exp`` is 0).  Row ``r`` of the scratch arrays
    ``h`` and ``o`` ``(GROUP, 16)`` is this image's.  Returns ``(dH, dO, sum(exp(O - max O)),
    O[label] - max O, argmax O == label)``.
    """
    h_hat = vrelu(_first_layer(w1x, scale, b1p))  # ReLU(W1 x / 255 + b1)                (n_h,)
    vstore(h, r, 0, h_hat)
    out = vadd(_row_times(h, r, W2T), vload(b2p, 0, 0))  # O = W2 H_hat + b2              (K,)
    e, total, omax, arg = _softmax_parts(out)
    d_o = _softmax_delta(e, total, label, inv_m)  # dO = (softmax(O) - onehot(y)) / m     (K,)
    vstore(o, r, 0, d_o)
    for k in range(dw2.shape[0]):  # dW2 += H_hat dO^T, one row of dW2^T per hidden unit
        vstore(dw2, k, 0, vfma(h[r, k], d_o, vload(dw2, k, 0)))
    d_h = vgate(h_hat, _row_times(o, r, W2p))  # dH = (W2^T dO) * ReLU'(H)               (n_h,)
    return d_h, d_o, total, vlane(out, label) - omax, arg == label


@njit(parallel=True, fastmath=FASTMATH, cache=True)
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
    ``(K, 16)``: ``W2`` padded; ``b1p``, ``b2p`` as in :func:`_narrow_image`.  Tile ``t`` of the
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
                dh, do, totals[i], losses[i], correct[i] = _narrow_image(
                    vload(w1x, r, 0), label, scale, b1p, W2T, W2p, b2p, inv_m, h, o, r, dw2
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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _dense_grad_tiles(dZ, A, rows, scale, partial):
    """Tile ``t`` of the ``partial.shape[0]`` sample tiles sets ``partial[t]`` ``(n_out, n_in)``
    to ``scale * dZ[tile]^T A[rows[tile]]``.

    It converts four samples at a time once and adds them to two units' rows at a time: six loads
    per eight multiply-adds.
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
        g = np.zeros((n_out + 1, 4), partial.dtype)  # scaled deltas; row n_out stays zero
        spare = np.zeros(n_in, partial.dtype)  # the last unit's partner when n_out is odd
        lo = t * m // n_tiles
        hi = (t + 1) * m // n_tiles
        for i0 in range(lo, hi, 4):
            nb = min(4, hi - i0)
            for r in range(4):
                src = rows[i0 + min(r, nb - 1)]
                for k in range(n_in):
                    x[r, k] = A[src, k]
                for j in range(n_out):
                    g[j, r] = dZ[i0 + r, j] * scale if r < nb else zero
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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _dense_backprop(dZ, W, A_prev):
    """Overwrite ``A_prev`` ``(m, n_in)`` with ``dZ_prev = (dZ W) * [A_prev > 0]``.

    64 inputs of a sample at a time stay in four :class:`~mnistnn.simd.Vec16` while the rows of
    ``W`` (padded with zero columns to whole blocks) are added in, each times its delta.
    """
    m, n_out = dZ.shape
    n_in = W.shape[1]
    zero = W.dtype.type(0)
    Wp = _padded(W, _block_width(n_in))
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
                for u, s in enumerate((s0, s1, s2, s3)):
                    vstore(row, 0, k + u * LANES, s)
            for k in range(n_in):
                A_prev[i, k] = row[0, k] if A_prev[i, k] > zero else zero


@njit(cache=True)
def forward(theta, off, sizes, X, pixels, rows, buf):
    """Forward pass of images ``X[rows]``; returns the logits view ``(m, n_L)`` of ``buf``.

    ``X`` ``(N, n_0)`` raw pixels; ``pixels`` their :func:`sparse_pixels` form when
    :func:`uses_sparse_pixels` says so for this network, else ``None``; ``rows`` ``(m,)`` int64;
    ``buf`` a float work buffer of at least ``m * sum(sizes[1:])`` elements.  Hidden activations
    stay in ``buf`` for :func:`backward`.
    """
    m = rows.shape[0]
    L = sizes.shape[0] - 1
    identity = np.arange(m)
    scale = theta.dtype.type(PIXEL_SCALE)
    W, b = _wb(theta, off, sizes, 1)
    Z = _act(buf, sizes, 1, m)
    if pixels is None:
        _dense_forward(X, rows, scale, W, b, L > 1, Z)
    elif W.shape[0] <= LANES:
        _narrow_forward(pixels, rows, scale, _transposed(W, LANES), b, L > 1, Z)
    else:
        _sparse_forward(pixels, rows, scale, _transposed(W, _block_width(W.shape[0])), b, L > 1, Z)
    for layer in range(2, L + 1):
        W, b = _wb(theta, off, sizes, layer)
        A = Z
        Z = _act(buf, sizes, layer, m)
        if W.shape[0] <= LANES:
            _narrow_dense_forward(A, _transposed(W, LANES), b, layer < L, Z)
        else:
            _dense_forward(A, identity, theta.dtype.type(1.0), W, b, layer < L, Z)
    return Z


@njit(cache=True)
def backward(theta, off, sizes, X, pixels, y, rows, buf, grad, losses, correct, one_pass=True):
    """Forward and backward pass on images ``X[rows]``: fills ``grad`` (laid out as ``theta``)
    with the gradient of the mean cross-entropy, ``losses`` ``(m,)`` and ``correct`` ``(m,)``.

    Returns the mean loss.  ``buf`` (:func:`work_size` floats) is destroyed: activations are
    overwritten by their deltas, and the rest holds the partial weight gradients.  A network
    ``n_in -> (<= 16) -> (<= 16)`` on the nonzero pixels takes one pass per image
    (:func:`_narrow_net_backward`) unless ``one_pass`` is False (the tests compare both ways).
    """
    m = rows.shape[0]
    L = sizes.shape[0] - 1
    if one_pass and pixels is not None and L == 2 and max(sizes[1], sizes[2]) <= LANES:
        _narrow_net_backward(theta, off, sizes, pixels, y, rows, buf, grad, losses, correct)
        return _mean(losses)
    identity = np.arange(m)
    one = theta.dtype.type(1.0)
    dZ = forward(theta, off, sizes, X, pixels, rows, buf)
    _softmax_xent(dZ, y, rows, theta.dtype.type(1.0 / m), losses, correct)
    tiles = _aligned(buf[_act_size(sizes, m) :])  # the partial weight gradients of the tiles
    n_tiles = grad_tiles(m)
    for layer in range(L, 1, -1):  # dW_l = dZ_l^T A_{l-1}; dZ_{l-1} = (dZ_l W_l) * [A_{l-1} > 0]
        dW, db = _wb(grad, off, sizes, layer)
        _bias_grad(dZ, db)
        A_prev = _act(buf, sizes, layer - 1, m)
        if dW.shape[0] <= LANES:  # partials transposed and padded
            partial = _partials(tiles, n_tiles, dW.shape[1], LANES)
            _narrow_dense_grad_tiles(dZ, A_prev, partial)
            _reduce_tiles(partial, True, one, dW)
        else:
            partial = _partials(tiles, n_tiles, dW.shape[0], dW.shape[1])
            _dense_grad_tiles(dZ, A_prev, identity, one, partial)
            _reduce_tiles(partial, False, one, dW)
        W, _ = _wb(theta, off, sizes, layer)
        if W.shape[1] <= LANES:
            _narrow_backprop(dZ, _padded(W, LANES), A_prev)
        else:
            _dense_backprop(dZ, W, A_prev)
        dZ = A_prev
    dW, db = _wb(grad, off, sizes, 1)  # dW_1 = dZ_1^T X / 255, from the raw pixels
    _bias_grad(dZ, db)
    scale = theta.dtype.type(PIXEL_SCALE)
    if pixels is None:
        partial = _partials(tiles, n_tiles, dW.shape[0], dW.shape[1])
        _dense_grad_tiles(dZ, X, rows, scale, partial)
        _reduce_tiles(partial, False, one, dW)
    elif dW.shape[0] <= LANES:  # the nonzero pixels only; partials transposed and padded
        partial = _partials(tiles, n_tiles, dW.shape[1], LANES)
        _narrow_grad_tiles(dZ, pixels, rows, partial)
        _reduce_tiles(partial, True, scale, dW)
    else:  # the nonzero pixels only; the partials are stored transposed
        partial = _partials(tiles, n_tiles, dW.shape[1], _block_width(dW.shape[0]))
        _sparse_grad_tiles(dZ, pixels, rows, partial)
        _reduce_tiles(partial, True, scale, dW)
    return _mean(losses)


@njit(cache=True)
def _mean(losses):
    """The mean of ``losses``, added in order, so it does not depend on the thread count."""
    total = 0.0
    for i in range(losses.shape[0]):
        total += losses[i]
    return total / losses.shape[0]


@njit(cache=True)
def _narrow_net_backward(theta, off, sizes, pixels, y, rows, buf, grad, losses, correct):
    """:func:`backward` of a network ``n_in -> n_h -> K`` with ``n_h, K <= 16`` on the nonzero
    pixels, all in one pass over the images (:func:`_narrow_net_tiles`), then the tiles' partial
    gradients added in tile order."""
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
    W1T, W2T, W2p = _transposed(W1, LANES), _transposed(W2, LANES), _padded(W2, LANES)
    b1p = _padded_bias(b1)
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


@njit(parallel=True, cache=True)
def _update(theta, grad, velocity, alpha, momentum):
    """SGD with momentum: ``v = momentum * v - alpha * g``, ``theta += v`` (plain GD if 0).

    Returns False, changing nothing, if the step would make any parameter non-finite.
    """
    bad = 0
    for p in prange(theta.shape[0]):
        bad += not np.isfinite(theta[p] + (momentum * velocity[p] - alpha * grad[p]))
    if bad:
        return False
    for p in prange(theta.shape[0]):
        velocity[p] = momentum * velocity[p] - alpha * grad[p]
        theta[p] += velocity[p]
    return True


@njit(cache=True)
def full_batch_step(
    theta,
    off,
    sizes,
    X,
    pixels,
    y,
    rows,
    buf,
    grad,
    velocity,
    alpha,
    momentum,
    losses,
    correct,
):
    """One iteration of full-batch gradient descent (the write-up's ``W = W - alpha dW``).

    Returns ``(mean loss, accuracy, updated)``, loss and accuracy of the parameters *before* the
    update.  If the loss or the updated parameters would not be finite, the parameters are left
    untouched and ``updated`` is False, so the caller can stop with a clear error.
    """
    loss = backward(theta, off, sizes, X, pixels, y, rows, buf, grad, losses, correct)
    hits = 0
    for i in range(rows.shape[0]):
        hits += correct[i]
    updated = np.isfinite(loss) and _update(theta, grad, velocity, alpha, momentum)
    return loss, hits / rows.shape[0], updated


@njit(cache=True)
def train_epoch(
    theta,
    off,
    sizes,
    X,
    pixels,
    y,
    order,
    batch_size,
    buf,
    grad,
    velocity,
    alpha,
    momentum,
    losses,
    correct,
):
    """One epoch of mini-batch SGD over images ``order`` in batches of ``batch_size``.

    Returns ``(mean loss, accuracy, batches done)`` over the batches seen (measured before each
    batch's update).  Stops early, without updating, at the first batch whose loss or updated
    parameters would not be finite; then ``batches done`` is smaller than the number of batches
    and the loss is that batch's.
    """
    n = order.shape[0]
    total_loss = 0.0
    hits = 0
    done = 0
    for start in range(0, n, batch_size):
        rows = order[start : min(n, start + batch_size)]
        m = rows.shape[0]
        loss = backward(theta, off, sizes, X, pixels, y, rows, buf, grad, losses[:m], correct[:m])
        if not (np.isfinite(loss) and _update(theta, grad, velocity, alpha, momentum)):
            return loss, 0.0, done
        total_loss += loss * m
        for i in range(m):
            hits += correct[i]
        done += 1
    return total_loss / n, hits / n, done


@njit(cache=True)
def predict_proba(theta, off, sizes, X, pixels, rows, buf):
    """Softmax probabilities ``(m, n_L)`` of images ``rows``: a view of ``buf``, valid until
    ``buf`` is used again."""
    Z = forward(theta, off, sizes, X, pixels, rows, buf)
    unused = np.empty(0, theta.dtype)  # no labels: no losses, no hits
    _softmax_xent(Z, np.empty(0, np.int64), rows, theta.dtype.type(1.0), unused, unused == 0)
    return Z


@njit(cache=True)
def evaluate(theta, off, sizes, X, pixels, y, rows, buf, losses, correct):
    """Mean cross-entropy and accuracy on images ``rows`` without computing gradients."""
    Z = forward(theta, off, sizes, X, pixels, rows, buf)
    m = rows.shape[0]
    _softmax_xent(Z, y, rows, theta.dtype.type(1.0 / m), losses, correct)
    total = 0.0
    hits = 0
    for i in range(m):
        total += losses[i]
        hits += correct[i]
    return total / m, hits / m
