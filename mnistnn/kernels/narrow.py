"""Narrow networks in one pass: ``n_in -> n_h -> K`` with ``n_h, K <= 16``, the write-up's
784 -> 10 -> 10.  Each image (a chunk of images) goes forward and backward through the whole
network while its activations and deltas stay in the cache, instead of a pass per layer; the
same arithmetic as :mod:`~mnistnn.kernels.layers`, entry by entry (tested).  :func:`narrow_backward`
trains one network, :func:`narrow_nets_backward` several side by side on the same images.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cache  # noqa: F401  (Numba's cache locator, before any kernel below)
from .buffers import (
    _act_size,
    _aligned,
    _aligned_zeros,
    _block_width,
    _padded,
    _padded_bias,
    _partials,
    _transposed,
    _wb,
    grad_tiles,
)
from .pixels import (
    _add_chunk_terms,
    _add_pixels_times,
    _first_layer,
    _pixels_times,
    _pixels_times_block,
)
from .plan import BLOCK, CHUNK, GROUP, LANES, PIXEL_SCALE, TILE
from .reductions import _mean, _reduce_tiles
from .simd import (
    log,
    vadd,
    vany,
    vfma,
    vload,
    vrelu,
    vstore,
    vzeros,
)
from .softmax import _heads, _narrow_head, _transpose


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
            losses[i] = log(totals[i]) - losses[i]  # logsumexp(O) - O[y]


@njit(cache=True)
def narrow_backward(theta, off, sizes, pixels, y, rows, work):
    """The gradients of a network ``n_in -> n_h -> K`` with ``n_h, K <= 16``
    (:func:`~mnistnn.kernels.plan.is_narrow`) on images ``rows``, as
    :func:`~mnistnn.kernels.layers.layered_backward`'s, bit for bit, but in one pass over the
    images (:func:`_narrow_net_tiles`), then the tiles' partial gradients added in tile order.

    ``work``: a :class:`~mnistnn.kernels.plan.Workspace` for at least ``len(rows)`` images; its
    ``grad`` gets the gradient (laid out as ``theta``), ``losses`` and ``correct`` each image's
    loss and hit.  Returns the mean loss.
    """
    buf, grad, losses, correct = work
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


@njit(cache=True)
def _image_forward(pixels, image, WT, scale, bp, Z, r):
    """``Z[r] = ReLU(W x / 255 + b)`` ``(width,)`` for image ``image`` (its nonzero ``pixels``),
    ``WT`` ``(n_in, width)``, ``bp`` ``(1, width)``, ``width`` whole blocks of 64: 64 units at a
    time (:func:`_pixels_times_block`)."""
    for j in range(0, WT.shape[1], BLOCK):
        s = _pixels_times_block(pixels, image, WT, j)
        for u in range(4):
            vstore(Z, r, j + u * LANES, vrelu(_first_layer(s[u], scale, bp, j + u * LANES)))


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
                        losses[q, i] = log(S[48, r]) - S[49, r]  # logsumexp(O) - O[y]
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
