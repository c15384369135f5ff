"""Tests of the kernels and the estimators on small synthetic data (no datasets needed).

Gradients are checked twice: against a plain-NumPy float64 backpropagation written independently
of the kernels, and against central finite differences of the loss.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from numba.core.caching import FunctionCache

from mnistnn import (
    ModelFormatError,
    NNetworkExtended,
    NNetworkMinimal,
    PixelScaleWarning,
    TrainingDivergedError,
    TrainingDivergedWarning,
    fit_many,
    kernels,
    reference,
    training,
)
from mnistnn.kernels.dense import _dense_forward
from mnistnn.kernels.layers import forward, layered_backward
from mnistnn.kernels.narrow import narrow_backward, narrow_nets_backward
from mnistnn.kernels.pixels import _sparse_forward, _sparse_grad_tiles, sparse_pixels
from mnistnn.kernels.reductions import _reduce_tiles, update


def make_data(n: int = 120, n_in: int = 64, n_classes: int = 4, seed: int = 0):
    """Sparse uint8 "images" whose class shifts a bright patch: learnable, ~70% zeros."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = np.zeros((n, n_in), np.uint8)
    for i, label in enumerate(y):
        start = label * (n_in // n_classes)
        X[i, start : start + n_in // n_classes // 2] = rng.integers(
            100, 256, n_in // n_classes // 2
        )
        noise = rng.random(n_in) < 0.1
        X[i, noise] = rng.integers(1, 256, noise.sum())
    return X, y


def numpy_reference(net: NNetworkExtended, X: np.ndarray, y: np.ndarray):
    """``(loss, dWs, dbs)`` of ``net`` on ``(X, y)`` by :func:`mnistnn.reference.backward`, the
    plain NumPy version of the math, in float64."""
    Ws = [W.astype(np.float64) for W in net.weights]
    bs = [b.astype(np.float64) for b in net.biases]
    return reference.backward(Ws, bs, reference.inputs(X), y)


@pytest.mark.parametrize(
    "hidden",  # narrow layers (<= 16 units, Vec16), dense ones (17..63), a sparse wide first one
    [(10,), (16,), (16, 8), (12, 9, 7), (24, 20), (64, 12)],
)
def test_gradients_match_numpy_reference(hidden):
    X, y = make_data()
    net = NNetworkExtended(nodes_in=64, hidden_layers=hidden, nodes_out=4, seed=1, dtype="float64")
    loss, dWs, dbs = numpy_reference(net, X, y)
    assert net.loss(X, y) == pytest.approx(loss, rel=1e-12)
    gW, gb = net.gradients(X, y)
    for mine, ref in zip(gW + gb, dWs + dbs, strict=True):
        assert mine.shape == ref.shape
        np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n", [120, 2100])  # one chunk of images per sample tile, and three
def test_wide_sparse_first_layer_matches_numpy_reference(n):
    """70 units: a block of 64 and one padded with zeros; the gradient sorts each chunk of up to
    64 images by pixel and adds to the rows of ``dW`` chunk by chunk."""
    X, y = make_data(n=n)
    net = NNetworkExtended(nodes_in=64, hidden_layers=(70,), nodes_out=4, seed=1, dtype="float64")
    loss, dWs, dbs = numpy_reference(net, X, y)
    assert net.loss(X, y) == pytest.approx(loss, rel=1e-12)
    gW, gb = net.gradients(X, y)
    for mine, ref in zip(gW + gb, dWs + dbs, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-14)


def test_one_pass_network_with_16_units_and_16_classes_matches_numpy_reference():
    """784 -> n_h -> K with n_h, K <= 16 runs as one pass per image; here both fill all lanes."""
    X, y = make_data(n=300, n_classes=16)
    net = NNetworkExtended(nodes_in=64, hidden_layers=(16,), nodes_out=16, seed=4, dtype="float64")
    loss, dWs, dbs = numpy_reference(net, X, y)
    assert net.loss(X, y) == pytest.approx(loss, rel=1e-12)
    gW, gb = net.gradients(X, y)
    for mine, ref in zip(gW + gb, dWs + dbs, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_pass_and_layer_by_layer_give_the_same_bits(dtype):
    """The one-pass kernel of a narrow network does the layer-by-layer arithmetic, entry by
    entry in the same order."""
    rng = np.random.default_rng(5)
    X = np.where(rng.random((1500, 64)) < 0.6, 0, rng.integers(1, 256, (1500, 64))).astype(np.uint8)
    y = rng.integers(0, 10, 1500)
    net = NNetworkExtended(nodes_in=64, hidden_layers=(10,), nodes_out=10, seed=6, dtype=dtype)
    pixels, rows, m = sparse_pixels(X), np.arange(1500), 1500
    params = net._params
    results = []
    for backward in (narrow_backward, layered_backward):
        work = params.workspace(m)
        args = (params.theta, params.offsets, params.sizes_array, pixels, y.astype(np.int64),
                rows, work)  # fmt: skip
        loss = backward(*args)
        results.append((loss, work.grad, work.losses, work.correct))
    (loss1, *arrays1), (loss2, *arrays2) = results
    assert loss1 == loss2
    for a, b in zip(arrays1, arrays2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.any(results[0][1] != 0)


def test_weight_decay_and_step_decay_are_the_steps_they_describe():
    """Four full-batch steps in float64 with alpha halved every two and L2 decay, against the
    same steps written out from the plain gradients: W -= a (dW + lambda W), b -= a db."""
    X, y = make_data(n=200)
    settings = dict(nodes_in=64, hidden_layers=(6,), nodes_out=4, seed=2, dtype="float64")
    net = NNetworkExtended(**settings, alpha=0.3, maxiterations=4, weight_decay=0.01,
                           decay_every=2, decay_factor=0.5).fit(X, y)
    by_hand = NNetworkExtended(**settings)
    for alpha in (0.3, 0.3, 0.15, 0.15):
        gW, gb = by_hand.gradients(X, y)
        for W, b, dW, db in zip(by_hand.weights, by_hand.biases, gW, gb, strict=True):
            W -= alpha * (dW + 0.01 * W)
            b -= alpha * db
    np.testing.assert_allclose(net._params.theta, by_hand._params.theta, rtol=1e-12, atol=1e-15)
    plain = NNetworkExtended(**settings, alpha=0.3, maxiterations=4).fit(X, y)
    assert np.abs(net.weights[0]).sum() < np.abs(plain.weights[0]).sum()  # decay shrinks W


@pytest.mark.parametrize("batch_size", [None, 40])
def test_early_stopping_keeps_the_weights_of_the_lowest_validation_loss(batch_size):
    X, y = make_data(n=600)
    net = NNetworkExtended(nodes_in=64, hidden_layers=(32,), nodes_out=4, seed=0, alpha=2.0,
                           momentum=0.9, batch_size=batch_size, epochs=60, maxiterations=200,
                           validation_fraction=0.3, early_stopping=True, patience=4)
    net.fit(X, y)  # a learning rate this high makes the validation loss bounce
    step = "iteration" if batch_size is None else "epoch"
    val_loss, info = net.history["val_loss"], net.training_info
    best = info[f"best_{step}"]
    assert info["stopped_early"] and len(val_loss) == best + 4 < len(net.history[step]) + 1
    assert val_loss[best - 1] == min(val_loss) and min(val_loss[best:]) >= val_loss[best - 1]
    _, val_rows = net._split(X.shape[0])
    assert net.loss(X[val_rows], y[val_rows]) == pytest.approx(val_loss[best - 1], rel=1e-6)


@pytest.mark.parametrize("batch_size", [None, 40])
def test_a_run_that_stops_early_ends_its_progress_bar_full(monkeypatch, batch_size):
    # tqdm's notebook bar turns red when it closes short of its total, as if training had failed
    closed = []

    class Recording(training.tqdm):
        def close(self) -> None:
            closed.append((self.n, self.total, self.desc))
            super().close()

    monkeypatch.setattr(training, "tqdm", Recording)
    X, y = make_data(n=600)
    net = NNetworkExtended(nodes_in=64, hidden_layers=(32,), nodes_out=4, seed=0, alpha=2.0,
                           momentum=0.9, batch_size=batch_size, epochs=60, maxiterations=200,
                           validation_fraction=0.3, early_stopping=True, patience=4,
                           progress=True)
    net.fit(X, y)
    steps = len(net.history["iteration" if batch_size is None else "epoch"])
    assert net.training_info["stopped_early"] and steps < (200 if batch_size is None else 60)
    n, total, desc = closed[-1]
    assert n == total == steps and desc.startswith("training (stopped early)")


def side_by_side_candidates() -> list[NNetworkExtended]:
    """Networks that fit_many trains together (all but the last two): other seeds, inits,
    learning rates, momenta and lengths; a validation split; one that diverges; and two that
    train alone (mini-batch, a wide layer)."""
    return [
        *(
            NNetworkMinimal(nodes_in=64, nodes_out=4, seed=s, alpha=0.1 * (s + 1),
                            maxiterations=12 + 3 * s, init=("uniform", "he")[s % 2])
            for s in range(8)  # 80 hidden units: two passes of six and two networks
        ),
        NNetworkExtended(nodes_in=64, hidden_layers=(12,), nodes_out=4, seed=0, momentum=0.5,
                         maxiterations=10, validation_fraction=0.2, dtype="float64"),
        NNetworkExtended(nodes_in=64, hidden_layers=(12,), nodes_out=4, seed=0, maxiterations=9,
                         alpha=0.3, validation_fraction=0.2, dtype="float64"),
        NNetworkMinimal(nodes_in=64, nodes_out=4, seed=9, alpha=1e30, maxiterations=5),
        NNetworkExtended(nodes_in=64, hidden_layers=(8,), nodes_out=4, seed=0, batch_size=32,
                         epochs=2),
        NNetworkExtended(nodes_in=64, hidden_layers=(40,), nodes_out=4, seed=0, maxiterations=3),
    ]  # fmt: skip


def fingerprint(net: NNetworkExtended) -> list:
    return [net._params.theta.tobytes(), net._velocity.tobytes(), json.dumps(net.history)]


def test_fit_many_gives_each_network_the_bits_of_its_own_fit():
    X, y = make_data(n=700)
    alone = side_by_side_candidates()
    messages = []
    for net in alone:
        try:
            net.fit(X, y)
        except TrainingDivergedError as exc:
            messages.append(str(exc))
    together = side_by_side_candidates()
    with pytest.raises(TrainingDivergedError) as caught:
        fit_many(together, X, y)
    assert str(caught.value) == "; ".join(messages) and "iteration" in messages[0]
    for a, b in zip(alone, together, strict=True):
        assert fingerprint(a) == fingerprint(b)
    assert together[0].training_info["trained_side_by_side"] == 6
    assert together[6].training_info["trained_side_by_side"] == 3  # two Minimal and the alpha=1e30
    assert together[8].training_info["trained_side_by_side"] == 2  # the same validation split
    assert "trained_side_by_side" not in together[-1].training_info


@pytest.mark.parametrize("init", ["uniform", "he"])
def test_gradients_match_finite_differences(init):
    X, y = make_data(n=60)
    net = NNetworkExtended(
        nodes_in=64, hidden_layers=(8, 6), nodes_out=4, init=init, seed=2, dtype="float64"
    )
    gW, gb = net.gradients(X, y)
    rng = np.random.default_rng(0)
    eps = 1e-6
    worst = 0.0
    for param, grad in zip(net.weights + net.biases, gW + gb, strict=True):
        flat, gflat = param.reshape(-1), grad.reshape(-1)
        for p in rng.choice(flat.size, size=min(15, flat.size), replace=False):
            saved = flat[p]
            flat[p] = saved + eps
            up = net.loss(X, y)
            flat[p] = saved - eps
            down = net.loss(X, y)
            flat[p] = saved
            numeric = (up - down) / (2 * eps)
            worst = max(worst, abs(numeric - gflat[p]) / max(1e-8, abs(numeric) + abs(gflat[p])))
    assert worst < 1e-6


def test_float32_gradients_close_to_float64():
    X, y = make_data()
    g64 = NNetworkExtended(nodes_in=64, hidden_layers=(10,), nodes_out=4, seed=3, dtype="float64")
    g32 = NNetworkExtended(nodes_in=64, hidden_layers=(10,), nodes_out=4, seed=3, dtype="float32")
    np.testing.assert_array_equal(g32.weights[0], g64.weights[0].astype(np.float32))
    for a, b in zip(g32.gradients(X, y)[0], g64.gradients(X, y)[0], strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(
    ("n_in", "dtype", "index", "value"),
    [
        (64, np.uint8, np.uint16, np.float32),  # 16 pixels at a time
        (61, np.uint8, np.uint16, np.float32),  # and a tail of 13 one at a time
        (50, np.float32, np.uint16, np.float32),
        (50, np.float64, np.uint16, np.float64),  # float64 pixels keep their precision
        ((1 << 16) + 3, np.uint8, np.int32, np.float32),  # too many columns for uint16
    ],
)
def test_sparse_pixels_lists_every_nonzero_pixel(n_in, dtype, index, value):
    rng = np.random.default_rng(n_in)
    X = (rng.integers(0, 256, (30, n_in)) * (rng.random((30, n_in)) < 0.3)).astype(dtype)
    if dtype != np.uint8:
        X /= 3  # not integers
    X[3] = 0  # an empty image
    indptr, indices, values = sparse_pixels(X)
    assert (indices.dtype, values.dtype, indptr.shape) == (index, value, (31,))
    for i in range(len(X)):
        cols = np.flatnonzero(X[i])
        np.testing.assert_array_equal(indices[indptr[i] : indptr[i + 1]], cols)
        np.testing.assert_array_equal(values[indptr[i] : indptr[i + 1]], X[i, cols])
    assert indptr[-1] == np.count_nonzero(X) == len(indices) == len(values)


def test_sparse_pixels_refuses_other_types():
    with pytest.raises(ValueError, match="uint8, float32 or float64"):
        sparse_pixels(np.zeros((3, 16), np.int16))
    with pytest.raises(ValueError, match="2-D"):
        sparse_pixels(np.zeros(16, np.uint8))


def test_float_pixels_give_the_same_predictions_as_uint8():
    X, _ = make_data()
    net = NNetworkExtended(nodes_in=64, hidden_layers=(10,), nodes_out=4, seed=0)
    np.testing.assert_array_equal(
        net.predict_proba(X), net.predict_proba(X.astype(np.float64).reshape(-1, 8, 8))
    )


def test_softmax_is_stable_for_extreme_logits():
    X = np.full((5, 64), 255, np.uint8)
    y = np.arange(5) % 4
    net = NNetworkExtended(nodes_in=64, hidden_layers=(4,), nodes_out=4, seed=0)
    net.weights[0][...] = 50.0  # hidden activations ~ 3e3, logits ~ 1e5: naive exp overflows
    net.weights[1][...] = np.arange(16).reshape(4, 4) * 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = net.predict_proba(X)
        loss = net.loss(X, y)
    assert np.all(np.isfinite(P)) and np.allclose(P.sum(axis=1), 1)
    assert np.isfinite(loss) and loss > 1000  # confidently wrong on classes 0..2: a huge loss


def test_divergence_stops_with_the_iteration_and_keeps_finite_weights():
    X, y = make_data()
    net = NNetworkMinimal(nodes_in=64, nodes_out=4, alpha=1e20, maxiterations=50, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"iteration \d+") as info:
        net.fit(X, y)
    assert "alpha" in str(info.value)
    assert all(np.all(np.isfinite(W)) for W in net.weights)
    mini = NNetworkExtended(
        nodes_in=64, hidden_layers=(8,), nodes_out=4, alpha=1e20, batch_size=16, epochs=5, seed=0
    )
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, batch \d+"):
        mini.fit(X, y)


@pytest.mark.parametrize(
    "settings",
    [{"alpha": 1e6, "batch_size": 16, "epochs": 1}, {"alpha": 1e4, "maxiterations": 20}],
    ids=["mini-batch", "full-batch"],
)
def test_divergence_that_stays_finite_is_a_warning(settings):
    """The loss rises from 1.3 to 1e18 (or 2e3) without ever being infinite: it used to pass in
    silence."""
    X, y = make_data()
    net = NNetworkExtended(nodes_in=64, hidden_layers=(8,), nodes_out=4, seed=0, **settings)
    rose = r"loss rose from 1\.\d+ to \d\.\d+e\+(03|18) .*alpha="
    with pytest.warns(TrainingDivergedWarning, match=rose) as info:
        net.fit(X, y)
    assert len(info) == 1 and info[0].filename == __file__
    assert np.isfinite(net.history["loss"][-1])


def test_no_warning_when_training_goes_well():
    X, y = make_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NNetworkMinimal(nodes_in=64, nodes_out=4, alpha=0.5, maxiterations=50, seed=0).fit(X, y)
        small_mini_batch_net(hidden_layers=(8,), batch_size=16, epochs=3, seed=0).fit(X, y)


def test_learning_rate_beyond_the_dtype_is_refused_in_one_line():
    """alpha >= 3.4e38 used to print NumPy's two-line overflow warning before the error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"alpha=1e\+39 does not fit in float32"):
            NNetworkExtended(alpha=1e39)
        net = NNetworkExtended(hidden_layers=(4,), alpha=1e39, dtype="float64")
        assert net.alpha == 1e39
        with pytest.raises(ValueError, match="does not fit in float32"):
            NNetworkExtended(hidden_layers=(4,)).set_params(alpha=1e39)


def test_pixels_scaled_to_one_are_a_warning():
    """Images divided by 255 train to chance: they used to be accepted in silence."""
    X, y = make_data()
    net = NNetworkExtended(nodes_in=64, hidden_layers=(4,), nodes_out=4, seed=0)
    with pytest.warns(PixelScaleWarning, match="expects raw pixels in 0..255") as info:
        net.predict(X / 255.0)
    assert info[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.predict(X)  # uint8
        net.predict(X.astype(np.float32))  # float pixels in 0..255
        net.predict(np.zeros((3, 64)))  # blank images are not "scaled"


def test_training_learns_and_records_history():
    X, y = make_data(n=400)
    net = NNetworkMinimal(nodes_in=64, nodes_out=4, alpha=0.5, maxiterations=200, seed=0)
    before = net.loss(X, y)
    net.fit(X, y)
    assert net.history["iteration"] == list(range(1, 201))
    assert len(net.history["loss"]) == len(net.history["train_accuracy"]) == 200
    assert net.history["loss"][-1] < before / 2
    assert net.score(X, y) > 0.9
    net.fit(X, y)  # continues from the current weights
    assert net.history["iteration"][-1] == 400


def small_mini_batch_net(**settings) -> NNetworkExtended:
    """A 64-input, 4-class network for ``make_data``: He init, momentum 0.9 and a 25% validation
    split unless ``settings`` say otherwise."""
    defaults = dict(nodes_in=64, nodes_out=4, momentum=0.9, init="he", validation_fraction=0.25)
    return NNetworkExtended(**{**defaults, **settings})


def test_mini_batch_with_validation_and_momentum():
    X, y = make_data(n=400)
    net = small_mini_batch_net(hidden_layers=(16, 8), alpha=0.05, batch_size=32, epochs=6, seed=0)
    net.fit(X, y)
    assert net.history["epoch"] == [1, 2, 3, 4, 5, 6]
    assert len(net.history["val_accuracy"]) == 6
    assert net.history["val_accuracy"][-1] > 0.9
    assert net.training_info["samples"] == 300


def test_batch_size_above_the_data_is_one_batch_of_all():
    """batch_size=2**40 on 300 images used to size buffers for 2**40 images (MemoryError)."""
    X, y = make_data(n=300)
    kwargs = {"nodes_in": 64, "hidden_layers": (8,), "nodes_out": 4, "epochs": 2, "seed": 0}
    huge = NNetworkExtended(batch_size=2**40, **kwargs)
    tracemalloc.start()
    try:
        huge.fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000
    exact = NNetworkExtended(batch_size=300, **kwargs).fit(X, y)
    np.testing.assert_array_equal(huge._params.theta, exact._params.theta)


def test_network_too_big_for_memory_is_refused_before_allocating():
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"784 -> 1000000000 -> 10 network has .* memory"):
            NNetworkExtended(hidden_layers=(10**9,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_validation_split_is_fixed_and_set_params_continues_training():
    X, y = make_data(n=400)
    net = small_mini_batch_net(hidden_layers=(8,), momentum=0.0, batch_size=40, epochs=2, seed=3)
    net.fit(X, y)
    first_rows = [rows.copy() for rows in net._split(len(X))]
    before = [W.copy() for W in net.weights]
    assert net.set_params(alpha=0.01, epochs=3) is net
    assert (net.alpha, net.epochs) == (0.01, 3)
    first_seconds = net.training_info["seconds"]
    net.fit(X, y)  # continues from the trained weights, on the same validation rows
    assert net.training_info["seconds"] > first_seconds  # the time of both calls
    assert net.history["epoch"] == [1, 2, 3, 4, 5]
    assert not np.array_equal(before[0], net.weights[0])
    for a, b in zip(first_rows, net._split(len(X)), strict=True):
        np.testing.assert_array_equal(a, b)
    # the validation score after refitting is measured on those rows: recompute it
    train_rows, val_rows = first_rows
    assert len(val_rows) == 100 and np.intersect1d(train_rows, val_rows).size == 0
    assert net.history["val_accuracy"][-1] == pytest.approx(net.score(X[val_rows], y[val_rows]))
    twin = NNetworkExtended(
        nodes_in=64, hidden_layers=(8,), nodes_out=4, seed=3, validation_fraction=0.25
    )
    np.testing.assert_array_equal(twin._split(len(X))[1], val_rows)  # same seed, same split


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hidden_layers": (4,)}, "set_params can change only"),
        ({"seed": 1}, "set_params can change only"),
        ({"alpha": -1.0}, "alpha must be a positive number"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"momentum": 1.5}, "momentum must be a number"),
        ({"early_stopping": True}, "give validation_fraction > 0"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
        ({"decay_factor": 0.0}, "decay_factor must be a number in"),
        ({"decay_every": 0}, "decay_every must be a positive integer"),
        ({"patience": 0}, "patience must be a positive integer"),
    ],
)
def test_set_params_refuses_bad_or_fixed_settings(params, message):
    net = NNetworkExtended(nodes_in=64, hidden_layers=(8,), nodes_out=4, seed=0)
    with pytest.raises(ValueError, match=message):
        net.set_params(**params)
    assert (net.alpha, net.epochs, net.momentum) == (0.1, 10, 0.0)  # nothing changed


def test_minimal_set_params_knows_only_its_own_settings():
    net = NNetworkMinimal(seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        net.set_params(batch_size=32)
    net.set_params(alpha=0.25)
    assert net.alpha == 0.25 and "alpha=0.25" in repr(net)


def test_same_seed_same_result_other_seed_other_result():
    X, y = make_data()

    def trained(seed):
        net = NNetworkExtended(
            nodes_in=64, hidden_layers=(8,), nodes_out=4, batch_size=16, epochs=2, seed=seed
        )
        return net.fit(X, y).weights[0]

    np.testing.assert_array_equal(trained(5), trained(5))
    assert not np.array_equal(trained(5), trained(6))


def test_fresh_network_is_at_chance_and_has_public_parameters():
    net = NNetworkMinimal(seed=0)
    assert net.layer_sizes == (784, 10, 10)
    assert [W.shape for W in net.weights] == [(10, 784), (10, 10)]
    assert [b.shape for b in net.biases] == [(10,), (10,)]
    assert all(W.dtype == np.float32 for W in net.weights)
    assert -0.5 <= net.weights[0].min() and net.weights[0].max() < 0.5
    assert net.n_parameters == 784 * 10 + 10 + 10 * 10 + 10
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (500, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 500)
    assert 0.0 <= net.score(X, y) < 0.3
    P = net.predict_proba(X)
    assert P.shape == (500, 10) and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(net.predict(X), P.argmax(axis=1))
    assert repr(net) == "NNetworkMinimal(seed=0)"
    assert net.get_params()["nodes_hid"] == 10


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros((0, 64), np.uint8), np.zeros(0, int), "non-empty"),
        (np.zeros((5, 63), np.uint8), np.zeros(5, int), "64 pixels"),
        (np.zeros(64, np.uint8), np.zeros(1, int), "non-empty array of images"),
        (np.full((5, 64), np.nan), np.zeros(5, int), "NaN"),
        (np.full((5, 64), 300.0), np.zeros(5, int), "0..255"),
        (np.full((5, 64), -1), np.zeros(5, int), "0..255"),
        (np.zeros((5, 64), np.uint8), np.zeros(4, int), "5 images but y has 4"),
        (np.zeros((5, 64), np.uint8), np.full(5, 4), "labels must be in 0..3"),
        (np.zeros((5, 64), np.uint8), np.full(5, -1), "labels must be in 0..3"),
        (np.zeros((5, 64), np.uint8), np.zeros(5, float), "integer class labels"),
        (np.zeros((5, 64), np.uint8), np.zeros((5, 1), int), "1-D"),
        (np.array([["a"] * 64] * 5), np.zeros(5, int), "numbers"),
    ],
)
def test_bad_inputs_are_refused_before_any_work(X, y, message):
    net = NNetworkExtended(nodes_in=64, hidden_layers=(4,), nodes_out=4, seed=0)
    before = net._params.theta.copy()
    with pytest.raises(ValueError, match=message):
        net.fit(X, y)
    np.testing.assert_array_equal(net._params.theta, before)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_layers": ()},
        {"hidden_layers": (0,)},
        {"alpha": 0},
        {"alpha": float("inf")},
        {"batch_size": 0},
        {"momentum": 1.0},
        {"init": "glorot"},
        {"dtype": "float16"},
        {"validation_fraction": 1.0},
        {"seed": "x"},
        {"seed": -1},
        {"seed": True},
        {"nodes_out": 1},
        {"hidden_layers": 5},
        {"hidden_layers": "128"},
        {"dtype": None},
        {"dtype": "float32 please"},
        {"early_stopping": "yes"},
        {"weight_decay": float("nan")},
        {"decay_factor": 1.5},
    ],
)
def test_bad_constructor_arguments(kwargs):
    """A ValueError that names the parameter (hidden_layers=5 was a TypeError, seed=-1 NumPy's
    message without the name)."""
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        NNetworkExtended(**kwargs)


@pytest.mark.parametrize("dtype", [np.dtype("float64"), np.float64, "f8", "float64"])
def test_dtype_in_any_spelling_is_stored_by_name(tmp_path, dtype):
    net = NNetworkExtended(nodes_in=64, hidden_layers=(4,), nodes_out=4, seed=0, dtype=dtype)
    assert net.dtype == "float64" and net.weights[0].dtype == np.float64
    net.save(tmp_path / "model.npz")  # used to fail: "metadata cannot be stored as JSON"
    assert NNetworkExtended.load(tmp_path / "model.npz").dtype == "float64"


@pytest.mark.parametrize("cls", [NNetworkMinimal, NNetworkExtended])
def test_save_load_round_trip_is_bit_identical(tmp_path, cls):
    X, y = make_data()
    kwargs = {"nodes_in": 64, "nodes_out": 4, "maxiterations": 20, "seed": 0}
    net = cls(**kwargs).fit(X, y)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = cls.load(path)
    assert repr(loaded) == repr(net)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    assert loaded.training_info["final_loss"] == net.training_info["final_loss"]
    with np.load(path, allow_pickle=False) as plain:
        np.testing.assert_array_equal(plain["W1"], net.weights[0])
    other = NNetworkExtended if cls is NNetworkMinimal else NNetworkMinimal
    with pytest.raises(ModelFormatError, match=f"load it with {cls.__name__}.load"):
        other.load(path)


def test_loading_a_corrupt_model_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    NNetworkMinimal(nodes_in=64, nodes_out=4, seed=0).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="model.npz"):
        NNetworkMinimal.load(path)


def with_params(path, **changes):
    """Rewrite the model file ``path`` with its stored constructor parameters changed."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["params"].update(changes)
    arrays["metadata"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize(
    ("cls", "changes", "described"),
    [
        (NNetworkExtended, {"hidden_layers": [200_000]}, "784 -> 200000 -> 10 network in float32"),
        (NNetworkExtended, {"hidden_layers": [10**8]}, "784 -> 100000000 -> 10 network"),
        (NNetworkExtended, {"dtype": "float64"}, "784 -> 5 -> 10 network in float64"),
        (NNetworkMinimal, {"nodes_hid": 10**6}, "784 -> 1000000 -> 10 network"),
    ],
)
def test_load_checks_the_architecture_before_building_anything(tmp_path, cls, changes, described):
    """Stored parameters that disagree with the stored arrays: refused before a network of
    their size is built (the 200,000-unit case used to take 2.5 GB, 10**8 a MemoryError)."""
    path = tmp_path / "model.npz"
    hidden = {"nodes_hid": 5} if cls is NNetworkMinimal else {"hidden_layers": (5,)}
    cls(**hidden, seed=0).save(path)
    with_params(path, **changes)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError) as info:
            cls.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"describe a {described}" in str(info.value)
    assert "arrays hold 784 -> 5 -> 10 in float32" in str(info.value)
    assert peak < 20_000_000


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"hidden_layers": 5}, "hidden_layers must be a sequence"),
        ({"color": "red"}, "unexpected keyword argument 'color'"),
    ],
)
def test_load_refuses_parameters_the_constructor_refuses(tmp_path, changes, fragment):
    path = tmp_path / "model.npz"
    NNetworkExtended(hidden_layers=(5,), seed=0).save(path)
    with pytest.raises(ModelFormatError, match=fragment):
        NNetworkExtended.load(with_params(path, **changes))


