"""Tests for mnistnn.idx: the IDX file format (read, write, header parsing, Idx1/Idx3)."""

from __future__ import annotations

import gzip
import io
import os
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnistnn import idx
from mnistnn.idx import (
    TYPE_CODES,
    Idx1,
    Idx3,
    IdxFormatError,
    IdxHeader,
    parse_header,
    read_idx,
    write_idx,
)

DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.int16,
    0x0C: np.int32,
    0x0D: np.float32,
    0x0E: np.float64,
}
SHAPES = [(), (7,), (2, 3, 4), (0,), (3, 0, 2), (2, 1, 3, 2, 2)]


def extremes(dtype: type) -> np.ndarray:
    """Awkward values of ``dtype``: limits, zero, -1, NaN, infinities, -0.0, subnormals."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        values = [info.min, info.max, 0, 1, info.max - 1, info.min + 1, 42]
        if dt.kind == "i":
            values += [-1, -42]
        return np.array(values, dtype=dt)
    info = np.finfo(dt)
    values = [np.nan, np.inf, -np.inf, -0.0, 0.0, info.max, info.min, info.tiny]
    values += [info.smallest_subnormal, 1.5, -2.25, info.eps]
    return np.array(values, dtype=dt)


def sample(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` filled cyclically with the extremes of ``dtype``."""
    values = extremes(dtype)
    size = int(np.prod(shape))
    return np.resize(values, size).reshape(shape) if size else np.empty(shape, dtype)


def header_bytes(type_code: int, *dims: int) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype (native order), shape and bit pattern, NaN payloads and -0.0 included."""
    assert actual.dtype == expected.dtype
    assert actual.dtype.isnative
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected, equal_nan=True)
    assert actual.tobytes() == np.ascontiguousarray(expected).tobytes()


def error_message(source: object) -> str:
    with pytest.raises(IdxFormatError) as info:
        read_idx(source)  # type: ignore[arg-type]
    return str(info.value)


class Unseekable(io.RawIOBase):
    """A read-only, non-seekable stream over ``data`` (like a pipe or socket)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        return self._inner.readinto(buffer)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("type_code", sorted(DTYPES), ids=lambda c: f"0x{c:02X}")
def test_round_trip(tmp_path: Path, type_code: int, suffix: str, shape: tuple[int, ...]) -> None:
    array = sample(DTYPES[type_code], shape)
    path = tmp_path / f"data.idx{suffix}"
    write_idx(path, array)
    raw = path.read_bytes()
    if suffix:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes([0, 0, type_code, len(shape)])
    result = read_idx(path)
    assert_same(result, array)
    assert result.flags.writeable and result.flags.c_contiguous
    result[...] = 0


@pytest.mark.parametrize("type_code", sorted(DTYPES), ids=lambda c: f"0x{c:02X}")
def test_header_fields_match_written_file(tmp_path: Path, type_code: int) -> None:
    path = tmp_path / "data.idx"
    write_idx(path, sample(DTYPES[type_code], (4, 5)))
    header = parse_header(path.read_bytes())
    itemsize = np.dtype(DTYPES[type_code]).itemsize
    assert header == IdxHeader(
        magic=type_code << 8 | 2,
        type_code=type_code,
        dtype=TYPE_CODES[type_code],
        shape=(4, 5),
        offset=12,
    )
    assert header.dtype.byteorder in ">|"
    assert (header.count, header.nbytes, header.ndim) == (20, 20 * itemsize, 2)
    assert path.stat().st_size == header.offset + header.nbytes


def test_any_byte_order_and_layout_is_written_big_endian_c_order(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    expected = header_bytes(0x0C, 4, 3) + values.T.astype(">i4").tobytes()
    for variant in (values.T, values.astype(">i4").T, values.astype("<i4").T.copy()):
        path = tmp_path / "v.idx"
        write_idx(path, variant)
        assert path.read_bytes() == expected
        assert_same(read_idx(path), values.T.copy())


def test_large_multi_chunk_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "_WRITE_CHUNK", 1000)
    monkeypatch.setattr(idx, "_GZIP_CHUNK", 777)
    monkeypatch.setattr(idx, "_FIRST_ALLOCATION", 100)
    array = np.random.default_rng(1).standard_normal((50, 17, 3))
    for name in ("big.idx", "big.idx.gz"):
        write_idx(tmp_path / name, array)
        assert_same(read_idx(tmp_path / name), array)
        data = (tmp_path / name).read_bytes()
        assert_same(read_idx(Unseekable(data)), array)


