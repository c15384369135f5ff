"""Figures the notebooks share: digits, class counts, pixel statistics, training curves, errors,
and diagrams of the network, its gradients and its training.

Every plotting function takes numpy arrays (the diagrams: layer sizes), draws one figure and
returns it; none of them trains a network or reads files.  Three helpers compute what they
draw: ``quadratic_descent`` the points that gradient descent visits on a small quadratic (for
``descent_paths``), ``layer_statistics`` a deep network's activations and gradients with
:mod:`mnistnn.reference` (for ``layer_activation_histograms`` and
``layer_gradient_histograms``) and ``update_ratios`` one training step's update-to-weight
ratios (for ``update_ratio_curves``).
They share one look: digits in ``gray_r`` (ink dark on white paper, as the digits were
written) with every pixel drawn as a solid square, titles with class names, mistakes in red.

Each figure is created through ``matplotlib.pyplot`` (so Jupyter knows how to draw it) and
then closed at once, i.e. handed to the caller and removed from pyplot's list of open figures:

* in Jupyter, a figure returned as the last value of a cell is shown exactly once (a figure
  kept open by pyplot would be shown a second time when the cell ends);
* nothing accumulates in pyplot, so loops and tests need no ``plt.close``;
* in a script, save it with ``fig.savefig("name.png")`` (``plt.show()`` does not show it).

Images may be given as ``(N, 28, 28)`` arrays or flattened as ``(N, 784)`` (any square size
works); uint8 images are drawn on the fixed 0..255 scale, others on their common min..max.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Patch
from numpy.typing import ArrayLike

from . import reference

__all__ = [
    "CORRECT_COLOR",
    "DIGIT_CMAP",
    "INTERPOLATION",
    "MISTAKE_COLOR",
    "WEIGHT_CMAP",
    "LayerStatistics",
    "activation_histograms",
    "backprop_graph",
    "class_balance",
    "class_means",
    "confusion_matrix_plot",
    "descent_paths",
    "function_panels",
    "image_grid",
    "layer_activation_histograms",
    "layer_gradient_histograms",
    "layer_statistics",
    "learning_curves",
    "learning_rate_search",
    "matrix_image",
    "network_diagram",
    "pixel_histogram",
    "prediction_counts",
    "probability_bars",
    "quadratic_descent",
    "samples_per_class",
    "update_ratio_curves",
    "update_ratios",
    "weight_images",
]

DIGIT_CMAP = "gray_r"
"""Colormap of all digit images: 0 is white paper, 255 is black ink."""
WEIGHT_CMAP = "RdBu_r"
"""Diverging colormap of weights: negative blue, zero white, positive red."""
INTERPOLATION = "nearest"
"""How images are resampled for display: each pixel a solid square, no smoothing."""
MISTAKE_COLOR = "#c62828"
"""Color of wrong predictions."""
CORRECT_COLOR = "#2e7d32"
"""Color of the true class in probability bars."""
_SERIES_STYLES = {"train_": "-", "": "-", "val_": "--", "test_": ":"}


# --------------------------------------------------------------------------- helpers


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A new figure with constrained layout, already closed in pyplot (see the module notes)."""
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _as_images(images: ArrayLike) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H*W)`` with a square ``H*W`` -> ``(N, H, W)`` (a view if possible)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        return arr
    if arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side == arr.shape[1]:
            return arr.reshape(len(arr), side, side)
        raise ValueError(
            f"flattened images need a square number of pixels per row, got {arr.shape[1]}"
        )
    raise ValueError(f"images must be (N, H, W) or (N, H*W), got shape {arr.shape}")


def _value_range(images: np.ndarray) -> tuple[float, float]:
    """Color limits: 0..255 for uint8 images, else the common min..max of the images."""
    if images.dtype == np.uint8:
        return 0.0, 255.0
    if images.size == 0:
        return 0.0, 1.0
    low, high = float(np.min(images)), float(np.max(images))
    return (low, high) if high > low else (low, low + 1.0)


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[index]) if class_names is not None else str(index)


