"""The training loops the learner writes in notebooks 03 and 04, run exactly as the notebooks
write them, on small synthetic data, against the package.

A notebook marks these cells with tags: ``learner-loop`` for a loop written by hand (with
:mod:`mnistnn.reference`'s functions) and ``learner-check`` for the cell after it that trains
the package's estimator with the same settings and asserts that the weights are the same.  This
test executes the tagged cells of a notebook in order, in one namespace that holds ``np``,
``mnistnn`` and, in place of the notebook's data, ``X_loop``/``y_loop`` (images and labels to
train on) and ``X_val``/``y_val`` where a notebook's loop asks for them: small random images, so
that the whole chain runs in seconds.  A check that fails here fails in the notebook too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mnistnn

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TAGS = ("learner-loop", "learner-check")


def tagged_cells(path: Path) -> list[tuple[str, str]]:
    """``(tag, source)`` of the cells tagged :data:`TAGS`, in notebook order."""
    cells = json.loads(path.read_text())["cells"]
    found = []
    for cell in cells:
        tags = set(cell.get("metadata", {}).get("tags", [])) & set(TAGS)
        if tags:
            found.append((tags.pop(), "".join(cell["source"])))
    return found


def small_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sparse 28 x 28 uint8 images whose class sets a bright block, and their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = np.where(rng.random((n, 784)) < 0.8, 0, rng.integers(1, 256, (n, 784))).astype(np.uint8)
    for i, label in enumerate(y):
        X[i, 60 * label : 60 * label + 40] = 200
    return X.reshape(n, 28, 28), y


@pytest.mark.parametrize("notebook", ["03_backpropagation.ipynb", "04_fashion_mnist.ipynb"])
def test_the_loops_the_notebook_writes_train_as_the_package_does(notebook):
    cells = tagged_cells(NOTEBOOKS / notebook)
    kinds = [tag for tag, _ in cells]
    assert "learner-loop" in kinds and "learner-check" in kinds, f"{notebook}: no tagged loops"
    assert kinds[-1] == "learner-check", "every loop is followed by its check"
    X_loop, y_loop = small_images(300, seed=1)
    X_val, y_val = small_images(100, seed=2)
    namespace = {"np": np, "mnistnn": mnistnn, "X_loop": X_loop, "y_loop": y_loop,
                 "X_val": X_val, "y_val": y_val, "__name__": "notebook"}  # fmt: skip
    for index, (_, source) in enumerate(cells):
        code = compile(source, f"{notebook}, tagged cell {index}", "exec")
        exec(code, namespace)  # an AssertionError of a check cell fails the test
