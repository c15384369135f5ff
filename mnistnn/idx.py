"""Read and write IDX files, the format of the MNIST and Fashion-MNIST data files.

An IDX file is a header followed by the raw data of one n-dimensional array::

    offset  size  content
    0       2     two zero bytes                    00 00
    2       1     type code of the items            08 = uint8
    3       1     number of dimensions n            03
    4       4*n   size of each dimension, a big-endian uint32 (00 00 EA 60 = 60000, ...)
    4+4*n   ...   the items, big-endian, in C order (the last index changes fastest)

The first four bytes read as one big-endian integer are the *magic number*: 0x00000803 for the
MNIST image files (uint8, 3 dimensions: count x rows x cols) and 0x00000801 for the label
files (uint8, 1 dimension: count).

Type codes (the item size follows from the code)::

    0x08 uint8   0x09 int8   0x0B int16   0x0C int32   0x0D float32   0x0E float64

A file may have 0 to 255 dimensions (numpy itself handles at most 64); a 0-dimensional file
holds exactly one item.  The data size is therefore fully determined by the header, which lets
the reader reject truncated files and files with trailing bytes.

The distributed MNIST files are gzip-compressed (``train-images-idx3-ubyte.gz``).
:func:`read_idx` recognises gzip by its content (the bytes ``1f 8b``), not by the file name;
:func:`write_idx` compresses when the target name ends in ``.gz``.  :func:`hexdump` shows raw
bytes the way ``hexdump -C`` does, to look at headers by hand.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, TypeAlias

import numpy as np
from numpy.typing import DTypeLike

from ._files import NotAFileError, atomic_write, open_regular
from ._gzip import DEFLATE_MAX_RATIO, GZIP_MAGIC, GzipError, GzipReader

__all__ = [
    "TYPE_CODES",
    "Idx1",
    "Idx3",
    "IdxFormatError",
    "IdxHeader",
    "hexdump",
    "parse_header",
    "read_idx",
    "write_idx",
]

IdxSource: TypeAlias = str | os.PathLike[str] | BinaryIO
"""A path to an IDX file, or a binary file object (anything with ``.read``)."""

TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code -> big-endian numpy dtype of the items."""

_GZIP_MIN_SIZE = 18
_MAX_DIM = 2**32
_MAX_NDIM = 255
_FIRST_ALLOCATION = 1 << 20
_GZIP_CHUNK = 1 << 20
_PIECE = 1 << 22  # bytes read at a time when the data's size is not known beforehand
_TRAIL_PEEK = 1 << 20  # trailing bytes read (at most) to say how many follow the data
_WRITE_CHUNK = 1 << 22
_SUPPORTED = ", ".join(f"0x{code:02X} {dt.name}" for code, dt in TYPE_CODES.items())


class IdxFormatError(ValueError):
    """A file is not a valid IDX file; the message names the file and the problem."""


@dataclass(frozen=True, repr=False)
class IdxHeader:
    """The parsed header of an IDX file.

    ``magic`` is the first four bytes as a big-endian int (e.g. 0x00000803), ``type_code`` its
    third byte, ``dtype`` the big-endian item dtype, ``shape`` the array shape (one int per
    dimension, ``()`` for a 0-dimensional file) and ``offset`` the header size in bytes
    (``4 + 4 * len(shape)``), i.e. where the data starts.
    """

    magic: int
    type_code: int
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def ndim(self) -> int:
        """Number of dimensions (0..255)."""
        return len(self.shape)

    @property
    def count(self) -> int:
        """Number of items declared by the header (product of ``shape``; 1 when 0-dim)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Number of data bytes declared by the header (``count * dtype.itemsize``)."""
        return self.count * self.dtype.itemsize

    def __repr__(self) -> str:
        """Show magic and type code in hex, e.g. ``IdxHeader(magic=0x00000801, ...)``."""
        return (
            f"IdxHeader(magic=0x{self.magic:08X}, type_code=0x{self.type_code:02X}, "
            f"dtype={self.dtype.str}, shape={self.shape}, offset={self.offset})"
        )

    def to_bytes(self) -> bytes:
        """Encode the header as it appears on disk: ``offset`` bytes."""
        return struct.pack(f">HBB{self.ndim}I", 0, self.type_code, self.ndim, *self.shape)


