"""Save and load trained networks as ``.npz`` model files readable with plain NumPy.

File format (version 1)
-----------------------
A model file is an *uncompressed* ``.npz`` archive (a zip of ``.npy`` files, as written by
``numpy.savez``).  It opens with ``numpy.load(path, allow_pickle=False)``; it never holds
pickled (object) data.  For a network with ``L`` layers it holds exactly ``2 * L + 1`` entries::

    entry      shape            content
    W1         (n_1, n_0)       weights into layer 1; row j holds the weights into unit j
    b1         (n_1,)           biases of layer 1
    ...
    WL         (n_L, n_{L-1})   weights into the output layer
    bL         (n_L,)           biases of the output layer
    metadata   ()               a 0-d unicode string array (dtype ``<U...``) holding JSON

``n_0`` is the input size (784 for 28 x 28 images) and ``n_L`` the number of classes.  The
weights are laid out for samples stored as columns: ``Z_l = W_l @ A_{l-1} + b_l[:, None]``.
All ``W`` and ``b`` arrays share one float dtype, float32 or float64, and are finite and small
enough that no input can overflow that dtype on the way through the network (see
:func:`load_model`).  The archive's entries are stored or deflated, never encrypted.

``metadata`` is a JSON object (read it with ``json.loads(str(npz["metadata"]))``) with::

    "format":          "mnistnn-model"              marks the file as an mnistnn model
    "format_version":  1                            this format; see FORMAT_VERSION
    "class":           "NNetworkExtended"           the class that wrote it (NNetworkMinimal, ...)
    "layer_sizes":     [784, 10, 10]                [n_0, n_1, ..., n_L]
    "dtype":           "float32"                    dtype of all W and b entries
    "params":          {...}                        the estimator's constructor parameters
    "training":        {...}                        free form: epochs run, final loss, accuracy...
    "created":         "2024-05-01T12:00:00+00:00"  ISO 8601, UTC
    "mnistnn_version": "0.1.0"                      the package version that wrote the file

Readers must ignore keys they do not know; writers may add keys.  A change a version-1 reader
could misread bumps ``format_version``.

Reading a model with plain NumPy: ``X`` holds one image per row (uint8 pixels); hidden layers
use ReLU; the output layer's softmax is monotonic, so the predicted label is the argmax of ``Z``
(probabilities, if wanted: ``P = np.exp(Z - Z.max(0)); P /= P.sum(0)``)::

    m = np.load("model.npz", allow_pickle=False)
    A = X.reshape(len(X), -1).T / 255.0         # (784, n): one image per column, in [0, 1]
    for l in range(1, len(m.files) // 2 + 1):   # entries: W1, b1, ..., WL, bL, metadata
        Z = m[f"W{l}"] @ A + m[f"b{l}"][:, None]
        A = np.maximum(Z, 0)                    # ReLU (used by the hidden layers only)
    predictions = Z.argmax(axis=0)              # (n,) labels; argmax(softmax(Z)) == argmax(Z)

:func:`save_model` writes atomically: a crash mid-save leaves any previous file untouched.
:func:`load_model` validates everything and raises :class:`ModelFormatError` (naming the file
and the problem) for anything that is not a well-formed model file.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeAlias

import numpy as np

from ._files import atomic_write, open_regular
from ._gzip import DEFLATE_MAX_RATIO

__all__ = [
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "ModelFormatError",
    "load_model",
    "read_metadata",
    "save_model",
]

PathLike: TypeAlias = str | os.PathLike[str]

FORMAT_VERSION = 1
"""The version of the model file format this module writes and reads."""

FORMAT_MARKER = "mnistnn-model"
"""The value of the ``"format"`` metadata key."""

_FLOAT_DTYPES = ("float32", "float64")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}  # what savez writes
_LARGEST_PIXEL = 255.0
# Everything zipfile, zlib and the npy reader raise on a damaged archive (NotImplementedError,
# for an unknown compression method, is a RuntimeError, as is "encrypted"):
_DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    OverflowError,
    RuntimeError,
)


class ModelFormatError(ValueError):
    """A file is not a valid mnistnn model file; the message names the file and the problem."""


def _package_version() -> str:
    try:
        return importlib.metadata.version("mnistnn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _json_default(obj: Any) -> Any:
    """Let ``json`` serialise NumPy scalars and arrays (e.g. a loss as ``np.float32``)."""
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _layer_sizes(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> list[int]:
    """Check that the arrays form a network and return ``[n_0, n_1, ..., n_L]``."""
    if len(weights) == 0:
        raise ValueError("a model needs at least one layer; got no weights")
    if len(weights) != len(biases):
        raise ValueError(f"got {len(weights)} weight matrices but {len(biases)} bias vectors")
    first = weights[0]
    if first.ndim != 2:
        raise ValueError(f"W1 must be 2-d (n_1, n_0); got shape {first.shape}")
    sizes = [int(first.shape[1])]
    for k, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
        if w.ndim != 2 or w.shape[1] != sizes[-1]:
            raise ValueError(
                f"W{k} must have shape (n_{k}, {sizes[-1]}) to follow layer {k - 1} of "
                f"{sizes[-1]} units; got {w.shape}"
            )
        sizes.append(int(w.shape[0]))
        if b.shape != (sizes[-1],):
            raise ValueError(f"b{k} must have shape ({sizes[-1]},) to match W{k}; got {b.shape}")
    if min(sizes) < 1:
        raise ValueError(f"every layer needs at least one unit; got layer sizes {sizes}")
    return sizes


def save_model(
    path: PathLike,
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    metadata: Mapping[str, Any],
) -> Path:
    """Write a model file atomically and return its path.

    ``weights[l-1]`` is ``W_l`` of shape ``(n_l, n_{l-1})`` and ``biases[l-1]`` is ``b_l`` of
    shape ``(n_l,)``; all share one dtype, float32 or float64, and must be finite.
    ``metadata`` needs ``"class"`` and usually ``"params"`` and ``"training"`` (both default to
    ``{}``); ``"format"``, ``"format_version"``, ``"layer_sizes"`` and ``"dtype"`` are computed
    (passing a different value is an error), ``"created"`` and ``"mnistnn_version"`` are filled
    in unless given.  NumPy scalars in the metadata are converted to plain JSON numbers.

    The file is written to exactly ``path`` (no ``.npz`` is appended, unlike ``np.savez`` on a
    name): first to a temporary file in the same folder, flushed and fsynced, then renamed over
    ``path``.  On any error the temporary file is removed and a previous file is left untouched.

    Raises ``ValueError`` for shapes that do not chain, mixed or non-float dtypes, NaN or
    infinite values, and metadata that is not a JSON object.
    """
    path = Path(path)
    ws = [np.asarray(w) for w in weights]
    bs = [np.asarray(b) for b in biases]
    sizes = _layer_sizes(ws, bs)
    dtypes = {a.dtype for a in ws + bs}
    if len(dtypes) != 1:
        names = sorted(str(d) for d in dtypes)
        raise ValueError(f"all weights and biases must share one dtype; got {', '.join(names)}")
    dtype = dtypes.pop()
    if dtype.name not in _FLOAT_DTYPES:
        raise ValueError(f"weights and biases must be float32 or float64; got {dtype}")
    for name, a in _entries(ws, bs):
        if not np.isfinite(a).all():
            raise ValueError(
                f"{name} contains {np.count_nonzero(~np.isfinite(a))} NaN or infinite values; "
                "refusing to save a broken model (lower the learning rate and retrain?)"
            )

    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping; got {type(metadata).__name__}")
    meta: dict[str, Any] = dict(metadata)
    computed = {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "layer_sizes": sizes,
        "dtype": dtype.name,
    }
    for key, value in computed.items():
        if key in meta and _json_roundtrip(meta[key]) != value:
            raise ValueError(f"metadata[{key!r}] is {meta[key]!r} but must be {value!r} here")
    if not isinstance(meta.get("class"), str) or not meta["class"]:
        raise ValueError("metadata must name the model's class, e.g. {'class': 'NNetworkMinimal'}")
    for key in ("params", "training"):
        meta.setdefault(key, {})
        if not isinstance(meta[key], Mapping):
            raise ValueError(f"metadata[{key!r}] must be a dict; got {type(meta[key]).__name__}")
    meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    meta.setdefault("mnistnn_version", _package_version())
    order = ["format", "format_version", "class", "layer_sizes", "dtype", "params", "training"]
    meta = {**{k: None for k in order}, **meta, **computed}  # the documented keys first
    try:
        text = json.dumps(meta, indent=2, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata cannot be stored as JSON: {exc}") from exc

    arrays = dict(_entries(ws, bs))
    arrays["metadata"] = np.array(text)
    # Nothing here is an object array, so nothing is pickled. No allow_pickle=False: NumPy 1.26's
    # savez has no such argument and would store it as one more array.
    with atomic_write(path) as out:
        np.savez(out, **arrays)
    return path


def _json_roundtrip(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError):
        return value


def _entries(ws: Sequence[np.ndarray], bs: Sequence[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """``[("W1", W1), ("b1", b1), ...]`` in file order."""
    out = []
    for k, (w, b) in enumerate(zip(ws, bs, strict=True), start=1):
        out += [(f"W{k}", w), (f"b{k}", b)]
    return out


# --------------------------------------------------------------------------------------------
# Reading


def load_model(
    path: PathLike, expected_class: str | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """Read and fully validate a model file: ``(weights, biases, metadata)``.

    ``weights[l-1]`` is ``W_l`` of shape ``(n_l, n_{l-1})``, ``biases[l-1]`` is ``b_l`` of
    shape ``(n_l,)``, all of dtype ``metadata["dtype"]``; they are fresh writable C-contiguous
    arrays and the file is closed on return.  With ``expected_class``, a file written by
    another class is refused.

    The file is opened with ``np.load(..., allow_pickle=False)``: nothing in it is ever
    executed.  Every problem with the *content* raises :class:`ModelFormatError`; errors
    opening the *path* itself (``FileNotFoundError``, ``PermissionError``,
    ``IsADirectoryError``, :class:`~mnistnn._files.NotAFileError` for a FIFO or device) pass
    through unchanged, since they are already clear.

    Weights must be finite, and small enough that the forward pass cannot overflow the file's
    dtype for *any* input of pixels in 0..255 (raw, or scaled to 0..1: the bound covers both).
    The bound is exact interval arithmetic: with ``u_0`` every input at its largest (255), the
    largest magnitude layer ``l`` can reach is ``u_l = |W_l| @ u_{l-1} + |b_l|`` (ReLU never
    increases a magnitude), and every partial sum of the matrix product is at most that.  A
    file with some ``u_l`` above half the dtype's largest number (half: the softmax subtracts
    one output from another) is refused: its ``predict`` could print NaN probabilities.  A
    trained network is some thirty orders of magnitude below this bound.
    """
    return _read(path, expected_class, load_arrays=True)  # type: ignore[return-value]


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Return a model file's metadata dict without reading the weights.

    Validates the metadata and the archive's structure (entries, shapes, dtypes from the
    ``.npy`` headers) like :func:`load_model`, but not the values (their finiteness).
    """
    return _read(path, None, load_arrays=False)[2]


