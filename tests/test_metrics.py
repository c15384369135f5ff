"""Tests for mnistnn.metrics on small examples whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mnistnn import metrics

# Seven samples of three classes:
#   index   0  1  2  3  4  5  6
#   true    0  0  1  1  1  2  2
#   pred    0  1  1  1  2  2  0
Y_TRUE = np.array([0, 0, 1, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 2, 0])
# rows = true class, columns = predicted class
CM = np.array(
    [
        [1, 1, 0],  # class 0: one right, one taken for 1
        [0, 2, 1],  # class 1: two right, one taken for 2
        [1, 0, 1],  # class 2: one right, one taken for 0
    ]
)


def test_accuracy() -> None:
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 7)
    assert metrics.accuracy([3, 3], [3, 3]) == 1.0
    assert metrics.accuracy([1], [0]) == 0.0
    assert isinstance(metrics.accuracy(Y_TRUE, Y_PRED), float)


def test_accuracy_rejects_empty_and_mismatched() -> None:
    with pytest.raises(ValueError, match="zero samples"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        metrics.accuracy([0, 1], [0, 1, 1])


def test_confusion_matrix_by_hand() -> None:
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)
    assert cm.sum() == len(Y_TRUE)
    assert np.trace(cm) == 4


def test_confusion_matrix_n_classes() -> None:
    cm = metrics.confusion_matrix([0, 1], [1, 1], n_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 1] = expected[1, 1] = 1
    np.testing.assert_array_equal(cm, expected)
    # K from the largest label in either array
    assert metrics.confusion_matrix([0], [2]).shape == (3, 3)
    with pytest.raises(ValueError, match="found class index 3, but n_classes is 3"):
        metrics.confusion_matrix([0, 3], [0, 0], n_classes=3)
    with pytest.raises(ValueError, match="n_classes must be at least 1"):
        metrics.confusion_matrix([0], [0], n_classes=0)


def test_confusion_matrix_accepts_any_integer_dtype() -> None:
    cm = metrics.confusion_matrix(Y_TRUE.astype(np.uint8), Y_PRED.tolist())
    np.testing.assert_array_equal(cm, CM)
    assert metrics.confusion_matrix([], [], n_classes=2).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([[0, 1]], [0, 1], r"y_true must be 1-D .* shape \(1, 2\)"),
        ([0, 1], [0, 1, 2], "same length, got 2 and 3"),
        ([0, -1], [0, 1], "y_true must hold non-negative class indices, found -1"),
        ([0, 1], [0.0, 1.0], "y_pred must hold integer class indices, got dtype float64"),
        ([True, False], [0, 1], "y_true must hold integer class indices, got dtype bool"),
    ],
)
def test_confusion_matrix_validation(y_true, y_pred, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(y_true, y_pred)


def test_most_confused_pairs_order_and_ties() -> None:
    # three mistakes of one each: ordered by true class, then predicted class
    assert metrics.most_confused_pairs(CM) == [(0, 1, 1), (1, 2, 1), (2, 0, 1)]
    assert metrics.most_confused_pairs(CM, k=2) == [(0, 1, 1), (1, 2, 1)]
    cm = np.array([[50, 2, 7], [7, 40, 0], [0, 9, 30]])
    assert metrics.most_confused_pairs(cm, k=3) == [(2, 1, 9), (0, 2, 7), (1, 0, 7)]
    # zero cells and the diagonal never appear
    assert metrics.most_confused_pairs(cm, k=10) == [(2, 1, 9), (0, 2, 7), (1, 0, 7), (0, 1, 2)]
    assert metrics.most_confused_pairs(np.eye(3, dtype=int) * 5) == []
    assert metrics.most_confused_pairs(cm, k=0) == []
    assert all(type(v) is int for v in metrics.most_confused_pairs(cm)[0])


def test_most_confused_pairs_rejects_non_square() -> None:
    with pytest.raises(ValueError, match=r"square \(K, K\), got shape \(2, 3\)"):
        metrics.most_confused_pairs(np.zeros((2, 3)))


def test_per_class_accuracy() -> None:
    np.testing.assert_allclose(metrics.per_class_accuracy(CM), [1 / 2, 2 / 3, 1 / 2])
    # a class without samples has no accuracy: NaN, and no warning
    out = metrics.per_class_accuracy(np.array([[3, 1], [0, 0]]))
    assert out[0] == 0.75 and np.isnan(out[1])


def test_most_confident_mistakes() -> None:
    proba = np.array(
        [
            [0.9, 0.1, 0.0],  # true 0, predicted 0: right
            [0.3, 0.6, 0.1],  # true 0, predicted 1 with 0.6
            [0.1, 0.1, 0.8],  # true 1, predicted 2 with 0.8
            [0.2, 0.7, 0.1],  # true 1, predicted 1: right
            [0.95, 0.05, 0.0],  # true 2, predicted 0 with 0.95
            [0.0, 0.6, 0.4],  # true 2, predicted 1 with 0.6 (tie with sample 1)
        ]
    )
    y_true = np.array([0, 0, 1, 1, 2, 2])
    result = metrics.most_confident_mistakes(proba, y_true, k=10)
    assert result.dtype == np.int64
    assert result.tolist() == [4, 2, 1, 5]
    assert metrics.most_confident_mistakes(proba, y_true, k=2).tolist() == [4, 2]
    assert metrics.most_confident_mistakes(proba, y_true, k=None).tolist() == [4, 2, 1, 5]
    assert metrics.most_confident_mistakes(proba[[0, 3]], y_true[[0, 3]], k=5).tolist() == []


def test_most_confident_mistakes_validation() -> None:
    proba = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"proba must be 2-D"):
        metrics.most_confident_mistakes(proba[0], [0], k=1)
    with pytest.raises(ValueError, match="proba has 2 rows but y_true has 3 labels"):
        metrics.most_confident_mistakes(proba, [0, 1, 2], k=1)
    with pytest.raises(ValueError, match="class index 3, but proba has 3 columns"):
        metrics.most_confident_mistakes(proba, [0, 3], k=1)


def test_nearest_mean_predict_picks_the_closest_class_mean():
    X_train = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 10.0], [12.0, 10.0]])
    y_train = np.array([0, 0, 1, 1])  # class means (0, 1) and (11, 10)
    X = np.array([[1.0, 1.0], [9.0, 9.0], [5.0, 5.0], [6.0, 6.0]])
    np.testing.assert_array_equal(
        metrics.nearest_mean_predict(X_train, y_train, X), [0, 1, 0, 1]
    )
    images = np.stack([np.full((2, 2), 10), np.full((2, 2), 200)])  # (N, rows, cols) works too
    assert metrics.nearest_mean_predict(images, [3, 1], images[::-1]).tolist() == [1, 3]