def _bare(ax: Axes) -> None:
    """No ticks and no frame, but keep the axes so a y label can still be shown."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _frame(ax: Axes, color: str, width: float = 2.0) -> None:
    """Draw a colored frame around an image (used to mark mistakes)."""
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(color)
        spine.set_linewidth(width)


def _count_labels(labels: ArrayLike, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} must lie in 0..{n_classes - 1} (one index per class name)")
    return np.bincount(arr.astype(np.int64), minlength=n_classes)


def _root(fig: Figure | SubFigure) -> Figure:
    # A subfigure's .figure is its root figure (Matplotlib 3.8 has no get_figure(root=True)).
    return fig if isinstance(fig, Figure) else fig.figure


# --------------------------------------------------------------------------- images


def image_grid(
    images: ArrayLike,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    predictions: ArrayLike | None = None,
    ncols: int = 10,
    title: str | None = None,
    scale: float = 1.0,
) -> Figure:
    """Show images in a grid, each titled with its class, wrong predictions marked in red.

    ``images`` is ``(N, 28, 28)`` or ``(N, 784)``; ``labels`` and ``predictions`` are optional
    ``(N,)`` class indices, named through ``class_names`` (``K`` strings) if given.  With
    ``predictions`` each image is titled with the predicted class; a wrong one is drawn in red
    with a red frame and the true class below it.  ``scale`` multiplies the figure size (one
    image is about 1 inch).  Returns the figure, with one axes per image.
    """
    imgs = _as_images(images)
    n = len(imgs)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    true = None if labels is None else np.asarray(labels)
    pred = None if predictions is None else np.asarray(predictions)
    for name, arr in (("labels", true), ("predictions", pred)):
        if arr is not None and arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    text_lines = (true is not None) + (pred is not None)
    cell_h = 1.0 + 0.18 * text_lines
    top = 0.35 if title else 0.0
    fig = _new_figure((ncols * scale, (nrows * cell_h + top) * scale))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    vmin, vmax = _value_range(imgs)
    fontsize = 8 * min(max(scale, 0.75), 1.5)
    for i, ax in enumerate(axes):
        if i >= n:
            ax.remove()
            continue
        ax.imshow(imgs[i], cmap=DIGIT_CMAP, vmin=vmin, vmax=vmax, interpolation=INTERPOLATION)
        _bare(ax)
        if pred is None:
            if true is not None:
                ax.set_title(_class_name(int(true[i]), class_names), fontsize=fontsize)
            continue
        text = _class_name(int(pred[i]), class_names)
        if true is not None and int(pred[i]) != int(true[i]):
            text += f"\n(true: {_class_name(int(true[i]), class_names)})"
            ax.set_title(text, fontsize=fontsize, color=MISTAKE_COLOR)
            _frame(ax, MISTAKE_COLOR)
        else:
            ax.set_title(text + ("\n" if true is not None else ""), fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=11 * min(max(scale, 0.8), 1.5))
    return fig


def samples_per_class(
    images: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    per_class: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """A few random examples of every class: one row per class, named on the left.

    ``images`` is ``(N, 28, 28)`` or ``(N, 784)``, ``labels`` ``(N,)`` indices into
    ``class_names`` (``K`` names).  ``per_class`` examples per row are drawn without
    replacement with ``numpy.random.default_rng(seed)``, so the same seed shows the same
    examples (a class with fewer examples leaves the rest of its row blank).  The examples are
    tiled into one mosaic image with thin white gaps, which draws much faster than one axes per
    image.  Returns the figure, with one axes.
    """
    imgs = _as_images(images)
    y = np.asarray(labels)
    if y.shape != (len(imgs),):
        raise ValueError(f"labels must have shape ({len(imgs)},), got {y.shape}")
    k, per_class = len(class_names), max(1, int(per_class))
    _count_labels(y, k, "labels")
    rng = np.random.default_rng(seed)
    vmin, vmax = _value_range(imgs)
    h, w, gap = imgs.shape[1], imgs.shape[2], max(1, imgs.shape[1] // 14)
    mosaic = np.full((k * (h + gap) - gap, per_class * (w + gap) - gap), vmin)
    for c in range(k):
        members = np.flatnonzero(y == c)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for j, index in enumerate(chosen):
            top, left = c * (h + gap), j * (w + gap)
            mosaic[top : top + h, left : left + w] = imgs[index]
    side = 0.62
    label_w = 0.09 * max(len(str(c)) for c in class_names) + 0.3
    fig = _new_figure((label_w + per_class * side, k * side + (0.35 if title else 0.0)))
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap=DIGIT_CMAP, vmin=vmin, vmax=vmax, interpolation=INTERPOLATION)
    _bare(ax)
    ax.set_yticks(np.arange(k) * (h + gap) + (h - 1) / 2, [str(c) for c in class_names])
    ax.tick_params(axis="y", length=0, labelsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def class_means(
    images: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    title: str | None = None,
    ncols: int | None = None,
    fig: Figure | SubFigure | None = None,
) -> Figure:
    """The average image of each class: where its ink usually is.

    ``images`` is ``(N, 28, 28)`` or ``(N, 784)``, ``labels`` ``(N,)`` indices into
    ``class_names`` (``K`` names).  The ``K`` means are drawn in ``gray_r`` on one shared scale
    (0, or the lowest mean if negative, to the darkest mean pixel), ``ncols`` per row (default:
    all in one row).  Pass a ``fig`` (e.g. one of ``Figure.subfigures``) to draw into it.
    Returns the (root) figure, with ``K`` axes added.
    """
    imgs = _as_images(images)
    y = np.asarray(labels)
    if y.shape != (len(imgs),):
        raise ValueError(f"labels must have shape ({len(imgs)},), got {y.shape}")
    k = len(class_names)
    counts = _count_labels(y, k, "labels")
    means = np.full((k, imgs.shape[1], imgs.shape[2]), np.nan)
    for c in np.flatnonzero(counts):
        means[c] = imgs[y == c].mean(axis=0, dtype=np.float64)
    ncols = k if ncols is None else max(1, min(int(ncols), k))
    nrows = math.ceil(k / ncols)
    if fig is None:
        top = 0.3 if title else 0.0
        fig = _new_figure((1.15 * ncols, 1.35 * nrows + top))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    finite = np.isfinite(means).any()
    vmin = min(0.0, float(np.nanmin(means))) if finite else 0.0
    vmax = float(np.nanmax(means)) if finite else 1.0
    for c, ax in enumerate(axes):
        if c >= k:
            ax.remove()
            continue
        ax.imshow(
            means[c],
            cmap=DIGIT_CMAP,
            vmin=vmin,
            vmax=max(vmax, vmin + 1e-12),
            interpolation=INTERPOLATION,
        )
        _bare(ax)
        ax.set_title(str(class_names[c]), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return _root(fig)


def weight_images(
    W: ArrayLike,
    ncols: int = 5,
    title: str | None = None,
    unit_names: Sequence[str] | None = None,
) -> Figure:
    """Show each row of a first-layer weight matrix as an image: what each unit looks for.

    ``W`` is ``(n_units, 784)``: row ``u`` holds the weights from the 784 pixels to unit ``u``
    and is drawn as a 28 x 28 image (any square pixel count works).  The colormap is diverging
    and symmetric around 0 (blue negative, white 0, red positive) on one scale shared by all
    units, shown in one colorbar.  ``unit_names`` titles the images (default ``unit 0``, ...).
    Returns the figure: ``n_units`` image axes plus the colorbar axes.
    """
    w = np.asarray(W, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"W must be 2-D (n_units, n_pixels), got shape {w.shape}")
    side = math.isqrt(w.shape[1])
    if side * side != w.shape[1]:
        hint = " (pass W.T if the pixels are along the first axis)" if w.shape[0] == 784 else ""
        raise ValueError(
            f"each row of W must hold a square number of pixels, got {w.shape[1]}{hint}"
        )
    n = len(w)
    if n == 0:
        raise ValueError("W has no units (rows)")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    top = 0.35 if title else 0.0
    fig = _new_figure((1.5 * ncols + 0.8, 1.6 * nrows + top))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    limit = float(np.max(np.abs(w))) or 1.0
    image = None
    for u, ax in enumerate(axes):
        if u >= n:
            ax.remove()
            continue
        image = ax.imshow(
            w[u].reshape(side, side),
            cmap=WEIGHT_CMAP,
            vmin=-limit,
            vmax=limit,
            interpolation=INTERPOLATION,
        )
        _bare(ax)
        ax.set_title(unit_names[u] if unit_names is not None else f"unit {u}", fontsize=9)
    fig.colorbar(image, ax=[ax for ax in axes[:n]], shrink=0.8, label="weight")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- data statistics


def class_balance(
    train_labels: ArrayLike,
    test_labels: ArrayLike | None,
    class_names: Sequence[str],
    title: str | None = None,
) -> Figure:
    """How many examples each class has: train and test counts as grouped bars.

    ``train_labels`` and ``test_labels`` are 1-D class indices into ``class_names`` (``K``
    names); ``test_labels`` may be None.  Each bar is annotated with its count.  Returns the
    figure, with one axes.
    """
    k = len(class_names)
    groups = [("train", _count_labels(train_labels, k, "train_labels"), "#4c72b0")]
    if test_labels is not None:
        groups.append(("test", _count_labels(test_labels, k, "test_labels"), "#dd8452"))
    fig = _new_figure((max(6.0, 0.8 * k + 1.5), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(groups)
    x = np.arange(k)
    for g, (name, counts, color) in enumerate(groups):
        offset = (g - (len(groups) - 1) / 2) * width
        bars = ax.bar(x + offset, counts, width, label=f"{name} ({counts.sum():,})", color=color)
        ax.bar_label(bars, fontsize=7, padding=1)
    long_names = max(len(str(c)) for c in class_names) > 3
    ax.set_xticks(
        x,
        [str(c) for c in class_names],
        rotation=30 if long_names else 0,
        ha="right" if long_names else "center",
    )
    ax.set_ylabel("examples")
    highest = max(int(counts.max(initial=0)) for _, counts, _ in groups)
    ax.set_ylim(0, max(highest, 1) * 1.25)  # headroom for the counts and the legend
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper right", fontsize=8, ncols=len(groups), frameon=False)
    if title:
        ax.set_title(title)
    return fig


def pixel_histogram(
    images_by_name: Mapping[str, ArrayLike], title: str | None = None, bins: int = 64
) -> Figure:
    """Overlaid histograms of pixel values, one per dataset, on a logarithmic y axis.

    ``images_by_name`` maps a legend name to images of any shape (every pixel counts).  The y
    axis is the fraction of that dataset's pixels, so datasets of different sizes compare; the
    legend also gives the fraction of exact zeros.  uint8 data gets one bin per value 0..255,
    other data ``bins`` bins over the common range.  Returns the figure, with one axes.
    """
    if not images_by_name:
        raise ValueError("pixel_histogram needs at least one dataset")
    arrays = {name: np.asarray(a) for name, a in images_by_name.items()}
    all_uint8 = all(a.dtype == np.uint8 for a in arrays.values())
    if all_uint8:
        edges = np.arange(257) - 0.5
    else:
        low = min(float(a.min()) for a in arrays.values() if a.size)
        high = max(float(a.max()) for a in arrays.values() if a.size)
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    fig = _new_figure((7.0, 3.6))
    ax = fig.add_subplot()
    for name, a in arrays.items():
        if a.size == 0:
            raise ValueError(f"dataset {name!r} has no pixels")
        if all_uint8:
            counts = np.bincount(a.ravel(), minlength=256)
        else:
            counts, _ = np.histogram(a, bins=edges)
        zeros = np.count_nonzero(a == 0) / a.size
        ax.stairs(counts / a.size, edges, label=f"{name} ({zeros:.0%} zeros)", linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("pixel value" + (" (0 = background)" if all_uint8 else ""))
    ax.set_ylabel("fraction of pixels")
    ax.set_xlim(edges[0], edges[-1])
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- training


def learning_curves(
    histories: Mapping[str, Mapping[str, ArrayLike]],
    metrics: Sequence[str] = ("loss", "accuracy"),
    title: str | None = None,
) -> Figure:
    """Training curves of one or more runs: one panel per metric, one color per run.

    ``histories`` maps a run name to its history: a mapping of equal-length sequences with an
    x axis (``"iteration"`` or ``"epoch"``; else the position is used) and any of, for each
    metric ``m``, ``"train_m"`` or ``"m"`` (solid line), ``"val_m"`` (dashed) and ``"test_m"``
    (dotted), e.g. ``{"iteration": [...], "loss": [...], "train_accuracy": [...],
    "val_accuracy": [...]}``.  Only what is present is plotted; a metric no run has is an
    error.  Returns the figure, with one axes per metric.
    """
    if not histories:
        raise ValueError("learning_curves needs at least one history")
    if not metrics:
        raise ValueError("learning_curves needs at least one metric")
    fig = _new_figure((4.6 * len(metrics), 3.4))
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(histories))]
    x_names: set[str] = set()
    for ax, metric in zip(axes, metrics, strict=True):
        plotted = False
        for color, (run, history) in zip(colors, histories.items(), strict=True):
            x, x_name = _x_axis(run, history)
            for prefix, style in _SERIES_STYLES.items():
                key = prefix + metric
                if key not in history or (prefix == "" and f"train_{metric}" in history):
                    continue
                y = np.asarray(history[key], dtype=np.float64)
                if y.shape != x.shape:
                    raise ValueError(
                        f"history {run!r}: {key!r} has {y.size} values but {x_name!r} has {x.size}"
                    )
                split = prefix.rstrip("_") or "train"
                label = split if len(histories) == 1 else f"{run} ({split})"
                ax.plot(x, y, style, color=color, label=label, linewidth=1.5)
                plotted = True
                x_names.add(x_name)
        if not plotted:
            keys = sorted({key for history in histories.values() for key in history})
            raise ValueError(f"no history has {metric!r} values; keys present: {keys}")
        ax.set_title(metric)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel(" / ".join(sorted(x_names)))
    if title:
        fig.suptitle(title)
    return fig


def _x_axis(run: str, history: Mapping[str, ArrayLike]) -> tuple[np.ndarray, str]:
    for key in ("iteration", "epoch"):
        if key in history:
            return np.asarray(history[key]), key
    lengths = {len(np.asarray(v)) for v in history.values()}
    if len(lengths) > 1:
        raise ValueError(f"history {run!r}: sequences of different lengths {sorted(lengths)}")
    return np.arange(lengths.pop() if lengths else 0), "step"


def learning_rate_search(
    results: Mapping[str, Mapping[float, float | Sequence[float]]],
    chosen: tuple[str, float] | None = None,
    ylabel: str = "validation loss",
    spread: str = "band",
    title: str | None = None,
) -> Figure:
    """A learning-rate search: a score against ``alpha`` on a log axis, one line per setting.

    ``results`` maps a setting (e.g. ``"he"`` or ``"784-256-10"``) to ``{alpha: values}``: the
    score of the runs with that learning rate (e.g. the final validation loss), one number or
    one per seed.  Each line goes through the mean over the seeds; with several seeds, their
    lowest to highest value is drawn as a band (``spread="band"``) or as error bars
    (``"bars"``).  A value that is not finite (a run that diverged: pass ``nan``) is left out;
    where every run of a setting diverged, a × at the top of the axes says so.  ``chosen``
    ``(setting, alpha)`` is marked with a black star and annotated with its mean.  The x ticks
    are the alphas tried.  Returns the figure, with one axes.
    """
    if not results:
        raise ValueError("learning_rate_search needs at least one setting")
    if spread not in ("band", "bars"):
        raise ValueError(f"spread must be 'band' or 'bars', got {spread!r}")
    fig = _new_figure((8.0, 4.0))
    ax = fig.add_subplot()
    tried: set[float] = set()
    means: dict[tuple[str, float], float] = {}
    seeds, diverged = 1, False
    for i, (name, runs) in enumerate(results.items()):
        alphas, mean, low, high, n = _over_seeds(name, runs)
        ok, color = np.isfinite(mean), f"C{i % 10}"
        ax.plot(alphas[ok], mean[ok], "-o", color=color, label=name, linewidth=1.6, markersize=5)
        if spread == "band":
            ax.fill_between(alphas[ok], low[ok], high[ok], color=color, alpha=0.18, linewidth=0)
        else:
            errors = [mean[ok] - low[ok], high[ok] - mean[ok]]
            ax.errorbar(alphas[ok], mean[ok], errors, fmt="none", ecolor=color, capsize=3)
        if not ok.all():  # a × at the top of the axes, a little lower for each setting
            y = np.full(np.count_nonzero(~ok), 0.97 - 0.05 * i)
            ax.plot(alphas[~ok], y, "x", color=color, markersize=9, markeredgewidth=2,
                    transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip
            diverged = True
        tried.update(alphas.tolist())
        means.update(((name, float(a)), float(m)) for a, m in zip(alphas, mean, strict=True))
        seeds = max(seeds, n)
    handles, _ = ax.get_legend_handles_labels()
    if seeds > 1:
        handles.append(_spread_handle(spread, seeds))
    if diverged:
        handles.append(Line2D([], [], ls="none", marker="x", color="gray", label="all diverged"))
    if chosen is not None:
        _mark_chosen(ax, tuple(chosen), means, ylabel, sorted(tried))
    ax.set_xscale("log")
    ax.set_xticks(sorted(tried), [f"{a:g}" for a in sorted(tried)])
    ax.minorticks_off()
    ax.set_xlabel("learning rate α (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    return fig


def _over_seeds(
    name: str, runs: Mapping[float, float | Sequence[float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(alphas, mean, lowest, highest, most seeds)`` of one setting's runs, sorted by alpha,
    over the finite values (nan where there are none)."""
    alphas = np.array(sorted(runs), dtype=np.float64)
    if alphas.size == 0 or alphas[0] <= 0:
        raise ValueError(f"setting {name!r}: needs alphas > 0, got {alphas.tolist()}")
    values = [np.atleast_1d(np.asarray(runs[a], dtype=np.float64)) for a in sorted(runs)]
    finite = [v[np.isfinite(v)] for v in values]
    stats = np.array([(v.mean(), v.min(), v.max()) if v.size else (np.nan,) * 3 for v in finite])
    return alphas, *stats.T, max(len(v) for v in values)


