"""Tests for mnistnn._gzip, the package's one gzip reader (used by idx and datasets)."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from mnistnn._gzip import MAX_PADDING, GzipError, GzipReader, open_content

DATA = np.random.default_rng(0).integers(0, 4, 300_000, dtype=np.uint8).tobytes()


def read_all(stream: io.RawIOBase, step: int = 65536) -> bytes:
    parts = []
    while chunk := stream.read(step):
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("step", [1, 1000, 1 << 20])
def test_reads_what_gzip_wrote_in_any_step(step: int) -> None:
    compressed = gzip.compress(DATA[: 20_000 if step == 1 else None])
    expected = DATA[: 20_000 if step == 1 else None]
    assert read_all(GzipReader(io.BytesIO(compressed)), step) == expected


def test_members_and_zero_padding_as_gzip_accepts_them() -> None:
    compressed = gzip.compress(DATA[:1000]) + b"\0" * 700 + gzip.compress(DATA[1000:]) + b"\0" * 9
    assert gzip.decompress(compressed) == DATA  # the standard library agrees
    assert read_all(GzipReader(io.BytesIO(compressed))) == DATA


def test_prefix_already_read_by_the_caller() -> None:
    source = io.BytesIO(gzip.compress(DATA))
    prefix = source.read(5)
    assert read_all(GzipReader(source, prefix)) == DATA


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: c[:-4], "truncated"),
        (lambda c: c[:10], "truncated"),
        (lambda c: b"", "truncated"),
        (lambda c: c[:-8] + bytes([c[-8] ^ 1]) + c[-7:], "CRC check failed"),
        (lambda c: c[:-1] + bytes([c[-1] ^ 1]), "length check failed"),
        (lambda c: c + b"garbage", "corrupt gzip stream"),
    ],
    ids=["no-trailer", "header-only", "empty", "crc", "length", "trailing-garbage"],
)
def test_damaged_data_is_a_gzip_error(damage, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GzipError, match=message):
        read_all(GzipReader(io.BytesIO(damage(gzip.compress(DATA)))))


def test_output_is_bounded_by_the_request() -> None:
    """A bomb (1 GB of zeros in about 1 MB) gives no more than what was asked for per call."""
    bomb = gzip.compress(bytes(10_000_000), compresslevel=9) * 100
    reader = GzipReader(io.BytesIO(bomb))
    buffer = bytearray(4096)
    assert reader.readinto(memoryview(buffer)) == 4096
    assert reader.read(10) == bytes(10)


@pytest.mark.parametrize("kind", ["plain", "gzip"])
def test_open_content_decides_by_the_first_two_bytes(kind: str) -> None:
    raw = DATA if kind == "plain" else gzip.compress(DATA)
    assert read_all(open_content(io.BytesIO(raw))) == DATA
    assert read_all(open_content(io.BytesIO(b"\x1f"))) == b"\x1f"  # too short to be gzip


def test_zero_padding_is_bounded() -> None:
    """Issue 31 #8: zero bytes after the last member used to be skipped without end."""
    packed = gzip.compress(b"data")
    assert read_all(GzipReader(io.BytesIO(packed + bytes(MAX_PADDING)))) == b"data"
    with pytest.raises(GzipError, match="zero bytes after the gzip data"):
        read_all(GzipReader(io.BytesIO(packed + bytes(MAX_PADDING + 1))))
