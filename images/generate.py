"""Regenerate the README figures from the real data with :mod:`mnistnn.plotting`.

Writes, next to this script:

* ``mnist_samples.png``: ten random training digits of each class, one row per class;
* ``fashion_mnist_samples.png``: the same for Fashion-MNIST, rows named by class;
* ``mean_images.png``: the mean training image of every class of both datasets.

The datasets are fetched (and verified) first if they are not in the data folder yet.
Run from the checkout: ``python images/generate.py``.  The same seed always picks the same
examples, so rerunning only changes the files if the plotting code changed.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from mnistnn import datasets, plotting  # noqa: E402

HERE = Path(__file__).resolve().parent
DPI = 100
SEED = 0


def save(fig: Figure, name: str) -> Path:
    """Save ``fig`` as ``HERE/name`` (PNG, ``DPI`` dots per inch) and report its size.

    These figures are all gray, so they are stored as 8-bit grayscale PNGs: a third of the
    size of matplotlib's RGBA output, with the same pixels.
    """
    path = HERE / name
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    image = Image.open(buffer).convert("RGB")
    rgb = np.asarray(image)
    if (rgb == rgb[..., :1]).all():
        image = image.convert("L")
    image.save(path, optimize=True)
    print(f"wrote {path.name} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def main() -> None:
    """Draw and save the three README figures."""
    mnist_x, mnist_y = datasets.load_mnist("train")
    fashion_x, fashion_y = datasets.load_fashion_mnist("train")

    fig = plotting.samples_per_class(
        mnist_x, mnist_y, datasets.MNIST_CLASSES, seed=SEED, title="MNIST: handwritten digits"
    )
    save(fig, "mnist_samples.png")

    fig = plotting.samples_per_class(
        fashion_x,
        fashion_y,
        datasets.FASHION_MNIST_CLASSES,
        seed=SEED,
        title="Fashion-MNIST: Zalando article images",
    )
    save(fig, "fashion_mnist_samples.png")

    fig = Figure(figsize=(11.5, 3.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    plotting.class_means(mnist_x, mnist_y, datasets.MNIST_CLASSES, title="MNIST", fig=top)
    plotting.class_means(
        fashion_x, fashion_y, datasets.FASHION_MNIST_CLASSES, title="Fashion-MNIST", fig=bottom
    )
    fig.suptitle("The mean training image of each class", fontsize=12)
    save(fig, "mean_images.png")


if __name__ == "__main__":
    main()