def _mark_chosen(
    ax: Axes,
    chosen: tuple[str, float],
    means: dict[tuple[str, float], float],
    ylabel: str,
    tried: list[float],
) -> None:
    """A star on the chosen mean, its value written at the top (or bottom) of the axes, where
    the other lines seldom are: above a minimum, below a maximum."""
    if not np.isfinite(means.get(chosen, np.nan)):
        raise ValueError(f"chosen {chosen!r} is not among the results' finite values")
    alpha, value = chosen[1], means[chosen]
    finite = [m for m in means.values() if np.isfinite(m)]
    above = value <= (min(finite) + max(finite)) / 2
    ax.plot(alpha, value, "*", color="black", markersize=16, zorder=5)
    ha = "left" if alpha == tried[0] else "right" if alpha == tried[-1] else "center"
    start = ({"left": 0.0, "center": 0.5, "right": 1.0}[ha], 0.0 if above else 1.0)
    ax.annotate(
        f"chosen: {chosen[0]}, α = {alpha:g}\n{ylabel} {value:.4g}",
        (alpha, value),
        xytext=(alpha, 0.93 if above else 0.07),
        textcoords=ax.get_xaxis_transform(),
        ha=ha,
        va="top" if above else "bottom",
        fontsize=9,
        arrowprops={"arrowstyle": "-", "color": "k", "lw": 0.8, "ls": ":", "relpos": start},
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
    )


