"""The drivers of any network, one layer at a time (the plain version is :mod:`mnistnn.reference`):
:func:`forward`, :func:`layered_backward`, :func:`predict_proba`, :func:`evaluate`.  What happens
between batches (the update, the loop) is :mod:`mnistnn.training`'s.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cache  # noqa: F401  (Numba's cache locator, before any kernel below)
from .buffers import (
    _act,
    _act_size,
    _aligned,
    _block_width,
    _partials,
    _transposed,
    _wb,
    grad_tiles,
)
from .dense import _dense_backprop, _dense_forward, _dense_grad_tiles
from .pixels import _sparse_forward, _sparse_grad_tiles, chunks, pixel_columns
from .plan import PIXEL_SCALE, TILE
from .reductions import _bias_grad, _mean, _reduce_tiles
from .softmax import _softmax_xent


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
def layered_backward(theta, off, sizes, pixels, y, rows, work):
    """The gradients of the mean cross-entropy on images ``rows``, one layer at a time, for any
    layer sizes (the steps of :func:`mnistnn.reference.backward`): :func:`forward`, the softmax
    and its ``dZ``, then each layer's gradients and the ``dZ`` of the layer below.

    ``work``: a :class:`~mnistnn.kernels.plan.Workspace` for at least ``len(rows)`` images; its
    ``grad`` gets the gradient (laid out as ``theta``), ``losses`` and ``correct`` each image's
    loss and hit.  Returns the mean loss.

    ``buf`` (:func:`work_size` floats) is destroyed: activations are overwritten by their deltas,
    and the rest holds the partial weight gradients.
    """
    buf, grad, losses, correct = work
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


def predict_proba(theta, off, sizes, pixels, rows, buf):
    """Softmax probabilities ``(m, n_L)`` of images ``rows``: a view of ``buf`` (at least
    ``work_size(sizes, m, gradients=False)`` floats), valid until ``buf`` is used again."""
    Z = forward(theta, off, sizes, pixels, rows, buf)
    unused = np.empty(0, theta.dtype)  # no labels: no losses, no hits
    _softmax_xent(Z, NO_LABELS, rows, theta.dtype.type(1.0), unused, unused == 0)
    return Z


def evaluate(theta, off, sizes, pixels, y, rows, work) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on images ``rows`` without computing gradients; ``work``'s
    ``losses`` and ``correct`` get them image by image (its ``grad`` is not used)."""
    Z = forward(theta, off, sizes, pixels, rows, work.buf)
    m = rows.shape[0]
    _softmax_xent(Z, y, rows, theta.dtype.type(1.0 / m), work.losses, work.correct)
    return _mean(work.losses), np.count_nonzero(work.correct) / m


NO_LABELS = np.empty(0, np.int64)