def test_kernels_cache_on_disk():
    """The compiled kernels are cached (second kernel start is quick)."""
    for fn in (
        _dense_forward,
        _sparse_forward,
        _sparse_grad_tiles,
        _reduce_tiles,
        update,
        narrow_backward,  # the drivers too: they contain the kernels' code
        narrow_nets_backward,
        layered_backward,
        forward,
    ):
        assert isinstance(fn._cache, FunctionCache)


@pytest.mark.parametrize("nodes_out", [10, 20])  # one vector of 16 lanes per row, and a loop
def test_probabilities_and_loss_match_a_numpy_forward_pass(nodes_out):
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (300, 64)).astype(np.uint8)
    y = rng.integers(0, nodes_out, 300)
    net = NNetworkExtended(64, (12, 9), nodes_out, init="he", seed=1, dtype="float64")
    A = X / 255.0
    for W, b in zip(net.weights[:-1], net.biases[:-1], strict=True):
        A = np.maximum(A @ W.T + b, 0)  # (N, n_out) hidden activations
    Z = A @ net.weights[-1].T + net.biases[-1]
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.predict_proba(X), P, rtol=1e-12, atol=1e-15)
    assert net.loss(X, y) == pytest.approx(-np.log(P[np.arange(300), y]).mean(), rel=1e-12)