# --- exact bytes on disk ---------------------------------------------------------------------


def test_uint8_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "tiny-idx2-ubyte"
    write_idx(path, np.array([[1, 2, 3], [4, 5, 255]], dtype=np.uint8))
    assert path.read_bytes() == (
        b"\x00\x00\x08\x02" + b"\x00\x00\x00\x02\x00\x00\x00\x03" + b"\x01\x02\x03\x04\x05\xff"
    )


def test_int16_and_float32_bytes_are_big_endian(tmp_path: Path) -> None:
    write_idx(tmp_path / "i16", np.array([1, -2, 0x1234], dtype=np.int16))
    assert (tmp_path / "i16").read_bytes() == (
        b"\x00\x00\x0b\x01\x00\x00\x00\x03" + b"\x00\x01" + b"\xff\xfe" + b"\x12\x34"
    )
    write_idx(tmp_path / "f32", np.array([1.0, -2.0], dtype=np.float32))
    assert (tmp_path / "f32").read_bytes() == (
        b"\x00\x00\x0d\x01\x00\x00\x00\x02" + b"\x3f\x80\x00\x00" + b"\xc0\x00\x00\x00"
    )


def test_zero_dim_and_empty_bytes(tmp_path: Path) -> None:
    write_idx(tmp_path / "scalar", np.array(7, dtype=np.uint8))
    assert (tmp_path / "scalar").read_bytes() == b"\x00\x00\x08\x00\x07"
    write_idx(tmp_path / "empty", np.zeros((2, 0), dtype=np.float64))
    assert (tmp_path / "empty").read_bytes() == header_bytes(0x0E, 2, 0)


def test_gzip_output_is_deterministic_and_decompresses_to_plain(tmp_path: Path) -> None:
    array = np.arange(1000, dtype=np.int16).reshape(10, 100)
    write_idx(tmp_path / "a.idx", array)
    write_idx(tmp_path / "a.idx.gz", array)
    first = (tmp_path / "a.idx.gz").read_bytes()
    write_idx(tmp_path / "a.idx.gz", array)
    assert (tmp_path / "a.idx.gz").read_bytes() == first
    assert gzip.decompress(first) == (tmp_path / "a.idx").read_bytes()


def test_hand_made_file_is_read_correctly(tmp_path: Path) -> None:
    path = tmp_path / "hand.idx"
    path.write_bytes(header_bytes(0x0B, 2, 2) + b"\x00\x01\xff\xff\x80\x00\x7f\xff")
    assert_same(read_idx(path), np.array([[1, -1], [-32768, 32767]], dtype=np.int16))


# --- sources: file objects, gzip detection ---------------------------------------------------


def test_read_from_file_objects(tmp_path: Path) -> None:
    array = sample(np.float32, (3, 4))
    write_idx(tmp_path / "a.idx", array)
    write_idx(tmp_path / "a.idx.gz", array)
    for name in ("a.idx", "a.idx.gz"):
        with open(tmp_path / name, "rb") as f:
            assert_same(read_idx(f), array)
            assert not f.closed
        data = (tmp_path / name).read_bytes()
        assert_same(read_idx(io.BytesIO(data)), array)
        assert_same(read_idx(Unseekable(data)), array)
    assert_same(read_idx(str(tmp_path / "a.idx")), array)


def test_read_from_the_middle_of_a_stream() -> None:
    array = np.arange(6, dtype=np.uint8)
    stream = io.BytesIO(b"junk" + header_bytes(0x08, 6) + array.tobytes())
    stream.seek(4)
    assert_same(read_idx(stream), array)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = sample(np.int32, (2, 5))
    write_idx(tmp_path / "real.gz", array)
    write_idx(tmp_path / "plain-idx", array)
    (tmp_path / "real.gz").rename(tmp_path / "compressed-but-no-suffix")
    (tmp_path / "plain-idx").rename(tmp_path / "plain-but-named.gz")
    assert (tmp_path / "compressed-but-no-suffix").read_bytes()[:2] == b"\x1f\x8b"
    assert_same(read_idx(tmp_path / "compressed-but-no-suffix"), array)
    assert_same(read_idx(tmp_path / "plain-but-named.gz"), array)