def _fail(path: Path, problem: str) -> NoReturn:
    raise ModelFormatError(f"{path}: {problem}")


def _read(
    path: PathLike, expected_class: str | None, *, load_arrays: bool
) -> tuple[list[np.ndarray] | None, list[np.ndarray] | None, dict[str, Any]]:
    path = Path(path)
    with open_regular(path) as f:  # errors about the path itself propagate unchanged
        start = f.read(len(_NPY_MAGIC))
        if not start:
            _fail(path, "the file is empty, not a model file (was saving interrupted?)")
        if start.startswith(_NPY_MAGIC):
            _fail(path, "this is a single .npy array, not an mnistnn model (.npz) file")
        if not start.startswith(_ZIP_MAGICS):
            _fail(path, f"not an mnistnn model file: not a .npz (zip) archive (starts {start!r})")
        f.seek(0)
        try:
            return _read_npz(path, f, expected_class, load_arrays)
        except ModelFormatError:
            raise
        except _DAMAGED as exc:
            _fail(
                path,
                f"the archive is truncated or corrupt ({type(exc).__name__}: {exc}); "
                "save or copy the model again",
            )


def _read_npz(
    path: Path, f: BinaryIO, expected_class: str | None, load_arrays: bool
) -> tuple[list[np.ndarray] | None, list[np.ndarray] | None, dict[str, Any]]:
    with np.load(f, allow_pickle=False) as npz:
        _check_sizes(path, f, npz.zip)
        members = npz.zip.namelist()
        bad = [m for m in members if not m.endswith(".npy")]
        if bad:
            _fail(path, f"unexpected non-array entries {bad}; not an mnistnn model file")
        headers = {m[: -len(".npy")]: _read_header(path, npz.zip, m) for m in members}
        if len(headers) != len(members):
            _fail(path, "the archive holds duplicate entries")
        pickled = [name for name, (_, dtype) in headers.items() if dtype.hasobject]
        if pickled:
            _fail(
                path,
                f"contains pickled data (object arrays {pickled}); refusing to load. "
                "mnistnn model files never contain pickles; do not trust this file",
            )
        if "metadata" not in headers:
            _fail(path, "no 'metadata' entry; this .npz is not an mnistnn model file")
        shape, dtype = headers["metadata"]
        if shape != () or dtype.kind != "U":
            _fail(path, f"'metadata' must be a 0-d unicode string array; got {dtype} {shape}")
        meta = _parse_metadata(path, str(npz["metadata"]))
        dtype_name = _check_structure(path, headers, meta)
        if expected_class is not None and meta["class"] != expected_class:
            _fail(
                path,
                f"this file holds a {meta['class']}, not a {expected_class}; "
                f"load it with {meta['class']}.load",
            )
        if not load_arrays:
            return None, None, meta
        n_layers = len(meta["layer_sizes"]) - 1
        ws, bs = [], []
        for k in range(1, n_layers + 1):
            for name, out in ((f"W{k}", ws), (f"b{k}", bs)):
                a = np.array(npz[name], dtype=dtype_name, order="C")  # a copy, native order
                if not np.isfinite(a).all():
                    _fail(path, f"{name} contains NaN or infinite values; the model is broken")
                out.append(a)
        _check_bounded(path, ws, bs)
        return ws, bs, meta