def parse_header(raw: bytes | bytearray | memoryview, name: str = "<bytes>") -> IdxHeader:
    """Parse the header at the start of ``raw`` (the first bytes of an IDX file).

    Bytes after the header are ignored, so ``raw`` may be the whole file.  ``name`` is used in
    error messages.  Raises :class:`IdxFormatError` if ``raw`` is empty or too short for the
    header, does not start with two zero bytes, or has an unknown type code.
    """
    raw = bytes(raw[: 4 + 4 * _MAX_NDIM])
    if not raw:
        raise IdxFormatError(f"{name}: empty (0 bytes); an IDX file starts with a 4-byte magic")
    if raw[:2].strip(b"\x00"):
        raise IdxFormatError(
            f"{name}: wrong magic: the file starts with {raw[:4]!r}, "
            "but an IDX file starts with two zero bytes, a type code and a dimension count"
        )
    if len(raw) < 4:
        raise IdxFormatError(
            f"{name}: truncated header: the 4-byte magic needs 4 bytes, file holds {len(raw)}"
        )
    magic, type_code, ndim = int.from_bytes(raw[:4], "big"), raw[2], raw[3]
    if type_code not in TYPE_CODES:
        raise IdxFormatError(
            f"{name}: unknown type code 0x{type_code:02X} (magic 0x{magic:08X}); "
            f"known type codes: {_SUPPORTED}"
        )
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise IdxFormatError(
            f"{name}: truncated header: {ndim} dimensions need {offset} header bytes, "
            f"file holds {len(raw)}"
        )
    return IdxHeader(
        magic=magic,
        type_code=type_code,
        dtype=TYPE_CODES[type_code],
        shape=struct.unpack(f">{ndim}I", raw[4:offset]),
        offset=offset,
    )


def read_idx(source: IdxSource) -> np.ndarray:
    """Read a whole IDX file, plain or gzip-compressed, into a new array.

    ``source`` is a path or a binary file object.  Returns a writable, C-contiguous array of
    the declared shape (e.g. ``(60000, 28, 28)`` uint8 for MNIST training images) and dtype,
    in native byte order.  Raises :class:`IdxFormatError` on any malformed, truncated or
    over-long file, or a path that is not a regular file (``FileNotFoundError`` if the path does
    not exist).  Nothing a file claims about its size decides an allocation: data whose size is
    not known beforehand (gzip, pipes) is read in bounded pieces, and reading stops at the first
    byte past the size the header declares.  A pipe or device is read from a file object you
    open (``read_idx(sys.stdin.buffer)``); a path must name a regular file.
    """
    return _read_idx(source)[2]


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` (any shape, dtype uint8/int8/int16/int32/float32/float64) as IDX.

    The data is written big-endian in C order, gzip-compressed when ``path`` ends in ``.gz``.
    The file is written to a temporary file in the same folder and renamed into place, so
    ``path`` never holds a partial file.  Raises ``ValueError`` for an unsupported dtype (any
    byte order of a supported dtype is fine), more than 255 dimensions or a dimension >= 2**32.
    """
    arr = np.asarray(array)
    type_code = _type_code_for(arr.dtype)
    if arr.ndim > _MAX_NDIM:
        raise ValueError(f"IDX supports at most {_MAX_NDIM} dimensions, got {arr.ndim}")
    if any(size >= _MAX_DIM for size in arr.shape):
        raise ValueError(f"IDX dimensions must be < 2**32, got shape {arr.shape}")
    header = IdxHeader(
        magic=(type_code << 8) | arr.ndim,
        type_code=type_code,
        dtype=TYPE_CODES[type_code],
        shape=tuple(arr.shape),
        offset=4 + 4 * arr.ndim,
    )
    base = os.path.basename(os.fspath(path))
    with atomic_write(path) as raw:
        if base.lower().endswith(".gz"):
            gz = gzip.GzipFile(filename=base, mode="wb", fileobj=raw, compresslevel=6, mtime=0)
            with gz:
                _write_body(gz, header, arr)
        else:
            _write_body(raw, header, arr)


def hexdump(data: bytes | bytearray | memoryview, width: int = 16, offset: int = 0) -> str:
    """Format bytes for display like ``hexdump -C``: offset, hex bytes, printable characters.

    Each line shows ``width`` bytes: the position of its first byte (``offset`` is the position
    of ``data[0]`` in the file) as 8 hex digits, the bytes in hex (an extra space after every
    8), and the same bytes as ASCII between ``|`` bars, ``.`` for non-printable ones.  The last
    line is padded so the columns line up.  Returns the lines joined by newlines, without a
    final newline (``""`` for no data)::

        >>> print(hexdump(b"\\x00\\x00\\x08\\x03IDX!", width=8))
        00000000  00 00 08 03 49 44 58 21  |....IDX!|
    """
    raw = bytes(data)
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    if offset < 0:
        raise ValueError(f"offset must be non-negative, got {offset}")

    def hex_part(chunk: bytes) -> str:
        cells = [f"{b:02X}" for b in chunk] + ["  "] * (width - len(chunk))
        groups = [" ".join(cells[i : i + 8]) for i in range(0, width, 8)]
        return "  ".join(groups)

    lines = []
    for start in range(0, len(raw), width):
        chunk = raw[start : start + width]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset + start:08X}  {hex_part(chunk)}  |{text}|")
    return "\n".join(lines)


class _IdxArray:
    """Shared base of :class:`Idx1` and :class:`Idx3`: an IDX file of uint8 items.

    Subclasses set ``NDIM`` (number of dimensions), ``MAGIC`` and ``KIND`` (a description
    used in error messages).  ``data`` holds the array, its first axis runs over the items.
    """

    NDIM: ClassVar[int]
    MAGIC: ClassVar[int]
    KIND: ClassVar[str]

    def __init__(self, source: IdxSource) -> None:
        """Read ``source`` (path or binary file object) and check that it has the right kind."""
        name, header, data = _read_idx(source, self._check_header)
        self.path: str = name
        self.magic: int = header.magic
        self.data: np.ndarray = data

    @classmethod
    def _check_header(cls, header: IdxHeader, name: str) -> None:
        if header.magic != cls.MAGIC:
            dims = "dimension" if cls.NDIM == 1 else "dimensions"
            raise IdxFormatError(
                f"{name}: is {_describe(header)}, not {cls.KIND} ({cls.__name__} needs "
                f"{cls.NDIM} {dims} of uint8, magic 0x{cls.MAGIC:08X})"
            )

    @property
    def count(self) -> int:
        """Number of items (labels or images): ``data.shape[0]``."""
        return self.data.shape[0]

    def __len__(self) -> int:
        """Number of items."""
        return self.count

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        """Index the first axis: an int gives one item, a slice or index array several."""
        return self.data[key]

    def __iter__(self) -> Iterator[np.ndarray]:
        """Iterate over the items (rows of ``data``)."""
        return iter(self.data)

    def __array__(self, dtype: DTypeLike = None, copy: bool | None = None) -> np.ndarray:
        """Support ``numpy.asarray(obj)``: ``data`` itself unless a copy or dtype is asked for."""
        if copy is False and dtype is not None and np.dtype(dtype) != self.data.dtype:
            raise ValueError(f"cannot convert {self.data.dtype} to {dtype} without a copy")
        arr = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return arr.copy() if copy and arr is self.data else arr

    def _repr_extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        """E.g. ``Idx1('t10k-labels-idx1-ubyte', magic=0x00000801, count=10000)``."""
        return (
            f"{type(self).__name__}({self.path!r}, magic=0x{self.magic:08X}, "
            f"count={self.count}{self._repr_extra()})"
        )


class Idx1(_IdxArray):
    """An IDX label file: ``data`` is a ``(count,)`` uint8 array (magic 0x00000801)."""

    NDIM = 1
    MAGIC = 0x00000801
    KIND = "a label file"


class Idx3(_IdxArray):
    """An IDX image file: ``data`` is a ``(count, rows, cols)`` uint8 array (magic 0x00000803).

    ``idx3[i]`` is one ``(rows, cols)`` image, ``idx3[i:j]`` a ``(j - i, rows, cols)`` view.
    """

    NDIM = 3
    MAGIC = 0x00000803
    KIND = "an image file"

    @property
    def rows(self) -> int:
        """Image height in pixels: ``data.shape[1]``."""
        return self.data.shape[1]

    @property
    def cols(self) -> int:
        """Image width in pixels: ``data.shape[2]``."""
        return self.data.shape[2]

    def _repr_extra(self) -> str:
        return f", rows={self.rows}, cols={self.cols}"


def _describe(header: IdxHeader) -> str:
    """Say what kind of IDX file ``header`` belongs to, for error messages."""
    if header.magic == Idx1.MAGIC:
        return "a label file (1 dimension)"
    if header.magic == Idx3.MAGIC:
        return "an image file (3 dimensions)"
    dims = "dimension" if header.ndim == 1 else "dimensions"
    return (
        f"an IDX file of {header.dtype.name} with {header.ndim} {dims} (magic 0x{header.magic:08X})"
    )


_HeaderCheck = Callable[[IdxHeader, str], None]


def _read_idx(
    source: IdxSource, check: _HeaderCheck | None = None
) -> tuple[str, IdxHeader, np.ndarray]:
    """Read ``source``; ``check(header, name)`` may reject the header before the data is read."""
    with contextlib.ExitStack() as stack:
        stream, name = _open_source(source, stack)
        start = _tell(stream)
        prefix = _read_exact(stream, 2, name)
        if prefix != GZIP_MAGIC:
            return name, *_read_plain(stream, prefix, name, check)
        compressed = None
        if start is not None:
            compressed = _compressed_size(stream, start)
            stream.seek(start + len(prefix))
        try:
            return name, *_read_gzip(GzipReader(stream, prefix), compressed, name, check)
        except GzipError as exc:
            raise IdxFormatError(f"{name}: {exc}") from exc


def _open_source(source: IdxSource, stack: contextlib.ExitStack) -> tuple[BinaryIO, str]:
    """Return a binary stream for ``source`` and its name; files we open are closed by ``stack``."""
    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise TypeError("read_idx needs a binary file object: open the file with 'rb'")
        raw_name = getattr(source, "name", None)
        name = os.fsdecode(raw_name) if isinstance(raw_name, str | bytes) else "<stream>"
        return source, name
    path = os.fspath(source)
    name = os.fsdecode(path)
    if os.path.isdir(path):
        raise IdxFormatError(f"{name}: is a directory, not an IDX file")
    try:
        return stack.enter_context(open_regular(path)), name
    except NotAFileError as exc:
        raise IdxFormatError(f"{exc}; to read a pipe or device, pass a file object") from None


def _read_plain(
    stream: BinaryIO, prefix: bytes, name: str, check: _HeaderCheck | None
) -> tuple[IdxHeader, np.ndarray]:
    header = _read_header(stream, prefix, name)
    if check is not None:
        check(header, name)
    available = _remaining(stream)
    if available is not None and available != header.nbytes:
        _raise_size_mismatch(header, available, name, "")
    known = available is not None  # a regular file's size: what is there, not what it claims
    return header, _read_data(stream, header, name, known, chunk=None, where="")


def _read_gzip(
    gz: GzipReader, compressed: int | None, name: str, check: _HeaderCheck | None
) -> tuple[IdxHeader, np.ndarray]:
    """Read from an open gzip stream; ``compressed`` is the gzip file's size, if known.

    The size trailer (ISIZE) is never used: it is a claim, like the header's, and a forged one
    must not cost an allocation.  The data is read in bounded pieces.
    """
    header = _read_header(gz, b"", name)
    if check is not None:
        check(header, name)
    if compressed is not None:
        limit = DEFLATE_MAX_RATIO * compressed
        if header.nbytes > limit:
            raise IdxFormatError(
                f"{name}: truncated: header declares {_number(header.nbytes)} bytes of data, but a "
                f"{compressed}-byte gzip file decompresses to at most {limit} bytes"
            )
    where = " after gzip decompression"
    return header, _read_data(gz, header, name, False, chunk=_GZIP_CHUNK, where=where)


def _read_header(stream: BinaryIO, prefix: bytes, name: str) -> IdxHeader:
    raw = prefix + _read_exact(stream, 4 - len(prefix), name)
    if len(raw) == 4 and not raw[:2].strip(b"\x00"):
        raw += _read_exact(stream, 4 * raw[3], name)
    return parse_header(raw, name)


def _read_data(
    stream: BinaryIO, header: IdxHeader, name: str, known: bool, chunk: int | None, where: str
) -> np.ndarray:
    """Read exactly ``header.nbytes`` bytes and check that nothing follows.

    With ``known`` (a regular file whose size matches the header) the result is allocated once
    and filled in place.  Otherwise the data is read in pieces of at most ``_PIECE`` bytes, each
    allocated only once its bytes have arrived, and joined at the end: a header that lies about
    the size costs about twice the data really there, never what it claims.
    """
    try:
        np.broadcast_to(np.zeros((), np.uint8), header.shape)
    except ValueError as exc:
        raise IdxFormatError(
            f"{name}: shape {_shape(header.shape)} cannot be represented as a numpy array ({exc})"
        ) from exc
    nbytes = header.nbytes
    if known:
        buf = np.empty(nbytes, np.uint8)
        got = _fill(stream, memoryview(buf), chunk)
    else:
        buf, got = _read_pieces(stream, nbytes, chunk)
    if got < nbytes:
        _raise_size_mismatch(header, got, name, where)
    extra = len(_read_exact(stream, _TRAIL_PEEK + 1, name))  # bounded: a pipe may never end
    if extra:
        more = "more than " if extra > _TRAIL_PEEK else ""
        _raise_size_mismatch(header, nbytes + min(extra, _TRAIL_PEEK), name, where, more)
    arr = buf.view(header.dtype).reshape(header.shape)
    if not arr.dtype.isnative:
        arr.byteswap(inplace=True)
        arr = arr.view(arr.dtype.newbyteorder("="))
    return arr


def _read_pieces(stream: BinaryIO, nbytes: int, chunk: int | None) -> tuple[np.ndarray, int]:
    """Up to ``nbytes`` bytes of ``stream``, read ``_PIECE`` at a time: ``(uint8 array, count)``;
    the count is below ``nbytes`` only when the stream ended first."""
    pieces: list[np.ndarray] = [np.empty(0, np.uint8)]
    got = 0
    while got < nbytes:
        piece = np.empty(min(_FIRST_ALLOCATION if got == 0 else _PIECE, nbytes - got), np.uint8)
        n = _fill(stream, memoryview(piece), chunk)
        pieces.append(piece[:n])
        got += n
        if n < piece.size:
            break
    return (pieces[-1] if len(pieces) <= 2 else np.concatenate(pieces)), got


def _raise_size_mismatch(
    header: IdxHeader, actual: int, name: str, where: str, more: str = ""
) -> None:
    problem = "truncated" if actual < header.nbytes else "trailing bytes"
    raise IdxFormatError(
        f"{name}: {problem}: header declares {_number(header.nbytes)} bytes of data, file holds "
        f"{more}{actual}{where} (shape {_shape(header.shape)}, {header.dtype.name})"
    )


def _number(n: int) -> str:
    """``n`` in digits, or its order of magnitude when a header declares an absurd size."""
    return str(n) if n < 10**15 else f"~10**{len(str(n)) - 1}"


def _shape(shape: tuple[int, ...]) -> str:
    """``shape`` for messages, abbreviated when it has many dimensions."""
    if len(shape) <= 6:
        return str(shape)
    return f"({', '.join(map(str, shape[:3]))}, ...) with {len(shape)} dimensions"


def _readinto(stream: BinaryIO, view: memoryview) -> int:
    """One ``readinto`` (or ``read`` for objects without it); returns the byte count."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto(view) or 0
    data = stream.read(len(view))
    view[: len(data)] = data
    return len(data)


def _fill(stream: BinaryIO, view: memoryview, chunk: int | None) -> int:
    """Fill ``view`` from ``stream``, ``chunk`` bytes per call; returns bytes read (less at EOF)."""
    got, size = 0, len(view)
    step = chunk or size
    while got < size:
        n = _readinto(stream, view[got : got + step])
        if not n:
            break
        got += n
    return got


def _read_exact(stream: BinaryIO, n: int, name: str) -> bytes:
    """Read up to ``n`` bytes (fewer only at EOF)."""
    parts: list[bytes] = []
    while n > 0:
        data = stream.read(n)
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"{name}: read() returned {type(data).__name__}, expected bytes")
        if not data:
            break
        parts.append(bytes(data))
        n -= len(data)
    return b"".join(parts)


def _tell(stream: BinaryIO) -> int | None:
    """Current position of a seekable stream, else None."""
    try:
        return stream.tell() if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _remaining(stream: BinaryIO) -> int | None:
    """Bytes between the position and the end of a seekable stream, else None."""
    if isinstance(stream, gzip.GzipFile):
        return None
    pos = _tell(stream)
    if pos is None:
        return None
    try:
        end = stream.seek(0, os.SEEK_END)
        stream.seek(pos)
    except (OSError, ValueError):
        return None
    return max(end - pos, 0)


def _compressed_size(stream: BinaryIO, start: int) -> int | None:
    """The size of a seekable gzip stream starting at ``start``; the caller seeks back."""
    if isinstance(stream, gzip.GzipFile):
        return None
    try:
        end = stream.seek(0, os.SEEK_END)
    except (OSError, ValueError):
        return None
    return end - start if end - start >= _GZIP_MIN_SIZE else None


def _type_code_for(dtype: np.dtype) -> int:
    """The IDX type code of ``dtype`` in any byte order; ValueError if IDX cannot store it."""
    if dtype.fields is None and dtype.subdtype is None:
        for code, idx_dtype in TYPE_CODES.items():
            if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
                return code
    raise ValueError(
        f"unsupported dtype {dtype} for IDX; supported: uint8, int8, int16, int32, float32, "
        "float64 (convert first, e.g. array.astype(np.int32))"
    )


def _write_body(out: BinaryIO | gzip.GzipFile, header: IdxHeader, arr: np.ndarray) -> None:
    """Write the header and the items of ``arr`` big-endian, a few MB at a time."""
    out.write(header.to_bytes())
    flat = np.ravel(arr, order="C")
    step = max(1, _WRITE_CHUNK // header.dtype.itemsize)
    for begin in range(0, flat.size, step):
        part = flat[begin : begin + step].astype(header.dtype, copy=False)
        out.write(part.view(np.uint8).data)