def test_importing_the_package_does_not_load_numba(tmp_path):
    """Notebook 01 trains nothing: ``import mnistnn`` must not pay for Numba."""
    loaded = "'numba' in sys.modules, 'mnistnn.kernels.dense' in sys.modules"
    probe = f"import sys, mnistnn; print({loaded})"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_a_workspace_too_small_is_refused_before_any_kernel_runs():
    plan = kernels.Plan((64, 70, 20, 4))
    small = plan.workspace(100, "float32")
    plan.check(small, 100)  # its own size is fine
    with pytest.raises(ValueError, match="needs"):
        plan.check(small, 101)
    with pytest.raises(ValueError, match="gradient holds"):
        kernels.Plan((64, 71, 20, 4)).check(small, 50)
    assert plan.describe() == "70 units on the nonzero pixels, 20 units dense, 4 units dense"
    assert kernels.Plan((784, 10, 10)).one_pass


@pytest.mark.parametrize("hidden", [(10,), (30,), (70,), (70, 20), (12, 9, 7)])
@pytest.mark.parametrize("mini_batch", [False, True])
def test_the_numpy_backend_computes_what_the_kernels_compute(hidden, mini_batch):
    """backend="numpy" (mnistnn.reference) and the Numba kernels: the same gradients and the same
    training, to 1e-10 in float64, narrow, middle and wide first layers, 1 to 3 hidden layers."""
    X, y = make_data(n=300)
    training = (
        dict(batch_size=64, epochs=2, momentum=0.9, weight_decay=1e-3, validation_fraction=0.2)
        if mini_batch
        else dict(maxiterations=3, decay_every=2, decay_factor=0.5)
    )
    nets = [
        NNetworkExtended(nodes_in=64, hidden_layers=hidden, nodes_out=4, seed=1, alpha=0.2,
                         init="he", dtype="float64", backend=backend, **training)
        for backend in ("numba", "numpy")
    ]  # fmt: skip
    kernel_grads, numpy_grads = (sum(net.gradients(X, y), []) for net in nets)
    for a, b in zip(kernel_grads, numpy_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    for net in nets:
        net.fit(X, y)
    np.testing.assert_allclose(nets[0]._params.theta, nets[1]._params.theta, rtol=1e-10, atol=1e-13)
    for key, values in nets[0].history.items():
        np.testing.assert_allclose(values, nets[1].history[key], rtol=1e-10)
    np.testing.assert_allclose(nets[0].predict_proba(X), nets[1].predict_proba(X), rtol=1e-10)


def test_only_the_numpy_backend_takes_centred_images():
    X, y = make_data(n=200)
    centred = X - X.mean(axis=0)
    with pytest.raises(ValueError, match="backend='numpy' takes any numbers"):
        NNetworkExtended(nodes_in=64, hidden_layers=(8,), nodes_out=4).fit(centred, y)
    net = NNetworkExtended(nodes_in=64, hidden_layers=(8,), nodes_out=4, maxiterations=20,
                           backend="numpy", seed=0).fit(centred, y)
    assert net.history["loss"][-1] < net.history["loss"][0]
    with pytest.raises(ValueError, match="backend must be"):
        NNetworkExtended(backend="torch")


@pytest.mark.parametrize(
    "name, value", [("alpha", 0.05), ("momentum", 0.9), ("validation_fraction", 0.1),
                    ("weight_decay", 1e-4), ("decay_factor", 0.5)],
)  # fmt: skip
def test_numpy_scalars_are_numbers_too(name, value):
    """``alpha=np.float32(0.05)`` was refused as "not a positive number"."""
    for scalar in (np.float32(value), np.float64(value)):
        net = NNetworkExtended(hidden_layers=(4,), **{name: scalar})
        assert getattr(net, name) == float(scalar) and type(getattr(net, name)) is float


@pytest.mark.parametrize("name", ["alpha", "momentum", "weight_decay", "decay_factor"])
def test_settings_that_are_zero_in_the_dtype_are_refused(name):
    """A learning rate of 1e-320 is 0 in float32: nothing trained and nothing was said."""
    with pytest.raises(ValueError, match=rf"{name}=1e-320 is 0 in float32"):
        NNetworkExtended(hidden_layers=(4,), **{name: 1e-320})
    with pytest.raises(ValueError, match=rf"{name}=1e-50 is 0 in float32"):
        NNetworkExtended(hidden_layers=(4,)).set_params(**{name: 1e-50})
    assert getattr(NNetworkExtended(hidden_layers=(4,), dtype="float64", **{name: 1e-320}),
                   name) == 1e-320  # a float64 network keeps it  # fmt: skip


@pytest.mark.parametrize("layers", [{8, 4, 16}, frozenset({8}), {8: 1}, (w for w in (8, 4))])
def test_hidden_layers_without_an_order_are_refused(layers):
    """A set was accepted as 784 -> 8 -> 16 -> 4 -> 10, in an order the caller never wrote."""
    with pytest.raises(ValueError, match="hidden_layers must be a sequence of layer widths"):
        NNetworkExtended(hidden_layers=layers)


def test_fit_many_refuses_one_network_given_twice():
    """fit_many([n, n]) trained one set of weights twice over, side by side, and gave weights
    equal to neither one fit nor two."""
    X, y = make_data()
    net = NNetworkMinimal(nodes_in=64, nodes_out=4, maxiterations=2, seed=0)
    before = net.weights[0].copy()
    with pytest.raises(ValueError, match="the same network more than once"):
        fit_many([net, NNetworkMinimal(nodes_in=64, nodes_out=4, seed=1), net], X, y)
    np.testing.assert_array_equal(net.weights[0], before)
    assert net.history == {}

