"""Training: what happens between batches, for every network, backend and path.

This is the loop notebook 03 writes by hand, grown as notebook 04 grows it::

    for step in 1, 2, ...:                             # iterations (full batch) or epochs
        for rows in batches(step):                     # every training row, or shuffled batches
            loss = backend.backward(params, rows)      # forward + backpropagation: work.grad
            optimizer.step(params, work.grad, step)    # V = mu V - alpha_t (dW + lambda W); W += V
        history: the mean loss and accuracy, then the validation loss and accuracy
        early stopping: stop when the validation loss has not improved for `patience` steps

:func:`train` runs it for one network; :class:`SGD` is the update rule with its learning-rate
schedule, :class:`EarlyStopping` keeps the best weights, :func:`train_side_by_side` runs the
full-batch loop for several narrow networks that share one pass over the images (each bit for
bit as alone).  How a batch's gradients are computed (plain NumPy or the kernels, their
workspaces and tiles) stays behind the backend (:mod:`mnistnn.backends`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._progress import end_stopped_early
from ._warn import warn
from .backends import Backend
from .kernels.plan import Workspace
from .parameters import Parameters

PREDICT_CHUNK = 8192  # images per forward pass when scoring: bounds the work buffer
DIVERGENCE_SAMPLE = 1024  # at most this many images measure the loss before mini-batch training


class TrainingDivergedError(RuntimeError):
    """The loss stopped being finite during training (usually: the learning rate is too high)."""


class TrainingDivergedWarning(UserWarning):
    """The loss stayed finite but ended far above where it started: the model is likely useless."""


@dataclass(frozen=True)
class Settings:
    """How to train (the estimators' training parameters, validated there)."""

    alpha: float = 0.1
    maxiterations: int = 5000  # full-batch iterations when batch_size is None
    batch_size: int | None = None
    epochs: int = 10  # passes over the shuffled rows when batch_size is set
    momentum: float = 0.0
    weight_decay: float = 0.0
    decay_every: int | None = None
    decay_factor: float = 0.1
    early_stopping: bool = False
    patience: int = 5


@dataclass
class Run:
    """One network's training state, shared with its estimator (nothing is copied): the
    parameters, the optimizer's velocity (laid out as the parameters), the settings, the history
    that training appends to, and the seconds that earlier calls trained."""

    params: Parameters
    velocity: np.ndarray
    settings: Settings
    history: dict[str, list[float]]
    seconds: float = 0.0


class SGD:
    """Gradient descent with momentum and L2 weight decay, the rule of
    :func:`mnistnn.reference.update`: ``V = momentum * V - alpha_t * (dW + weight_decay * W)``,
    ``W = W + V`` (biases: no decay); with ``momentum = weight_decay = 0`` the write-up's
    ``W = W - alpha * dW``.  ``alpha_t`` is ``alpha`` times ``decay_factor`` for every
    ``decay_every`` steps before step ``t`` (a step decay; constant if ``decay_every`` is None)."""

    def __init__(self, settings: Settings, params: Parameters, velocity: np.ndarray) -> None:
        self.settings, self.velocity = settings, velocity
        self.weight_decay = params.weight_mask(settings.weight_decay)  # 0 on biases

    def __repr__(self) -> str:
        s = self.settings
        return f"SGD(alpha={s.alpha}, momentum={s.momentum}, weight_decay={s.weight_decay})"

    def rate(self, step: int) -> float:
        """The learning rate of step ``step`` (1-based, counted over the history)."""
        s = self.settings
        if s.decay_every is None:
            return s.alpha
        return s.alpha * s.decay_factor ** ((step - 1) // s.decay_every)

    def step(self, backend: Backend, params: Parameters, grad: np.ndarray, step: int) -> bool:
        """Update ``params`` in place; False, changing nothing, if a parameter would not be
        finite."""
        t = params.dtype.type
        return backend.update(
            params,
            grad,
            self.velocity,
            t(self.rate(step)),
            t(self.settings.momentum),
            self.weight_decay,
        )


class EarlyStopping:
    """The lowest validation loss so far, the step that reached it and a copy of the parameters
    (and velocity) then; :meth:`stop_after` says when ``patience`` steps have not lowered it."""

    def __init__(self, patience: int, params: Parameters, velocity: np.ndarray) -> None:
        self.patience, self.params, self.velocity = patience, params, velocity
        self.loss, self.step, self.waited = math.inf, 0, 0
        self.theta, self.best_velocity = params.theta.copy(), velocity.copy()

    def __repr__(self) -> str:
        return f"EarlyStopping(loss={self.loss:.4g}, step={self.step}, waited={self.waited})"

    def stop_after(self, step: int, val_loss: float) -> bool:
        """Take in the validation loss of ``step``; True when ``patience`` steps in a row have
        not lowered it."""
        if val_loss < self.loss:
            self.loss, self.step, self.waited = val_loss, step, 0
            self.theta[...], self.best_velocity[...] = self.params.theta, self.velocity
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self, key: str) -> dict[str, Any]:
        """Put back the parameters of the best step; its entries for ``training_info``."""
        self.params.theta[...], self.velocity[...] = self.theta, self.best_velocity
        return {f"best_{key}": self.step, "stopped_early": self.waited >= self.patience}


def train(
    backend: Backend,
    run: Run,
    X: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    val_rows: np.ndarray,
    rng: np.random.Generator,
    show: bool,
) -> dict[str, Any]:
    """Train ``run`` on images ``rows`` of ``X`` (validated, ``(N, n_in)``) and labels ``y``:
    full batch for ``maxiterations`` iterations when ``batch_size`` is None, else ``epochs``
    epochs of mini-batches in an order that ``rng`` shuffles anew each epoch (the last batch
    smaller).  Validation scores on ``val_rows`` after each step.  Returns ``training_info``;
    raises :class:`TrainingDivergedError` (parameters from the last good step) when the loss or
    an update stops being finite."""
    s, params, history = run.settings, run.params, run.history
    started, data = time.perf_counter(), backend.inputs(X)
    full = s.batch_size is None
    key, n_steps = ("iteration", s.maxiterations) if full else ("epoch", s.epochs)
    size = rows.shape[0] if full else min(s.batch_size, rows.shape[0])
    work, optimizer = params.workspace(size), SGD(s, params, run.velocity)
    stopper = EarlyStopping(s.patience, params, run.velocity) if s.early_stopping else None
    val = validation(params, val_rows)
    first = len(history.get(key, []))
    sample = None if full else rows[: min(s.batch_size, DIVERGENCE_SAMPLE)]
    start_loss = None if full else evaluate(backend, params, data, y, sample)[0]
    unit = "it" if full else "epoch"
    with tqdm(total=n_steps, desc="training", unit=unit, disable=not show) as bar:
        for step in range(first + 1, first + n_steps + 1):
            order = rows if full else rows[rng.permutation(rows.shape[0])]
            loss, accuracy = one_step(backend, params, optimizer, data, y, order, work, step, full)
            record(history, key, step, loss, accuracy, backend, params, data, y, val)
            start_loss = loss if start_loss is None else start_loss
            stop = stopper is not None and stopper.stop_after(step, history["val_loss"][-1])
            if stop or step % max(1, n_steps // 100) == 0 or step == first + n_steps:
                bar.set_postfix(loss=f"{loss:.4f}", accuracy=f"{accuracy:.4f}", refresh=False)
                bar.update(step - first - bar.n)
            if stop:
                end_stopped_early(bar)
                break
    info = summary(run, rows.shape[0], time.perf_counter() - started)
    info |= stopper.restore(key) if stopper is not None else {}
    warn_if_diverged(history, start_loss, s.alpha)
    return info


def one_step(
    backend: Backend,
    params: Parameters,
    optimizer: SGD,
    data: Any,
    y: np.ndarray,
    order: np.ndarray,
    work: Workspace,
    step: int,
    full: bool,
) -> tuple[float, float]:
    """One iteration (``full``: one batch of all of ``order``) or one epoch (batches of
    ``len(work.losses)`` images of ``order``, the last one smaller): each batch's gradients,
    then an update.  The mean loss and accuracy over the batches, measured before each update."""
    size, total, hits = work.losses.shape[0], 0.0, 0
    for b, start in enumerate(range(0, order.shape[0], size)):
        batch = order[start : start + size]
        part = work.head(batch.shape[0])
        loss = backend.backward(params, data, y, batch, part)  # gradients in work.grad
        if not (math.isfinite(loss) and optimizer.step(backend, params, work.grad, step)):
            raise diverged(f"iteration {step}" if full else f"epoch {step}, batch {b + 1}", loss,
                           optimizer.settings.alpha)  # fmt: skip
        total, hits = total + loss * batch.shape[0], hits + int(np.count_nonzero(part.correct))
    return (loss if full else total / order.shape[0]), hits / order.shape[0]


def train_side_by_side(
    backend: Backend,
    runs: list[Run],
    X: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    val_rows: np.ndarray,
    show: bool,
) -> tuple[list[dict | None], list[str]]:
    """The full-batch loop of :func:`train` for networks of the same narrow layer sizes and
    dtype, their gradients from one pass over the images per iteration
    (:meth:`~mnistnn.backends.NumbaBackend.backward_many`): each gets the bits its own
    :func:`train` would.  A network that diverges leaves (its parameters from the last good
    step) while the others go on.  Returns each run's ``training_info`` (None if it never
    stepped) and the messages of those that diverged."""
    params, started, data = runs[0].params, time.perf_counter(), backend.inputs(X)
    val = validation(params, val_rows)
    work = backend.shared_workspace(params, data, rows, len(runs))
    done, start_loss, errors = [0] * len(runs), [None] * len(runs), []
    active = list(range(len(runs)))
    total = max(run.settings.maxiterations for run in runs)
    with tqdm(total=total, desc=f"training {len(runs)}", disable=not show) as bar:
        while active:  # the networks that are still training, their parameters stacked
            thetas = np.stack([runs[i].params.theta for i in active])  # (G, n_params)
            velocities = np.stack([runs[i].velocity for i in active])
            views = [params.on(theta) for theta in thetas]
            steppers = [
                SGD(runs[i].settings, views[q], velocities[q]) for q, i in enumerate(active)
            ]
            leaving: list[int] = []
            while not leaving:
                losses = backend.backward_many(params, thetas, data, y, rows, work)
                for q, i in enumerate(active):
                    loss, step = float(losses[q]), len(runs[i].history.get("iteration", [])) + 1
                    if not (
                        math.isfinite(loss)
                        and steppers[q].step(backend, views[q], work.grads[q], step)
                    ):
                        errors.append(
                            str(diverged(f"iteration {step}", loss, runs[i].settings.alpha))
                        )
                        leaving.append(i)
                        continue
                    accuracy = int(np.count_nonzero(work.correct[q])) / rows.shape[0]
                    record(
                        runs[i].history,
                        "iteration",
                        step,
                        loss,
                        accuracy,
                        backend,
                        views[q],
                        data,
                        y,
                        val,
                    )
                    start_loss[i] = loss if start_loss[i] is None else start_loss[i]
                    done[i] += 1
                    if done[i] == runs[i].settings.maxiterations:
                        leaving.append(i)
                if max(done) % max(1, total // 100) == 0 or leaving:
                    bar.update(max(done) - bar.n)
            for q, i in enumerate(active):  # back into each network's own arrays
                runs[i].params.theta[...], runs[i].velocity[...] = thetas[q], velocities[q]
            active = [i for i in active if i not in leaving]
    seconds = time.perf_counter() - started
    infos: list[dict | None] = []
    for run, first_loss in zip(runs, start_loss, strict=True):
        stepped = bool(run.history.get("loss"))
        infos.append(
            summary(run, rows.shape[0], seconds, trained_side_by_side=len(runs))
            if stepped
            else None
        )
        if first_loss is not None:
            warn_if_diverged(run.history, first_loss, run.settings.alpha)
    return infos, errors


def evaluate(
    backend: Backend,
    params: Parameters,
    data: Any,
    y: np.ndarray,
    rows: np.ndarray,
    work: Any = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on images ``rows``, in chunks of :data:`PREDICT_CHUNK`
    (``work``: a workspace without gradients for them, made here if not given)."""
    total_loss, hits = 0.0, 0.0
    work = work or params.workspace(min(PREDICT_CHUNK, rows.shape[0]), False)
    for start in range(0, rows.shape[0], PREDICT_CHUNK):
        chunk = rows[start : start + PREDICT_CHUNK]
        m = chunk.shape[0]
        loss, acc = backend.evaluate(params, data, y, chunk, work.head(m))
        total_loss += loss * m
        hits += acc * m
    return total_loss / rows.shape[0], hits / rows.shape[0]


def validation_split(n: int, fraction: float, entropy: Any) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows of ``n`` images, sorted: ``round(n * fraction)`` (at least 1)
    held out at random, drawn from a generator of their own seeded by ``entropy`` (a network's
    seed), so every ``fit`` of a network holds out the same rows."""
    if fraction == 0.0:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1,)))
    perm = rng.permutation(n)
    n_val = max(1, round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def validation(params: Parameters, val_rows: np.ndarray) -> tuple | None:
    """``(val_rows, workspace)`` to score the held-out images after each step; None without."""
    if val_rows.shape[0] == 0:
        return None
    return val_rows, params.workspace(min(PREDICT_CHUNK, val_rows.shape[0]), False)


def record(
    history: dict[str, list[float]],
    key: str,
    step: int,
    loss: float,
    accuracy: float,
    backend: Backend,
    params: Parameters,
    data: Any,
    y: np.ndarray,
    val: tuple | None,
) -> None:
    """Append one row to ``history``, plus the validation scores when ``val`` is ``(val_rows,
    workspace)``."""
    for name, value in ((key, step), ("loss", loss), ("train_accuracy", accuracy)):
        history.setdefault(name, []).append(value)
    if val is not None:
        val_loss, val_accuracy = evaluate(backend, params, data, y, *val)
        history.setdefault("val_loss", []).append(val_loss)
        history.setdefault("val_accuracy", []).append(val_accuracy)


def summary(run: Run, samples: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """``training_info`` after a run: its size, time (over every call), final loss and accuracy."""
    return {
        "samples": int(samples),
        "seconds": round(run.seconds + seconds, 3),
        "final_loss": run.history["loss"][-1],
        "final_train_accuracy": run.history["train_accuracy"][-1],
        **extra,
    }


def diverged(where: str, loss: float, alpha: float) -> TrainingDivergedError:
    """The error of a loss or an update that stopped being finite at ``where``."""
    return TrainingDivergedError(
        f"training diverged at {where}: the loss ({loss:.4g}) or the updated parameters are "
        f"not finite. The parameters are kept from the last good step; try a smaller "
        f"learning rate (alpha={alpha})."
    )


def warn_if_diverged(history: dict[str, list[float]], start_loss: float, alpha: float) -> None:
    """Warn when the training loss ended far above ``start_loss`` (more than twice as high, and
    higher by more than 1), its value before the run."""
    final = history["loss"][-1]
    if final > 2 * start_loss and final > start_loss + 1:
        accuracy = history["train_accuracy"][-1]
        warn(
            f"training diverged: the loss rose from {start_loss:.3g} to {final:.3g} "
            f"(training accuracy {accuracy:.1%}); try a smaller learning rate than "
            f"alpha={alpha:g}",
            TrainingDivergedWarning,
        )
