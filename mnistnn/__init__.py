"""mnistnn: a neural network from scratch on MNIST and Fashion-MNIST.

The public names, handed on from the modules that define them:

- :mod:`mnistnn.idx`: ``read_idx``, ``write_idx``, ``Idx1``, ``Idx3``, ``IdxFormatError``
- :mod:`mnistnn.datasets`: ``load_mnist``, ``load_fashion_mnist``, ``fetch``, class names
- :mod:`mnistnn.network`: ``NNetworkMinimal``, ``NNetworkExtended``, ``TrainingDivergedError``,
  and the warnings ``TrainingDivergedWarning`` and ``PixelScaleWarning``
- :mod:`mnistnn.modelfile`: ``ModelFormatError`` (models are saved with ``.save``/``.load``)
- :mod:`mnistnn.reference` (the math in plain NumPy) and :mod:`mnistnn.training` (the loop)
"""

from . import reference, training
from .datasets import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    DatasetFetchError,
    fetch,
    load_fashion_mnist,
    load_mnist,
)
from .idx import Idx1, Idx3, IdxFormatError, read_idx, write_idx
from .modelfile import ModelFormatError
from .network import (
    NNetworkExtended,
    NNetworkMinimal,
    PixelScaleWarning,
    TrainingDivergedError,
    TrainingDivergedWarning,
    fit_many,
)

__version__ = "0.1.0"

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "DatasetFetchError",
    "Idx1",
    "Idx3",
    "IdxFormatError",
    "ModelFormatError",
    "NNetworkExtended",
    "NNetworkMinimal",
    "PixelScaleWarning",
    "TrainingDivergedError",
    "TrainingDivergedWarning",
    "fetch",
    "fit_many",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "reference",
    "training",
    "write_idx",
]
