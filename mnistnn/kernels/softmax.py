"""The output layer: softmax, cross-entropy and ``dO = (O_hat - L) / N`` (reference.softmax,
reference.cross_entropy, the first line of reference.backward), for a batch (:func:`_softmax_xent`),
for one image of a narrow network (:func:`_narrow_head`) and for 16 images at once in the lanes of
one vector (:func:`_heads`): the same arithmetic, entry by entry, in all three.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cache  # noqa: F401  (Numba's cache locator, before any kernel below)
from .dense import _row_times
from .plan import LANES, TILE
from .simd import (
    log,
    vadd,
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


@njit(cache=True)
def _softmax_parts(z):
    """``(e, sum(e), max(z), argmax(z))`` with ``e = exp(z - max(z))`` for the logits ``z`` of one
    image, a :class:`~.simd.Vec16` padded with ``-inf`` (whose ``exp`` is 0)."""
    zmax = vmax(z)
    e = vexp(vadd(z, vsplat(-zmax)))
    return e, vsum(e), zmax, vfind(z, zmax)


@njit(cache=True)
def _softmax_delta(e, total, label, inv_m):
    """``(softmax(z) - onehot(label)) * inv_m`` from ``e`` and ``total`` of :func:`_softmax_parts`,
    a :class:`~.simd.Vec16`; a ``label`` outside 0..15 leaves the probabilities alone."""
    return vsubat(vmul(inv_m / total, e), label, inv_m)


@njit(parallel=True, cache=True)
def _softmax_xent(Z, y, rows, inv_m, losses, correct):
    """Turn logits ``Z`` ``(m, K)`` into ``dZ = (softmax(Z) - onehot(y)) * inv_m`` in place.

    Stable: the row maximum is subtracted before ``exp``.  ``losses[i]`` gets the cross-entropy
    ``log(sum(exp(Z[i]))) - Z[i, y]`` and ``correct[i]`` whether ``argmax Z[i] == y``.  Without
    labels (``y`` empty) it leaves ``losses`` and ``correct`` alone and ``Z`` becomes
    ``softmax(Z) * inv_m``: the probabilities of :func:`predict_proba`, from the same code.

    Up to 16 classes, a row is one :class:`~.simd.Vec16` (padded with ``-inf``, whose
    ``exp`` is 0); more go 16 at a time through the same ``vexp`` (no C math library: the same
    bits on every machine, and the loss's ``log`` is :func:`~.simd.log`).  A tile's results go
    to a scratch block first and are copied to ``Z`` after its last row is read (reading a row
    right after writing the one before it stalls the CPU), and its logarithms are taken then too
    (a call to ``log`` would push the vectors out of registers).
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
                for j in range(0, K, LANES):  # 16 classes at a time, each block's sum in turn
                    n = min(LANES, K - j)
                    e = vexp(vadd(vloadn(Z, i, j, n, low), vsplat(-zmax)))
                    vstoren(Z, i, j, n, e)
                    total += vsum(e)
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
                losses[i] = log(totals[i - first]) - losses[i]  # logsumexp(Z[i]) - Z[i, y]


@njit(cache=True, inline="always")
def _narrow_head(h_hat, label, W2T, W2p, b2p, inv_m, h, o, r, dw2):
    """One image of :func:`_narrow_net_tiles`, from its hidden activations ``H_hat`` (a
    :class:`~.simd.Vec16`, lanes ``n_h..15`` zero) to ``dH``; adds ``H_hat dO^T`` to
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
    :class:`~.simd.Vec16` (lane ``r`` of every vector is image ``r``): the same arithmetic,
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
