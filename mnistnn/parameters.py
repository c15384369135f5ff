"""A network's parameters: every weight and bias in one flat vector, seen layer by layer.

What a backend and the training loop receive instead of an estimator.  Layer ``l`` (1..L) owns
``W_l`` ``(n_l, n_{l-1})`` and then ``b_l`` ``(n_l,)`` in ``theta``
(:func:`mnistnn.kernels.plan.layout`); ``weights[l - 1]`` and ``biases[l - 1]`` are views, so
the write-up's ``H = W . I + B`` reads ``weights[0] @ I + biases[0][:, None]`` and an edit of a
view edits the network.  Plain NumPy: importing this module does not load Numba.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .kernels.plan import Plan, Workspace, layout


class Parameters:
    """Weights and biases of a dense network of layer sizes ``sizes``, in ``theta``
    ``(n_params,)`` of ``dtype`` (a new vector, or ``theta`` itself when given)."""

    def __init__(
        self, sizes: Sequence[int], dtype: str | np.dtype, theta: np.ndarray | None = None
    ) -> None:
        self.sizes = tuple(int(n) for n in sizes)
        self.plan = Plan(self.sizes)
        self.offsets = layout(self.sizes)  # int64 (L + 1,): where each layer starts
        self.sizes_array = np.asarray(self.sizes, dtype=np.int64)  # as the kernels take them
        n = int(self.offsets[-1])
        self.theta = np.empty(n, dtype=dtype) if theta is None else theta
        if self.theta.shape != (n,):
            raise ValueError(f"theta must have shape ({n},), got {self.theta.shape}")

    def __repr__(self) -> str:
        return f"Parameters({' -> '.join(map(str, self.sizes))}, {self.theta.dtype})"

    @property
    def dtype(self) -> np.dtype:
        """The parameters' float type."""
        return self.theta.dtype

    def views(self, vector: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-layer ``(n_out, n_in)`` and ``(n_out,)`` views into ``vector``, laid out as
        ``theta`` (the parameters themselves, a gradient, a velocity)."""
        Ws, bs = [], []
        for start, n_in, n_out in zip(
            self.offsets[:-1], self.sizes[:-1], self.sizes[1:], strict=True
        ):
            Ws.append(vector[start : start + n_out * n_in].reshape(n_out, n_in))
            bs.append(vector[start + n_out * n_in : start + n_out * n_in + n_out])
        return Ws, bs

    @property
    def weights(self) -> list[np.ndarray]:
        """``weights[l]`` ``(n_out, n_in)``, views into ``theta``."""
        return self.views(self.theta)[0]

    @property
    def biases(self) -> list[np.ndarray]:
        """``biases[l]`` ``(n_out,)``, views into ``theta``."""
        return self.views(self.theta)[1]

    def on(self, theta: np.ndarray) -> Parameters:
        """The same network's parameters held in another vector ``theta`` (not copied)."""
        return Parameters(self.sizes, theta.dtype, theta)

    def initialize(self, init: str, rng: np.random.Generator) -> None:
        """Draw every ``W`` and ``b`` from ``rng``, layer by layer (``W`` then ``b``), in
        float64: ``"uniform"`` U[-0.5, 0.5) for both (the write-up's ``np.random.rand(n_out,
        n_in) - 0.5``), ``"he"`` normal with std ``sqrt(2 / n_in)`` and zero biases (He et al.,
        2015: keeps the ReLU activations' variance layer after layer)."""
        for W, b in zip(self.weights, self.biases, strict=True):
            if init == "uniform":
                W[...] = rng.uniform(-0.5, 0.5, size=W.shape)
                b[...] = rng.uniform(-0.5, 0.5, size=b.shape)
            else:
                W[...] = rng.normal(0.0, math.sqrt(2.0 / W.shape[1]), size=W.shape)
                b[...] = 0.0

    def workspace(self, m: int, gradients: bool = True) -> Workspace:
        """The arrays the kernels work in for batches of up to ``m`` images
        (:meth:`mnistnn.kernels.plan.Plan.workspace`), checked before any kernel uses them."""
        work = self.plan.workspace(m, self.dtype, gradients)
        self.plan.check(work, m, gradients)
        return work

    def weight_mask(self, weight_decay: float) -> np.ndarray:
        """``weight_decay`` for every weight and 0 for every bias, laid out as ``theta``; empty
        when ``weight_decay`` is 0 (the update then adds nothing to the gradient)."""
        if not weight_decay:
            return np.empty(0, dtype=self.dtype)
        mask = np.zeros_like(self.theta)
        for W in self.views(mask)[0]:
            W[...] = weight_decay
        return mask
