"""The estimators: dense ReLU networks with a softmax output, trained by gradient descent.

``NNetworkExtended`` takes any number of hidden layers; ``NNetworkMinimal`` is the original
write-up's 784 -> 10 -> 10 network, the one-hidden-layer case of the same class.  Like
scikit-learn's estimators they keep their settings (validated by :mod:`mnistnn.validation`),
``fit``, ``predict``, ``predict_proba`` and ``score``, plus ``loss`` and ``gradients`` for the
backpropagation notebook and ``save``/``load`` (:mod:`mnistnn.modelfile`).  Training itself is
:mod:`mnistnn.training`; the computing, :mod:`mnistnn.backends`.  The parameters
(:class:`~mnistnn.parameters.Parameters`) are public as lists of views: ``weights[l]`` of shape
``(n_out, n_in)`` and ``biases[l]`` of shape ``(n_out,)``.  ``X`` is always raw pixels,
``(N, 784)`` or ``(N, 28, 28)``, in 0..255: the kernels divide by 255 (as Samson Zhang's
notebook, which the write-up builds on, does).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np

from . import training
from . import validation as check
from ._progress import announces_compiling, compile_notice, progress_enabled
from .backends import BACKENDS
from .modelfile import ModelFormatError, load_model, save_model
from .parameters import Parameters
from .training import TrainingDivergedError, TrainingDivergedWarning
from .validation import TRAINING_SETTINGS, PixelScaleWarning

__all__ = [
    "fit_many",
    "NNetworkExtended",
    "NNetworkMinimal",
    "PixelScaleWarning",
    "TrainingDivergedError",
    "TrainingDivergedWarning",
]


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
        self.backend = check.choice("backend", backend, tuple(BACKENDS))
        self.nodes_in = check.positive_int("nodes_in", nodes_in)
        self.hidden_layers = check.hidden_layers(hidden_layers)
        self.nodes_out = check.nodes_out(nodes_out)
        self.init = check.choice("init", init, ("uniform", "he"))
        self.validation_fraction = check.validation_fraction(validation_fraction)
        self.seed = check.seed(seed)
        self.dtype = check.dtype_name(dtype)
        settings = check.training_settings(
            self.dtype, self.validation_fraction, alpha, maxiterations, batch_size, epochs,
            momentum, early_stopping, patience, weight_decay, decay_every, decay_factor,
        )  # fmt: skip
        for name, value in settings.items():
            setattr(self, name, value)
        self.progress = progress
        self.layer_sizes = (self.nodes_in, *self.hidden_layers, self.nodes_out)
        check.check_memory(self.layer_sizes, self.dtype)
        self._entropy = np.random.SeedSequence(seed).entropy  # fixes the validation split
        self._rng = np.random.default_rng(np.random.SeedSequence(self._entropy))
        self._params = Parameters(self.layer_sizes, self.dtype)
        self._params.initialize(self.init, self._rng)
        self._velocity = np.zeros_like(self._params.theta)  # the optimizer's, kept between fits
        self.history: dict[str, list[float]] = {}
        self.training_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ parameters
    @property
    def weights(self) -> list[np.ndarray]:
        """Weight matrices, ``weights[l]`` of shape ``(n_out, n_in)`` (views: edits train)."""
        return self._params.weights

    @property
    def biases(self) -> list[np.ndarray]:
        """Bias vectors, ``biases[l]`` of shape ``(n_out,)`` (views into the parameters)."""
        return self._params.biases

    @property
    def n_parameters(self) -> int:
        """Number of trainable numbers (weights and biases)."""
        return int(self._params.theta.shape[0])

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def set_params(self, **params: Any) -> NNetworkExtended:
        """Change training settings between ``fit`` calls (e.g. a smaller ``alpha`` to continue
        with smaller steps), as scikit-learn's ``set_params``; validated like the constructor.

        Only the constructor's :data:`~mnistnn.validation.TRAINING_SETTINGS` can change: the
        architecture, ``init``, ``seed``, ``dtype`` and the validation split are fixed once the
        weights exist.
        """
        allowed = [name for name in TRAINING_SETTINGS if name in self.get_params()]
        fixed = sorted(set(params) - set(allowed))
        if fixed:
            raise ValueError(
                f"set_params can change only {', '.join(allowed)}; got {', '.join(fixed)}"
                " (create a new network to change the others)"
            )
        settings = {name: getattr(self, name) for name in TRAINING_SETTINGS} | params
        progress = settings.pop("progress")
        checked = check.training_settings(self.dtype, self.validation_fraction, **settings)
        checked["progress"] = progress
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

    # ------------------------------------------------------------------ inference
    def _check_Xy(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated images ``(N, nodes_in)`` and labels ``(N,)`` (:mod:`mnistnn.validation`)."""
        X = self._check_X(X)
        return X, check.check_y(y, X.shape[0], self.nodes_out)

    def _check_X(self, X: Any) -> np.ndarray:
        return check.check_X(X, self.nodes_in, self.dtype, any_numbers=self.backend == "numpy")

    @announces_compiling
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax outputs), shape ``(N, nodes_out)``."""
        X = self._check_X(X)
        backend, data = BACKENDS[self.backend], BACKENDS[self.backend].inputs(X)
        out = np.empty((X.shape[0], self.nodes_out), dtype=self.dtype)
        work = self._params.workspace(min(training.PREDICT_CHUNK, X.shape[0]), gradients=False)
        for start in range(0, X.shape[0], training.PREDICT_CHUNK):
            rows = np.arange(start, min(X.shape[0], start + training.PREDICT_CHUNK))
            out[rows] = backend.probabilities(self._params, data, rows, work)
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each image, shape ``(N,)``, int64."""
        return np.argmax(self.predict_proba(X), axis=1)

    @announces_compiling
    def _evaluate(self, X: Any, y: Any) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on ``(X, y)`` (:func:`mnistnn.training.evaluate`)."""
        X, y = self._check_Xy(X, y)
        backend = BACKENDS[self.backend]
        return training.evaluate(backend, self._params, backend.inputs(X), y, np.arange(len(y)))

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of images whose predicted class equals ``y``."""
        return self._evaluate(X, y)[1]

    def loss(self, X: Any, y: Any) -> float:
        """Mean cross-entropy ``-mean(log p[y])`` over the batch."""
        return self._evaluate(X, y)[0]

    @announces_compiling
    def gradients(self, X: Any, y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients of :meth:`loss` on the batch ``(X, y)``: ``(weight_grads, bias_grads)``,
        shaped like ``weights`` and ``biases``."""
        X, y = self._check_Xy(X, y)
        backend, work = BACKENDS[self.backend], self._params.workspace(X.shape[0])
        backend.backward(self._params, backend.inputs(X), y, np.arange(X.shape[0]), work)
        return self._params.views(work.grad)

    # ------------------------------------------------------------------ training
    @announces_compiling
    def fit(self, X: Any, y: Any) -> NNetworkExtended:
        """Train from the current weights (:func:`mnistnn.training.train`): full-batch gradient
        descent for ``maxiterations`` iterations if ``batch_size`` is None, else mini-batch SGD
        for ``epochs`` epochs.

        Appends to :attr:`history` (loss and accuracy measured before each update, validation
        scores after it) and sets :attr:`training_info` (``seconds`` counts every ``fit`` call of
        the history).  With ``early_stopping`` it stops after ``patience`` steps without a lower
        validation loss and keeps the weights of the step with the lowest one:
        ``training_info["best_epoch"]`` (``"best_iteration"`` in full-batch training) names it,
        and ``"stopped_early"`` says whether it stopped before the end; the history keeps every
        step that ran.  Raises :class:`TrainingDivergedError` naming the iteration if the loss
        stops being finite; the parameters are then those of the last finite step.  Warns with
        :class:`TrainingDivergedWarning` when the loss stays finite but ends far above where it
        started (more than twice as high, and higher by more than 1).
        """
        X, y = self._check_Xy(X, y)
        rows, val_rows = self._split(X.shape[0])
        self.training_info = training.train(
            BACKENDS[self.backend], self._run(), X, y, rows, val_rows, self._rng, self._show()
        )
        return self

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Train and validation rows (:func:`mnistnn.training.validation_split`: the same in
        every ``fit``); refuses a split that leaves no training data."""
        rows, val_rows = training.validation_split(n, self.validation_fraction, self._entropy)
        if rows.shape[0] == 0:
            raise ValueError("validation_fraction leaves no training data")
        return rows, val_rows

    def _run(self) -> training.Run:
        """This network's training state for :mod:`mnistnn.training` (shared, not copied)."""
        settings = training.Settings(
            **{name: getattr(self, name) for name in TRAINING_SETTINGS if name != "progress"}
        )
        earlier = self.training_info.get("seconds", 0.0) if self.history else 0.0
        return training.Run(self._params, self._velocity, settings, self.history, earlier)

    def _show(self) -> bool:
        return progress_enabled(self.progress)

    # ------------------------------------------------------------------ model files
    def save(self, path: str | PathLike[str]) -> None:
        """Write the model to ``path`` atomically in the format of :mod:`mnistnn.modelfile`."""
        params = {k: v for k, v in self.get_params().items() if k != "progress"}
        meta = {"class": type(self).__name__, "params": _jsonable(params),
                "training": _jsonable(self.training_info)}  # fmt: skip
        save_model(path, self.weights, self.biases, meta)

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
                f"{path}: its parameters describe a {check.arrows(described[0])} network in "
                f"{described[1]}, but its arrays hold {check.arrows(stored[0])} in {stored[1]}; "
                "the file was edited or is corrupt"
            )
        try:
            model = cls(**params)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{path}: invalid model parameters: {exc}") from None
        for W, b, W_file, b_file in zip(model.weights, model.biases, weights, biases, strict=True):
            W[...], b[...] = W_file, b_file
        model.training_info = dict(meta.get("training", {}))
        return model

    @classmethod
    def _architecture(cls, params: dict[str, Any]) -> tuple[tuple[int, ...], str]:
        """``(layer sizes, dtype name)`` that constructor parameters ``params`` describe,
        validated as the constructor does, without building anything."""
        given = inspect.signature(cls.__init__).bind(None, **params)  # TypeError: unknown
        given.apply_defaults()
        args = given.arguments
        if "nodes_hid" in args:
            hidden: tuple[int, ...] = (check.positive_int("nodes_hid", args["nodes_hid"]),)
        else:
            hidden = check.hidden_layers(args["hidden_layers"])
        nodes_in = check.positive_int("nodes_in", args["nodes_in"])
        return (nodes_in, *hidden, check.nodes_out(args["nodes_out"])), check.dtype_name(
            args["dtype"]
        )


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
        self.nodes_hid = check.positive_int("nodes_hid", nodes_hid)
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


