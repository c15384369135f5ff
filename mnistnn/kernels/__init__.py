"""The Numba kernels: the math of :mod:`mnistnn.reference`, fast, on plain arrays (no classes but a
small workspace, no I/O).  Read :mod:`mnistnn.reference` for the math; here is where it is fast.

The modules, by concern:

- :mod:`~mnistnn.kernels.plan`: the plan of a network (its path and the size of every buffer)
  and the parameter layout; plain Python, so importing it does not load Numba;
- :mod:`~mnistnn.kernels.pixels`: the first layer on the images' nonzero pixels;
- :mod:`~mnistnn.kernels.dense`: the later layers;
- :mod:`~mnistnn.kernels.softmax`: the output layer, its loss and ``dO``;
- :mod:`~mnistnn.kernels.reductions`: sums in a fixed order, and the update step;
- :mod:`~mnistnn.kernels.narrow`: a narrow network (the write-up's) in one pass, one or several
  side by side;
- :mod:`~mnistnn.kernels.layers`: the drivers of any network, one layer at a time;
- :mod:`~mnistnn.kernels.buffers`: views into the work buffer, padded copies of weights;
- :mod:`~mnistnn.kernels.simd`: a 16-float vector type and its operations, for the loops LLVM
  cannot vectorize by itself;
- :mod:`~mnistnn.kernels.cache`: Numba's on-disk cache for all of them.

**The same bits everywhere.** Every sum has one order, written in the code: no fastmath flags
(with them LLVM sums dot products in a vector width it picks for the CPU at hand), multiply-adds
fused only where the code says so (``llvm.fma``, fused on every CPU), and work split among
threads by tiles of images whose number depends on the batch only, added in tile order.  So a
network trains to the same weights on any x86-64 CPU, with any number of threads, whether this
process compiled the kernels or loaded them from the cache (``tests/test_determinism.py``).

Import a compiled kernel from its module (``from mnistnn.kernels.layers import forward``): this
package itself hands on only the plan (:mod:`~mnistnn.kernels.plan`), so importing it does not
load Numba; :mod:`mnistnn.backends` imports the kernels on a network's first computation.
"""

from __future__ import annotations

from .plan import (
    BLOCK,
    CHUNK,
    LANES,
    PIXEL_SCALE,
    TILE,
    Plan,
    Workspace,
    block_width,
    grad_tiles,
    is_narrow,
    layout,
    work_size,
)

__all__ = [
    "BLOCK",
    "CHUNK",
    "LANES",
    "PIXEL_SCALE",
    "TILE",
    "Plan",
    "Workspace",
    "block_width",
    "grad_tiles",
    "is_narrow",
    "layout",
    "work_size",
]