def _spread_handle(spread: str, seeds: int) -> Artist:
    """The legend entry that explains the band or the error bars."""
    label = f"lowest to highest of {seeds} seeds"
    if spread == "band":
        return Patch(facecolor="gray", alpha=0.25, label=label)
    return Line2D([], [], ls="none", marker="|", markersize=10, color="gray", label=label)


# --------------------------------------------------------------------------- results


def confusion_matrix_plot(
    cm: ArrayLike,
    class_names: Sequence[str],
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """Draw a confusion matrix with every cell annotated.

    ``cm`` is ``(K, K)``, rows true classes and columns predicted ones (as returned by
    :func:`mnistnn.metrics.confusion_matrix`).  With ``normalize=True`` each row is divided by
    its total, so a cell reads "fraction of class i predicted as j" and the diagonal is the
    per-class accuracy.  Returns the figure: the matrix axes and its colorbar axes.
    """
    counts = np.asarray(cm)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"cm must have shape ({k}, {k}) to match class_names, got {counts.shape}")
    if normalize:
        totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
        values = np.zeros(counts.shape)
        np.divide(counts, totals, out=values, where=totals > 0)
    else:
        values = counts.astype(np.float64)
    size = max(4.5, 0.55 * k + 2.0)
    fig = _new_figure((size + 0.8, size))
    ax = fig.add_subplot()
    image = ax.imshow(
        values,
        cmap="Blues",
        vmin=0.0,
        vmax=max(float(values.max()), 1e-12),
        interpolation=INTERPOLATION,
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of row" if normalize else "count")
    threshold = values.max() / 2
    fontsize = 8 if k <= 10 else 6
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
            color = "white" if values[i, j] > threshold else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    names = [str(c) for c in class_names]
    long_names = max(len(c) for c in names) > 3
    ax.set_xticks(
        range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center"
    )
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    return fig


def probability_bars(
    images: ArrayLike,
    proba: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    ncols: int = 2,
    title: str | None = None,
) -> Figure:
    """Each image beside a horizontal bar chart of the probabilities the model gave it.

    ``images`` is ``(N, 28, 28)`` or ``(N, 784)``, ``proba`` ``(N, K)`` with rows summing to 1,
    ``labels`` the ``(N,)`` true classes, ``class_names`` ``K`` names.  The true class's bar is
    green; if the most probable class is wrong, its bar is red.  ``ncols`` image/bar pairs per
    row.  Returns the figure, with ``2 * N`` axes.
    """
    imgs = _as_images(images)
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(labels)
    n, k = len(imgs), len(class_names)
    if n == 0:
        raise ValueError("probability_bars needs at least one image")
    if p.shape != (n, k):
        raise ValueError(f"proba must have shape ({n}, {k}), got {p.shape}")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    row_h = max(1.5, 0.17 * k + 0.3)
    top = 0.35 if title else 0.0
    label_w = 0.07 * max(len(str(c)) for c in class_names)
    fig = _new_figure((ncols * (4.0 + label_w), nrows * row_h + top))
    grid = fig.add_gridspec(nrows, 2 * ncols, width_ratios=[1.0, 1.6 + label_w] * ncols)
    vmin, vmax = _value_range(imgs)
    names = [str(c) for c in class_names]
    for i in range(n):
        r, c = divmod(i, ncols)
        true, pred = int(y[i]), int(np.argmax(p[i]))
        ax_img = fig.add_subplot(grid[r, 2 * c])
        ax_img.imshow(imgs[i], cmap=DIGIT_CMAP, vmin=vmin, vmax=vmax, interpolation=INTERPOLATION)
        _bare(ax_img)
        wrong = pred != true
        ax_img.set_title(
            f"true: {names[true]}", fontsize=9, color=MISTAKE_COLOR if wrong else "black"
        )
        if wrong:
            _frame(ax_img, MISTAKE_COLOR)
        ax_bar = fig.add_subplot(grid[r, 2 * c + 1])
        colors = ["#b0b0b0"] * k
        colors[true] = CORRECT_COLOR
        if wrong:
            colors[pred] = MISTAKE_COLOR
        ax_bar.barh(np.arange(k), p[i], color=colors, height=0.75)
        ax_bar.set_yticks(np.arange(k), names, fontsize=7)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=7)
        ax_bar.spines[["top", "right"]].set_visible(False)
        ax_bar.set_title(
            f"predicted: {names[pred]} ({p[i, pred]:.0%})",
            fontsize=8,
            color=MISTAKE_COLOR if wrong else "black",
        )
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- predictions


def prediction_counts(
    predictions: ArrayLike,
    class_names: Sequence[str],
    labels: ArrayLike | None = None,
    title: str | None = None,
) -> Figure:
    """How often a model predicts each class: filled bars, beside how often each class is true.

    ``predictions`` and ``labels`` are 1-D class indices into ``class_names`` (``K`` names);
    ``labels`` may be None.  Each predicted count is annotated above its bar; the true counts
    are drawn as dashed outlines over the bars, so a class the model favours pokes out of its
    outline.  Returns the figure, with one axes (``K`` filled bars, then ``K`` outlines).
    """
    k = len(class_names)
    predicted = _count_labels(predictions, k, "predictions")
    fig = _new_figure((max(6.0, 0.8 * k + 1.5), 3.6))
    ax = fig.add_subplot()
    x = np.arange(k)
    bars = ax.bar(x, predicted, 0.7, color="#4c72b0", label=f"predicted ({predicted.sum():,})")
    ax.bar_label(bars, fontsize=7, padding=1)
    highest = int(predicted.max(initial=0))
    if labels is not None:
        true = _count_labels(labels, k, "labels")
        ax.bar(
            x,
            true,
            0.7,
            fill=False,
            edgecolor="black",
            linestyle="--",
            linewidth=1.0,
            label=f"true ({true.sum():,})",
        )
        highest = max(highest, int(true.max(initial=0)))
    long_names = max(len(str(c)) for c in class_names) > 3
    ax.set_xticks(
        x,
        [str(c) for c in class_names],
        rotation=30 if long_names else 0,
        ha="right" if long_names else "center",
    )
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_ylim(0, max(highest, 1) * 1.25)  # headroom for the counts and the legend
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- functions and matrices


