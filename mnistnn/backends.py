"""The two ways a network computes: the fast Numba kernels (:mod:`mnistnn.kernels`, the default)
or the plain NumPy reference (:mod:`mnistnn.reference`), behind one small interface.

Both give the same numbers up to rounding (the tests check 1e-10 in float64), so
``NNetworkExtended(backend="numpy")`` is the network you can read, and step through, with the same
``fit``, ``predict``, ``gradients`` and ``history`` as the fast one.  The NumPy backend also
accepts float images that are not raw pixels (centred or standardised), which the kernels, made
for 0..255 pixels, refuse.

Every method takes plain data: the network's :class:`~mnistnn.parameters.Parameters`, the images
as the backend holds them (:meth:`inputs`), the rows of a batch and a
:class:`~mnistnn.kernels.plan.Workspace`, whose ``grad`` gets the gradient (laid out as the
parameters) and whose ``losses`` and ``correct`` get each image's loss and hit.  The compiled
kernels (and Numba) are imported on a backend's first computation, not with the package.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from . import reference
from .kernels.plan import BLOCK, CHUNK, Workspace, grad_tiles, is_narrow
from .parameters import Parameters


class Backend(Protocol):
    """What the training loop (:mod:`mnistnn.training`) and the estimators ask of a backend."""

    name: str

    def inputs(self, X: np.ndarray) -> Any:
        """The images ``X`` ``(N, n_in)`` as this backend reads them, made once per call."""

    def backward(self, params: Parameters, data: Any, y: np.ndarray, rows: np.ndarray,
                 work: Workspace) -> float:  # fmt: skip
        """The gradients of the mean loss on images ``rows`` into ``work.grad``; the mean loss."""

    def probabilities(self, params: Parameters, data: Any, rows: np.ndarray,
                      work: Workspace) -> np.ndarray:  # fmt: skip
        """Class probabilities ``(m, K)`` of images ``rows``."""

    def evaluate(self, params: Parameters, data: Any, y: np.ndarray, rows: np.ndarray,
                 work: Workspace) -> tuple[float, float]:  # fmt: skip
        """Mean loss and accuracy on images ``rows``."""

    def group_size(self, sizes: tuple[int, ...]) -> int:
        """How many full-batch networks of layer sizes ``sizes`` share one pass over the images;
        0: each trains alone."""

    def update(self, params: Parameters, grad: np.ndarray, velocity: np.ndarray, alpha: Any,
               momentum: Any, weight_decay: np.ndarray) -> bool:  # fmt: skip
        """One step of :func:`mnistnn.reference.update`, in place; False, changing nothing, if it
        would make a parameter not finite."""


class NumbaBackend:
    """The Numba kernels: the images as their nonzero pixels, compiled once per machine."""

    name = "numba"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def inputs(self, X: np.ndarray) -> tuple:
        """The nonzero pixels of ``X`` ``(N, n_in)``, listed once
        (:func:`~mnistnn.kernels.pixels.sparse_pixels`)."""
        from .kernels.pixels import sparse_pixels

        return sparse_pixels(X)

    def backward(self, params: Parameters, data: tuple, y: np.ndarray, rows: np.ndarray,
                 work: Workspace) -> float:  # fmt: skip
        """The gradients of the mean loss on images ``rows``, by the path of the plan: one pass
        per image for a narrow network, else layer by layer."""
        from .kernels.layers import layered_backward
        from .kernels.narrow import narrow_backward

        backward = narrow_backward if params.plan.one_pass else layered_backward
        return backward(params.theta, params.offsets, params.sizes_array, data, y, rows, work)

    def probabilities(self, params: Parameters, data: tuple, rows: np.ndarray,
                      work: Workspace) -> np.ndarray:  # fmt: skip
        """Class probabilities ``(m, K)`` of images ``rows`` (a view of ``work.buf``)."""
        from .kernels.layers import predict_proba

        return predict_proba(params.theta, params.offsets, params.sizes_array, data, rows,
                             work.buf)  # fmt: skip

    def evaluate(self, params: Parameters, data: tuple, y: np.ndarray, rows: np.ndarray,
                 work: Workspace) -> tuple[float, float]:  # fmt: skip
        """Mean loss and accuracy on images ``rows``."""
        from .kernels.layers import evaluate

        return evaluate(params.theta, params.offsets, params.sizes_array, data, y, rows, work)

    def update(self, params: Parameters, grad: np.ndarray, velocity: np.ndarray, alpha: Any,
               momentum: Any, weight_decay: np.ndarray) -> bool:  # fmt: skip
        """:func:`~mnistnn.kernels.reductions.update`; ``weight_decay`` laid out as the parameters
        (:meth:`~mnistnn.parameters.Parameters.weight_mask`)."""
        from .kernels.reductions import update

        return update(params.theta, grad, velocity, alpha, momentum, weight_decay)

    # ------------------------------------------------------------ several networks, one pass
    @staticmethod
    def group_size(sizes: tuple[int, ...]) -> int:
        """How many full-batch networks of layer sizes ``sizes`` can share one pass over the
        images (:meth:`backward_many`): ``BLOCK // n_hidden`` for a narrow network, else 0."""
        return BLOCK // sizes[1] if is_narrow(sizes) else 0

    def shared_workspace(self, params: Parameters, data: tuple, rows: np.ndarray,
                         n_nets: int) -> SharedWorkspace:  # fmt: skip
        """The arrays of :meth:`backward_many` for ``n_nets`` networks on images ``rows``."""
        from .kernels.pixels import chunks, pixel_columns

        m, dtype = rows.shape[0], params.dtype
        parts = chunks(m, grad_tiles(m), CHUNK)
        columns = pixel_columns(data, rows, parts[0], params.sizes[0], dtype)
        grads = np.empty((n_nets, params.theta.shape[0]), dtype=dtype)
        losses = np.empty((n_nets, m), dtype=dtype)
        return SharedWorkspace(columns, parts, grads, losses, np.empty((n_nets, m), np.bool_))

    def backward_many(self, params: Parameters, thetas: np.ndarray, data: tuple, y: np.ndarray,
                      rows: np.ndarray, work: SharedWorkspace) -> np.ndarray:  # fmt: skip
        """:meth:`backward` of the networks ``thetas`` ``(G, n_params)`` (each laid out as
        ``params``) in one pass over the images; the mean losses ``(G,)``, their gradients in
        ``work.grads[:G]``, each bit for bit what :meth:`backward` gives it alone."""
        from .kernels.narrow import narrow_nets_backward

        G = thetas.shape[0]
        return narrow_nets_backward(
            thetas, params.offsets, params.sizes_array, data, work.columns, work.chunks, y, rows,
            work.grads[:G], work.losses[:G], work.correct[:G],
        )  # fmt: skip


