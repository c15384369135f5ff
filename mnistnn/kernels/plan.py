"""The plan of a network's kernels, decided once from its layer sizes and batch size: which path
its training takes, and how large every buffer must be.  Plain Python and NumPy: the estimators
read it without loading Numba.

A network of layer sizes ``(n_0, n_1, ..., n_L)`` keeps all its parameters in one flat vector
``theta``: layer ``l`` (1..L) owns ``W_l`` ``(n_l, n_{l-1})``, then ``b_l`` ``(n_l,)``
(:func:`layout`).  The gradient has the same layout.

Two paths:

- **one pass** (:func:`is_narrow`): one hidden layer, it and the output at most ``LANES`` units,
  like the write-up's 784 -> 10 -> 10: :func:`~mnistnn.kernels.narrow.narrow_backward` does
  forward and backward for each image in one go;
- **layer by layer**, any other network: the first layer on the nonzero pixels
  (:mod:`~mnistnn.kernels.pixels`), the later ones dense (:mod:`~mnistnn.kernels.dense`), each in
  blocks of ``BLOCK`` units.

The work buffer holds every layer's activations for a batch (overwritten by their deltas on the
way back) and then the partial weight gradients of ``grad_tiles(m)`` sample tiles for the largest
layer.  :meth:`Plan.check` refuses a workspace too small for a batch before any kernel runs: the
kernels' vector loads and stores are not bounds-checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

LANES = 16  # floats in one Vec16 (mnistnn.kernels.simd): a narrow layer's units, all at once
BLOCK = 4 * LANES  # units of a wider layer that the kernels sum side by side (four Vec16)
TILE = 64  # images per parallel work item
CHUNK = 256  # images of the one-pass kernel of several networks that go through a step together
MAX_GRAD_TILES = 16  # partial weight gradients per batch (fixed: independent of threads)
GROUP = 2  # images whose small steps overlap in the one-pass kernel of one network
PIXEL_SCALE = 1.0 / 255.0
ALIGN_BYTES = 64  # a cache line
ALIGN = 16  # elements of slack that let an array start on a cache line (float32 or float64)


def layout(sizes: Sequence[int]) -> np.ndarray:
    """Offsets of each layer's ``W`` and ``b`` in the flat parameter vector, int64 ``(L + 1,)``:
    layer ``l`` (1..L) occupies ``theta[off[l-1] : off[l]]``, its weights first (row-major
    ``(n_l, n_{l-1})``), then its biases; ``off[L]`` is the number of parameters."""
    off = [0]
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        off.append(off[-1] + n_out * n_in + n_out)
    return np.asarray(off, dtype=np.int64)


def block_width(n: int) -> int:
    """``n`` units rounded up to whole blocks of ``BLOCK``: the padded width of a layer's
    transposed weights and of the first layer's partial gradients."""
    return (n + BLOCK - 1) // BLOCK * BLOCK


def grad_tiles(m: int) -> int:
    """Sample tiles (partial weight gradients) of a batch of ``m`` images:
    ``min(MAX_GRAD_TILES, ceil(m / TILE))``, whatever the number of threads."""
    return min(MAX_GRAD_TILES, (m + TILE - 1) // TILE)


def is_narrow(sizes: Sequence[int]) -> bool:
    """Whether a network of layer sizes ``sizes`` trains in one pass over the images: one hidden
    layer, it and the output of at most ``LANES`` units."""
    return len(sizes) == 3 and max(int(sizes[1]), int(sizes[2])) <= LANES


def work_size(sizes: Sequence[int], m: int, gradients: bool = True) -> int:
    """Floats of work buffer for batches of up to ``m`` images: every layer's activations, plus
    (with ``gradients``) the partial gradients of the largest weight matrix."""
    sizes = [int(n) for n in sizes]
    activations = m * sum(sizes[1:])
    widths = [block_width(sizes[1]), *sizes[2:]]  # the first layer's partials: padded, transposed
    largest = max(w * n_in for w, n_in in zip(widths, sizes[:-1], strict=True))
    partials = grad_tiles(m) * largest + ALIGN  # + room to start them on a cache line
    return activations + (partials if gradients else 0)


class Workspace(NamedTuple):
    """The arrays the kernels work in for batches of up to ``batch`` images: ``buf``
    (:func:`work_size` floats), ``grad`` (laid out as the parameters), and per image ``losses``
    and ``correct``."""

    buf: np.ndarray
    grad: np.ndarray
    losses: np.ndarray
    correct: np.ndarray

    def head(self, m: int) -> Workspace:
        """The same arrays, with ``losses`` and ``correct`` cut to a batch of ``m`` images."""
        return self._replace(losses=self.losses[:m], correct=self.correct[:m])


class Plan(NamedTuple):
    """What the kernels of a network of layer sizes ``sizes`` do, and the room they need (see the
    module docstring)."""

    sizes: tuple[int, ...]

    @property
    def one_pass(self) -> bool:
        """:func:`is_narrow`: trained by ``narrow_backward``, else by ``layered_backward``."""
        return is_narrow(self.sizes)

    @property
    def n_params(self) -> int:
        """Numbers in the parameter vector (and the gradient)."""
        return int(layout(self.sizes)[-1])

    def describe(self) -> str:
        """The kernel of each layer, in words."""
        if self.one_pass:
            return "one pass per image through both layers (narrow_backward)"
        hidden = [f"{n} units dense" for n in self.sizes[2:]]
        return ", ".join([f"{self.sizes[1]} units on the nonzero pixels", *hidden])

    def workspace(self, batch: int, dtype: str | np.dtype, gradients: bool = True) -> Workspace:
        """A new :class:`Workspace` for batches of up to ``batch`` images."""
        return Workspace(
            np.empty(work_size(self.sizes, batch, gradients), dtype=dtype),
            np.empty(self.n_params if gradients else 0, dtype=dtype),
            np.empty(batch, dtype=dtype),
            np.empty(batch, dtype=np.bool_),
        )

    def check(self, work: Workspace, m: int, gradients: bool = True) -> None:
        """Raise ValueError, before any kernel runs, if ``work`` is too small for ``m`` images."""
        need = work_size(self.sizes, m, gradients)
        if work.buf.shape[0] < need or work.losses.shape[0] < m or work.correct.shape[0] < m:
            raise ValueError(
                f"the workspace holds {work.buf.shape[0]} floats and {work.losses.shape[0]} "
                f"images; a batch of {m} images of a {self.sizes} network needs {need} and {m}"
            )
        if gradients and work.grad.shape[0] != self.n_params:
            raise ValueError(f"the gradient holds {work.grad.shape[0]}, not {self.n_params} floats")