def function_panels(
    x: ArrayLike,
    values_by_name: Mapping[str, ArrayLike],
    xlabel: str = "z",
    title: str | None = None,
) -> Figure:
    """Curves of functions, one panel each, side by side, with the axes lines through 0 drawn.

    ``x`` is ``(n,)``; ``values_by_name`` maps a panel title, e.g. ``"ReLU(z)"``, to the
    function's ``(n,)`` values at ``x``.  Returns the figure, with one axes per function.
    """
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"x must be a non-empty 1-D array, got shape {xs.shape}")
    if not values_by_name:
        raise ValueError("function_panels needs at least one function")
    fig = _new_figure((3.6 * len(values_by_name) + 0.4, 2.8))
    axes = fig.subplots(1, len(values_by_name), squeeze=False).ravel()
    for ax, (name, values) in zip(axes, values_by_name.items(), strict=True):
        ys = np.asarray(values, dtype=np.float64)
        if ys.shape != xs.shape:
            raise ValueError(f"{name!r} has shape {ys.shape}, x has shape {xs.shape}")
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.axvline(0, color="gray", linewidth=0.6)
        ax.plot(xs, ys, linewidth=2)
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def matrix_image(
    matrix: ArrayLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    cmap: str = DIGIT_CMAP,
    colorbar_label: str | None = None,
) -> Figure:
    """Show a 2-D array as an image, one solid cell per entry: its rows down, its columns across.

    ``matrix`` is ``(rows, cols)``, e.g. the input matrix ``I`` ``(784, N)`` with one image per
    column.  The cells are stretched to fill a landscape figure whatever the shape, and a
    colorbar gives the scale.  Returns the figure: the matrix axes and the colorbar axes.
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"matrix must be a non-empty 2-D array, got shape {m.shape}")
    fig = _new_figure((8.0, 4.0))
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap=cmap, aspect="auto", interpolation=INTERPOLATION)
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label or "")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- diagrams

_DATA_COLOR = "#e0e0e0"
_PARAMETER_COLOR = "#bbdefb"
_VALUE_COLOR = "white"
_OUTPUT_COLOR = "#ffe0b2"
_BACKWARD_COLOR = MISTAKE_COLOR
_BACKWARD_STYLE = (0, (4, 2))


def _drawing(
    ax: Axes, xlim: tuple[float, float], ylim: tuple[float, float], title: str | None
) -> None:
    """Make ``ax`` a drawing of the region ``xlim`` × ``ylim``: to scale, without axes."""
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)


def _layer_names(n_layers: int) -> list[tuple[str, str, str, str]]:
    """Mathtext names ``(weights, bias, value, activated value)`` of each of ``n_layers`` layers.

    One hidden layer (``n_layers == 2``) gets the write-up's names: ``W, B, H, Ĥ`` then
    ``w, b, O, Ô``.  Otherwise the layers are numbered (``W_1, B_1, H_1, Ĥ_1``, ...) and the
    last one computes ``O`` and ``Ô``.
    """
    if n_layers == 1:
        return [("W", "B", "O", r"\hat{O}")]
    if n_layers == 2:
        return [("W", "B", "H", r"\hat{H}"), ("w", "b", "O", r"\hat{O}")]
    hidden = [(f"W_{k}", f"B_{k}", f"H_{k}", rf"\hat{{H}}_{k}") for k in range(1, n_layers)]
    return [*hidden, (f"W_{n_layers}", f"B_{n_layers}", "O", r"\hat{O}")]


def _unit_rows(n: int, max_units: int, step: float) -> tuple[list[float], float | None]:
    """Heights of the units drawn for a layer of ``n`` (at most ``max_units`` slots, centred on
    0, ``step`` apart) and the height of the "⋮" standing for the others (None if all fit)."""
    slots = min(n, max_units)
    heights = [((slots - 1) / 2 - i) * step for i in range(slots)]
    if n <= max_units:
        return heights, None
    top = slots // 2
    return heights[:top] + heights[top + 1 :], heights[top]


def network_diagram(
    layer_sizes: Sequence[int] = (784, 10, 10),
    hidden_activation: str = "ReLU",
    batch: str = "N",
    max_units: int = 10,
    title: str | None = None,
) -> Figure:
    """The network as columns of units, with every matrix of its forward pass and its shape.

    ``layer_sizes`` is ``(n_in, hidden..., n_out)``, e.g. the write-up's ``(784, 10, 10)``.
    Each layer is a column of units joined to the next by all its connections; a layer larger
    than ``max_units`` shows its first and last units around a "⋮".  On each set of
    connections stand its weight matrix and bias with their shapes; under each column, the
    equations that compute the layer for a batch of ``batch`` images and the shape of the
    result (the input ``I`` is ``n_in × batch``, one column per image).  The hidden layers
    apply ``hidden_activation``, the output layer softmax.  One hidden layer gets the
    write-up's names (``W, B, H, Ĥ, w, b, O, Ô``), more are numbered (``W_1, H_1, ...``).
    Returns the figure, with one axes: one circle per unit drawn.
    """
    sizes = [int(n) for n in layer_sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"layer_sizes needs at least two positive sizes, got {tuple(sizes)}")
    if not 3 <= max_units <= 50:  # more cannot be told apart, and cost max_units**2 lines
        raise ValueError(f"max_units must be at least 3 and at most 50, got {max_units}")
    names = _layer_names(len(sizes) - 1)
    gap, step, line = 5.0, 0.8, 0.6  # between columns, between units, between text lines
    top = (min(max(sizes), max_units) - 1) / 2 * step
    columns = [_unit_rows(n, max_units, step) for n in sizes]
    xlim, ylim = (-0.45 * gap, (len(sizes) - 0.55) * gap), (-top - 1.0 - 2.6 * line, top + 1.6)
    inches = 0.5  # per unit of the drawing
    fig = _new_figure(
        (inches * (xlim[1] - xlim[0]), inches * (ylim[1] - ylim[0]) + (0.35 if title else 0.0))
    )
    ax = fig.add_subplot()
    for k, ((heights, _), (next_heights, _)) in enumerate(itertools.pairwise(columns)):
        for y0 in heights:
            for y1 in next_heights:
                ax.plot([k * gap, (k + 1) * gap], [y0, y1], color="#9e9e9e", lw=0.5, alpha=0.5)
    for k, (n, (heights, ellipsis)) in enumerate(zip(sizes, columns, strict=True)):
        last = k == len(sizes) - 1
        color = _DATA_COLOR if k == 0 else _OUTPUT_COLOR if last else _VALUE_COLOR
        for y in heights:
            ax.add_patch(Circle((k * gap, y), 0.25, facecolor=color, edgecolor="black", zorder=3))
        if ellipsis is not None:
            ax.text(k * gap, ellipsis, "⋮", ha="center", va="center", fontsize=14)
        if k == 0:
            head, lines = f"input\n{n:,} pixels", ["$I$", "pixels × images"]
        else:
            weights, bias, value, activated = names[k - 1]
            before = "I" if k == 1 else names[k - 2][3]
            number = "" if len(sizes) == 3 else f" {k}"
            head = f"output\n{n:,} classes" if last else f"hidden layer{number}\n{n:,} units"
            activation = "softmax" if last else hidden_activation
            lines = [
                f"${value} = {weights} \\cdot {before} + {bias}$",
                f"${activated} = \\mathrm{{{activation}}}({value})$",
            ]
            ax.text(
                (k - 0.5) * gap,
                0.0,
                f"${weights}$: {n:,} × {sizes[k - 1]:,}\n${bias}$: {n:,} × 1",
                ha="center",
                va="center",
                fontsize=10,
                zorder=4,
                bbox={"boxstyle": "round", "facecolor": _PARAMETER_COLOR, "edgecolor": "none"},
            )
        ax.text(k * gap, top + 0.6, head, ha="center", va="bottom", fontsize=10)
        for i, text in enumerate([*lines, f"{n:,} × {batch}"]):
            ax.text(k * gap, -top - 0.9 - i * line, text, ha="center", va="center", fontsize=10)
    _drawing(ax, xlim, ylim, title)
    return fig


def _node(ax: Axes, xy: tuple[float, float], text: str, color: str) -> FancyBboxPatch:
    """A rounded box of the computational graph at ``xy`` (its centre), labelled ``text``."""
    width, height = 1.3, 0.95
    box = FancyBboxPatch(
        (xy[0] - width / 2, xy[1] - height / 2),
        width,
        height,
        boxstyle="round,pad=0.05",
        facecolor=color,
        edgecolor="black",
        zorder=3,
    )
    ax.add_patch(box)
    ax.text(*xy, text, ha="center", va="center", fontsize=10, zorder=4)
    return box


def _edge(
    ax: Axes, start: FancyBboxPatch, end: FancyBboxPatch, backward: bool = False, rad: float = 0.0
) -> FancyArrowPatch:
    """An arrow from box ``start`` to box ``end``, bent by ``rad`` (see ``arc3`` in Matplotlib):
    solid black forward, dashed red ``backward``."""

    def centre(box: FancyBboxPatch) -> tuple[float, float]:
        return box.get_x() + box.get_width() / 2, box.get_y() + box.get_height() / 2

    arrow = FancyArrowPatch(
        centre(start),
        centre(end),
        patchA=start,
        patchB=end,
        arrowstyle="-|>",
        mutation_scale=12,
        connectionstyle=f"arc3,rad={rad}",
        color=_BACKWARD_COLOR if backward else "black",
        linewidth=1.4 if backward else 1.6,
        linestyle=_BACKWARD_STYLE if backward else "-",
        zorder=2,
    )
    ax.add_patch(arrow)
    return arrow


def backprop_graph(
    n_in: int = 784, n_hidden: int = 10, n_out: int = 10, batch: str = "N", title: str | None = None
) -> Figure:
    """The computational graph of one forward and backward pass of the write-up's network.

    Boxes are the matrices of notebook 03, each with its shape for ``n_in``, ``n_hidden`` and
    ``n_out`` units and a batch of ``batch`` images: the data ``I`` and one-hot labels ``L``
    (gray), the parameters ``W, B, w, b`` (blue), the computed ``H, Ĥ, O, Ô`` and the loss.
    Black arrows compute the forward pass; dashed red arrows carry the gradient of the loss
    back, each labelled with its formula and shape: ``dO = Ô − L`` (softmax and cross-entropy
    in one step), ``dw = dO·Ĥᵀ/N``, ``db``, ``dĤ = wᵀ·dO``, ``dH = dĤ∘[H > 0]``,
    ``dW = dH·Iᵀ/N`` and ``dB``.  Returns the figure, with one axes: the boxes, then the arrows
    (10 forward, 7 backward) among its patches.
    """
    if min(n_in, n_hidden, n_out) < 1:
        raise ValueError(f"layer sizes must be positive, got {n_in}, {n_hidden}, {n_out}")
    fig = _new_figure((11.0, 4.4 + (0.3 if title else 0.0)))
    ax = fig.add_subplot()
    row, up = 0.0, 2.6  # heights of the data path and of the parameters and labels
    specs = {
        "I": ((0.0, row), f"$I$\n{n_in} × {batch}", _DATA_COLOR),
        "W": ((1.6, up), f"$W$\n{n_hidden} × {n_in}", _PARAMETER_COLOR),
        "B": ((4.4, up), f"$B$\n{n_hidden} × 1", _PARAMETER_COLOR),
        "H": ((3.0, row), f"$H$\n{n_hidden} × {batch}", _VALUE_COLOR),
        "H_hat": ((6.0, row), f"$\\hat{{H}}$\n{n_hidden} × {batch}", _VALUE_COLOR),
        "w": ((7.6, up), f"$w$\n{n_out} × {n_hidden}", _PARAMETER_COLOR),
        "b": ((10.4, up), f"$b$\n{n_out} × 1", _PARAMETER_COLOR),
        "O": ((9.0, row), f"$O$\n{n_out} × {batch}", _VALUE_COLOR),
        "O_hat": ((12.0, row), f"$\\hat{{O}}$\n{n_out} × {batch}", _OUTPUT_COLOR),
        "L": ((13.5, up), f"$L$\n{n_out} × {batch}", _DATA_COLOR),
        "loss": ((15.0, row), "loss\n1 × 1", _OUTPUT_COLOR),
    }
    box = {name: _node(ax, xy, text, color) for name, (xy, text, color) in specs.items()}
    forward = [
        ("I", "H"),
        ("W", "H"),
        ("B", "H"),
        ("H", "H_hat"),
        ("H_hat", "O"),
        ("w", "O"),
        ("b", "O"),
        ("O", "O_hat"),
        ("O_hat", "loss"),
        ("L", "loss"),
    ]
    for start, end in forward:
        _edge(ax, box[start], box[end])
    for x, text in (
        (1.5, "$W \\cdot I + B$"),
        (4.5, "ReLU"),
        (7.5, "$w \\cdot \\hat{H} + b$"),
        (10.5, "softmax"),
        (13.5, "cross-entropy"),
    ):
        ax.text(x, row + 0.25, text, ha="center", va="bottom", fontsize=9)
    d = r"\mathrm{d}"
    gradients = {  # backward arrow (from, to): the gradient it carries and its shape
        ("loss", "O"): (rf"${d}O = \hat{{O}} - L$", f"{n_out} × {batch}"),
        ("O", "H_hat"): (rf"${d}\hat{{H}} = w^T \cdot {d}O$", f"{n_hidden} × {batch}"),
        ("H_hat", "H"): (rf"${d}H = {d}\hat{{H}} \circ [H > 0]$", f"{n_hidden} × {batch}"),
        ("O", "w"): (rf"${d}w = {d}O \cdot {{\hat{{H}}}}^{{\,T}} / N$", f"{n_out} × {n_hidden}"),
        ("O", "b"): (rf"${d}b = \Sigma_i\, {d}O_i / N$", f"{n_out} × 1"),
        ("H", "W"): (rf"${d}W = {d}H \cdot I^T / N$", f"{n_hidden} × {n_in}"),
        ("H", "B"): (rf"${d}B = \Sigma_i\, {d}H_i / N$", f"{n_hidden} × 1"),
    }
    # The chain runs back under the data path, labelled below it; each parameter's gradient
    # curves up beside its forward arrow, labelled above the parameter.
    below = {("loss", "O"): (12.0, -1.65), ("O", "H_hat"): (7.5, -1.3), ("H_hat", "H"): (4.5, -1.3)}
    for (start, end), (formula, shape) in gradients.items():
        if (start, end) in below:
            rad, xy = (-0.35 if start == "loss" else -0.45), below[(start, end)]
        else:
            rad, xy = (0.25 if end.lower() == "w" else -0.25), (specs[end][0][0], up + 1.15)
        _edge(ax, box[start], box[end], backward=True, rad=rad)
        ax.text(
            *xy, f"{formula}\n{shape}", ha="center", va="center", fontsize=9, color=_BACKWARD_COLOR
        )
    ax.legend(
        handles=[
            Line2D([], [], color="black", linewidth=1.6, label="forward: values"),
            Line2D(
                [],
                [],
                color=_BACKWARD_COLOR,
                linewidth=1.4,
                linestyle=_BACKWARD_STYLE,
                label="backward: gradients of the loss",
            ),
        ],
        loc="upper right",
        fontsize=9,
        frameon=False,
    )
    _drawing(ax, (-0.9, 15.9), (-2.1, up + 1.7), title)
    return fig


# --------------------------------------------------------------------------- how training moves


def quadratic_descent(
    A: ArrayLike,
    start: ArrayLike,
    alpha: float,
    steps: int,
    minimum: ArrayLike | None = None,
    momentum: float = 0.0,
) -> np.ndarray:
    """The points gradient descent visits on the quadratic ``f(θ) = ½ (θ − m)ᵀ A (θ − m)``.

    ``A`` is a symmetric ``(n, n)`` curvature matrix (``(2, 2)`` for a picture), ``start`` and
    ``minimum`` (``m``, default 0) are ``(n,)``.  Each step is classical momentum, the rule of
    :func:`mnistnn.reference.update`: ``v ← momentum · v − alpha · A (θ − m)``, ``θ ← θ + v``,
    with ``v = 0`` at the start; with ``momentum = 0`` (the default) it is the plain gradient
    step ``θ ← θ − alpha · A (θ − m)``.  Returns ``(steps + 1, n)``: the start, then the point
    after each step.  (For :func:`descent_paths`; it trains nothing else.)
    """
    curvature = np.asarray(A, dtype=np.float64)
    theta = np.asarray(start, dtype=np.float64)
    n = theta.shape[0] if theta.ndim == 1 else -1
    if theta.ndim != 1 or curvature.shape != (n, n):
        raise ValueError(
            f"A must be (n, n) and start (n,), got {curvature.shape} and {theta.shape}"
        )
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    centre = np.zeros(n) if minimum is None else np.asarray(minimum, dtype=np.float64)
    path = np.empty((int(steps) + 1, n))
    path[0] = theta
    params, velocity = [theta.copy()], [np.zeros(n)]
    for t in range(int(steps)):
        gradient = curvature @ (params[0] - centre)  # the gradient of f: A (θ − m)
        reference.update(params, [gradient], velocity, alpha, momentum)  # in place
        path[t + 1] = params[0]
    return path


def _quadratic(A: np.ndarray, minimum: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``½ (θ − m)ᵀ A (θ − m)`` for each point ``θ`` along the last axis of ``points``."""
    d = points - minimum
    return 0.5 * np.einsum("...i,ij,...j->...", d, A, d)


