"""The two ways an estimator computes: the fast Numba kernels (:mod:`mnistnn.kernels`, the
default) or the plain NumPy reference (:mod:`mnistnn.reference`), behind one small interface.

Both give the same numbers up to rounding (the tests check 1e-10 in float64), so
``NNetworkExtended(backend="numpy")`` is the network you can read, and step through, with the same
``fit``, ``predict``, ``gradients`` and ``history`` as the fast one.  The NumPy backend also
accepts float images that are not raw pixels (centred or standardised), which the kernels, made
for 0..255 pixels, refuse.

Every method takes the network (its parameters, plan and settings), the images as the backend
holds them (:meth:`inputs`), and the rows of a batch; ``work`` is the network's
:class:`~mnistnn.kernels.plan.Workspace`: its ``grad`` gets the gradient, laid out as the
parameters, and its ``losses`` and ``correct`` each image's loss and hit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import kernels, reference

if TYPE_CHECKING:
    from .network import NNetworkExtended


class NumbaBackend:
    """The Numba kernels: the images as their nonzero pixels, compiled once per machine."""

    name = "numba"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def inputs(self, X: np.ndarray) -> tuple:
        """The nonzero pixels of ``X`` ``(N, n_in)``, listed once
        (:func:`~mnistnn.kernels.pixels.sparse_pixels`)."""
        return kernels.sparse_pixels(X)

    def backward(self, net: NNetworkExtended, data: Any, y: np.ndarray, rows: np.ndarray,
                 work: kernels.Workspace) -> float:  # fmt: skip
        """The gradients of the mean loss on images ``rows``, by the path of the network's plan."""
        backward = kernels.narrow_backward if net._plan.one_pass else kernels.layered_backward
        return backward(net._theta, net._offsets, net._sizes, data, y, rows, work)

    def probabilities(self, net: NNetworkExtended, data: Any, rows: np.ndarray,
                      work: kernels.Workspace) -> np.ndarray:  # fmt: skip
        """Class probabilities ``(m, K)`` of images ``rows`` (a view of ``work.buf``)."""
        return kernels.predict_proba(net._theta, net._offsets, net._sizes, data, rows, work.buf)

    def evaluate(self, net: NNetworkExtended, data: Any, y: np.ndarray, rows: np.ndarray,
                 work: kernels.Workspace) -> tuple[float, float]:  # fmt: skip
        """Mean loss and accuracy on images ``rows``."""
        return kernels.evaluate(net._theta, net._offsets, net._sizes, data, y, rows, work)

    def update(self, net: NNetworkExtended, grad: np.ndarray, alpha: float, momentum: float,
               decay: np.ndarray) -> bool:  # fmt: skip
        """One step with momentum and weight decay; False, changing nothing, if it would not be
        finite (:func:`~mnistnn.kernels.reductions.update`)."""
        t = net._theta.dtype.type
        return kernels.update(net._theta, grad, net._velocity, t(alpha), t(momentum), decay)

    def epoch(self, net: NNetworkExtended, data: Any, y: np.ndarray, order: np.ndarray,
              batch_size: int, work: kernels.Workspace, alpha: float, momentum: float,
              decay: np.ndarray) -> tuple[float, float, int]:  # fmt: skip
        """One epoch of mini-batch SGD (:func:`~mnistnn.kernels.layers.train_epoch`):
        ``(mean loss, accuracy, batches done)``."""
        t = net._theta.dtype.type
        return kernels.train_epoch(
            net._theta, net._offsets, net._sizes, data, y, order, batch_size, work,
            net._velocity, (t(alpha), t(momentum), decay),
        )  # fmt: skip


class NumpyBackend:
    """The plain NumPy reference: the images as the write-up's ``I`` (columns, divided by 255)."""

    name = "numpy"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The write-up's ``I`` ``(n_in, N)``, float64 (each batch is cast to the network's
        dtype)."""
        return reference.inputs(X)

    def backward(self, net: NNetworkExtended, data: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 work: kernels.Workspace) -> float:  # fmt: skip
        """:func:`mnistnn.reference.backward` on images ``rows``, into ``work``."""
        I, labels = data[:, rows].astype(net.dtype, copy=False), y[rows]  # noqa: E741
        loss, dWs, dBs = reference.backward(net.weights, net.biases, I, labels)
        for target, grad in zip(sum(net._views(work.grad), []), dWs + dBs, strict=True):
            target[...] = grad
        self._per_image(net, I, labels, work)
        return loss

    def probabilities(self, net: NNetworkExtended, data: np.ndarray, rows: np.ndarray,
                      work: kernels.Workspace) -> np.ndarray:  # fmt: skip
        """:func:`mnistnn.reference.predict_proba` of images ``rows``, ``(m, K)``."""
        I = data[:, rows].astype(net.dtype, copy=False)  # noqa: E741
        return reference.predict_proba(net.weights, net.biases, I).T

    def evaluate(self, net: NNetworkExtended, data: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 work: kernels.Workspace) -> tuple[float, float]:  # fmt: skip
        """Mean loss and accuracy on images ``rows``."""
        self._per_image(net, data[:, rows].astype(net.dtype, copy=False), y[rows], work)
        m = rows.shape[0]
        return float(work.losses[:m].mean()), float(work.correct[:m].mean())

    def _per_image(self, net: NNetworkExtended, I: np.ndarray, labels: np.ndarray,  # noqa: E741
                   work: kernels.Workspace) -> None:  # fmt: skip
        """Each image's loss and hit into ``work.losses`` and ``work.correct``."""
        O_hat = reference.predict_proba(net.weights, net.biases, I)  # noqa: N806
        work.losses[: len(labels)] = reference.cross_entropy(O_hat, labels)
        work.correct[: len(labels)] = O_hat.argmax(axis=0) == labels

    def update(self, net: NNetworkExtended, grad: np.ndarray, alpha: float, momentum: float,
               decay: np.ndarray) -> bool:  # fmt: skip
        """:func:`mnistnn.reference.update`; False, changing nothing, if it would not be finite."""
        theta, velocity = net._theta.copy(), net._velocity.copy()
        weights, biases = net._views(net._theta)
        decays = [net.weight_decay] * len(weights) + [0.0] * len(biases)
        grads = sum(net._views(grad), [])
        velocities = sum(net._views(net._velocity), [])
        dtype = net._theta.dtype.type
        reference.update(weights + biases, grads, velocities, dtype(alpha), dtype(momentum),
                         [dtype(d) for d in decays] if len(decay) else None)  # fmt: skip
        if np.all(np.isfinite(net._theta)):
            return True
        net._theta[...], net._velocity[...] = theta, velocity
        return False

    def epoch(self, net: NNetworkExtended, data: np.ndarray, y: np.ndarray, order: np.ndarray,
              batch_size: int, work: kernels.Workspace, alpha: float, momentum: float,
              decay: np.ndarray) -> tuple[float, float, int]:  # fmt: skip
        """One epoch of mini-batch SGD, batch by batch: ``(mean loss, accuracy, batches done)``."""
        total, hits, done = 0.0, 0, 0
        for start in range(0, order.shape[0], batch_size):
            rows = order[start : start + batch_size]
            loss = self.backward(net, data, y, rows, work)
            if not (np.isfinite(loss) and self.update(net, work.grad, alpha, momentum, decay)):
                return loss, 0.0, done
            total += loss * rows.shape[0]
            hits += int(np.count_nonzero(work.correct[: rows.shape[0]]))
            done += 1
        return total / order.shape[0], hits / order.shape[0], done


BACKENDS = {"numba": NumbaBackend(), "numpy": NumpyBackend()}