def fit_many(networks: Sequence[NNetworkExtended], X: Any, y: Any) -> list[NNetworkExtended]:
    """Fit every network on ``(X, y)`` exactly as its own ``fit(X, y)`` would, bit for bit, with
    fewer passes over the images; returns them (trained in place).

    Full-batch networks of the same narrow layer sizes (one hidden layer, it and the output of
    at most 16 units: the write-up's 784 -> 10 -> 10), dtype and training rows (the same
    validation split) train side by side (:func:`mnistnn.training.train_side_by_side`): each
    iteration reads the images once for up to ``64 // n_hidden`` of them.  The others are
    fitted one after another.  Each network keeps its own settings (``alpha``, ``momentum``,
    ``maxiterations``, ``init``, ``seed``), ``history`` and ``training_info``, whose
    ``seconds`` is then the time of the shared run.  A network that diverges stops (its
    parameters from the last good step) while the others go on; then
    :class:`TrainingDivergedError` names it at the end.  Each network may appear once.  Seed
    spreads, the honest way to report a result, are what this is for::

        nets = fit_many([NNetworkMinimal(seed=s) for s in range(5)], X_train, y_train)
    """
    if len({id(net) for net in networks}) < len(networks):
        raise ValueError(
            "fit_many got the same network more than once: each would train the one set of "
            "weights; pass separate networks (e.g. one per seed)"
        )
    groups: dict[tuple, list[NNetworkExtended]] = {}
    for net in networks:
        per_pass = BACKENDS[net.backend].group_size(net.layer_sizes)
        if net.batch_size is None and not net.early_stopping and per_pass:
            split = (net.validation_fraction, net._entropy) if net.validation_fraction else 0
            groups.setdefault((net.layer_sizes, net.dtype, split), []).append(net)
        else:
            net.fit(X, y)
    errors = []
    for members in groups.values():
        lead, backend = members[0], BACKENDS[members[0].backend]
        X_ok, y_ok = lead._check_Xy(X, y)
        rows, val_rows = lead._split(X_ok.shape[0])
        per_pass = backend.group_size(lead.layer_sizes)
        for first in range(0, len(members), per_pass):
            nets = members[first : first + per_pass]
            with compile_notice(lead._show()):
                infos, failed = training.train_side_by_side(
                    backend, [n._run() for n in nets], X_ok, y_ok, rows, val_rows, lead._show()
                )
            for net, info in zip(nets, infos, strict=True):
                net.training_info = info if info is not None else net.training_info
            errors += failed
    if errors:
        raise TrainingDivergedError("; ".join(errors))
    return list(networks)


def _jsonable(obj: Any) -> Any:
    """Tuples to lists and numpy scalars to Python numbers, for the JSON metadata."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