def descent_paths(
    panels: Mapping[str, tuple[ArrayLike, Mapping[str, ArrayLike]]],
    minimum: ArrayLike = (0.0, 0.0),
    xlabel: str = "$\\theta_1$",
    ylabel: str = "$\\theta_2$",
    title: str | None = None,
) -> Figure:
    """Gradient-descent paths over the contour lines of 2-D quadratic losses, one panel each.

    ``panels`` maps a panel title to ``(A, paths)``: ``A`` the ``(2, 2)`` curvature matrix of
    the loss ``½ (θ − m)ᵀ A (θ − m)`` (``m`` = ``minimum``, marked with a star) and ``paths`` a
    mapping of a legend label to the ``(T, 2)`` points of a run (e.g. from
    :func:`quadratic_descent`), each drawn as a line through its points from a larger dot at
    its start.  The legend gives each path's loss at its last point, and each panel its two
    curvatures (the eigenvalues of ``A``).  All panels share the same axes, drawn to scale, so
    a round valley looks round and an elongated one elongated.  Returns the figure, with one
    axes per panel.
    """
    if not panels:
        raise ValueError("descent_paths needs at least one panel")
    centre = np.asarray(minimum, dtype=np.float64)
    prepared = []
    for name, (A, paths) in panels.items():
        curvature = np.asarray(A, dtype=np.float64)
        if curvature.shape != (2, 2):
            raise ValueError(f"panel {name!r}: A must be (2, 2), got shape {curvature.shape}")
        runs = {label: np.asarray(p, dtype=np.float64) for label, p in paths.items()}
        for label, p in runs.items():
            if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
                raise ValueError(f"panel {name!r}: path {label!r} must be (T, 2), got {p.shape}")
        prepared.append((name, curvature, runs))
    points = np.vstack([centre[None], *(p for _, _, runs in prepared for p in runs.values())])
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.1 * max(float((high - low).max()), 1e-12)
    low, high = low - margin, high + margin
    grid = np.stack(
        np.meshgrid(np.linspace(low[0], high[0], 241), np.linspace(low[1], high[1], 241)), axis=-1
    )
    fig = _new_figure((4.4 * len(prepared) + 0.4, 4.6))
    axes = fig.subplots(1, len(prepared), squeeze=False, sharex=True, sharey=True).ravel()
    for ax, (name, curvature, runs) in zip(axes, prepared, strict=True):
        surface = _quadratic(curvature, centre, grid)
        top = float(surface.max())
        levels = np.linspace(0.0, np.sqrt(top), 12)[1:] ** 2 if top > 0 else None
        ax.contour(
            grid[..., 0], grid[..., 1], surface, levels=levels, colors="#9e9e9e", linewidths=0.8
        )
        for i, (label, p) in enumerate(runs.items()):
            color = f"C{i % 10}"
            end = float(_quadratic(curvature, centre, p[-1]))
            steps = len(p) - 1
            ax.plot(
                p[:, 0],
                p[:, 1],
                "-o",
                color=color,
                markersize=3,
                linewidth=1.2,
                label=f"{label}: loss {end:.2g} after {steps} step{'s' * (steps != 1)}",
            )
            ax.plot(*p[0], "o", color=color, markersize=7)
        ax.plot(*centre, "*", color="black", markersize=12, label="minimum")
        eigenvalues = np.linalg.eigvalsh((curvature + curvature.T) / 2)
        ax.text(
            0.02,
            0.98,
            f"curvatures {eigenvalues[1]:.3g} and {eigenvalues[0]:.3g}",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_aspect("equal")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    axes[0].set_ylabel(ylabel)
    axes[0].set_xlim(low[0], high[0])
    axes[0].set_ylim(low[1], high[1])
    if title:
        fig.suptitle(title)
    return fig


def activation_histograms(
    activations: Mapping[str, ArrayLike],
    bins: int = 40,
    same_scale: bool = True,
    xlabel: str = "hidden value after the activation",
    title: str | None = None,
) -> Figure:
    """Histograms of hidden-layer values, one panel per set, with the share of exact zeros.

    ``activations`` maps a panel title (e.g. ``"before training"``) to ``(n_units, N)``
    values of one hidden layer for ``N`` images, oriented like the write-up's ``Ĥ``: one row
    per unit.  Each panel shows the values that are not exactly 0, as a share of all values,
    in ``bins`` bins: over the range of all panels with ``same_scale`` (to compare sets of one
    activation, e.g. before and after training), else over each panel's own range (to compare
    activations of different ranges).  It writes on each panel the share of values that are
    exactly 0 (a ReLU unit silent on that image) and how many units are 0 for every image
    (dead on these images: they pass nothing on and, with ReLU, learn nothing from them).
    Returns the figure, with one axes per set.
    """
    if not activations:
        raise ValueError("activation_histograms needs at least one set of activations")
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in activations.items()}
    for name, a in arrays.items():
        if a.ndim != 2 or a.size == 0:
            raise ValueError(f"{name!r} must be a non-empty (n_units, N) array, got {a.shape}")
    fig = _new_figure((3.8 * len(arrays) + 0.4, 3.2))
    axes = fig.subplots(1, len(arrays), squeeze=False, sharex=same_scale).ravel()
    for ax, (name, a) in zip(axes, arrays.items(), strict=True):
        ranges = arrays.values() if same_scale else [a]
        low = min(0.0, *(float(v.min()) for v in ranges))
        high = max(float(v.max()) for v in ranges)
        edges = np.linspace(low, high if high > low else low + 1.0, int(bins) + 1)
        nonzero = a[a != 0]
        counts, _ = np.histogram(nonzero, bins=edges)
        ax.stairs(counts / a.size, edges, fill=True, color="#4c72b0", alpha=0.85)
        ax.set_ylim(0, 1.45 * max(counts.max() / a.size, 1e-3))  # room for the text
        zeros = np.count_nonzero(a == 0) / a.size
        dead = int(np.count_nonzero((a == 0).all(axis=1)))
        ax.text(
            0.97,
            0.95,
            f"exactly 0 (not drawn): {zeros:.1%} of the values\n"
            f"0 for every image: {dead} of {a.shape[0]} units ({dead / a.shape[0]:.0%})",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
        )
        ax.set_title(f"{name}\n({a.shape[0]} units × {a.shape[1]:,} images)", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("share of all values")
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- inside a deep network


class LayerStatistics(NamedTuple):
    """What :func:`layer_statistics` measures on one batch of a network with ``L`` layers."""

    loss: float
    """The mean cross-entropy on the batch."""
    activations: list[np.ndarray]
    """``Ĥ_l = ReLU(H_l)`` of each hidden layer ``l = 1 .. L-1``, ``(n_l, N)``."""
    gradients: list[np.ndarray]
    """``dW_l`` of each weight matrix ``l = 1 .. L``, ``(n_l, n_{l-1})``, shaped like it."""


def layer_statistics(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    I: np.ndarray,  # noqa: E741 (the write-up's name)
    y: ArrayLike,
) -> LayerStatistics:
    """The hidden layers' activations and the weights' gradients of a network on one batch.

    ``weights`` and ``biases`` are the network's lists (``(n_l, n_{l-1})`` and ``(n_l,)``, e.g.
    an estimator's ``weights`` and ``biases``), ``I`` the batch ``(n_in, N)`` (see
    :func:`mnistnn.reference.inputs`) and ``y`` its ``(N,)`` labels.  Computed with
    :func:`mnistnn.reference.forward` and :func:`mnistnn.reference.backward`; for
    :func:`layer_activation_histograms` and :func:`layer_gradient_histograms`.
    """
    weights, biases, labels = list(weights), list(biases), np.asarray(y)
    H = reference.forward(weights, biases, I)
    loss, dWs, _ = reference.backward(weights, biases, I, labels)
    return LayerStatistics(loss, [reference.relu(h) for h in H[:-1]], dWs)


def _layer_lines(
    values: list[np.ndarray], sizes: list[int], labels: list[str], edges: np.ndarray, log: bool
) -> tuple[Figure, Axes]:
    """A figure with one histogram line per layer's ``values``, as a share of its ``sizes``
    values, the legend on the right."""
    fig = _new_figure((9.6, 4.0))
    ax = fig.add_subplot()
    for i, (v, size, label) in enumerate(zip(values, sizes, labels, strict=True)):
        counts, _ = np.histogram(v, bins=edges)
        ax.stairs(counts / size, edges, color=f"C{i % 10}", linewidth=1.6, label=label)
    ax.set_xlim(edges[0], edges[-1])
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("share of the layer's values" + (" (log scale)" if log else ""))
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), labelspacing=1.0)
    return fig, ax


