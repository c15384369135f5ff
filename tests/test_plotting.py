"""Tests for mnistnn.plotting: every helper draws the expected axes on tiny synthetic data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import itertools  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import mnistnn  # noqa: E402
from mnistnn import plotting  # noqa: E402

NAMES = ("zero", "one", "two")
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8)
LABELS = np.array([0, 1, 2] * 4)


@pytest.fixture
def figures() -> Iterator[list[Figure]]:
    """Collect the figures a test makes and close them afterwards."""
    made: list[Figure] = []
    yield made
    for fig in made:
        plt.close(fig)


def n_images(fig: Figure) -> int:
    return sum(len(ax.images) for ax in fig.axes)


def render(fig: Figure) -> None:
    """Draw the figure once, so layout or text problems raise here."""
    fig.canvas.draw()


def test_figures_are_handed_over_not_kept_open() -> None:
    # closed in pyplot at once: shown once in Jupyter, nothing piles up in loops
    plt.close("all")
    fig = plotting.image_grid(IMAGES[:2])
    assert plt.get_fignums() == []
    render(fig)  # still drawable and savable


def test_image_grid(figures: list[Figure]) -> None:
    fig = plotting.image_grid(IMAGES[:7], LABELS[:7], NAMES, ncols=3, title="seven")
    figures.append(fig)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 7 and n_images(fig) == 7  # the two empty grid cells are removed
    assert [ax.get_title() for ax in fig.axes[:3]] == ["zero", "one", "two"]
    assert fig.get_suptitle() == "seven"
    assert fig.axes[0].images[0].cmap.name == "gray_r"
    render(fig)


def test_image_grid_accepts_flat_images_and_marks_mistakes(figures: list[Figure]) -> None:
    predictions = np.array([0, 2, 2, 0])
    fig = plotting.image_grid(
        IMAGES[:4].reshape(4, 784), LABELS[:4], NAMES, predictions=predictions, scale=1.5
    )
    figures.append(fig)
    assert len(fig.axes) == 4
    wrong = fig.axes[1]
    assert wrong.get_title() == "two\n(true: one)"
    assert matplotlib.colors.to_hex(wrong.title.get_color()) == plotting.MISTAKE_COLOR
    assert wrong.spines["left"].get_visible()
    assert not fig.axes[0].spines["left"].get_visible()
    assert fig.axes[0].images[0].get_array().shape == (28, 28)
    render(fig)


def test_image_grid_without_labels_and_float_images(figures: list[Figure]) -> None:
    fig = plotting.image_grid(IMAGES[:3] / 255.0)
    figures.append(fig)
    assert len(fig.axes) == 3 and all(ax.get_title() == "" for ax in fig.axes)


def test_image_grid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="square number of pixels"):
        plotting.image_grid(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        plotting.image_grid(IMAGES[:2], labels=[0, 1, 2])


def test_samples_per_class(figures: list[Figure]) -> None:
    images = np.zeros((6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    images[labels == 1] = 255  # class "one" is all ink
    fig = plotting.samples_per_class(images, labels, NAMES, per_class=2, seed=1, title="t")
    figures.append(fig)
    assert len(fig.axes) == 1 and n_images(fig) == 1
    ax = fig.axes[0]
    mosaic = ax.images[0].get_array()
    assert mosaic.shape == (3 * 28 + 2 * 2, 2 * 28 + 2)  # 3 rows, 2 columns, 2-pixel gaps
    assert [t.get_text() for t in ax.get_yticklabels()] == list(NAMES)
    np.testing.assert_array_equal(ax.get_yticks(), [13.5, 43.5, 73.5])  # row centers
    assert (mosaic[30:58, 0:28] == 255).all() and (mosaic[30:58, 30:58] == 255).all()
    assert (mosaic[0:28] == 0).all() and (mosaic[28:30] == 0).all()  # class "zero", a gap
    assert ax.images[0].cmap.name == "gray_r" and fig.get_suptitle() == "t"
    render(fig)


def test_samples_per_class_seed_and_few_examples(figures: list[Figure]) -> None:
    def mosaic(seed: int, per_class: int = 3) -> np.ndarray:
        fig = plotting.samples_per_class(IMAGES, LABELS, NAMES, per_class=per_class, seed=seed)
        figures.append(fig)
        return np.asarray(fig.axes[0].images[0].get_array())

    np.testing.assert_array_equal(mosaic(1), mosaic(1))  # same seed, same examples
    assert not np.array_equal(mosaic(1), mosaic(2))
    wide = mosaic(0, per_class=6)  # only 4 examples per class: the last two stay blank
    assert wide.shape == (88, 6 * 30 - 2)
    assert (wide[:, 4 * 30 :] == 0).all() and (wide[:, : 4 * 30 - 2] != 0).any()


def test_class_balance(figures: list[Figure]) -> None:
    fig = plotting.class_balance(LABELS, LABELS[:5], NAMES, "balance")
    figures.append(fig)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == [4, 4, 4, 2, 2, 1]  # train bars, then test bars
    counts = [text.get_text() for text in ax.texts]
    assert counts == ["4", "4", "4", "2", "2", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(NAMES)
    assert ax.get_title() == "balance"
    render(fig)


def test_class_balance_train_only(figures: list[Figure]) -> None:
    fig = plotting.class_balance(LABELS, None, NAMES)
    figures.append(fig)
    assert len(fig.axes[0].patches) == 3
    with pytest.raises(ValueError, match="must lie in 0..1"):
        plotting.class_balance(LABELS, None, NAMES[:2])


def test_pixel_histogram(figures: list[Figure]) -> None:
    zeros = np.zeros((2, 28, 28), dtype=np.uint8)
    fig = plotting.pixel_histogram({"random": IMAGES, "blank": zeros}, title="pixels")
    figures.append(fig)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.patches) == 2  # one stairs line per dataset
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[1] == "blank (100% zeros)"
    render(fig)


def test_pixel_histogram_float_data(figures: list[Figure]) -> None:
    fig = plotting.pixel_histogram({"scaled": IMAGES / 255.0}, bins=8)
    figures.append(fig)
    assert len(fig.axes[0].patches) == 1


def test_class_means(figures: list[Figure]) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[1] = images[3] = 200
    fig = plotting.class_means(images, np.array([0, 1, 0, 1]), ("a", "b"), title="means")
    figures.append(fig)
    assert len(fig.axes) == 2 and n_images(fig) == 2
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 0.0)
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), 200.0)
    render(fig)


def test_class_means_into_subfigures(figures: list[Figure]) -> None:
    fig = Figure()
    figures.append(fig)
    top, bottom = fig.subfigures(2, 1)
    assert plotting.class_means(IMAGES, LABELS, NAMES, fig=top) is fig
    assert plotting.class_means(IMAGES, LABELS, NAMES, ncols=2, fig=bottom) is fig
    assert n_images(fig) == 6


def test_learning_curves(figures: list[Figure]) -> None:
    history = {
        "iteration": [0, 10, 20],
        "loss": [2.3, 1.0, 0.5],
        "train_accuracy": [0.1, 0.6, 0.8],
        "val_accuracy": [0.1, 0.5, 0.7],
    }
    other = {"epoch": np.arange(3), "loss": np.array([2.0, 1.5, 1.0])}
    fig = plotting.learning_curves({"a": history, "b": other})
    figures.append(fig)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(acc_ax.lines) == 2  # run b has no accuracy
    assert [line.get_label() for line in acc_ax.lines] == ["a (train)", "a (val)"]
    assert acc_ax.lines[1].get_linestyle() == "--"
    assert loss_ax.get_xlabel() == "epoch / iteration"
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [0, 10, 20])
    render(fig)


def test_learning_curves_single_run_and_errors(figures: list[Figure]) -> None:
    fig = plotting.learning_curves({"run": {"epoch": [1, 2], "loss": [1.0, 0.5]}}, ["loss"])
    figures.append(fig)
    assert len(fig.axes) == 1 and fig.axes[0].lines[0].get_label() == "train"
    with pytest.raises(ValueError, match="no history has 'accuracy' values"):
        plotting.learning_curves({"run": {"loss": [1.0]}}, ["accuracy"])
    with pytest.raises(ValueError, match="'loss' has 3 values but 'epoch' has 2"):
        plotting.learning_curves({"run": {"epoch": [1, 2], "loss": [1.0, 0.5, 0.2]}}, ["loss"])


def test_confusion_matrix_plot(figures: list[Figure]) -> None:
    cm = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 3]])
    fig = plotting.confusion_matrix_plot(cm, NAMES, title="cm")
    figures.append(fig)
    assert len(fig.axes) == 2  # the matrix and its colorbar
    ax = fig.axes[0]
    assert len(ax.images) == 1
    assert [t.get_text() for t in ax.texts] == [str(v) for v in cm.ravel()]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    render(fig)

    fig = plotting.confusion_matrix_plot(cm, NAMES, normalize=True)
    figures.append(fig)
    assert fig.axes[0].texts[0].get_text() == "0.83"  # 5 / 6
    with pytest.raises(ValueError, match=r"cm must have shape \(2, 2\)"):
        plotting.confusion_matrix_plot(cm, NAMES[:2])


def test_probability_bars(figures: list[Figure]) -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    fig = plotting.probability_bars(IMAGES[:3], proba, np.array([0, 1, 2]), NAMES, ncols=2)
    figures.append(fig)
    assert len(fig.axes) == 6 and n_images(fig) == 3
    bars = fig.axes[3]  # the second sample: true "one", predicted "zero"
    assert len(bars.patches) == 3
    colors = [matplotlib.colors.to_hex(p.get_facecolor()) for p in bars.patches]
    assert colors[0] == plotting.MISTAKE_COLOR and colors[1] == plotting.CORRECT_COLOR
    assert fig.axes[2].get_title() == "true: one"
    assert [t.get_text() for t in bars.get_yticklabels()] == list(NAMES)
    render(fig)


def test_weight_images(figures: list[Figure]) -> None:
    W = np.linspace(-2.0, 1.0, 7 * 784).reshape(7, 784)
    fig = plotting.weight_images(W, ncols=4, title="weights")
    figures.append(fig)
    assert n_images(fig) == 7
    assert len(fig.axes) == 8  # seven units and the shared colorbar
    image = fig.axes[0].images[0]
    assert image.cmap.name == plotting.WEIGHT_CMAP
    assert image.get_clim() == (-2.0, 2.0)  # symmetric around 0
    assert all(ax.images[0].get_clim() == (-2.0, 2.0) for ax in fig.axes[:7])
    render(fig)
    with pytest.raises(ValueError, match="pass W.T"):
        plotting.weight_images(W.T)


def test_prediction_counts(figures: list[Figure]) -> None:
    predictions = np.array([2, 2, 2, 0, 2, 1])
    fig = plotting.prediction_counts(predictions, NAMES, LABELS[:6], title="votes")
    figures.append(fig)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == [1, 1, 4, 2, 2, 2]  # predicted bars, then the true outlines
    assert [patch.get_fill() for patch in ax.patches] == [True] * 3 + [False] * 3
    assert [text.get_text() for text in ax.texts] == ["1", "1", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(NAMES)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["predicted (6)", "true (6)"]
    assert ax.get_title() == "votes"
    render(fig)


def test_prediction_counts_without_labels_and_errors(figures: list[Figure]) -> None:
    fig = plotting.prediction_counts(np.array([0, 0, 1]), NAMES)
    figures.append(fig)
    assert [patch.get_height() for patch in fig.axes[0].patches] == [2, 1, 0]
    with pytest.raises(ValueError, match="predictions must lie in 0..1"):
        plotting.prediction_counts(np.array([0, 2]), NAMES[:2])
    with pytest.raises(ValueError, match="labels must be 1-D"):
        plotting.prediction_counts(np.array([0, 1]), NAMES, labels=np.zeros((2, 2), int))


def test_function_panels(figures: list[Figure]) -> None:
    z = np.linspace(-2.0, 2.0, 5)
    fig = plotting.function_panels(
        z, {"ReLU(z)": np.maximum(z, 0), "step": (z > 0).astype(float)}, title="act"
    )
    figures.append(fig)
    assert [ax.get_title() for ax in fig.axes] == ["ReLU(z)", "step"]
    curve = fig.axes[0].lines[-1]  # after the two axis lines through 0
    np.testing.assert_array_equal(curve.get_xdata(), z)
    np.testing.assert_array_equal(curve.get_ydata(), [0, 0, 0, 1, 2])
    assert fig.axes[1].get_xlabel() == "z" and fig.get_suptitle() == "act"
    render(fig)
    with pytest.raises(ValueError, match="'bad' has shape"):
        plotting.function_panels(z, {"bad": z[:3]})
    with pytest.raises(ValueError, match="at least one function"):
        plotting.function_panels(z, {})


def test_matrix_image(figures: list[Figure]) -> None:
    matrix = np.arange(12.0).reshape(4, 3)
    fig = plotting.matrix_image(matrix, "image", "pixel", title="I", colorbar_label="value")
    figures.append(fig)
    assert len(fig.axes) == 2  # the matrix and its colorbar
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix)
    assert ax.images[0].cmap.name == plotting.DIGIT_CMAP
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("image", "pixel", "I")
    render(fig)
    with pytest.raises(ValueError, match="2-D"):
        plotting.matrix_image(np.zeros(3), "x", "y")


def texts(fig: Figure) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def is_red(color: object) -> bool:
    return matplotlib.colors.to_hex(color) == plotting.MISTAKE_COLOR


def test_network_diagram_of_the_write_up(figures: list[Figure]) -> None:
    fig = plotting.network_diagram()
    figures.append(fig)
    (ax,) = fig.axes
    circles = [p for p in ax.patches if isinstance(p, matplotlib.patches.Circle)]
    # 784 inputs: nine drawn around a "⋮"; the hidden and output layers: all ten units each
    assert len(circles) == 9 + 10 + 10 and texts(fig).count("⋮") == 1
    columns = sorted({circle.center[0] for circle in circles})
    assert [sum(c.center[0] == x for c in circles) for x in columns] == [9, 10, 10]
    assert len(ax.lines) == 9 * 10 + 10 * 10  # every drawn unit joined to the next layer's
    drawn = texts(fig)
    for expected in [
        "input\n784 pixels",
        "hidden layer\n10 units",
        "output\n10 classes",
        "$W$: 10 × 784\n$B$: 10 × 1",
        "$w$: 10 × 10\n$b$: 10 × 1",
        "$I$",
        "784 × N",
        "$H = W \\cdot I + B$",
        "$\\hat{H} = \\mathrm{ReLU}(H)$",
        "$O = w \\cdot \\hat{H} + b$",
        "$\\hat{O} = \\mathrm{softmax}(O)$",
    ]:
        assert expected in drawn, expected
    assert drawn.count("10 × N") == 2  # H and Ĥ, O and Ô
    assert ax.get_aspect() == 1.0  # circles stay round
    render(fig)


def test_network_diagram_of_a_deeper_network(figures: list[Figure]) -> None:
    fig = plotting.network_diagram((784, 256, 128, 10), batch="500", max_units=6)
    figures.append(fig)
    ax = fig.axes[0]
    circles = [p for p in ax.patches if isinstance(p, matplotlib.patches.Circle)]
    assert len(circles) == 4 * 5 and texts(fig).count("⋮") == 4  # six slots, one a "⋮"
    drawn = texts(fig)
    for expected in [
        "hidden layer 1\n256 units",
        "hidden layer 2\n128 units",
        "$W_1$: 256 × 784\n$B_1$: 256 × 1",
        "$W_2$: 128 × 256\n$B_2$: 128 × 1",
        "$W_3$: 10 × 128\n$B_3$: 10 × 1",
        "$H_2 = W_2 \\cdot \\hat{H}_1 + B_2$",
        "$O = W_3 \\cdot \\hat{H}_2 + B_3$",
        "784 × 500",
        "128 × 500",
    ]:
        assert expected in drawn, expected
    render(fig)


def test_network_diagram_small_layers_and_errors(figures: list[Figure]) -> None:
    fig = plotting.network_diagram((3, 2), hidden_activation="sigmoid", title="tiny")
    figures.append(fig)
    ax = fig.axes[0]
    assert sum(isinstance(p, matplotlib.patches.Circle) for p in ax.patches) == 5
    assert "⋮" not in texts(fig) and "$O = W \\cdot I + B$" in texts(fig)
    assert ax.get_title() == "tiny"
    assert "$\\hat{H} = \\mathrm{sigmoid}(H)$" in texts(
        plotting.network_diagram((3, 4, 2), hidden_activation="sigmoid")
    )
    with pytest.raises(ValueError, match="at least two positive sizes"):
        plotting.network_diagram((784,))
    with pytest.raises(ValueError, match="max_units must be at least 3"):
        plotting.network_diagram(max_units=2)


def test_backprop_graph(figures: list[Figure]) -> None:
    fig = plotting.backprop_graph()
    figures.append(fig)
    (ax,) = fig.axes
    drawn = texts(fig)
    nodes = ["$I$\n784 × N", "$W$\n10 × 784", "$B$\n10 × 1", "$H$\n10 × N",
             "$\\hat{H}$\n10 × N", "$w$\n10 × 10", "$b$\n10 × 1", "$O$\n10 × N",
             "$\\hat{O}$\n10 × N", "$L$\n10 × N", "loss\n1 × 1"]  # fmt: skip
    assert all(node in drawn for node in nodes)
    red = [t.get_text() for t in ax.texts if is_red(t.get_color())]
    shapes = dict(node.split("\n") for node in nodes)  # "$W$": "10 × 784", ...
    gradients = {text.split(" = ")[0].replace("\\mathrm{d}", "") + "$": text.split("\n")[1]
                 for text in red}  # fmt: skip
    # one gradient for each parameter and each value between them, shaped like it
    assert sorted(gradients) == sorted(["$O$", "$w$", "$b$", "$\\hat{H}$", "$H$", "$W$", "$B$"])
    assert all(gradients[name] == shapes[name] for name in gradients)
    assert "$\\mathrm{d}O = \\hat{O} - L$\n10 × N" in red
    assert "$\\mathrm{d}W = \\mathrm{d}H \\cdot I^T / N$\n10 × 784" in red
    arrows = [p for p in ax.patches if isinstance(p, matplotlib.patches.FancyArrowPatch)]
    backward = [a for a in arrows if is_red(a.get_edgecolor())]
    assert len(arrows) == 17 and len(backward) == 7
    assert all(a.get_linestyle() != "-" for a in backward)  # dashed
    assert all(a.get_linestyle() == "-" for a in arrows if a not in backward)
    render(fig)


def test_backprop_graph_other_sizes(figures: list[Figure]) -> None:
    fig = plotting.backprop_graph(n_in=4, n_hidden=3, n_out=2, batch="5")
    figures.append(fig)
    drawn = texts(fig)
    assert "$W$\n3 × 4" in drawn and "$w$\n2 × 3" in drawn and "$I$\n4 × 5" in drawn
    assert "$\\mathrm{d}W = \\mathrm{d}H \\cdot I^T / N$\n3 × 4" in drawn
    assert "$\\mathrm{d}\\hat{H} = w^T \\cdot \\mathrm{d}O$\n3 × 5" in drawn
    with pytest.raises(ValueError, match="must be positive"):
        plotting.backprop_graph(n_hidden=0)


def test_quadratic_descent_follows_the_closed_form() -> None:
    # on a diagonal A each coordinate shrinks by (1 - alpha * curvature) per step
    A = np.diag([4.0, 1.0])
    path = plotting.quadratic_descent(A, (1.0, 2.0), alpha=0.4, steps=5)
    assert path.shape == (6, 2)
    t = np.arange(6)
    np.testing.assert_allclose(path[:, 0], (1 - 0.4 * 4) ** t)  # -0.6: zig-zags
    np.testing.assert_allclose(path[:, 1], 2 * (1 - 0.4) ** t)  # 0.6: slides
    around = plotting.quadratic_descent(A, (1.0, 2.0), alpha=0.4, steps=5, minimum=(1.0, 1.0))
    np.testing.assert_allclose(around[:, 1], 1 + 0.6**t)
    np.testing.assert_allclose(around[:, 0], 1.0)  # starts at the minimum's first coordinate
    with pytest.raises(ValueError, match=r"A must be \(n, n\)"):
        plotting.quadratic_descent(np.eye(3), (1.0, 2.0), alpha=0.1, steps=3)


def test_descent_paths(figures: list[Figure]) -> None:
    narrow, round_ = np.diag([4.0, 1.0]), np.diag([2.0, 2.0])
    steep = plotting.quadratic_descent(narrow, (1.0, 2.0), alpha=0.4, steps=3)
    gentle = plotting.quadratic_descent(narrow, (1.0, 2.0), alpha=0.1, steps=3)
    even = plotting.quadratic_descent(round_, (1.0, 2.0), alpha=0.4, steps=3)
    fig = plotting.descent_paths(
        {"narrow": (narrow, {"fast": steep, "slow": gentle}), "round": (round_, {"fast": even})},
        title="valleys",
    )
    figures.append(fig)
    left, right = fig.axes
    assert (left.get_title(), right.get_title(), fig.get_suptitle()) == (
        "narrow",
        "round",
        "valleys",
    )
    path_lines = [line for line in left.lines if len(line.get_xdata()) > 1]
    np.testing.assert_array_equal(path_lines[0].get_xdata(), steep[:, 0])
    np.testing.assert_array_equal(path_lines[1].get_ydata(), gentle[:, 1])
    end = 0.5 * steep[-1] @ narrow @ steep[-1]
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend[0] == f"fast: loss {end:.2g} after 3 steps" and legend[-1] == "minimum"
    assert "curvatures 4 and 1" in [t.get_text() for t in left.texts]
    assert "curvatures 2 and 2" in [t.get_text() for t in right.texts]
    assert left.collections and right.collections  # the contour lines
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    low, high = left.get_xlim()
    assert low < min(steep[:, 0].min(), 0.0) and high > steep[:, 0].max()  # every point shows
    assert left.get_aspect() == 1.0  # to scale: a round valley looks round
    render(fig)


def test_descent_paths_errors() -> None:
    with pytest.raises(ValueError, match=r"A must be \(2, 2\)"):
        plotting.descent_paths({"bad": (np.eye(3), {})})
    with pytest.raises(ValueError, match=r"path 'p' must be \(T, 2\)"):
        plotting.descent_paths({"bad": (np.eye(2), {"p": np.zeros((4, 3))})})
    with pytest.raises(ValueError, match="at least one panel"):
        plotting.descent_paths({})


def test_activation_histograms(figures: list[Figure]) -> None:
    before = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 3.0], [0.5, 0.0, 0.0, 4.0]])
    after = np.arange(1.0, 13.0).reshape(3, 4)
    fig = plotting.activation_histograms({"before": before, "after": after}, bins=4, title="t")
    figures.append(fig)
    left, right = fig.axes
    # 7 of the 12 values are 0, and unit 0 is 0 for all four images
    zeros_left = "exactly 0 (not drawn): 58.3% of the values\n0 for every image: 1 of 3 units (33%)"
    zeros_right = "exactly 0 (not drawn): 0.0% of the values\n0 for every image: 0 of 3 units (0%)"
    assert [t.get_text() for t in left.texts] == [zeros_left]
    assert [t.get_text() for t in right.texts] == [zeros_right]
    assert left.get_title() == "before\n(3 units × 4 images)" and fig.get_suptitle() == "t"
    heights, edges, _ = left.patches[0].get_data()
    np.testing.assert_allclose(heights.sum(), 5 / 12)  # the nonzero values, as a share of all
    np.testing.assert_allclose(edges, [0.0, 3.0, 6.0, 9.0, 12.0])  # shared by both panels
    # 1..12 in [0, 3), [3, 6), [6, 9), [9, 12]: 2, 3, 3 and 4 of the 12 values
    np.testing.assert_allclose(right.patches[0].get_data()[0], np.array([2, 3, 3, 4]) / 12)
    assert left.get_ylabel() == "share of all values"
    render(fig)
    fig = plotting.activation_histograms({"before": before, "after": after}, 4, same_scale=False)
    figures.append(fig)
    np.testing.assert_allclose(fig.axes[0].patches[0].get_data()[1], [0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(fig.axes[1].patches[0].get_data()[1], [0.0, 3.0, 6.0, 9.0, 12.0])
    with pytest.raises(ValueError, match=r"\(n_units, N\)"):
        plotting.activation_histograms({"flat": np.zeros(5)})


def test_quadratic_descent_with_momentum_is_the_update_rule() -> None:
    """Each step is :func:`mnistnn.reference.update` (the rule is written once), and that is
    classical momentum as written by hand, to rounding."""
    A, start, minimum = np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([1.0, -2.0]), (0.5, 0.5)
    path = plotting.quadratic_descent(A, start, alpha=0.2, steps=8, minimum=minimum, momentum=0.9)
    theta, velocity = [start.copy()], [np.zeros(2)]
    for t in range(8):  # the package's own update step
        mnistnn.reference.update(theta, [A @ (theta[0] - minimum)], velocity, 0.2, momentum=0.9)
        np.testing.assert_array_equal(path[t + 1], theta[0])
    theta, v, expected = start.copy(), np.zeros(2), [start.copy()]
    for _ in range(8):  # v = mu v - alpha g, theta = theta + v, by hand
        v = 0.9 * v - 0.2 * (A @ (theta - minimum))
        theta = theta + v
        expected.append(theta)
    np.testing.assert_allclose(path, expected, rtol=1e-12, atol=1e-15)
    assert np.abs(path[1:] - path[:-1]).max() > np.abs(np.diff(
        plotting.quadratic_descent(A, start, 0.2, 8, minimum), axis=0)).max()  # fmt: skip


def test_quadratic_descent_without_momentum_is_unchanged() -> None:
    A, start = np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([1.0, -2.0])
    expected = [start]
    for _ in range(6):  # the plain step, W = W - alpha dW
        expected.append(expected[-1] - 0.3 * (A @ (expected[-1] - 0.0)))
    for path in (
        plotting.quadratic_descent(A, start, alpha=0.3, steps=6),
        plotting.quadratic_descent(A, start, alpha=0.3, steps=6, momentum=0.0),
    ):
        np.testing.assert_array_equal(path, expected)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        plotting.quadratic_descent(A, start, alpha=0.3, steps=6, momentum=1.0)


def test_learning_rate_search(figures: list[Figure]) -> None:
    results = {
        "uniform": {0.1: [0.50, 0.52, 0.54], 0.5: [0.35, 0.30, np.nan], 2.5: [np.nan] * 3},
        "he": {0.5: [0.40, 0.30, 0.35], 0.1: [0.36, 0.34, 0.32]},  # any order of alphas
    }
    fig = plotting.learning_rate_search(results, chosen=("he", 0.1), title="search")
    figures.append(fig)
    (ax,) = fig.axes
    uniform, diverged, he, star = ax.lines
    np.testing.assert_array_equal(uniform.get_xdata(), [0.1, 0.5])  # 2.5 diverged: no mean
    np.testing.assert_allclose(uniform.get_ydata(), [0.52, 0.325])  # the nan left out
    np.testing.assert_array_equal(diverged.get_xdata(), [2.5])
    assert diverged.get_marker() == "x" and diverged.get_color() == uniform.get_color()
    np.testing.assert_array_equal(he.get_xdata(), [0.1, 0.5])
    np.testing.assert_allclose(he.get_ydata(), [0.34, 0.35])
    np.testing.assert_allclose(star.get_xydata(), [[0.1, 0.34]])
    assert star.get_marker() == "*"
    band = ax.collections[1].get_paths()[0].vertices  # he: from the lowest to the highest seed
    np.testing.assert_allclose(sorted(set(band[:, 1].round(12))), [0.3, 0.32, 0.36, 0.4])
    assert [t.get_text() for t in ax.texts] == ["chosen: he, α = 0.1\nvalidation loss 0.34"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["uniform", "he", "lowest to highest of 3 seeds", "all diverged"]
    assert ax.get_xscale() == "log" and ax.get_title() == "search"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.5", "2.5"]
    assert ax.get_ylabel() == "validation loss"
    render(fig)


def test_learning_rate_search_single_values_and_errors(figures: list[Figure]) -> None:
    fig = plotting.learning_rate_search(
        {"784-256-10": {0.01: 0.42, 0.03: 0.37, 0.1: 0.38}}, ylabel="val acc", spread="bars"
    )
    figures.append(fig)
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.42, 0.37, 0.38])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["784-256-10"]  # one seed
    assert len(ax.texts) == 0 and ax.get_ylabel() == "val acc"  # nothing chosen
    with pytest.raises(ValueError, match=r"chosen \('he', 0.3\) is not among the results"):
        plotting.learning_rate_search({"he": {0.1: 1.0}}, chosen=("he", 0.3))
    with pytest.raises(ValueError, match="finite values"):  # every run diverged
        plotting.learning_rate_search({"he": {0.1: 1.0, 3.0: np.nan}}, chosen=("he", 3.0))
    with pytest.raises(ValueError, match="needs alphas > 0"):
        plotting.learning_rate_search({"he": {0.0: 1.0}})
    with pytest.raises(ValueError, match="spread must be"):
        plotting.learning_rate_search({"he": {0.1: 1.0}}, spread="fan")


def deep_network() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """A small three-layer network 6-5-4-3 and a batch of 7 inputs."""
    rng = np.random.default_rng(1)
    sizes = (6, 5, 4, 3)
    weights = [rng.normal(0, 0.7, (m, n)) for n, m in itertools.pairwise(sizes)]
    biases = [rng.normal(0, 0.1, m) for m in sizes[1:]]
    return weights, biases, rng.random((6, 7)), np.array([0, 1, 2, 0, 1, 2, 0])


def test_layer_statistics_are_the_reference_values() -> None:
    weights, biases, batch, y = deep_network()
    stats = plotting.layer_statistics(weights, biases, batch, y)
    H1 = np.maximum(weights[0] @ batch + biases[0][:, None], 0)
    H2 = np.maximum(weights[1] @ H1 + biases[1][:, None], 0)
    np.testing.assert_allclose(stats.activations[0], H1)
    np.testing.assert_allclose(stats.activations[1], H2)
    assert len(stats.activations) == 2 and len(stats.gradients) == 3
    loss, dWs, _ = mnistnn.reference.backward(weights, biases, batch, y)
    assert stats.loss == loss
    for dW, expected, W in zip(stats.gradients, dWs, weights, strict=True):
        np.testing.assert_array_equal(dW, expected)
        assert dW.shape == W.shape


def test_layer_activation_histograms(figures: list[Figure]) -> None:
    first = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 3.0], [0.5, 0.0, 0.0, 4.0]])
    second = np.array([[1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    fig = plotting.layer_activation_histograms([first, second], bins=4, title="t")
    figures.append(fig)
    (ax,) = fig.axes
    one, two = ax.patches
    heights, edges, _ = one.get_data()
    np.testing.assert_allclose(edges, [0.0, 1.0, 2.0, 3.0, 4.0])  # shared by both layers
    # 0.5 | 1 | 2 | 3 and 4: of the 12 values; the seven zeros are not drawn
    np.testing.assert_allclose(heights, np.array([1, 1, 1, 2]) / 12)
    np.testing.assert_allclose(two.get_data()[0], np.array([0, 2, 2, 0]) / 8)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "layer 1 (3 units): mean 0.875, std 1.32\n    exactly 0: 58%, dead units: 1 (33%)",
        "layer 2 (2 units): mean 0.75, std 0.829\n    exactly 0: 50%, dead units: 1 (50%)",
    ]
    assert ax.get_xlabel() == "activation ReLU(H) of 4 images (zeros not drawn)"
    assert ax.get_title() == "t" and ax.get_yscale() == "linear"
    render(fig)
    fig = plotting.layer_activation_histograms([first, second], log=True)
    figures.append(fig)
    assert fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="layer 2 must be a non-empty 2-D array"):
        plotting.layer_activation_histograms([first, np.zeros(3)])


def test_layer_gradient_histograms(figures: list[Figure]) -> None:
    weights, biases, batch, y = deep_network()
    gradients = plotting.layer_statistics(weights, biases, batch, y).gradients
    fig = plotting.layer_gradient_histograms(gradients, weights, bins=10)
    figures.append(fig)
    (ax,) = fig.axes
    assert len(ax.patches) == 3 and ax.get_yscale() == "log"  # narrow peaks and wide tails
    for patch, g in zip(ax.patches, gradients, strict=True):
        heights, edges, _ = patch.get_data()
        np.testing.assert_allclose(heights, np.histogram(g, edges)[0] / g.size)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    g, W = gradients[1], weights[1]
    assert legend[1] == (
        f"$W_2$ 4 × 5: mean {g.mean():.2g}, std {g.std():.2g}\n"
        f"    std(dW) / std(W): {g.std() / W.std():.2g}"
    )
    render(fig)
    plain = plotting.layer_gradient_histograms(gradients, log=False)
    figures.append(plain)
    assert "std(dW)" not in plain.axes[0].get_legend().get_texts()[0].get_text()
    assert plain.axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="shaped like the gradients"):
        plotting.layer_gradient_histograms(gradients, weights[:2])


def test_layer_gradient_histograms_leave_out_outliers(figures: list[Figure]) -> None:
    wide = np.linspace(-1.0, 1.0, 400).reshape(20, 20)
    narrow = wide / 2
    narrow[0, 0] = 50.0  # one outlier would squeeze every other value into the middle bin
    fig = plotting.layer_gradient_histograms([wide, narrow], bins=8)
    figures.append(fig)
    first, second = fig.axes[0].patches
    heights, edges, _ = first.get_data()
    assert -edges[0] == edges[-1] and 0.98 < edges[-1] < 1.0  # around 0, to wide's 99.5%
    np.testing.assert_allclose(heights.sum(), np.mean(np.abs(wide) <= edges[-1]))
    np.testing.assert_allclose(second.get_data()[0].sum(), 399 / 400)  # all but the outlier
    assert heights.max() < 0.2  # spread over the bins


def test_update_ratios() -> None:
    before = [np.array([[1.0, -1.0], [1.0, -1.0]]), np.array([[2.0, 0.0, -2.0]])]
    after = [before[0] + [[0.1, 0.0], [0.0, 0.0]], before[1] + 0.5]  # a shift: no spread
    # the first change, 0.1 once and 0 thrice, has std 0.1 * sqrt(3) / 4; the weights std 1
    np.testing.assert_allclose(plotting.update_ratios(before, after), [0.1 * 3**0.5 / 4, 0.0])
    weights, biases, batch, y = deep_network()
    old = [W.copy() for W in weights]
    _, dWs, dBs = mnistnn.reference.backward(weights, biases, batch, y)
    params = weights + biases
    mnistnn.reference.update(params, dWs + dBs, [np.zeros_like(p) for p in params], 0.1)
    expected = [np.std(0.1 * dW) / np.std(W) for dW, W in zip(dWs, old, strict=True)]
    np.testing.assert_allclose(plotting.update_ratios(old, weights), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="same shapes"):
        plotting.update_ratios(before, after[:1])


def test_update_ratio_curves(figures: list[Figure]) -> None:
    ratios = np.array([[1e-2, 1e-4], [5e-3, 2e-4], [2e-3, 3e-4]])
    fig = plotting.update_ratio_curves(ratios, title="first epoch")
    figures.append(fig)
    (ax,) = fig.axes
    first, second, healthy = ax.lines
    np.testing.assert_array_equal(first.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(first.get_ydata(), ratios[:, 0])
    np.testing.assert_array_equal(second.get_ydata(), ratios[:, 1])
    np.testing.assert_array_equal(healthy.get_ydata(), [1e-3, 1e-3])
    assert healthy.get_linestyle() == "--"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "$W_1$ (last step: 0.002)",
        "$W_2$ (last step: 0.0003)",
        "0.001: commonly cited as healthy",
    ]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "std(update) / std(W)"
    assert ax.get_title() == "first epoch"
    render(fig)
    with pytest.raises(ValueError, match=r"\(steps, layers\)"):
        plotting.update_ratio_curves(np.ones(3))
