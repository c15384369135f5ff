"""The estimators: dense ReLU networks with a softmax output, trained by gradient descent.

``NNetworkExtended`` takes any number of hidden layers; ``NNetworkMinimal`` is the original
write-up's 784 -> 10 -> 10 network, the one-hidden-layer case of the same class.  Both keep their
parameters in one flat vector (see :func:`mnistnn.kernels.layout`) and expose them as lists of
views, ``weights[l]`` of shape ``(n_out, n_in)`` and ``biases[l]`` of shape ``(n_out,)``, so the
write-up's ``H = W . I + B`` reads ``weights[0] @ I + biases[0][:, None]``.

The API follows scikit-learn: ``fit``, ``predict``, ``predict_proba``, ``score``; plus ``loss``
(mean cross-entropy) and ``gradients`` for the backpropagation notebook, and ``save``/``load``
for the model-file format of :mod:`mnistnn.modelfile`.  ``X`` is always raw pixels, ``(N, 784)``
or ``(N, 28, 28)``, in 0..255: the kernels divide by 255 (as Samson Zhang's notebook, which
the write-up builds on, does).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import kernels
from .backends import BACKENDS
from .datasets import progress_enabled
from .modelfile import ModelFormatError, load_model, save_model

__all__ = [
    "fit_many",
    "NNetworkExtended",
    "NNetworkMinimal",
    "PixelScaleWarning",
    "TrainingDivergedError",
    "TrainingDivergedWarning",
]

PREDICT_CHUNK = 8192  # samples per forward pass in predict/score: bounds the work buffer
DIVERGENCE_SAMPLE = 1024  # at most this many images measure the loss before mini-batch training


COMPILING = (
    "mnistnn: compiling the kernels for this machine (once; later runs load them from Numba's "
    "cache) ..."
)


_announced = False  # whether this process said COMPILING already


@contextlib.contextmanager
def _compile_notice(show: bool) -> Iterator[None]:
    """Within it, with ``show``, the first compilation of the kernels in this process is
    announced on standard error (:data:`COMPILING`): a fresh machine's first ``fit`` otherwise
    waits several seconds with nothing on screen."""
    if _announced or not show:
        yield
        return
    from numba.core import event

    class Notice(event.Listener):
        def on_start(self, ev: Any) -> None:
            global _announced
            if not _announced:
                _announced = True
                print(COMPILING, file=sys.stderr, flush=True)

        def on_end(self, ev: Any) -> None:
            pass

    with event.install_listener("numba:compile", Notice()):
        yield


def _announces_compiling(method):
    """An estimator method that announces a compilation of the kernels (see
    :func:`_compile_notice`) when its progress output is on."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with _compile_notice(self._show()):
            return method(self, *args, **kwargs)

    return wrapper


class TrainingDivergedError(RuntimeError):
    """The loss stopped being finite during training (usually: the learning rate is too high)."""


class TrainingDivergedWarning(UserWarning):
    """The loss stayed finite but ended far above where it started: the model is likely useless."""


class PixelScaleWarning(UserWarning):
    """The images look scaled to 0..1, but the network expects raw pixels in 0..255."""


class NNetworkExtended:
    """A dense network ``nodes_in -> hidden_layers... -> nodes_out`` with ReLU hidden units.

    Parameters
    ----------
    nodes_in, nodes_out : input pixels and classes.
    hidden_layers : widths of the hidden layers, e.g. ``(128, 64)``; at least one.
    alpha : learning rate.
    maxiterations : full-batch iterations when ``batch_size`` is None (the write-up's training).
    batch_size : mini-batch size for SGD; then ``epochs`` passes over the (reshuffled) data.
        The last batch of an epoch is smaller when ``batch_size`` does not divide the number of
        training images; a ``batch_size`` above that number means one batch of all of them.
    momentum : classical momentum, ``v = momentum * v - alpha * g``; 0 is plain gradient descent.
    init : ``"uniform"`` (U[-0.5, 0.5) for weights and biases, as in the notebook the write-up
        builds on) or ``"he"``
        (normal with std ``sqrt(2 / n_in)``, zero biases: better for deeper ReLU stacks).
    validation_fraction : share of the training data held out (the same rows in every ``fit``)
        and scored in the history.
    early_stopping : stop when the validation loss has not improved for ``patience`` epochs
        (iterations in full-batch training) and keep the weights of the best one
        (``training_info["best_epoch"]``); needs ``validation_fraction > 0``.
    patience : see ``early_stopping``.
    weight_decay : L2 regularisation ``lambda``: the loss gets ``lambda / 2 * sum(W**2)`` over
        the weights (not the biases), so each step adds ``lambda * W`` to their gradient.  The
        history's loss is the cross-entropy alone.
    decay_every, decay_factor : step decay of the learning rate: ``alpha`` is multiplied by
        ``decay_factor`` every ``decay_every`` epochs (iterations in full-batch training), counted
        over the history; None keeps it constant.
    seed : seed of the ``numpy.random.Generator`` for weights, shuffling and the validation split.
    dtype : ``"float32"`` (fast) or ``"float64"`` (for gradient checks).
    backend : ``"numba"``, the fast kernels, or ``"numpy"``, the plain NumPy reference of
        :mod:`mnistnn.reference` (the same numbers up to rounding; it also takes float images
        that are not raw pixels, e.g. centred ones).
    progress : show a tqdm progress bar in ``fit``; None follows ``MNISTNN_PROGRESS``.
    """

    def __init__(
        self,
        nodes_in: int = 784,
        hidden_layers: Sequence[int] = (128, 64),
        nodes_out: int = 10,
        alpha: float = 0.1,
        maxiterations: int = 5000,
        batch_size: int | None = None,
        epochs: int = 10,
        momentum: float = 0.0,
        init: str = "uniform",
        validation_fraction: float = 0.0,
        early_stopping: bool = False,
        patience: int = 5,
        weight_decay: float = 0.0,
        decay_every: int | None = None,
        decay_factor: float = 0.1,
        seed: int | None = None,
        dtype: str = "float32",
        backend: str = "numba",
        progress: bool | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        self.backend = backend
        self._backend = BACKENDS[backend]
        self.nodes_in = _positive_int("nodes_in", nodes_in)
        self.hidden_layers = _hidden_layers(hidden_layers)
        self.nodes_out = _nodes_out(nodes_out)
        if init not in ("uniform", "he"):
            raise ValueError(f"init must be 'uniform' or 'he', got {init!r}")
        self.init = init
        if not (isinstance(validation_fraction, int | float) and 0.0 <= validation_fraction < 1.0):
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
        self.validation_fraction = float(validation_fraction)
        settings = _check_training_settings(
            alpha, maxiterations, batch_size, epochs, momentum, early_stopping, patience,
            weight_decay, decay_every, decay_factor, self.validation_fraction,
        )
        for name, value in settings.items():
            setattr(self, name, value)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
        ):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        self.dtype = _dtype_name(dtype)
        _check_alpha(self.alpha, self.dtype)
        self.progress = progress

        self.layer_sizes = (self.nodes_in, *self.hidden_layers, self.nodes_out)
        _check_memory(self.layer_sizes, self.dtype)
        self._sizes = np.asarray(self.layer_sizes, dtype=np.int64)
        self._plan = kernels.Plan(self.layer_sizes)
        self._offsets = kernels.layout(self.layer_sizes)
        self._entropy = np.random.SeedSequence(seed).entropy  # fixes the validation split
        self._rng = np.random.default_rng(np.random.SeedSequence(self._entropy))
        self._theta = np.empty(int(self._offsets[-1]), dtype=self.dtype)
        self._velocity = np.zeros_like(self._theta)
        self._init_parameters()
        self.history: dict[str, list[float]] = {}
        self.training_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ parameters
    def _init_parameters(self) -> None:
        """Draw every ``W`` (and ``b``) from the seeded generator, layer by layer, in float64."""
        for W, b in zip(self.weights, self.biases, strict=True):
            n_in = W.shape[1]
            if self.init == "uniform":  # the write-up: np.random.rand(n_out, n_in) - 0.5
                W[...] = self._rng.uniform(-0.5, 0.5, size=W.shape)
                b[...] = self._rng.uniform(-0.5, 0.5, size=b.shape)
            else:  # He et al. (2015): keeps the ReLU activations' variance layer after layer
                W[...] = self._rng.normal(0.0, math.sqrt(2.0 / n_in), size=W.shape)
                b[...] = 0.0

    def _views(self, vector: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-layer ``(n_out, n_in)`` and ``(n_out,)`` views into a flat parameter vector."""
        Ws, bs = [], []
        for start, n_in, n_out in zip(
            self._offsets[:-1], self.layer_sizes[:-1], self.layer_sizes[1:], strict=True
        ):
            Ws.append(vector[start : start + n_out * n_in].reshape(n_out, n_in))
            bs.append(vector[start + n_out * n_in : start + n_out * n_in + n_out])
        return Ws, bs

    @property
    def weights(self) -> list[np.ndarray]:
        """Weight matrices, ``weights[l]`` of shape ``(n_out, n_in)`` (views: edits train)."""
        return self._views(self._theta)[0]

    @property
    def biases(self) -> list[np.ndarray]:
        """Bias vectors, ``biases[l]`` of shape ``(n_out,)`` (views into the parameters)."""
        return self._views(self._theta)[1]

    @property
    def n_parameters(self) -> int:
        """Number of trainable numbers (weights and biases)."""
        return int(self._offsets[-1])

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def set_params(self, **params: Any) -> NNetworkExtended:
        """Change training settings between ``fit`` calls (e.g. a smaller ``alpha`` to continue
        with smaller steps), as scikit-learn's ``set_params``; validated like the constructor.

        Only the constructor's :data:`TRAINING_SETTINGS` can change: the architecture, ``init``,
        ``seed``, ``dtype`` and the validation split are fixed once the weights exist.
        """
        allowed = [name for name in TRAINING_SETTINGS if name in self.get_params()]
        fixed = sorted(set(params) - set(allowed))
        if fixed:
            raise ValueError(
                f"set_params can change only {', '.join(allowed)}; got {', '.join(fixed)}"
                " (create a new network to change the others)"
            )
        settings = {name: getattr(self, name) for name in TRAINING_SETTINGS}
        settings.update(params)
        progress = settings.pop("progress")
        checked = _check_training_settings(**settings, validation_fraction=self.validation_fraction)
        checked["progress"] = progress
        _check_alpha(checked["alpha"], self.dtype)
        for name in params:  # all checked first: a bad value changes nothing
            setattr(self, name, checked[name])
        return self

    def __repr__(self) -> str:
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        shown = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if value != defaults.get(name)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------ validation
    def _check_X(self, X: Any) -> np.ndarray:
        """Raw pixels as a C-contiguous ``(N, nodes_in)`` array (uint8 kept, others as floats)."""
        X = np.asarray(X)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(
                f"X must be a non-empty array of images, shape (N, {self.nodes_in}) or "
                f"(N, rows, cols); got shape {X.shape}"
            )
        if math.prod(X.shape[1:]) != self.nodes_in:
            raise ValueError(
                f"each image must have {self.nodes_in} pixels; X has shape {X.shape} "
                f"({math.prod(X.shape[1:])} pixels per image)"
            )
        X = X.reshape(X.shape[0], self.nodes_in)
        if X.dtype == np.uint8:
            return np.ascontiguousarray(X)
        if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise ValueError(f"X must hold numbers (pixels 0..255), got dtype {X.dtype}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        low, high = X.min(), X.max()
        if self.backend == "numpy":  # any numbers: e.g. centred images
            return np.ascontiguousarray(X, dtype=self.dtype)
        if low < 0 or high > 255:
            raise ValueError(
                f"X must hold raw pixels in 0..255 (the network divides by 255 itself); "
                f"got values from {low} to {high} (backend='numpy' takes any numbers)"
            )
        if np.issubdtype(X.dtype, np.floating) and 0 < high <= 1:
            _warn(
                f"every value of X is at most 1 (largest {high:g}), as if scaled to 0..1; the "
                "network expects raw pixels in 0..255 and divides by 255 itself: pass the uint8 "
                "images (or X * 255)",
                PixelScaleWarning,
            )
        return np.ascontiguousarray(X, dtype=self.dtype)

    def _check_Xy(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``X`` ``(N, nodes_in)`` and integer labels ``y`` ``(N,)`` in 0..nodes_out-1."""
        X = self._check_X(X)
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}")
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} images but y has {y.shape[0]} labels")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.min() < 0 or y.max() >= self.nodes_out:
            raise ValueError(
                f"labels must be in 0..{self.nodes_out - 1}; got values from {y.min()} to {y.max()}"
            )
        return X, np.ascontiguousarray(y, dtype=np.int64)

    # ------------------------------------------------------------------ inference
    def _workspace(self, m: int, gradients: bool = True) -> kernels.Workspace:
        """The kernels' arrays for batches of up to ``m`` images (see
        :class:`mnistnn.kernels.Plan`), checked against the plan before any kernel uses them."""
        work = self._plan.workspace(m, self.dtype, gradients)
        self._plan.check(work, m, gradients)
        return work

    def _inputs(self, X: np.ndarray) -> Any:
        """The images as the backend reads them, made once per call (:mod:`mnistnn.backends`)."""
        return self._backend.inputs(X)

    def _backward(self, data: Any, y: np.ndarray, rows: np.ndarray, work) -> float:
        """The gradients of the mean loss on images ``rows`` into ``work.grad``; returns the mean
        loss."""
        return self._backend.backward(self, data, y, rows, work)

    @_announces_compiling
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax outputs), shape ``(N, nodes_out)``."""
        X = self._check_X(X)
        data = self._inputs(X)
        out = np.empty((X.shape[0], self.nodes_out), dtype=self.dtype)
        work = self._workspace(min(PREDICT_CHUNK, X.shape[0]), gradients=False)
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            rows = np.arange(start, min(X.shape[0], start + PREDICT_CHUNK))
            out[rows] = self._backend.probabilities(self, data, rows, work)
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each image, shape ``(N,)``, int64."""
        return np.argmax(self.predict_proba(X), axis=1)

    def _eval_buffers(self, n: int) -> kernels.Workspace:
        """The workspace of :meth:`_evaluate` on up to ``n`` images (in chunks)."""
        return self._workspace(min(PREDICT_CHUNK, n), gradients=False)

    @_announces_compiling
    def _evaluate(
        self, data: Any, y: np.ndarray, rows: np.ndarray, work: kernels.Workspace | None = None
    ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on images ``rows`` of ``data``, in chunks; ``work``
        from :meth:`_eval_buffers` (made here if not given)."""
        total_loss, hits = 0.0, 0.0
        work = work or self._eval_buffers(rows.shape[0])
        for start in range(0, rows.shape[0], PREDICT_CHUNK):
            chunk = rows[start : start + PREDICT_CHUNK]
            m = chunk.shape[0]
            part = work._replace(losses=work.losses[:m], correct=work.correct[:m])
            loss, acc = self._backend.evaluate(self, data, y, chunk, part)
            total_loss += loss * m
            hits += acc * m
        return total_loss / rows.shape[0], hits / rows.shape[0]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of images whose predicted class equals ``y``."""
        X, y = self._check_Xy(X, y)
        return self._evaluate(self._inputs(X), y, np.arange(X.shape[0]))[1]

    def loss(self, X: Any, y: Any) -> float:
        """Mean cross-entropy ``-mean(log p[y])`` over the batch."""
        X, y = self._check_Xy(X, y)
        return self._evaluate(self._inputs(X), y, np.arange(X.shape[0]))[0]

    @_announces_compiling
    def gradients(self, X: Any, y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients of :meth:`loss` on the batch ``(X, y)``: ``(weight_grads, bias_grads)``,
        shaped like ``weights`` and ``biases``."""
        X, y = self._check_Xy(X, y)
        rows = np.arange(X.shape[0])
        work = self._workspace(X.shape[0])
        self._backward(self._inputs(X), y, rows, work)
        return self._views(work.grad)

    # ------------------------------------------------------------------ training
    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Train/validation row indices: the same split in every ``fit`` call of this model,
        drawn from a generator of its own, seeded from ``seed``."""
        if self.validation_fraction == 0.0:
            return np.arange(n), np.arange(0)
        rng = np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=(1,)))
        perm = rng.permutation(n)
        n_val = max(1, round(n * self.validation_fraction))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    @_announces_compiling
    def fit(self, X: Any, y: Any) -> NNetworkExtended:
        """Train from the current weights: full-batch gradient descent for ``maxiterations``
        iterations if ``batch_size`` is None, else mini-batch SGD for ``epochs`` epochs.

        Appends to :attr:`history` (loss and accuracy measured before each update, validation
        scores after it) and sets :attr:`training_info` (``seconds`` counts every ``fit`` call of
        the history).  With ``early_stopping`` it stops after ``patience`` steps without a lower
        validation loss and keeps the weights of the step with the lowest one:
        ``training_info["best_epoch"]`` (``"best_iteration"`` in full-batch training) names it,
        and ``"stopped_early"`` says whether it stopped before the end; the history keeps every
        step that ran.  Raises
        :class:`TrainingDivergedError` naming the iteration if the loss stops being finite; the
        parameters are then those of the last finite step.  Warns with
        :class:`TrainingDivergedWarning` when the loss stays finite but ends far above where it
        started (more than twice as high, and higher by more than 1).
        """
        X, y = self._check_Xy(X, y)
        earlier = self.training_info.get("seconds", 0.0) if self.history else 0.0
        train_rows, val_rows = self._split(X.shape[0])
        if train_rows.shape[0] == 0:
            raise ValueError("validation_fraction leaves no training data")
        started = time.perf_counter()
        data = self._inputs(X)
        val = (val_rows, self._eval_buffers(val_rows.shape[0])) if val_rows.shape[0] else None
        if self.batch_size is None:
            first = len(self.history.get("loss", []))
            best = self._fit_full_batch(data, y, train_rows, val)
            start_loss = self.history["loss"][first]  # measured before the first update
        else:  # the history holds epoch means: the start is measured on a first batch
            sample = train_rows[: min(self.batch_size, DIVERGENCE_SAMPLE)]
            start_loss = self._evaluate(data, y, sample)[0]
            best = self._fit_mini_batch(data, y, train_rows, val)
        self.training_info = {
            "samples": int(train_rows.shape[0]),
            "seconds": round(earlier + time.perf_counter() - started, 3),  # all fit calls
            "final_loss": self.history["loss"][-1],
            "final_train_accuracy": self.history["train_accuracy"][-1],
        }
        if best is not None:
            self.training_info.update(best.restore())
        self._warn_if_diverged(start_loss)
        return self

    def _warn_if_diverged(self, start_loss: float) -> None:
        """Warn when the training loss ended far above ``start_loss``, its value before ``fit``."""
        final = self.history["loss"][-1]
        if final > 2 * start_loss and final > start_loss + 1:
            accuracy = self.history["train_accuracy"][-1]
            _warn(
                f"training diverged: the loss rose from {start_loss:.3g} to {final:.3g} "
                f"(training accuracy {accuracy:.1%}); try a smaller learning rate than "
                f"alpha={self.alpha:g}",
                TrainingDivergedWarning,
            )

    def _record(self, step: str, value: int, loss: float, acc: float, data, y, val) -> None:
        """Append one row to the history (plus validation scores if there is a split: ``val`` is
        ``(val_rows, workspace)``, else None)."""
        for key, v in ((step, value), ("loss", loss), ("train_accuracy", acc)):
            self.history.setdefault(key, []).append(v)
        if val is not None:
            val_loss, val_acc = self._evaluate(data, y, *val)
            self.history.setdefault("val_loss", []).append(val_loss)
            self.history.setdefault("val_accuracy", []).append(val_acc)

    def _diverged(self, where: str, loss: float) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"training diverged at {where}: the loss ({loss:.4g}) or the updated parameters are "
            f"not finite. The parameters are kept from the last good step; try a smaller "
            f"learning rate (alpha={self.alpha})."
        )

    def _alpha_at(self, step: int) -> float:
        """The learning rate of iteration or epoch ``step`` (1-based, counted over the history):
        ``alpha``, times ``decay_factor`` for every ``decay_every`` steps before it."""
        if self.decay_every is None:
            return self.alpha
        return self.alpha * self.decay_factor ** ((step - 1) // self.decay_every)

    def _decay(self) -> np.ndarray:
        """``weight_decay`` for every weight and 0 for every bias, laid out as the parameters;
        empty without weight decay (the update then adds nothing to the gradient)."""
        if not self.weight_decay:
            return np.empty(0, dtype=self.dtype)
        decay = np.zeros_like(self._theta)
        for W in self._views(decay)[0]:
            W[...] = self.weight_decay
        return decay

    def _step(self, data, y, rows, work, alpha: float, decay: np.ndarray) -> tuple:
        """One full-batch iteration, the write-up's ``W = W - alpha dW``: ``(loss, accuracy,
        updated)``, measured before the update; not updated if it would not be finite."""
        loss = self._backward(data, y, rows, work)
        updated = math.isfinite(loss) and self._backend.update(
            self, work.grad, alpha, self.momentum, decay
        )
        return loss, float(np.count_nonzero(work.correct) / rows.shape[0]), updated

    def _fit_full_batch(self, data, y, rows, val) -> _Best | None:
        """The write-up's training: every iteration uses every training image."""
        work, decay = self._workspace(rows.shape[0]), self._decay()
        start = len(self.history.get("iteration", []))
        refresh = max(1, self.maxiterations // 100)
        best = _Best(self) if self.early_stopping else None
        with tqdm(total=self.maxiterations, desc="training", disable=not self._show()) as bar:
            for it in range(start + 1, start + self.maxiterations + 1):
                loss, acc, updated = self._step(data, y, rows, work, self._alpha_at(it), decay)
                if not updated:
                    raise self._diverged(f"iteration {it}", loss)
                self._record("iteration", it, loss, acc, data, y, val)
                stop = best is not None and best.stop_after(it)
                if stop or it % refresh == 0 or it == start + self.maxiterations:
                    bar.set_postfix(loss=f"{loss:.4f}", accuracy=f"{acc:.4f}", refresh=False)
                    bar.update(it - bar.n - start)
                if stop:
                    _stopped_early(bar)
                    break
        return best

    def _fit_mini_batch(self, data, y, rows, val) -> _Best | None:
        """Mini-batch SGD: each epoch reshuffles the training rows with the seeded generator."""
        bs = min(self.batch_size, rows.shape[0])  # no buffers for more images than there are
        work, decay = self._workspace(bs), self._decay()
        start = len(self.history.get("epoch", []))
        best = _Best(self) if self.early_stopping else None
        with tqdm(
            total=self.epochs, desc="training", unit="epoch", disable=not self._show()
        ) as bar:
            for epoch in range(start + 1, start + self.epochs + 1):
                order = rows[self._rng.permutation(rows.shape[0])]
                loss, acc, done = self._backend.epoch(
                    self, data, y, order, bs, work, self._alpha_at(epoch), self.momentum, decay
                )
                if done < -(-order.shape[0] // bs):
                    raise self._diverged(f"epoch {epoch}, batch {done + 1}", loss)
                self._record("epoch", epoch, loss, acc, data, y, val)
                bar.set_postfix(loss=f"{loss:.4f}", accuracy=f"{acc:.4f}", refresh=False)
                bar.update(1)
                if best is not None and best.stop_after(epoch):
                    _stopped_early(bar)
                    break
        return best

    def _show(self) -> bool:
        return progress_enabled(self.progress)

    # ------------------------------------------------------------------ model files
    def save(self, path: str | PathLike[str]) -> None:
        """Write the model to ``path`` atomically in the format of :mod:`mnistnn.modelfile`."""
        save_model(
            path,
            self.weights,
            self.biases,
            {
                "class": type(self).__name__,
                "params": _jsonable(
                    {k: v for k, v in self.get_params().items() if k != "progress"}
                ),
                "training": _jsonable(self.training_info),
            },
        )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> NNetworkExtended:
        """Read a model written by :meth:`save`; raises ``ModelFormatError`` on a bad file.

        The architecture the stored parameters describe must be the one of the stored arrays
        before anything is built: a file's metadata alone never decides how much is allocated.
        """
        weights, biases, meta = load_model(path, expected_class=cls.__name__)
        params = dict(meta.get("params", {}))
        params.pop("progress", None)
        stored = (tuple(meta["layer_sizes"]), meta["dtype"])
        try:
            described = cls._architecture(params)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{path}: invalid model parameters: {exc}") from None
        if described != stored:
            raise ModelFormatError(
                f"{path}: its parameters describe a {_arrows(described[0])} network in "
                f"{described[1]}, but its arrays hold {_arrows(stored[0])} in {stored[1]}; "
                "the file was edited or is corrupt"
            )
        try:
            model = cls(**params)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{path}: invalid model parameters: {exc}") from None
        for W, b, W_file, b_file in zip(model.weights, model.biases, weights, biases, strict=True):
            W[...] = W_file
            b[...] = b_file
        model.training_info = dict(meta.get("training", {}))
        return model

    @classmethod
    def _architecture(cls, params: dict[str, Any]) -> tuple[tuple[int, ...], str]:
        """``(layer sizes, dtype name)`` that constructor parameters ``params`` describe,
        validated as the constructor does, without building anything."""
        arguments = inspect.signature(cls.__init__).bind(None, **params)  # TypeError: unknown
        arguments.apply_defaults()
        given = arguments.arguments
        if "nodes_hid" in given:
            hidden: tuple[int, ...] = (_positive_int("nodes_hid", given["nodes_hid"]),)
        else:
            hidden = _hidden_layers(given["hidden_layers"])
        nodes_in = _positive_int("nodes_in", given["nodes_in"])
        return (nodes_in, *hidden, _nodes_out(given["nodes_out"])), _dtype_name(given["dtype"])


class NNetworkMinimal(NNetworkExtended):
    """The original write-up's network: ``784 -> 10 (ReLU) -> 10 (softmax)``, trained by
    full-batch gradient descent for ``maxiterations`` iterations with learning rate ``alpha``.

    Weights and biases are drawn in the constructor from U[-0.5, 0.5), as in the notebook the
    write-up builds on (Samson Zhang's; the write-up does not say), so a
    fresh network already predicts (at chance level, about 10%) and has gradients.
    """

    def __init__(
        self,
        nodes_in: int = 784,
        nodes_hid: int = 10,
        nodes_out: int = 10,
        alpha: float = 0.1,
        maxiterations: int = 5000,
        seed: int | None = None,
        dtype: str = "float32",
        init: str = "uniform",
        backend: str = "numba",
        progress: bool | None = None,
    ) -> None:
        self.nodes_hid = _positive_int("nodes_hid", nodes_hid)
        super().__init__(
            nodes_in=nodes_in,
            hidden_layers=(self.nodes_hid,),
            nodes_out=nodes_out,
            alpha=alpha,
            maxiterations=maxiterations,
            init=init,
            seed=seed,
            dtype=dtype,
            backend=backend,
            progress=progress,
        )


class _Best:
    """Early stopping: the lowest validation loss of a ``fit`` so far, the step that reached it
    and a copy of the parameters then."""

    def __init__(self, net: NNetworkExtended) -> None:
        self.net = net
        self.loss, self.step, self.waited = math.inf, 0, 0
        self.theta, self.velocity = net._theta.copy(), net._velocity.copy()

    def __repr__(self) -> str:
        return f"_Best(loss={self.loss:.4g}, step={self.step}, waited={self.waited})"

    def stop_after(self, step: int) -> bool:
        """Take in the validation loss just recorded for ``step``; True when ``patience`` steps
        in a row have not lowered it."""
        loss = self.net.history["val_loss"][-1]
        if loss < self.loss:
            self.loss, self.step, self.waited = loss, step, 0
            self.theta[...], self.velocity[...] = self.net._theta, self.net._velocity
        else:
            self.waited += 1
        return self.waited >= self.net.patience

    def restore(self) -> dict[str, Any]:
        """Put back the parameters of the best step; its entries for ``training_info``."""
        self.net._theta[...], self.net._velocity[...] = self.theta, self.velocity
        key = "best_iteration" if self.net.batch_size is None else "best_epoch"
        return {key: self.step, "stopped_early": self.waited >= self.net.patience}


def _stopped_early(bar: tqdm) -> None:
    """End ``bar`` at the step where early stopping ended the run, as a finished bar: JupyterLab
    draws a bar closed short of its total in red, as if the run had failed."""
    if bar.disable:
        return
    done, started = bar.n, bar.start_t
    bar.set_description("training (stopped early)", refresh=False)
    bar.reset(total=done)  # the public way to change the total; it also zeroes the count ...
    bar.start_t = started  # ... and the clock, which get their values back
    bar.update(done)


def fit_many(networks: Sequence[NNetworkExtended], X: Any, y: Any) -> list[NNetworkExtended]:
    """Fit every network on ``(X, y)`` exactly as its own ``fit(X, y)`` would, bit for bit, with
    fewer passes over the images; returns them (trained in place).

    Full-batch networks of the same narrow layer sizes (one hidden layer, it and the output of
    at most 16 units: the write-up's 784 -> 10 -> 10), dtype and training rows (the same
    validation split) train side by side: each iteration reads the images once for up to
    ``64 // n_hidden`` of them (:func:`mnistnn.kernels.narrow_nets_backward`).  The others are
    fitted one after another.  Each network keeps its own settings (``alpha``, ``momentum``,
    ``maxiterations``, ``init``, ``seed``), ``history`` and ``training_info``, whose
    ``seconds`` is then the time of the shared run.  A network that diverges stops (its
    parameters from the last good step) while the others go on; then
    :class:`TrainingDivergedError` names it at the end.  Seed spreads, the honest way to report
    a result, are what this is for::

        nets = fit_many([NNetworkMinimal(seed=s) for s in range(5)], X_train, y_train)
    """
    groups: dict[tuple, list[NNetworkExtended]] = {}
    for net in networks:
        side_by_side = net.batch_size is None and not net.early_stopping
        if side_by_side and net.backend == "numba" and kernels.is_narrow(net.layer_sizes):
            split = (net.validation_fraction, net._entropy) if net.validation_fraction else 0
            key = (net.layer_sizes, net.dtype, split)
            groups.setdefault(key, []).append(net)
        else:
            net.fit(X, y)
    errors = []
    for members in groups.values():
        per_pass = LANE_BLOCK // members[0].layer_sizes[1]
        for first in range(0, len(members), per_pass):
            with _compile_notice(members[0]._show()):
                errors += _fit_side_by_side(members[first : first + per_pass], X, y)
    if errors:
        raise TrainingDivergedError("; ".join(errors))
    return list(networks)


LANE_BLOCK = 64  # hidden units that kernels.narrow_nets_backward handles in one block


def _fit_side_by_side(nets: list[NNetworkExtended], X: Any, y: Any) -> list[str]:
    """Full-batch training of networks with the same layer sizes, dtype and split, side by
    side (see :func:`fit_many`); returns the messages of those that diverged."""
    lead = nets[0]
    X, y = lead._check_Xy(X, y)
    rows, val_rows = lead._split(X.shape[0])
    if rows.shape[0] == 0:
        raise ValueError("validation_fraction leaves no training data")
    started = time.perf_counter()
    earlier = {id(n): n.training_info.get("seconds", 0.0) if n.history else 0.0 for n in nets}
    done = {id(n): 0 for n in nets}
    pixels = lead._inputs(X)
    m, dtype = rows.shape[0], np.dtype(lead.dtype)
    chunks = kernels.chunks(m, kernels.grad_tiles(m), kernels.CHUNK)
    columns = kernels.pixel_columns(pixels, rows, chunks[0], lead.nodes_in, dtype)
    val = (val_rows, lead._eval_buffers(val_rows.shape[0])) if val_rows.shape[0] else None
    active, errors, start_loss = list(nets), [], {}
    total = max(n.maxiterations for n in nets)
    with tqdm(total=total, desc=f"training {len(nets)}", disable=not lead._show()) as bar:
        while active:
            thetas = np.stack([n._theta for n in active])  # (G, n_params), views below
            velocities = np.stack([n._velocity for n in active])
            for q, net in enumerate(active):
                net._theta, net._velocity = thetas[q], velocities[q]
            grads = np.empty_like(thetas)
            losses = np.empty((len(active), m), dtype=dtype)
            correct = np.empty((len(active), m), dtype=np.bool_)
            decays = [n._decay() for n in active]
            leaving = []
            while not leaving:
                means = kernels.narrow_nets_backward(
                    thetas, lead._offsets, lead._sizes, pixels, columns, chunks, y, rows,
                    grads, losses, correct,
                )
                for q, net in enumerate(active):
                    loss, it = float(means[q]), len(net.history.get("iteration", [])) + 1
                    alpha, momentum = dtype.type(net._alpha_at(it)), dtype.type(net.momentum)
                    if not (math.isfinite(loss) and kernels.update(
                        thetas[q], grads[q], velocities[q], alpha, momentum, decays[q]
                    )):
                        errors.append(str(net._diverged(f"iteration {it}", loss)))
                        leaving.append(net)
                        continue
                    start_loss.setdefault(id(net), loss)
                    accuracy = float(np.count_nonzero(correct[q]) / m)
                    net._record("iteration", it, loss, accuracy, pixels, y, val)
                    done[id(net)] += 1
                    if done[id(net)] == net.maxiterations:
                        leaving.append(net)
                if max(done.values()) % max(1, total // 100) == 0 or leaving:
                    bar.update(max(done.values()) - bar.n)
            for q, net in enumerate(active):  # each network owns its arrays again
                net._theta, net._velocity = thetas[q].copy(), velocities[q].copy()
            active = [n for n in active if n not in leaving]
    seconds = time.perf_counter() - started
    for net in nets:
        if net.history.get("loss"):
            net.training_info = {
                "samples": int(m),
                "seconds": round(earlier[id(net)] + seconds, 3),
                "final_loss": net.history["loss"][-1],
                "final_train_accuracy": net.history["train_accuracy"][-1],
                "trained_side_by_side": len(nets),
            }
        if id(net) in start_loss:
            net._warn_if_diverged(start_loss[id(net)])
    return errors


TRAINING_SETTINGS = (
    "alpha",
    "maxiterations",
    "batch_size",
    "epochs",
    "momentum",
    "early_stopping",
    "patience",
    "weight_decay",
    "decay_every",
    "decay_factor",
    "progress",
)


def _check_training_settings(
    alpha: Any,
    maxiterations: Any,
    batch_size: Any,
    epochs: Any,
    momentum: Any,
    early_stopping: Any = False,
    patience: Any = 5,
    weight_decay: Any = 0.0,
    decay_every: Any = None,
    decay_factor: Any = 0.1,
    validation_fraction: float = 0.0,
) -> dict[str, Any]:
    """The training settings, validated and normalized (for ``__init__`` and ``set_params``)."""
    settings = {
        "alpha": _positive_float("alpha", alpha),
        "maxiterations": _positive_int("maxiterations", maxiterations),
        "batch_size": None if batch_size is None else _positive_int("batch_size", batch_size),
        "epochs": _positive_int("epochs", epochs),
        "patience": _positive_int("patience", patience),
        "decay_every": None if decay_every is None else _positive_int("decay_every", decay_every),
    }
    if not (isinstance(momentum, int | float) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if not isinstance(early_stopping, bool | np.bool_):
        raise ValueError(f"early_stopping must be True or False, got {early_stopping!r}")
    if early_stopping and not validation_fraction:
        raise ValueError(
            "early_stopping watches the validation loss: give validation_fraction > 0 too"
        )
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not (0.0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if isinstance(decay_factor, bool) or not isinstance(decay_factor, int | float):
        raise ValueError(f"decay_factor must be a number in (0, 1], got {decay_factor!r}")
    if not 0.0 < decay_factor <= 1.0:
        raise ValueError(f"decay_factor must be a number in (0, 1], got {decay_factor!r}")
    return {
        **settings,
        "momentum": float(momentum),
        "early_stopping": bool(early_stopping),
        "weight_decay": float(weight_decay),
        "decay_factor": float(decay_factor),
    }


def _hidden_layers(value: Any) -> tuple[int, ...]:
    """The widths of the hidden layers as a tuple of positive ints (at least one)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(
            f"hidden_layers must be a sequence of layer widths such as (128, 64), got {value!r}"
        )
    widths = tuple(_positive_int("hidden_layers", h) for h in value)
    if not widths:
        raise ValueError("hidden_layers must list at least one layer width, e.g. (128,)")
    return widths


def _nodes_out(value: Any) -> int:
    n = _positive_int("nodes_out", value)
    if n < 2:
        raise ValueError(f"nodes_out must be at least 2 classes, got {value}")
    return n


def _dtype_name(value: Any) -> str:
    """``"float32"`` or ``"float64"`` for any spelling NumPy understands (``np.float32``,
    ``np.dtype("f8")``, ...), so that the model stays JSON-serialisable."""
    try:
        name = None if value is None else np.dtype(value).name
    except (TypeError, ValueError):
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return name


def _check_alpha(alpha: float, dtype: str) -> None:
    largest = float(np.finfo(dtype).max)
    if alpha > largest:
        raise ValueError(
            f"alpha={alpha:g} does not fit in {dtype} (largest {largest:.3g}); choose a smaller "
            "learning rate"
        )


def _warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn``, pointing at the first caller outside this module."""
    level, frame = 1, sys._getframe()
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


def _check_memory(sizes: tuple[int, ...], dtype: str) -> None:
    """Refuse, before allocating, a network whose parameters and their velocity (what the
    constructor allocates) need more than this machine's memory."""
    n = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))
    need = 2 * n * np.dtype(dtype).itemsize
    total = _physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"a {_arrows(sizes)} network has {n:,} parameters, {need / 1e9:,.1f} GB in {dtype} "
            f"with their velocity: more than this machine's {total / 1e9:,.1f} GB of memory; "
            "choose smaller layers"
        )


def _physical_memory() -> int | None:
    """Bytes of RAM, where the OS tells (Linux, macOS); else None."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _arrows(sizes: Sequence[int]) -> str:
    return " -> ".join(map(str, sizes))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _jsonable(obj: Any) -> Any:
    """Tuples to lists and numpy scalars to Python numbers, for the JSON metadata."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