def layer_activation_histograms(
    activations: Sequence[ArrayLike], bins: int = 60, log: bool = False, title: str | None = None
) -> Figure:
    """Histograms of every hidden layer's activations, one line per layer on one axes.

    ``activations`` holds ``Ĥ_l`` ``(n_l, N)`` of hidden layers ``1, 2, ...`` for one batch of
    ``N`` images (e.g. :attr:`LayerStatistics.activations`).  Each line is the share of the
    layer's values in each of ``bins`` bins shared by all layers, without the values that are
    exactly 0 (a ReLU unit silent on that image), whose spike would flatten the rest.  The
    legend gives each layer's mean and standard deviation (over all its values), its share of
    exact zeros and its dead units: 0 for every image of the batch, so they pass nothing on and
    learn nothing from it.  ``log`` puts the y axis on a log scale (to see the rare large
    values).  Returns the figure, with one axes.
    """
    arrays = _layer_arrays(activations, "activations")
    labels = []
    for layer, a in enumerate(arrays, start=1):
        dead = int(np.count_nonzero((a == 0).all(axis=1)))
        labels.append(
            f"layer {layer} ({a.shape[0]} units): mean {a.mean():.3g}, std {a.std():.3g}\n"
            f"    exactly 0: {np.count_nonzero(a == 0) / a.size:.0%},"
            f" dead units: {dead} ({dead / a.shape[0]:.0%})"
        )
    nonzero = [a[a != 0] for a in arrays]
    low = min(0.0, *(float(a.min()) for a in arrays))
    high = max((float(v.max()) for v in nonzero if v.size), default=low)
    edges = np.linspace(low, high if high > low else low + 1.0, int(bins) + 1)
    fig, ax = _layer_lines(nonzero, [a.size for a in arrays], labels, edges, log)
    ax.set_xlabel(f"activation ReLU(H) of {arrays[0].shape[1]:,} images (zeros not drawn)")
    if title:
        ax.set_title(title)
    return fig


