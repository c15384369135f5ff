"""The network in plain NumPy, in the write-up's notation: read this module to see the math.

Images are the columns of ``I`` (``784 x N``, pixels / 255) and every layer is the write-up's
``H = W . I + B``; with one hidden layer of 10 units this is its 784 -> 10 -> 10 network:

    forward   H_l = W_l . A_{l-1} + B_l                (n_l, N)     A_0 = I
              A_l = ReLU(H_l) for hidden layers        (n_l, N)     the write-up's H_hat
              O_hat = softmax(H_L)                     (K, N)
    loss      -mean_n log O_hat[y_n, n]                the cross-entropy
    backward  dH_L = (O_hat - L) / N                   (K, N)       the write-up's dO, averaged
              dW_l = dH_l . A_{l-1}^T                  (n_l, n_{l-1})
              dB_l = sum_n dH_l[:, n]                  (n_l, 1)
              dH_{l-1} = (W_l^T . dH_l) * [H_{l-1} > 0]              ReLU'(H) = [H > 0]
    update    V = momentum * V - alpha * (dW + weight_decay * W),  W = W + V   (biases: no decay)

The package's fast kernels (:mod:`mnistnn.kernels`) compute the same thing from the raw pixels,
and the tests check that they agree.  ``NNetworkExtended(backend="numpy")`` trains with these
functions, in the loop of :mod:`mnistnn.training`.  Parameters are lists, one entry per layer:
``weights[l]`` ``(n_out, n_in)``, ``biases[l]`` ``(n_out,)``, as the estimators' ``weights`` and
``biases``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Params = list[np.ndarray]


def inputs(X: np.ndarray, dtype: str | np.dtype = "float64") -> np.ndarray:
    """The write-up's ``I`` ``(n_in, N)``: images ``X`` ``(N, ...)`` as columns, divided by 255."""
    return (np.asarray(X).reshape(len(X), -1).T / 255).astype(dtype)


def one_hot(y: np.ndarray, n_classes: int, dtype: str | np.dtype = "float64") -> np.ndarray:
    """The write-up's ``L`` ``(K, N)``: column ``n`` is 1 in row ``y[n]``, 0 elsewhere."""
    L = np.zeros((n_classes, len(y)), dtype=dtype)
    L[y, np.arange(len(y))] = 1
    return L


def relu(H: np.ndarray) -> np.ndarray:
    """``max(H, 0)`` entry by entry."""
    return np.maximum(H, 0)


def softmax(O: np.ndarray) -> np.ndarray:  # noqa: E741 (the write-up's name)
    """Each column of ``O`` ``(K, N)`` turned into probabilities; its largest entry is subtracted
    first, which changes nothing but keeps ``exp`` from overflowing."""
    E = np.exp(O - O.max(axis=0))
    return E / E.sum(axis=0)


def forward(weights: Params, biases: Params, I: np.ndarray) -> list[np.ndarray]:  # noqa: E741
    """Every layer's output for the images ``I`` ``(n_in, N)``: ``[H_1, ..., H_L]`` before the
    activation (the last are the logits ``O``)."""
    H, A = [], I
    for layer, (W, b) in enumerate(zip(weights, biases, strict=True)):
        H.append(W @ A + b[:, None])  # H_l = W_l . A_{l-1} + B_l              (n_l, N)
        A = relu(H[-1]) if layer < len(weights) - 1 else H[-1]
    return H


def predict_proba(weights: Params, biases: Params, I: np.ndarray) -> np.ndarray:  # noqa: E741
    """``O_hat`` ``(K, N)``: the class probabilities of every image."""
    return softmax(forward(weights, biases, I)[-1])


def cross_entropy(O_hat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-log O_hat[y_n, n]`` for every image ``n`` ``(N,)``."""
    return -np.log(O_hat[y, np.arange(len(y))])


def backward(
    weights: Params, biases: Params, I: np.ndarray, y: np.ndarray  # noqa: E741
) -> tuple[float, Params, Params]:
    """The mean cross-entropy on ``(I, y)`` and its gradients ``(loss, dWs, dBs)``, shaped like
    ``weights`` and ``biases``: the chain rule, one layer at a time from the output back."""
    N = I.shape[1]
    H = forward(weights, biases, I)
    A = [I] + [relu(h) for h in H[:-1]]  # the input of each layer          A_{l-1}
    O_hat = softmax(H[-1])  #                                                  (K, N)
    dH = (O_hat - one_hot(y, *O_hat.shape[:1], O_hat.dtype)) / N  # dO = (O_hat - L) / N (K, N)
    dWs, dBs = [], []
    for layer in range(len(weights) - 1, -1, -1):
        dWs.insert(0, dH @ A[layer].T)  # dW_l = dH_l . A_{l-1}^T            (n_l, n_{l-1})
        dBs.insert(0, dH.sum(axis=1))  # dB_l = sum over the images           (n_l,)
        if layer:  # dH_{l-1} = (W_l^T . dH_l) * ReLU'(H_{l-1})               (n_{l-1}, N)
            dH = (weights[layer].T @ dH) * (H[layer - 1] > 0)
    return float(cross_entropy(O_hat, y).mean()), dWs, dBs


def update(
    params: Params,
    grads: Params,
    velocity: Params,
    alpha: float,
    momentum: float = 0.0,
    decay: Sequence[float] | None = None,
) -> None:
    """One step of gradient descent with momentum, in place: ``V = momentum * V - alpha * (g +
    decay * p)``, ``p = p + V``, for each array ``p`` (``decay``: one number per array, e.g.
    ``weight_decay`` for weights and 0 for biases; None for none).  With ``momentum = 0`` this is
    the write-up's ``W = W - alpha * dW``."""
    decay = decay or [0.0] * len(params)
    for p, g, v, d in zip(params, grads, velocity, decay, strict=True):
        v *= momentum
        v -= alpha * (g + d * p if d else g)
        p += v