class SharedWorkspace(NamedTuple):
    """The arrays of :meth:`NumbaBackend.backward_many`: the images' pixels by column and their
    chunks (made once per run), and per network its gradient, losses and hits."""

    columns: Any
    chunks: np.ndarray
    grads: np.ndarray
    losses: np.ndarray
    correct: np.ndarray


class NumpyBackend:
    """The plain NumPy reference: the images as the write-up's ``I`` (columns, divided by 255)."""

    name = "numpy"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The write-up's ``I`` ``(n_in, N)``, float64 (each batch is cast to the network's
        dtype)."""
        return reference.inputs(X)

    def backward(self, params: Parameters, data: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 work: Workspace) -> float:  # fmt: skip
        """:func:`mnistnn.reference.backward` on images ``rows``, into ``work``."""
        I, labels = data[:, rows].astype(params.dtype, copy=False), y[rows]  # noqa: E741
        loss, dWs, dBs = reference.backward(params.weights, params.biases, I, labels)
        for target, grad in zip(sum(params.views(work.grad), []), dWs + dBs, strict=True):
            target[...] = grad
        self._per_image(params, I, labels, work)
        return loss

    def probabilities(self, params: Parameters, data: np.ndarray, rows: np.ndarray,
                      work: Workspace) -> np.ndarray:  # fmt: skip
        """:func:`mnistnn.reference.predict_proba` of images ``rows``, ``(m, K)``."""
        I = data[:, rows].astype(params.dtype, copy=False)  # noqa: E741
        return reference.predict_proba(params.weights, params.biases, I).T

    def evaluate(self, params: Parameters, data: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 work: Workspace) -> tuple[float, float]:  # fmt: skip
        """Mean loss and accuracy on images ``rows``."""
        self._per_image(params, data[:, rows].astype(params.dtype, copy=False), y[rows], work)
        m = rows.shape[0]
        return float(work.losses[:m].mean()), float(work.correct[:m].mean())

    @staticmethod
    def _per_image(params: Parameters, I: np.ndarray, labels: np.ndarray,  # noqa: E741
                   work: Workspace) -> None:  # fmt: skip
        """Each image's loss and hit into ``work.losses`` and ``work.correct``."""
        O_hat = reference.predict_proba(params.weights, params.biases, I)  # noqa: N806
        work.losses[: len(labels)] = reference.cross_entropy(O_hat, labels)
        work.correct[: len(labels)] = O_hat.argmax(axis=0) == labels

    def update(self, params: Parameters, grad: np.ndarray, velocity: np.ndarray, alpha: Any,
               momentum: Any, weight_decay: np.ndarray) -> bool:  # fmt: skip
        """:func:`mnistnn.reference.update`, array by array; ``weight_decay`` laid out as the
        parameters (one number per array: its first entry)."""
        before = params.theta.copy(), velocity.copy()
        decays = sum(params.views(weight_decay), []) if weight_decay.size else None
        reference.update(
            params.weights + params.biases, sum(params.views(grad), []),
            sum(params.views(velocity), []), alpha, momentum,
            decays and [d.flat[0] for d in decays],
        )  # fmt: skip
        if np.all(np.isfinite(params.theta)):
            return True
        params.theta[...], velocity[...] = before
        return False

    @staticmethod
    def group_size(sizes: tuple[int, ...]) -> int:
        """0: the NumPy backend trains every network alone."""
        return 0


BACKENDS: dict[str, Backend] = {"numba": NumbaBackend(), "numpy": NumpyBackend()}
