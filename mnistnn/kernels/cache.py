"""Numba's on-disk cache for the kernels: compiled once per machine, loaded by every later process.

Numba keys a cached function to its own file only, but the kernels inline code from each other's
files (the vector intrinsics of :mod:`~mnistnn.kernels.simd` above all).  So this module, imported
before any kernel is defined, teaches Numba's cache that every compiled function of this package
depends on all of its files (:class:`_PackageLocator`): editing any of them recompiles the kernels
instead of loading machine code built from the old sources.

It also starts Numba's threading layer: Numba starts it when it loads a parallel kernel, but not
when it loads a cached driver that contains one, and such a driver's first call then fails
("Symbol not found: allocate_sched").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
from numba.core import caching

_FOLDER = Path(__file__).resolve().parent
# The kernels' sources this process compiles: hashed once, so that code compiled before an edit
# is never stamped as built from the edited files.
_SOURCES_SHA256 = hashlib.sha256(
    b"".join(path.read_bytes() for path in sorted(_FOLDER.glob("*.py")))
).hexdigest()


class _PackageLocator(caching._CacheLocator):
    """Numba cache locator for the functions of this package: the place Numba's own locator picks,
    with a source stamp made of the function's file *and* every file of the package."""

    _numba_locators = tuple(caching.CacheImpl._locator_classes)

    def __init__(self, inner: caching._CacheLocator) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner.get_cache_path()!r})"

    def ensure_cache_path(self) -> None:
        """Create the cache directory, as Numba's locator would."""
        self._inner.ensure_cache_path()

    def get_cache_path(self) -> str:
        """The directory Numba's locator chose."""
        return self._inner.get_cache_path()

    def get_disambiguator(self) -> str:
        """Numba's disambiguator (the function's line number)."""
        return self._inner.get_disambiguator()

    def get_source_stamp(self) -> tuple:
        """Changes whenever the function's file or any file of the package changes."""
        return (self._inner.get_source_stamp(), _SOURCES_SHA256)

    @classmethod
    def from_function(cls, py_func, py_file: str) -> _PackageLocator | None:
        """A locator for functions defined in this package, None for all others."""
        if Path(py_file).resolve().parent != _FOLDER:
            return None
        for locator in cls._numba_locators:
            inner = locator.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


_registered = caching.CacheImpl._locator_classes  # Numba's list, tried in order
if not any(c.__name__ == _PackageLocator.__name__ for c in _registered):  # once, if reloaded
    _registered.insert(0, _PackageLocator)

numba.get_num_threads()  # starts the threading layer, which the cached drivers need (see above)
