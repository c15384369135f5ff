"""mnistnn.writeup: the write-up's NumPy code, plain and under @njit, computes what
mnistnn.reference computes."""

from __future__ import annotations

import numpy as np
import pytest

from mnistnn import reference, writeup


@pytest.fixture(scope="module")
def case() -> dict:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(300, 784)).astype(np.uint8)
    X[X < 180] = 0  # mostly blank, like MNIST
    y = rng.integers(0, 10, size=300)
    weights = [rng.random((10, 784)) - 0.5, rng.random((10, 10)) - 0.5]
    biases = [rng.random(10) - 0.5, rng.random(10) - 0.5]
    return {"I": reference.inputs(X), "y": y, "L": reference.one_hot(y, 10),
            "weights": weights, "biases": biases}


def writeup_params(case: dict) -> tuple[np.ndarray, ...]:
    (W, w), (B, b) = case["weights"], case["biases"]
    return W, B[:, None], w, b[:, None]


def test_iteration_is_the_reference_step(case: dict) -> None:
    new = writeup.iteration(*writeup_params(case), case["I"], case["L"], 0.1)
    weights = [W.copy() for W in case["weights"]]
    biases = [b.copy() for b in case["biases"]]
    _, dWs, dBs = reference.backward(weights, biases, case["I"], case["y"])
    params = weights + biases
    reference.update(params, dWs + dBs, [np.zeros_like(p) for p in params], alpha=0.1)
    expected = [weights[0], biases[0][:, None], weights[1], biases[1][:, None]]
    for got, want in zip(new, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert not np.allclose(new[0], case["weights"][0])  # the step moved the weights


def test_forward_is_the_reference_forward(case: dict) -> None:
    _, _, O_hat = writeup.forward(*writeup_params(case), case["I"])
    want = reference.predict_proba(case["weights"], case["biases"], case["I"])
    np.testing.assert_allclose(O_hat, want, rtol=1e-12, atol=1e-15)


def test_compiled_twin_gives_the_same_numbers(case: dict) -> None:
    fast = writeup.compiled()
    args = (*writeup_params(case), case["I"], case["L"], 0.1)
    for plain, jitted in zip(writeup.iteration(*args), fast.iteration(*args), strict=True):
        np.testing.assert_allclose(jitted, plain, rtol=1e-12, atol=1e-15)
    assert hasattr(fast.iteration, "signatures") and fast.iteration.signatures  # compiled
