"""Score a classifier: accuracy, the confusion matrix, and the mistakes worth looking at.

Labels are 1-D arrays of non-negative integer class indices (``0 .. K-1``); predicted
probabilities are ``(N, K)`` arrays with one row per sample.  Everything here is plain numpy,
so the functions work for any classifier, not only the networks of this package::

    >>> y_true = np.array([0, 1, 2, 2])
    >>> y_pred = np.array([0, 2, 2, 2])
    >>> accuracy(y_true, y_pred)
    0.75
    >>> confusion_matrix(y_true, y_pred)
    array([[1, 0, 0],
           [0, 0, 1],
           [0, 0, 2]])
    >>> most_confused_pairs(confusion_matrix(y_true, y_pred))
    [(1, 2, 1)]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "accuracy",
    "confusion_matrix",
    "most_confident_mistakes",
    "most_confused_pairs",
    "nearest_mean_predict",
    "per_class_accuracy",
]


def _as_labels(y: ArrayLike, name: str) -> np.ndarray:
    """Return ``y`` as a 1-D int64 array, or raise ValueError saying what is wrong with it."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative class indices, found {arr.min()}")
    return arr.astype(np.int64, copy=False)


def _as_label_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate both label arrays and check that they have the same length."""
    true, pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if len(true) != len(pred):
        raise ValueError(
            f"y_true and y_pred must have the same length, got {len(true)} and {len(pred)}"
        )
    return true, pred


def _as_confusion(cm: ArrayLike) -> np.ndarray:
    """Return ``cm`` as a square 2-D array, or raise ValueError."""
    arr = np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"a confusion matrix must be square (K, K), got shape {arr.shape}")
    return arr


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted class equals the true class.

    ``y_true`` and ``y_pred`` are ``(N,)`` integer class indices, ``N >= 1``.  Returns a Python
    float in ``[0, 1]``.
    """
    true, pred = _as_label_pair(y_true, y_pred)
    if len(true) == 0:
        raise ValueError("accuracy of zero samples is undefined")
    return float(np.count_nonzero(true == pred) / len(true))


def confusion_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None
) -> np.ndarray:
    """Count how often each true class was predicted as each class.

    ``y_true`` and ``y_pred`` are ``(N,)`` integer class indices.  Returns a ``(K, K)`` int64
    array ``cm`` where ``cm[i, j]`` is the number of samples of true class ``i`` predicted as
    ``j``: rows are true classes, columns predicted ones, the diagonal holds the correct
    predictions and ``cm.sum() == N``.  ``K`` is ``n_classes`` if given (every label must be
    below it), else one more than the largest label seen.

    The counting is one ``np.bincount`` over the pair codes ``true * K + pred``.
    """
    true, pred = _as_label_pair(y_true, y_pred)
    largest = int(max(true.max(initial=-1), pred.max(initial=-1)))
    if n_classes is None:
        k = largest + 1
    else:
        k = int(n_classes)
        if k < 1:
            raise ValueError(f"n_classes must be at least 1, got {n_classes}")
        if largest >= k:
            raise ValueError(f"found class index {largest}, but n_classes is {k}")
    counts = np.bincount(true * k + pred, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64, copy=False)


def most_confused_pairs(cm: ArrayLike, k: int = 5) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent mistakes of a confusion matrix.

    ``cm`` is a ``(K, K)`` confusion matrix (rows true, columns predicted).  Returns up to ``k``
    tuples ``(true class, predicted class, count)`` for the off-diagonal cells with a non-zero
    count, largest count first; equal counts are ordered by true class, then predicted class.
    """
    mat = _as_confusion(cm)
    true, pred = np.nonzero(mat)
    off = true != pred
    true, pred = true[off], pred[off]
    counts = mat[true, pred]
    order = np.lexsort((pred, true, -counts))[: max(int(k), 0)]
    return [(int(true[i]), int(pred[i]), int(counts[i])) for i in order]


def per_class_accuracy(cm: ArrayLike) -> np.ndarray:
    """Recall of each class: the fraction of its samples that were predicted correctly.

    ``cm`` is a ``(K, K)`` confusion matrix (rows true, columns predicted).  Returns a ``(K,)``
    float64 array ``cm[i, i] / cm[i].sum()``; a class with no samples gets NaN.
    """
    mat = _as_confusion(cm)
    support = mat.sum(axis=1).astype(np.float64)
    out = np.full(len(mat), np.nan)
    np.divide(np.diagonal(mat).astype(np.float64), support, out=out, where=support > 0)
    return out


def most_confident_mistakes(proba: ArrayLike, y_true: ArrayLike, k: int | None = 10) -> np.ndarray:
    """Indices of the wrong predictions the classifier was most sure about.

    ``proba`` is ``(N, K)``: row ``i`` holds the probability of each class for sample ``i``;
    the prediction is its ``argmax``.  ``y_true`` is ``(N,)``.  Returns an int64 array of up to
    ``k`` indices (all of them if ``k`` is None) of the samples predicted wrongly, sorted by the
    probability given to the (wrong) predicted class, highest first; ties keep index order.
    """
    p = np.asarray(proba)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (N, K), got shape {p.shape}")
    true = _as_labels(y_true, "y_true")
    if len(true) != len(p):
        raise ValueError(f"proba has {len(p)} rows but y_true has {len(true)} labels")
    if len(true) and true.max() >= p.shape[1]:
        raise ValueError(f"found class index {true.max()}, but proba has {p.shape[1]} columns")
    if len(true) == 0:
        return np.zeros(0, dtype=np.int64)
    pred = p.argmax(axis=1)
    wrong = np.flatnonzero(pred != true)
    confidence = p[wrong, pred[wrong]]
    order = np.argsort(-confidence, kind="stable")
    if k is not None:
        order = order[: max(int(k), 0)]
    return wrong[order].astype(np.int64, copy=False)


def nearest_mean_predict(X_train: ArrayLike, y_train: ArrayLike, X: ArrayLike) -> np.ndarray:
    """The simplest classifier there is, as a baseline: each image ``X`` ``(N, ...)`` gets the
    class whose mean training image is nearest (Euclidean), ``(N,)``.

    ``|x - mu_c|^2 = |x|^2 - 2 x . mu_c + |mu_c|^2``, and ``|x|^2`` is the same for every class,
    so the class with the largest ``x . mu_c - |mu_c|^2 / 2`` wins.
    """
    y_train = _as_labels(y_train, "y_train")
    X_train = np.asarray(X_train, dtype=np.float64).reshape(len(y_train), -1)
    X = np.asarray(X, dtype=np.float64)
    classes = np.unique(y_train)  # the labels present, ascending
    means = np.stack([X_train[y_train == c].mean(axis=0) for c in classes])  # (K, n_in)
    scores = X.reshape(len(X), -1) @ means.T - 0.5 * (means**2).sum(axis=1)  # (N, K)
    return classes[scores.argmax(axis=1)]