def test_text_mode_file_object_is_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.idx", np.zeros(3, np.uint8))
    with open(tmp_path / "a.idx", encoding="latin-1") as f, pytest.raises(TypeError, match="rb"):
        read_idx(f)  # type: ignore[arg-type]


# --- malformed files -------------------------------------------------------------------------

GOOD = header_bytes(0x08, 2, 3) + bytes(range(6))
MALFORMED = {
    "zero-byte": (b"", "empty (0 bytes)"),
    "one-byte": (b"\x00", "truncated header"),
    "wrong-magic": (b"\x01\x02" + GOOD[2:], "wrong magic"),
    "html-page": (b"<!DOCTYPE html><html></html>", "wrong magic: the file starts with b'<!DO'"),
    "unknown-type-code": (header_bytes(0x07, 6) + bytes(6), "unknown type code 0x07"),
    "truncated-magic": (b"\x00\x00\x08", "truncated header: the 4-byte magic"),
    "truncated-header": (GOOD[:9], "truncated header: 2 dimensions need 12 header bytes, file"),
    "truncated-data": (GOOD[:-2], "truncated: header declares 6 bytes of data, file holds 4"),
    "trailing-bytes": (GOOD + b"\x00\x00", "trailing bytes: header declares 6 bytes of data, file"),
    "truncated-int32": (
        header_bytes(0x0C, 3) + bytes(11),
        "truncated: header declares 12 bytes of data, file holds 11",
    ),
    "too-many-dims-for-numpy": (header_bytes(0x08, *[1] * 100) + b"\x01", "cannot be represented"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_malformed_file(tmp_path: Path, case: str, compress: bool) -> None:
    content, phrase = MALFORMED[case]
    path = tmp_path / f"bad-{case}.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    message = error_message(path)
    assert str(path) in message
    assert phrase in message
    if compress and "declares" in phrase:
        assert "after gzip decompression" in message
    for stream in (io.BytesIO(path.read_bytes()), Unseekable(path.read_bytes())):
        message = error_message(stream)
        assert message.startswith("<stream>: ")
        assert phrase in message
    with open(path, "rb") as f:
        assert str(path) in error_message(f)


def compressible_idx(rows: int = 2000) -> bytes:
    rng = np.random.default_rng(7)
    images = (rng.random((rows, 28)) < 0.2) * rng.integers(0, 256, (rows, 28))
    return header_bytes(0x08, rows, 28) + images.astype(np.uint8).tobytes()


def test_truncated_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(compressible_idx())
    for cut in (len(compressed) // 2, len(compressed) - 4, 12):
        path = tmp_path / f"cut{cut}.idx.gz"
        path.write_bytes(compressed[:cut])
        message = error_message(path)
        assert str(path) in message and "truncated gzip stream" in message
        assert "truncated gzip stream" in error_message(Unseekable(compressed[:cut]))


@pytest.mark.parametrize("where", [0.25, 0.5, 0.75])
def test_corrupt_gzip(tmp_path: Path, where: float) -> None:
    compressed = bytearray(gzip.compress(compressible_idx()))
    middle = int(len(compressed) * where)
    compressed[middle : middle + 8] = bytes(b ^ 0xFF for b in compressed[middle : middle + 8])
    path = tmp_path / "corrupt-images.gz"
    path.write_bytes(bytes(compressed))
    message = error_message(path)
    assert str(path) in message and "corrupt gzip stream" in message
    assert "corrupt gzip stream" in error_message(Unseekable(bytes(compressed)))


def test_gzip_with_wrong_crc(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(GOOD))
    compressed[-8] ^= 0x01
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(compressed))
    assert "corrupt gzip stream (CRC check failed" in error_message(path)


def test_concatenated_gzip_members_are_read(tmp_path: Path) -> None:
    data = compressible_idx(300)
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    assert read_idx(path).tobytes() == data[12:]


def test_directory_and_missing_path(tmp_path: Path) -> None:
    message = error_message(tmp_path)
    assert str(tmp_path) in message and "is a directory" in message
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_idx_format_error_is_a_value_error() -> None:
    assert issubclass(IdxFormatError, ValueError)
    with pytest.raises(ValueError, match="wrong magic"):
        read_idx(io.BytesIO(b"PK\x03\x04"))


def peak_bytes_while_failing(source: object, *phrases: str) -> int:
    """Peak memory traced (numpy buffers included) while ``read_idx(source)`` fails."""
    tracemalloc.start()
    try:
        message = error_message(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert any(phrase in message for phrase in phrases), message
    return peak


def test_tracemalloc_sees_numpy_buffers() -> None:
    tracemalloc.start()
    try:
        np.empty(20_000_000, np.uint8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak > 20_000_000


HUGE_HEADERS = {
    "2**31-items": header_bytes(0x08, 2**31),
    "2**31-float64": header_bytes(0x0E, 2**31),
    "astronomical-product": header_bytes(0x0C, *[2**32 - 1] * 20),
}


@pytest.mark.parametrize("case", sorted(HUGE_HEADERS))
def test_huge_declared_size_fails_without_allocating(tmp_path: Path, case: str) -> None:
    content = HUGE_HEADERS[case] + np.random.default_rng(3).bytes(1000)
    limit = 10_000_000
    plain = tmp_path / "huge.idx"
    plain.write_bytes(content)
    packed = tmp_path / "huge.idx.gz"
    packed.write_bytes(gzip.compress(content))
    assert packed.stat().st_size < 2000
    for source in (plain, packed):
        assert peak_bytes_while_failing(source, "truncated: header declares") < limit
        with open(source, "rb") as f:
            assert peak_bytes_while_failing(f, "truncated: header declares") < limit
        data = source.read_bytes()
        assert peak_bytes_while_failing(io.BytesIO(data), "truncated: header declares") < limit
        stream = Unseekable(data)
        assert peak_bytes_while_failing(stream, "truncated", "cannot be represented") < limit


def forged_isize_gzip(path: Path, claimed: int, content: bytes) -> Path:
    """A gzip file of an IDX header declaring ``claimed`` uint8 items and only ``content``
    behind it, whose size trailer (ISIZE) is forged to agree with the header."""
    header = header_bytes(0x08, claimed)
    packed = bytearray(gzip.compress(header + content, compresslevel=1))
    packed[-4:] = ((len(header) + claimed) % 2**32).to_bytes(4, "little")
    crc = zlib.crc32(header + content).to_bytes(4, "little")
    assert packed[-8:-4] == crc
    path.write_bytes(packed)
    return path


def test_forged_gzip_size_trailer_costs_no_allocation(tmp_path: Path) -> None:
    """Issue 31 #4: a forged ISIZE that agreed with the header used to be allocated at once
    (24 GiB asked for by a 25 MB file): now only the data really there is held."""
    content = np.random.default_rng(4).bytes(1 << 20)  # incompressible: passes the ratio check
    path = forged_isize_gzip(tmp_path / "forged.gz", 2**30, content)
    assert idx.DEFLATE_MAX_RATIO * path.stat().st_size > 2**30
    with open(path, "rb") as f:
        for source in (path, f):
            peak = peak_bytes_while_failing(source, "length check failed")  # ISIZE is wrong
            assert peak < 16 * len(content)


def test_endless_trailing_data_is_refused_at_once(deadline) -> None:  # type: ignore[no-untyped-def]
    """A stream that never ends (a pipe from /dev/zero) after the data used to be read for ever."""

    class Endless(Unseekable):
        """The data, then zero bytes for ever."""

        def readinto(self, buffer: memoryview) -> int:
            n = super().readinto(buffer)
            if n:
                return n
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    deadline(5)
    message = error_message(Endless(header_bytes(0x08, 10) + bytes(10)))
    assert "trailing bytes: header declares 10 bytes of data, file holds more than" in message
    message = error_message(Endless(gzip.compress(header_bytes(0x08, 10) + bytes(10))))
    assert "zero bytes after the gzip data" in message


@pytest.mark.posix
def test_a_path_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path,
    deadline,  # type: ignore[no-untyped-def]
) -> None:
    """A FIFO with no writer used to block read_idx for ever; a pipe is read as a file object."""
    os.mkfifo(tmp_path / "fifo")
    deadline(5)
    message = error_message(tmp_path / "fifo")
    assert str(tmp_path / "fifo") in message and "FIFO" in message and "file object" in message


def test_zero_size_shape_with_huge_dimensions_is_rejected_cleanly() -> None:
    unrepresentable = io.BytesIO(header_bytes(0x08, *[2**32 - 1] * 3, 0))
    assert "cannot be represented" in error_message(unrepresentable)
    assert read_idx(io.BytesIO(header_bytes(0x08, 2**32 - 1, 0))).shape == (2**32 - 1, 0)


# --- parse_header ----------------------------------------------------------------------------


def test_parse_header_byte_by_byte() -> None:
    raw = b"\x00\x00\x08\x03" + b"\x00\x00\xea\x60" + b"\x00\x00\x00\x1c" * 2 + b"pixels..."
    header = parse_header(raw, "train-images")
    assert header.magic == 0x00000803
    assert header.type_code == 0x08 and header.dtype == np.dtype(np.uint8)
    assert header.shape == (60000, 28, 28) and header.offset == 16
    assert header.count == 60000 * 28 * 28 and header.nbytes == header.count
    assert header.to_bytes() == raw[:16]
    assert repr(header) == (
        "IdxHeader(magic=0x00000803, type_code=0x08, dtype=|u1, shape=(60000, 28, 28), offset=16)"
    )
    scalar = parse_header(b"\x00\x00\x0e\x00")
    assert (scalar.shape, scalar.count, scalar.nbytes, scalar.offset) == ((), 1, 8, 4)
    with pytest.raises(IdxFormatError, match="^labels: truncated header"):
        parse_header(memoryview(raw)[:7], "labels")
    with pytest.raises(IdxFormatError, match="^<bytes>: empty"):
        parse_header(b"")


# --- write_idx errors and atomicity ----------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [np.int64, np.uint16, np.uint32, np.float16, np.complex64, np.bool_, object, "M8[s]"]
)
def test_write_rejects_unsupported_dtypes(tmp_path: Path, dtype: object) -> None:
    array = np.zeros((2, 3), dtype=dtype)
    with pytest.raises(ValueError, match="unsupported dtype") as info:
        write_idx(tmp_path / "x.idx", array)
    assert str(array.dtype) in str(info.value)
    assert "uint8, int8, int16, int32, float32, float64" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_structured_dtype_and_huge_dimension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported dtype"):
        write_idx(tmp_path / "s.idx", np.zeros(2, dtype=[("a", np.uint8)]))
    with pytest.raises(ValueError, match="2\\*\\*32"):
        write_idx(tmp_path / "h.idx", np.empty((2**32, 0), np.uint8))
    write_idx(tmp_path / "ok.idx", np.empty((2**32 - 1, 0), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.idx"]


@pytest.mark.parametrize(
    ("failing", "suffix"),
    [
        ("os.fsync", ""),
        ("os.fsync", ".gz"),
        ("os.replace", ""),
        ("os.replace", ".gz"),
        ("gzip.GzipFile.write", ".gz"),
    ],
)
def test_failed_write_leaves_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, suffix: str
) -> None:
    path = tmp_path / f"labels{suffix}"
    old = np.arange(5, dtype=np.uint8)
    write_idx(path, old)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("simulated failure")

    module, attribute = failing.rsplit(".", 1)
    target = {"os": os, "gzip.GzipFile": gzip.GzipFile}[module]
    monkeypatch.setattr(target, attribute, boom)
    with pytest.raises(OSError, match="simulated failure"):
        write_idx(path, np.arange(10, dtype=np.uint8))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert_same(read_idx(path), old)


def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_idx(tmp_path / "p.idx", np.zeros(1, np.uint8))
    finally:
        os.umask(umask)
    assert (tmp_path / "p.idx").stat().st_mode & 0o777 == 0o644


# --- Idx1 / Idx3 -----------------------------------------------------------------------------


@pytest.fixture
def mnist_like(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    write_idx(tmp_path / "images-idx3-ubyte", images)
    write_idx(tmp_path / "labels-idx1-ubyte.gz", labels)
    return tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte.gz", images, labels


def test_idx3(mnist_like: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    image_path, _, images, _ = mnist_like
    idx3 = Idx3(image_path)
    assert idx3.path == str(image_path)
    assert (idx3.magic, idx3.count, idx3.rows, idx3.cols, len(idx3)) == (0x803, 5, 4, 3, 5)
    assert Idx3.MAGIC == 0x00000803
    assert_same(idx3.data, images)
    assert_same(idx3[2], images[2])
    assert idx3[2].shape == (4, 3)
    assert_same(idx3[1:4], images[1:4])
    assert_same(idx3[-1], images[-1])
    assert_same(idx3[[0, 4]], images[[0, 4]])
    assert [image.shape for image in idx3] == [(4, 3)] * 5
    assert np.asarray(idx3) is idx3.data
    assert_same(np.asarray(idx3, dtype=np.float32), images.astype(np.float32))
    assert not np.shares_memory(np.array(idx3), idx3.data)
    assert repr(idx3) == f"Idx3({str(image_path)!r}, magic=0x00000803, count=5, rows=4, cols=3)"


def test_idx1(mnist_like: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    _, label_path, _, labels = mnist_like
    idx1 = Idx1(label_path)
    assert (idx1.path, idx1.magic, idx1.count, len(idx1)) == (str(label_path), 0x801, 5, 5)
    assert idx1[0] == labels[0] and idx1[0].dtype == np.uint8
    assert_same(idx1[:3], labels[:3])
    assert [int(x) for x in idx1] == labels.tolist()
    assert_same(np.asarray(idx1), labels)
    assert repr(idx1) == f"Idx1({str(label_path)!r}, magic=0x00000801, count=5)"
    with open(label_path, "rb") as f:
        assert Idx1(f).path == str(label_path)
    from_bytes = Idx1(io.BytesIO(label_path.read_bytes()))
    assert repr(from_bytes) == "Idx1('<stream>', magic=0x00000801, count=5)"


def test_wrong_kind_of_file(mnist_like: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    image_path, label_path, _, _ = mnist_like
    with pytest.raises(IdxFormatError) as info:
        Idx3(label_path)
    assert str(info.value) == (
        f"{label_path}: is a label file (1 dimension), not an image file "
        "(Idx3 needs 3 dimensions of uint8, magic 0x00000803)"
    )
    with pytest.raises(IdxFormatError) as info:
        Idx1(image_path)
    assert str(info.value) == (
        f"{image_path}: is an image file (3 dimensions), not a label file "
        "(Idx1 needs 1 dimension of uint8, magic 0x00000801)"
    )


def test_wrong_dtype_is_rejected_before_reading_the_data(tmp_path: Path) -> None:
    path = tmp_path / "floats"
    path.write_bytes(header_bytes(0x0D, 10, 28, 28) + b"short")
    with pytest.raises(IdxFormatError, match="is an IDX file of float32 with 3 dimensions"):
        Idx3(path)
    path.write_bytes(header_bytes(0x08, 10, 28, 28) + b"short")
    with pytest.raises(IdxFormatError, match="truncated: header declares 7840 bytes"):
        Idx3(path)
    with pytest.raises(IdxFormatError, match="is an image file .* not a label file"):
        Idx1(path)


def test_public_api() -> None:
    assert sorted(idx.__all__) == sorted(
        [
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
    )
    assert {code: dt.newbyteorder("=") for code, dt in TYPE_CODES.items()} == {
        code: np.dtype(t) for code, t in DTYPES.items()
    }


def test_hexdump_exact() -> None:
    data = bytes([0x00, 0x00, 0x08, 0x03]) + b"\x00\x00\xea\x60" + b"MNIST!\x7f\n" + b"ab"
    assert idx.hexdump(data) == (
        "00000000  00 00 08 03 00 00 EA 60  4D 4E 49 53 54 21 7F 0A  |.......`MNIST!..|\n"
        "00000010  61 62                                             |ab|"
    )
    lines = idx.hexdump(b"\x01\x02\x03", width=2, offset=0x20).split("\n")
    assert lines == ["00000020  01 02  |..|", "00000022  03     |.|"]
    assert idx.hexdump(b"") == ""
    with pytest.raises(ValueError, match="width must be at least 1"):
        idx.hexdump(b"x", width=0)
