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
no float copy of the dataset is ever made.  Every output element is computed by one thread with a
fixed summation order, and work is split into fixed-size tiles that do not depend on the thread
count: results are bit-identical whatever ``NUMBA_NUM_THREADS`` is.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "layout",
    "forward",
    "backward",
    "predict_proba",
    "evaluate",
    "full_batch_step",
    "train_epoch",
]

TILE = 64  # samples per parallel work item
PIXEL_SCALE = 1.0 / 255.0


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
    """Views ``(W, b)`` of layer ``layer`` (1-based) in ``theta``: ``(n_out, n_in)``, ``(n_out,)``."""
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


@njit(parallel=True, fastmath=True, cache=True)
def _dense_forward(A, rows, scale, W, b, relu, Z):
    """``Z[i] = act(scale * W @ A[rows[i]] + b)``; ``A`` is ``(N, n_in)`` (uint8 or float),
    ``W`` ``(n_out, n_in)``, ``Z`` ``(m, n_out)`` with ``m = len(rows)``."""
    m = rows.shape[0]
    n_out, n_in = W.shape
    zero = W.dtype.type(0)
    for t in prange((m + TILE - 1) // TILE):
        x = np.empty((4, n_in), W.dtype)  # four samples at a time: each W load feeds 4 FMAs
        for i0 in range(t * TILE, min(m, (t + 1) * TILE), 4):
            nb = min(4, m - i0)
            for r in range(4):
                src = rows[i0 + min(r, nb - 1)]
                for k in range(n_in):
                    x[r, k] = A[src, k]
            for j in range(n_out):
                s0 = zero
                s1 = zero
                s2 = zero
                s3 = zero
                for k in range(n_in):
                    w = W[j, k]
                    s0 += w * x[0, k]
                    s1 += w * x[1, k]
                    s2 += w * x[2, k]
                    s3 += w * x[3, k]
                for r in range(nb):
                    s = s0 if r == 0 else s1 if r == 1 else s2 if r == 2 else s3
                    z = s * scale + b[j]
                    Z[i0 + r, j] = max(z, zero) if relu else z


@njit(parallel=True, fastmath=True, cache=True)
def _softmax_xent(Z, y, rows, inv_m, losses, correct):
    """Turn logits ``Z`` ``(m, K)`` into ``dZ = (softmax(Z) - onehot(y)) * inv_m`` in place.

    Stable: the row maximum is subtracted before ``exp``.  ``losses[i]`` gets the cross-entropy
    ``log(sum(exp(Z[i]))) - Z[i, y]`` and ``correct[i]`` whether ``argmax Z[i] == y``.
    """
    m, K = Z.shape
    for t in prange((m + TILE - 1) // TILE):
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            label = y[rows[i]]
            zmax = Z[i, 0]
            arg = 0
            for j in range(1, K):
                if Z[i, j] > zmax:
                    zmax = Z[i, j]
                    arg = j
            shifted_label = Z[i, label] - zmax
            total = Z.dtype.type(0)
            for j in range(K):
                e = np.exp(Z[i, j] - zmax)
                Z[i, j] = e
                total += e
            losses[i] = np.log(total) - shifted_label  # logsumexp(Z[i]) - Z[i, y]
            correct[i] = arg == label
            for j in range(K):
                Z[i, j] = Z[i, j] / total * inv_m
            Z[i, label] -= inv_m


@njit(parallel=True, fastmath=True, cache=True)
def _dense_grad(dZ, A, rows, scale, dW, db, n_blocks):
    """``dW = scale * dZ^T A[rows]`` ``(n_out, n_in)`` and ``db = sum_i dZ[i]`` ``(n_out,)``.

    Parallel over ``n_blocks`` blocks of output rows (one per thread: each block converts the
    inputs once); each row sums over the samples in order, so the result does not depend on how
    the rows are shared between threads.
    """
    m, n_out = dZ.shape
    n_in = dW.shape[1]
    zero = dW.dtype.type(0)
    n_blocks = max(1, min(n_out, n_blocks))
    for blk in prange(n_blocks):
        j0 = blk * n_out // n_blocks
        j1 = (blk + 1) * n_out // n_blocks
        x = np.empty((4, n_in), dW.dtype)
        g = np.empty(4, dW.dtype)
        for j in range(j0, j1):
            db[j] = zero
            for k in range(n_in):
                dW[j, k] = zero
        for i0 in range(0, m, 4):
            nb = min(4, m - i0)
            for r in range(4):
                src = rows[i0 + min(r, nb - 1)]
                for k in range(n_in):
                    x[r, k] = A[src, k]
            for j in range(j0, j1):
                for r in range(4):
                    g[r] = dZ[i0 + r, j] if r < nb else zero
                db[j] += g[0] + g[1] + g[2] + g[3]
                if g[0] == zero and g[1] == zero and g[2] == zero and g[3] == zero:
                    continue  # four inactive ReLUs: nothing to add
                g0 = g[0] * scale
                g1 = g[1] * scale
                g2 = g[2] * scale
                g3 = g[3] * scale
                for k in range(n_in):
                    dW[j, k] += g0 * x[0, k] + g1 * x[1, k] + g2 * x[2, k] + g3 * x[3, k]


@njit(parallel=True, fastmath=True, cache=True)
def _dense_backprop(dZ, W, A_prev):
    """Overwrite ``A_prev`` ``(m, n_in)`` with ``dZ_prev = (dZ W) * [A_prev > 0]``."""
    m, n_out = dZ.shape
    n_in = W.shape[1]
    zero = W.dtype.type(0)
    for t in prange((m + TILE - 1) // TILE):
        row = np.empty(n_in, W.dtype)
        for i in range(t * TILE, min(m, (t + 1) * TILE)):
            for k in range(n_in):
                row[k] = zero
            for j in range(n_out):
                g = dZ[i, j]
                if g != zero:
                    for k in range(n_in):
                        row[k] += g * W[j, k]
            for k in range(n_in):
                A_prev[i, k] = row[k] if A_prev[i, k] > zero else zero


@njit(cache=True)
def forward(theta, off, sizes, X, rows, buf):
    """Forward pass of samples ``X[rows]``; returns the logits view ``(m, n_L)`` of ``buf``.

    ``X`` is ``(N, n_0)`` uint8 pixels, ``rows`` ``(m,)`` int64, ``buf`` a float work buffer of at
    least ``m * sum(sizes[1:])`` elements.  Hidden activations stay in ``buf`` for :func:`backward`.
    """
    m = rows.shape[0]
    L = sizes.shape[0] - 1
    identity = np.arange(m)
    W, b = _wb(theta, off, sizes, 1)
    Z = _act(buf, sizes, 1, m)
    _dense_forward(X, rows, theta.dtype.type(PIXEL_SCALE), W, b, L > 1, Z)
    for layer in range(2, L + 1):
        W, b = _wb(theta, off, sizes, layer)
        A = Z
        Z = _act(buf, sizes, layer, m)
        _dense_forward(A, identity, theta.dtype.type(1.0), W, b, layer < L, Z)
    return Z


@njit(cache=True)
def backward(theta, off, sizes, X, y, rows, buf, grad, losses, correct, threads):
    """Forward and backward pass on ``X[rows]``: fills ``grad`` (same layout as ``theta``) with the
    gradient of the mean cross-entropy, ``losses`` ``(m,)`` and ``correct`` ``(m,)``.

    Returns the mean loss.  ``buf`` is destroyed (activations are overwritten by their deltas).
    ``threads`` only sets how the work is split; the result does not depend on it.
    """
    m = rows.shape[0]
    L = sizes.shape[0] - 1
    identity = np.arange(m)
    dZ = forward(theta, off, sizes, X, rows, buf)
    _softmax_xent(dZ, y, rows, theta.dtype.type(1.0 / m), losses, correct)
    for layer in range(L, 1, -1):
        W, _ = _wb(theta, off, sizes, layer)
        dW, db = _wb(grad, off, sizes, layer)
        A_prev = _act(buf, sizes, layer - 1, m)
        _dense_grad(dZ, A_prev, identity, theta.dtype.type(1.0), dW, db, threads)
        _dense_backprop(dZ, W, A_prev)
        dZ = A_prev
    dW, db = _wb(grad, off, sizes, 1)
    _dense_grad(dZ, X, rows, theta.dtype.type(PIXEL_SCALE), dW, db, threads)
    total = 0.0
    for i in range(m):  # in order, so the mean does not depend on the thread count
        total += losses[i]
    return total / m


@njit(cache=True)
def _update(theta, grad, velocity, alpha, momentum):
    """SGD with momentum: ``v = momentum * v - alpha * g``, ``theta += v`` (plain GD if 0)."""
    for p in range(theta.shape[0]):
        velocity[p] = momentum * velocity[p] - alpha * grad[p]
        theta[p] += velocity[p]


@njit(cache=True)
def full_batch_step(
    theta, off, sizes, X, y, rows, buf, grad, velocity, alpha, momentum, losses, correct, threads
):
    """One iteration of full-batch gradient descent (the write-up's ``W = W - alpha dW``).

    Returns ``(mean loss, accuracy)`` of the parameters *before* the update.  If the loss is not
    finite the parameters are left untouched, so the caller can stop with a clear error.
    """
    loss = backward(theta, off, sizes, X, y, rows, buf, grad, losses, correct, threads)
    hits = 0
    for i in range(rows.shape[0]):
        hits += correct[i]
    if np.isfinite(loss):
        _update(theta, grad, velocity, alpha, momentum)
    return loss, hits / rows.shape[0]


@njit(cache=True)
def train_epoch(
    theta,
    off,
    sizes,
    X,
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
    threads,
):
    """One epoch of mini-batch SGD over ``X[order]`` in batches of ``batch_size``.

    Returns ``(mean loss, accuracy, batches done)`` over the batches seen (measured before each
    batch's update).  Stops early, without updating, at the first batch whose loss is not finite;
    then ``batches done`` is smaller than the number of batches and the loss is that batch's.
    """
    n = order.shape[0]
    total_loss = 0.0
    hits = 0
    done = 0
    for start in range(0, n, batch_size):
        rows = order[start : min(n, start + batch_size)]
        m = rows.shape[0]
        loss = backward(theta, off, sizes, X, y, rows, buf, grad, losses[:m], correct[:m], threads)
        if not np.isfinite(loss):
            return loss, 0.0, done
        _update(theta, grad, velocity, alpha, momentum)
        total_loss += loss * m
        for i in range(m):
            hits += correct[i]
        done += 1
    return total_loss / n, hits / n, done


@njit(cache=True)
def predict_proba(theta, off, sizes, X, rows, buf):
    """Softmax probabilities ``(m, n_L)`` of samples ``X[rows]`` (a fresh array)."""
    Z = forward(theta, off, sizes, X, rows, buf)
    m, K = Z.shape
    P = np.empty((m, K), theta.dtype)
    for i in range(m):
        zmax = Z[i, 0]
        for j in range(1, K):
            zmax = max(zmax, Z[i, j])
        total = theta.dtype.type(0)
        for j in range(K):
            P[i, j] = np.exp(Z[i, j] - zmax)
            total += P[i, j]
        for j in range(K):
            P[i, j] /= total
    return P


@njit(cache=True)
def evaluate(theta, off, sizes, X, y, rows, buf, losses, correct):
    """Mean cross-entropy and accuracy on ``X[rows]``, ``y[rows]`` without computing gradients."""
    Z = forward(theta, off, sizes, X, rows, buf)
    m = rows.shape[0]
    _softmax_xent(Z, y, rows, theta.dtype.type(1.0 / m), losses, correct)
    total = 0.0
    hits = 0
    for i in range(m):
        total += losses[i]
        hits += correct[i]
    return total / m, hits / m
