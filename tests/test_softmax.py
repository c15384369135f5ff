"""The kernels' softmax and cross-entropy against :mod:`mnistnn.reference`, up to 16 classes (one
vector per image) and beyond (16 classes at a time, the last block partly filled)."""

from __future__ import annotations

import numpy as np
import pytest

from mnistnn import NNetworkExtended, reference


@pytest.mark.parametrize("classes", [10, 20, 40])
def test_loss_gradients_and_probabilities_match_the_reference(classes):
    rng = np.random.default_rng(classes)
    X = ((rng.random((300, 784)) < 0.2) * rng.integers(0, 256, (300, 784))).astype(np.uint8)
    y = rng.integers(0, classes, 300)
    net = NNetworkExtended(hidden_layers=(30,), nodes_out=classes, batch_size=100, seed=1)
    Ws = [W.astype(np.float64) for W in net.weights]
    bs = [b.astype(np.float64) for b in net.biases]
    loss, dWs, dbs = reference.backward(Ws, bs, reference.inputs(X), y)
    assert net.loss(X, y) == pytest.approx(loss, rel=1e-5)
    gW, gb = net.gradients(X, y)
    for got, want in zip((*gW, *gb), (*dWs, *dbs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    proba = reference.predict_proba(Ws, bs, reference.inputs(X)).T
    np.testing.assert_allclose(net.predict_proba(X), proba, rtol=1e-5, atol=1e-8)