def _check_bounded(path: Path, ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    """Refuse weights with which some input in 0..255 could overflow their dtype (see
    :func:`load_model`): ``u_l = |W_l| @ u_{l-1} + |b_l|`` from ``u_0 = 255``, in float64."""
    limit = float(np.finfo(ws[0].dtype).max) / 2
    bound = np.full(ws[0].shape[1], _LARGEST_PIXEL)
    with np.errstate(over="ignore", invalid="ignore"):
        for k, (w, b) in enumerate(zip(ws, bs, strict=True), start=1):
            bound = np.abs(w).astype(np.float64) @ bound + np.abs(b)
            largest = float(bound.max())
            if not largest <= limit:  # also catches inf (a float64 overflow) and NaN
                _fail(
                    path,
                    f"layer {k} can reach {largest:.3g} (weights up to "
                    f"{float(np.abs(w).max()):.3g}), beyond what {w.dtype} holds (half its "
                    f"largest number, {limit:.3g}): its outputs could overflow to NaN; "
                    "the model is broken",
                )


def _read_header(path: Path, zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of one ``.npy`` entry, read from its header without loading data.

    The header's shape and dtype must account for exactly the bytes the entry holds, so that
    nothing is ever allocated on the word of a header alone.
    """
    fmt = np.lib.format
    with zf.open(member) as fp:
        try:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fp)
            else:
                _fail(path, f"entry {member!r} uses unsupported .npy format version {version}")
        except ModelFormatError:
            raise
        except ValueError as exc:
            _fail(path, f"entry {member!r} is not a valid .npy array: {exc}")
        held = zf.getinfo(member).file_size - fp.tell()
    declared = math.prod(shape) * dtype.itemsize
    if declared != held and not dtype.hasobject:  # pickles are refused by the caller
        _fail(
            path,
            f"entry {member!r} declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
            f"{held:,} bytes; the file is corrupt",
        )
    return shape, dtype


def _check_sizes(path: Path, f: BinaryIO, zf: zipfile.ZipFile) -> None:
    """The entries' recorded sizes must fit the file: no entry may promise more data than the
    archive can hold (uncompressed entries) or than deflate can produce from it."""
    archive = os.fstat(f.fileno()).st_size if hasattr(f, "fileno") else None
    stored = 0
    for info in zf.infolist():
        if info.flag_bits & 0x1:
            _fail(path, f"entry {info.filename!r} is encrypted; mnistnn model files never are")
        if info.compress_type not in _METHODS:
            _fail(
                path,
                f"entry {info.filename!r} uses zip compression method {info.compress_type}; "
                "model files are stored or deflated (numpy.savez, savez_compressed)",
            )
        stored += info.compress_size
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            _fail(path, f"entry {info.filename!r} has inconsistent sizes; the file is corrupt")
        if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024:
            _fail(
                path,
                f"entry {info.filename!r} claims {info.file_size:,} bytes from "
                f"{info.compress_size:,} compressed ones; the file is corrupt",
            )
    if archive is not None and stored > archive:
        _fail(path, f"its entries claim {stored:,} bytes but the file has {archive:,}; truncated?")


def _parse_metadata(path: Path, text: str) -> dict[str, Any]:
    """Decode and check the metadata JSON; return it as a dict."""
    try:
        meta = json.loads(text)
    except ValueError as exc:
        _fail(path, f"'metadata' is not valid JSON ({exc})")
    except RecursionError:
        _fail(path, "'metadata' is nested too deeply to be a model's metadata")
    if not isinstance(meta, dict):
        _fail(path, f"'metadata' must be a JSON object; got {type(meta).__name__}")
    if meta.get("format") != FORMAT_MARKER:
        _fail(
            path,
            f"metadata 'format' is {meta.get('format')!r}, not {FORMAT_MARKER!r}; "
            "not an mnistnn model file",
        )
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        _fail(
            path,
            f"format_version {version} was written by a newer mnistnn (this one reads version "
            f"{FORMAT_VERSION}); upgrade mnistnn to load it",
        )
    if type(version) is not int or version != FORMAT_VERSION:
        _fail(path, f"unknown format_version {version!r} (this mnistnn reads {FORMAT_VERSION})")
    if not isinstance(meta.get("class"), str) or not meta["class"]:
        _fail(path, f"metadata 'class' must be a non-empty string; got {meta.get('class')!r}")
    sizes = meta.get("layer_sizes")
    if (
        not isinstance(sizes, list)
        or len(sizes) < 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes)
    ):
        _fail(path, f"metadata 'layer_sizes' must be a list of >= 2 positive ints; got {sizes!r}")
    if meta.get("dtype") not in _FLOAT_DTYPES:
        _fail(path, f"metadata 'dtype' must be 'float32' or 'float64'; got {meta.get('dtype')!r}")
    kinds = {"params": dict, "training": dict, "created": str, "mnistnn_version": str}
    for key, kind in kinds.items():
        if not isinstance(meta.get(key), kind):
            _fail(path, f"metadata {key!r} must be a {kind.__name__}; got {meta.get(key)!r}")
    return meta


def _check_structure(
    path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]], meta: dict[str, Any]
) -> str:
    """Check entries, shapes and dtypes against the metadata; return the dtype name."""
    sizes: list[int] = meta["layer_sizes"]
    n_layers = len(sizes) - 1
    if n_layers > len(headers):
        _fail(
            path,
            f"layer_sizes lists {n_layers} layers but the archive holds only {len(headers)} "
            "entries; the file is incomplete",
        )
    expected = {"metadata": ()}
    for k in range(1, n_layers + 1):
        expected[f"W{k}"] = (sizes[k], sizes[k - 1])
        expected[f"b{k}"] = (sizes[k],)
    missing = [name for name in expected if name not in headers]
    if missing:
        _fail(path, f"missing entries {missing} for layer_sizes {sizes}; the file is incomplete")
    extra = sorted(set(headers) - set(expected))
    if extra:
        _fail(path, f"unexpected entries {extra} for layer_sizes {sizes}")
    found = set()
    for name, shape in expected.items():
        if name == "metadata":
            continue
        got_shape, dtype = headers[name]
        if got_shape != shape:
            _fail(
                path,
                f"{name} has shape {got_shape} but layer_sizes {sizes} needs {shape}",
            )
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            _fail(path, f"{name} has dtype {dtype}; weights must be float32 or float64")
        found.add(dtype.newbyteorder("=").name)
    if found != {meta["dtype"]}:
        _fail(
            path,
            f"weights and biases have dtypes {sorted(found)} but metadata says "
            f"{meta['dtype']!r}; all must share that one dtype",
        )
    return meta["dtype"]