def layer_gradient_histograms(
    gradients: Sequence[ArrayLike],
    weights: Sequence[ArrayLike] | None = None,
    bins: int = 80,
    log: bool = True,
    title: str | None = None,
) -> Figure:
    """Histograms of the gradients of every weight matrix, one line per layer on one axes.

    ``gradients`` holds ``dW_l`` ``(n_l, n_{l-1})`` of layers ``1, 2, ...`` (e.g.
    :attr:`LayerStatistics.gradients`), drawn over ``bins`` bins shared by all layers, as a
    share of each matrix's entries; the bins span the 99.5% of the widest layer's values
    nearest 0, so that a few outliers do not squeeze the rest into one bin.  The legend gives
    each matrix's shape and the mean and standard deviation of its gradient; with ``weights``
    (the matching ``W_l``) also the gradient-to-weight ratio ``std(dW_l) / std(W_l)``: how
    large a step of ``alpha · dW_l`` is against the weights it changes (layers far apart learn
    at very different speeds).  The y axis is on a log scale unless ``log=False``: the layers'
    gradients differ several times in width, and only there do the narrow peaks and the wide
    tails both show.  Returns the figure, with one axes.
    """
    arrays = _layer_arrays(gradients, "gradients")
    if weights is not None and [np.shape(w) for w in weights] != [g.shape for g in arrays]:
        raise ValueError("weights must be shaped like the gradients, one matrix per layer")
    labels = []
    for layer, g in enumerate(arrays, start=1):
        text = f"$W_{layer}$ {g.shape[0]} × {g.shape[1]}: mean {g.mean():.2g}, std {g.std():.2g}"
        if weights is not None:
            text += f"\n    std(dW) / std(W): {g.std() / np.std(weights[layer - 1]):.2g}"
        labels.append(text)
    limit = max(float(np.quantile(np.abs(g), 0.995)) for g in arrays) or 1.0
    edges = np.linspace(-limit, limit, int(bins) + 1)
    fig, ax = _layer_lines(arrays, [g.size for g in arrays], labels, edges, log)
    ax.set_xlabel("gradient dW of the loss, one value per weight (the widest layer's 99.5%)")
    if title:
        ax.set_title(title)
    return fig


def _layer_arrays(values: Sequence[ArrayLike], name: str) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    if not arrays:
        raise ValueError(f"{name}: needs at least one layer")
    for layer, a in enumerate(arrays, start=1):
        if a.ndim != 2 or a.size == 0:
            raise ValueError(f"{name}: layer {layer} must be a non-empty 2-D array, got {a.shape}")
    return arrays


def update_ratios(
    weights_before: Sequence[ArrayLike], weights_after: Sequence[ArrayLike]
) -> np.ndarray:
    """The update-to-weight ratio of each weight matrix over one training step, ``(L,)``.

    For each layer ``std(W_after − W_before) / std(W_before)``: the spread of the step's change
    against the spread of the weights (the measure of Karpathy's "makemore" lectures, there
    taken as ``std(alpha · dW) / std(W)``; with momentum the step is the velocity, so the change
    itself is measured).  Call it after every step of a training loop, with a copy of the
    weights taken before the step, and pass the rows to :func:`update_ratio_curves`.
    """
    before = [np.asarray(w, dtype=np.float64) for w in weights_before]
    after = [np.asarray(w, dtype=np.float64) for w in weights_after]
    if [w.shape for w in before] != [w.shape for w in after]:
        raise ValueError("weights_before and weights_after must hold matrices of the same shapes")
    return np.array([np.std(a - b) / np.std(b) for b, a in zip(before, after, strict=True)])


def update_ratio_curves(
    ratios: ArrayLike,
    healthy: float = 1e-3,
    xlabel: str = "step (mini-batch) of the first epoch",
    title: str | None = None,
) -> Figure:
    """The update-to-weight ratio of each layer over the steps of training, on a log axis.

    ``ratios`` is ``(steps, L)``: row ``t`` holds :func:`update_ratios` of step ``t``, one
    column per weight matrix ``W_1 .. W_L``, each drawn as one line.  A dashed line marks
    ``healthy`` (1e-3, the value commonly cited as healthy: each step changes the weights by
    about a thousandth of their spread).  Healthy training keeps every layer near it: far below
    (1e-4 and less) a layer barely learns; far above (1e-2 and more) its steps are so large
    that it forgets what it learned; curves far apart mean layers that learn at very different
    speeds.  Returns the figure, with one axes.
    """
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 2 or r.size == 0:
        raise ValueError(f"ratios must be a non-empty (steps, layers) array, got {r.shape}")
    fig = _new_figure((7.0, 3.8))
    ax = fig.add_subplot()
    steps = np.arange(1, len(r) + 1)
    for layer in range(r.shape[1]):
        final = r[-1, layer]
        ax.plot(steps, r[:, layer], color=f"C{layer % 10}", linewidth=1.4,
                label=f"$W_{layer + 1}$ (last step: {final:.2g})")  # fmt: skip
    ax.axhline(healthy, color="black", linestyle="--", linewidth=1.0,
               label=f"{healthy:g}: commonly cited as healthy")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlim(steps[0], steps[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("std(update) / std(W)")
    ax.grid(alpha=0.3, which="both")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig
