"""Read gzip data as a stream, in bounded steps: the one gzip reader of the package.

The IDX reader (:mod:`mnistnn.idx`) and the dataset downloads (:mod:`mnistnn.datasets`) both
read through :class:`GzipReader`.  It accepts what ``gzip`` accepts (several members one after
the other, zero bytes padding the end, up to :data:`MAX_PADDING` of them: a source that never
ends, such as a pipe from ``/dev/zero``, is refused, not read for ever) and checks every member's
CRC-32 and length.  Each call
decompresses at most as many bytes as the caller asked for, so a caller that knows how much
data to expect reads that much plus one byte and stops: a small file that would decompress to
gigabytes (a gzip bomb) costs no more than the data expected.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

__all__ = [
    "DEFLATE_MAX_RATIO",
    "GZIP_MAGIC",
    "MAX_PADDING",
    "GzipError",
    "GzipReader",
    "Prefixed",
    "open_content",
]

GZIP_MAGIC = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032  # the most bytes deflate can make of one compressed byte (RFC 1951)
_CHUNK = 1 << 20  # compressed bytes read from the source at a time
MAX_PADDING = 1 << 20
"""The most zero bytes accepted after the last gzip member (tape blocks pad with far fewer)."""


class GzipError(ValueError):
    """The gzip data is truncated or corrupt; the message says which."""


class GzipReader(io.RawIOBase):
    """A readable stream of the decompressed content of the gzip data in ``source``.

    ``prefix`` holds bytes already read from the start of ``source`` (e.g. the magic bytes a
    caller looked at).  Raises :class:`GzipError` when the data ends early or is corrupt.
    """

    def __init__(self, source: BinaryIO, prefix: bytes = b"") -> None:
        self._source = source
        self._pending = prefix  # compressed bytes not yet given to the decompressor
        self._decompressor = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        self._done = False
        self._padding = 0  # zero bytes skipped since the last member ended

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Decompress up to ``len(buffer)`` bytes into ``buffer``; 0 only at the end."""
        view = memoryview(buffer).cast("B")
        while not self._done and len(view):
            if not self._pending and not self._refill():
                continue
            if self._decompressor.eof:  # a member ended: zero padding, or another member
                stripped = self._pending.lstrip(b"\x00")
                self._padding += len(self._pending) - len(stripped)
                self._pending = stripped
                if self._padding > MAX_PADDING:
                    raise GzipError(f"more than {MAX_PADDING:,} zero bytes after the gzip data")
                if not self._pending:
                    continue
                self._decompressor = zlib.decompressobj(wbits=31)
                self._padding = 0
            try:
                block = self._decompressor.decompress(self._pending, len(view))
            except zlib.error as exc:
                raise GzipError(f"corrupt gzip stream ({_explain(exc)})") from None
            d = self._decompressor
            self._pending = d.unused_data if d.eof else d.unconsumed_tail
            if block:
                view[: len(block)] = block
                return len(block)
        return 0

    def _refill(self) -> bool:
        """Read more compressed bytes; False at the end of the source, which must end a member."""
        self._pending = self._source.read(_CHUNK) or b""
        if self._pending:
            return True
        if not self._decompressor.eof:
            raise GzipError("truncated gzip stream (it ends inside a member)")
        self._done = True
        return False


def _explain(exc: zlib.error) -> str:
    """zlib's message, with its name for a failed CRC-32 or length check made plain."""
    text = str(exc)
    for zlib_words, plain in (
        ("incorrect data check", "CRC check failed"),
        ("incorrect length check", "length check failed"),
    ):
        if zlib_words in text:
            return f"{plain}: {text}"
    return text


class Prefixed(io.RawIOBase):
    """A readable stream of ``prefix`` followed by the rest of ``source``."""

    def __init__(self, prefix: bytes, source: BinaryIO) -> None:
        self._prefix = prefix
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._source.read(len(view)) or b""
        view[: len(data)] = data
        return len(data)


def open_content(source: BinaryIO) -> io.RawIOBase:
    """The content of ``source``: decompressed if it starts with the gzip magic ``1f 8b``,
    else as it is.  Looks at the first two bytes only, so pipes and downloads work too."""
    prefix = b""
    while len(prefix) < 2 and (more := source.read(2 - len(prefix))):
        prefix += more
    if prefix[:2] == GZIP_MAGIC:
        return GzipReader(source, prefix)
    return Prefixed(prefix, source)
