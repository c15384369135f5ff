"""Tests for mnistnn.modelfile: round trip, plain NumPy reading, atomic save, bad files."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnistnn import modelfile
from mnistnn.modelfile import (
    FORMAT_VERSION,
    ModelFormatError,
    load_model,
    read_metadata,
    save_model,
)

META = {
    "class": "NNetworkMinimal",
    "params": {"hidden": [16], "alpha": 0.1, "seed": 0},
    "training": {"iterations": 500, "final_loss": 0.25, "train_accuracy": 0.9},
}
SIZES = {1: [784, 10], 2: [784, 16, 10], 3: [784, 32, 16, 10], 4: [20, 7, 5, 3, 4]}


def make_net(
    sizes: list[int], dtype: type = np.float32, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random weights ``(n_l, n_{l-1})`` and biases ``(n_l,)`` for ``sizes``."""
    rng = np.random.default_rng(seed)
    ws = [
        (rng.standard_normal((n, m)) / np.sqrt(m)).astype(dtype)
        for m, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    bs = [rng.standard_normal(n).astype(dtype) for n in sizes[1:]]
    return ws, bs


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A valid 2-layer float32 model file."""
    ws, bs = make_net(SIZES[2])
    return save_model(tmp_path / "model.npz", ws, bs, META)


def entries(path: Path) -> dict[str, np.ndarray]:
    """Every entry of an .npz, loaded with plain NumPy."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def metadata_array(meta: Any) -> np.ndarray:
    return np.array(json.dumps(meta))


def rewrite(src: Path, dest: Path, *, drop: tuple[str, ...] = (), **changes: Any) -> Path:
    """Copy the model ``src`` to ``dest`` with entries dropped or replaced (raw ``np.savez``)."""
    arrays = entries(src)
    for name in drop:
        del arrays[name]
    arrays.update(changes)
    with open(dest, "wb") as f:
        np.savez(f, **arrays)
    return dest


def with_meta(src: Path, dest: Path, **changes: Any) -> Path:
    """Copy the model ``src`` with metadata keys changed (a value of ``...`` deletes the key)."""
    meta = json.loads(str(entries(src)["metadata"]))
    for key, value in changes.items():
        if value is ...:
            del meta[key]
        else:
            meta[key] = value
    return rewrite(src, dest, metadata=metadata_array(meta))


def softmax_forward(ws: list[np.ndarray], bs: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n_classes, n)`` for images ``x`` (n, ...) in float64."""
    a = x.reshape(len(x), -1).T / 255.0
    for k, (w, b) in enumerate(zip(ws, bs, strict=True), start=1):
        z = w.astype(np.float64) @ a + b.astype(np.float64)[:, None]
        a = np.maximum(z, 0) if k < len(ws) else z
    e = np.exp(a - a.max(axis=0))
    return e / e.sum(axis=0)


def open_fds() -> int | None:
    fd_dir = Path("/proc/self/fd")
    return len(os.listdir(fd_dir)) if fd_dir.is_dir() else None


# --------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_identical(tmp_path: Path, dtype: type, n_layers: int) -> None:
    sizes = SIZES[n_layers]
    ws, bs = make_net(sizes, dtype, seed=n_layers)
    ws[0][0, :3] = [-0.0, 5e-324 if dtype is np.float64 else 1e-45, 1e20]  # 1e20: see below
    path = save_model(tmp_path / "net.npz", ws, bs, META)
    assert path == tmp_path / "net.npz"

    ws2, bs2, meta = load_model(path, expected_class="NNetworkMinimal")
    assert len(ws2) == len(bs2) == n_layers
    for a, b in zip(ws + bs, ws2 + bs2, strict=True):
        assert b.dtype == np.dtype(dtype) and b.shape == a.shape
        assert b.tobytes() == a.tobytes()
        assert b.flags.writeable and b.flags.c_contiguous
        assert not np.shares_memory(a, b)
    assert meta["format"] == "mnistnn-model"
    assert meta["format_version"] == FORMAT_VERSION == 1
    assert meta["class"] == "NNetworkMinimal"
    assert meta["layer_sizes"] == sizes
    assert meta["dtype"] == np.dtype(dtype).name
    assert meta["params"] == META["params"] and meta["training"] == META["training"]
    created = datetime.fromisoformat(meta["created"])
    assert created.utcoffset() == timedelta(0)
    assert isinstance(meta["mnistnn_version"], str) and meta["mnistnn_version"]
    assert read_metadata(path) == meta


def test_save_accepts_any_memory_layout_and_numpy_scalars(tmp_path: Path) -> None:
    ws, bs = make_net([6, 4, 3], np.float64)
    fortran = [np.asfortranarray(w) for w in ws]
    meta = {**META, "training": {"loss": np.float32(0.5), "epochs": np.int64(3)}, "extra": [1]}
    path = save_model(tmp_path / "net.npz", fortran, bs, meta)
    ws2, _, meta2 = load_model(path)
    assert all(
        w2.flags.c_contiguous and np.array_equal(w, w2) for w, w2 in zip(ws, ws2, strict=True)
    )
    assert meta2["training"] == {"loss": 0.5, "epochs": 3}
    assert meta2["extra"] == [1]


def test_save_writes_exactly_to_the_given_path_and_overwrites(tmp_path: Path) -> None:
    ws, bs = make_net([5, 3, 2])
    path = save_model(str(tmp_path / "model.bin"), ws, bs, META)
    assert isinstance(path, Path)
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]

    ws[0][:] = 1.0
    save_model(path, ws, bs, {**META, "class": "NNetworkExtended"})
    ws2, _, meta = load_model(path)
    assert meta["class"] == "NNetworkExtended" and (ws2[0] == 1.0).all()
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]


def test_load_closes_the_file(model: Path, tmp_path: Path) -> None:
    before = open_fds()
    load_model(model)
    read_metadata(model)
    with pytest.raises(ModelFormatError):
        load_model(with_meta(model, tmp_path / "bad.npz", format_version=2))
    assert open_fds() == before


def test_big_endian_arrays_are_read_as_native(model: Path, tmp_path: Path) -> None:
    arrays = entries(model)
    swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in arrays.items() if k != "metadata"}
    path = rewrite(model, tmp_path / "be.npz", **swapped)
    ws, bs, _ = load_model(path)
    assert ws[0].dtype == np.dtype(np.float32) and ws[0].dtype.isnative
    assert np.array_equal(ws[0], arrays["W1"]) and np.array_equal(bs[1], arrays["b2"])


# --------------------------------------------------------------------------------------------
# Plain NumPy


def test_file_is_a_plain_uncompressed_npz(model: Path) -> None:
    with zipfile.ZipFile(model) as zf:
        assert sorted(zf.namelist()) == sorted(
            ["W1.npy", "b1.npy", "W2.npy", "b2.npy", "metadata.npy"]
        )
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
    arrays = entries(model)
    meta = arrays["metadata"]
    assert meta.shape == () and meta.dtype.kind == "U"
    decoded = json.loads(str(meta))
    assert decoded["layer_sizes"] == [784, 16, 10]
    assert arrays["W1"].shape == (16, 784) and arrays["b1"].shape == (16,)
    assert arrays["W2"].shape == (10, 16) and arrays["b2"].shape == (10,)
    ws, bs, _ = load_model(model)
    assert np.array_equal(arrays["W1"], ws[0]) and np.array_equal(arrays["b2"], bs[1])


def docstring_example() -> str:
    """The plain-NumPy code block of the module docstring."""
    doc = modelfile.__doc__
    assert doc is not None
    start = doc.index("Reading a model with plain NumPy")
    start = doc.index("::\n", start) + 3
    block = doc[start:].lstrip("\n").split("\n\n")[0]
    return textwrap.dedent(block)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_docstring_example_predicts_like_a_direct_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: type, n_layers: int
) -> None:
    code = docstring_example()
    assert 'np.load("model.npz", allow_pickle=False)' in code
    assert len(code.strip().splitlines()) <= 6
    ws, bs = make_net(SIZES[n_layers], dtype, seed=10 + n_layers)
    save_model(tmp_path / "model.npz", ws, bs, META)
    x = np.random.default_rng(1).integers(0, 256, size=(200, 28, 28), dtype=np.uint8)

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"np": np, "X": x}
    exec(code, namespace)

    expected = softmax_forward(ws, bs, x).argmax(axis=0)
    assert namespace["predictions"].shape == (200,)
    assert np.array_equal(namespace["predictions"], expected)
    assert len(np.unique(expected)) > 1  # a meaningful comparison


# --------------------------------------------------------------------------------------------
# Atomic save


def _savez_that_crashes(*args: Any, **kwargs: Any) -> None:
    f = args[0]
    f.write(b"PK\x03\x04 half of a model")
    raise RuntimeError("simulated crash in np.savez")


@pytest.mark.parametrize("crash", ["savez", "fsync", "replace", "interrupt"])
def test_crash_mid_save_leaves_previous_file_untouched(
    model: Path, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    before = model.read_bytes()
    folder_before = sorted(os.listdir(model.parent))

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("simulated disk failure")

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    if crash == "savez":
        monkeypatch.setattr(np, "savez", _savez_that_crashes)
        expected: type[BaseException] = RuntimeError
    elif crash == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
        expected = OSError
    elif crash == "replace":
        monkeypatch.setattr(os, "replace", fail)
        expected = OSError
    else:
        monkeypatch.setattr(np, "savez", interrupt)
        expected = KeyboardInterrupt

    ws, bs = make_net(SIZES[2], seed=99)
    with pytest.raises(expected):
        save_model(model, ws, bs, META)
    monkeypatch.undo()

    assert model.read_bytes() == before
    assert sorted(os.listdir(model.parent)) == folder_before  # no temporary file left
    load_model(model)


def test_failed_first_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "savez", _savez_that_crashes)
    ws, bs = make_net([4, 3])
    with pytest.raises(RuntimeError):
        save_model(tmp_path / "model.npz", ws, bs, META)
    assert os.listdir(tmp_path) == []


def test_save_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stale = tmp_path / f".model.npz.{int(child.stdout)}-{'0' * 12}.tmp"  # its process is gone
    stale.write_bytes(b"PK\x03\x04 half of a model")
    other = tmp_path / f".other.npz.{int(child.stdout)}-{'0' * 12}.tmp"  # another target's
    other.write_bytes(b"")
    ws, bs = make_net([4, 3])
    save_model(tmp_path / "model.npz", ws, bs, META)
    assert sorted(os.listdir(tmp_path)) == sorted(["model.npz", other.name])


# --------------------------------------------------------------------------------------------
# Save validation


def _nan_weight(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    ws[1][0, 0] = np.nan


def _inf_bias(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    bs[0][2] = -np.inf


def _broken_chain(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    ws[1] = np.zeros((10, 15), np.float32)


def _bias_shape(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    bs[1] = np.zeros((10, 1), np.float32)


def _weight_1d(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    ws[0] = np.zeros(784, np.float32)


def _mixed_dtype(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    bs[0] = bs[0].astype(np.float64)


def _int_dtype(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    ws[:] = [w.astype(np.int32) for w in ws]
    bs[:] = [b.astype(np.int32) for b in bs]


def _missing_bias(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    del bs[1]


def _no_layers(ws: list[np.ndarray], bs: list[np.ndarray]) -> None:
    ws.clear()
    bs.clear()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_nan_weight, "W2 contains 1 NaN or infinite"),
        (_inf_bias, "b1 contains 1 NaN or infinite"),
        (_broken_chain, "W2 must have shape (n_2, 16)"),
        (_bias_shape, "b2 must have shape (10,)"),
        (_weight_1d, "W1 must be 2-d"),
        (_mixed_dtype, "share one dtype"),
        (_int_dtype, "float32 or float64"),
        (_missing_bias, "2 weight matrices but 1 bias"),
        (_no_layers, "at least one layer"),
    ],
)
def test_save_refuses_invalid_arrays(tmp_path: Path, damage: Any, message: str) -> None:
    ws, bs = make_net(SIZES[2])
    damage(ws, bs)
    with pytest.raises(ValueError) as info:
        save_model(tmp_path / "model.npz", ws, bs, META)
    assert not isinstance(info.value, ModelFormatError)
    assert message in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"params": {}}, "name the model's class"),
        ({**META, "layer_sizes": [784, 10]}, "metadata['layer_sizes']"),
        ({**META, "dtype": "float64"}, "metadata['dtype']"),
        ({**META, "format_version": 2}, "metadata['format_version']"),
        ({**META, "params": [1, 2]}, "metadata['params'] must be a dict"),
        ({**META, "training": {"loss": float("nan")}}, "cannot be stored as JSON"),
        ({**META, "training": {"model": object()}}, "cannot be stored as JSON"),
    ],
)
def test_save_refuses_invalid_metadata(tmp_path: Path, meta: dict, message: str) -> None:
    ws, bs = make_net(SIZES[2])
    with pytest.raises(ValueError) as info:
        save_model(tmp_path / "model.npz", ws, bs, meta)
    assert message in str(info.value)
    assert os.listdir(tmp_path) == []


def test_save_accepts_matching_computed_keys(tmp_path: Path) -> None:
    ws, bs = make_net(SIZES[2])
    meta = {**META, "layer_sizes": (784, 16, 10), "dtype": "float32", "created": "2024-01-01"}
    save_model(tmp_path / "model.npz", ws, bs, meta)
    assert read_metadata(tmp_path / "model.npz")["created"] == "2024-01-01"


# --------------------------------------------------------------------------------------------
# Bad files


def assert_refused(path: Path, *fragments: str, expected_class: str | None = None) -> str:
    """load_model and read_metadata raise ModelFormatError naming the file and the problem."""
    with pytest.raises(ModelFormatError) as info:
        load_model(path, expected_class=expected_class)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    if expected_class is None:
        with pytest.raises(ModelFormatError):
            read_metadata(path)
    return message


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.npz")


@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_file(model: Path, tmp_path: Path, fraction: float) -> None:
    data = model.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: max(1, int(len(data) * fraction))])
    assert_refused(bad)


@pytest.mark.parametrize("cut", [1, 2, 22])
def test_truncated_by_a_few_bytes(model: Path, tmp_path: Path, cut: int) -> None:
    bad = tmp_path / "cut.npz"
    bad.write_bytes(model.read_bytes()[:-cut])
    assert_refused(bad, "truncated or corrupt")


def test_corrupted_array_data(model: Path, tmp_path: Path) -> None:
    data = bytearray(model.read_bytes())
    with zipfile.ZipFile(model) as zf:
        info = zf.getinfo("W1.npy")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # inside W1's .npy data
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        load_model(bad)


def test_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.npz"
    bad.touch()
    assert_refused(bad, "empty")


@pytest.mark.parametrize("prefix", [b"", b"PK\x03\x04"])
def test_random_bytes(tmp_path: Path, prefix: bytes) -> None:
    bad = tmp_path / "random.npz"
    bad.write_bytes(prefix + np.random.default_rng(3).bytes(5000))
    assert_refused(bad)


def test_text_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.npz"
    bad.write_text("W1 = [[0.1, 0.2]]\n")
    assert_refused(bad, "not a .npz (zip) archive")


def test_single_npy_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.npy"
    np.save(bad, np.zeros((3, 3)))
    assert_refused(bad, "single .npy array")


def test_zip_without_metadata(model: Path, tmp_path: Path) -> None:
    assert_refused(rewrite(model, tmp_path / "bad.npz", drop=("metadata",)), "no 'metadata'")


def test_empty_zip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w"):
        pass
    assert_refused(bad, "no 'metadata'")


def test_zip_with_a_non_array_member(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(model.read_bytes())
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("README.txt", "hello")
    assert_refused(bad, "unexpected non-array entries ['README.txt']")


def test_member_that_is_not_npy(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("metadata.npy", "not an array")
    assert_refused(bad, "'metadata.npy' is not a valid .npy array")


@pytest.mark.parametrize(
    "metadata",
    [np.array(b"{}"), np.array(["{}"]), np.array(1.0)],
    ids=["bytes", "1-d", "float"],
)
def test_metadata_of_wrong_type(model: Path, tmp_path: Path, metadata: np.ndarray) -> None:
    bad = rewrite(model, tmp_path / "bad.npz", metadata=metadata)
    assert_refused(bad, "'metadata' must be a 0-d unicode string array")


def test_metadata_not_json(model: Path, tmp_path: Path) -> None:
    bad = rewrite(model, tmp_path / "bad.npz", metadata=np.array("{'format': 'mnistnn-model'"))
    assert_refused(bad, "'metadata' is not valid JSON")


def test_metadata_not_an_object(model: Path, tmp_path: Path) -> None:
    bad = rewrite(model, tmp_path / "bad.npz", metadata=metadata_array([1, 2]))
    assert_refused(bad, "must be a JSON object")


@pytest.mark.parametrize("marker", ["keras-model", None, ...])
def test_wrong_format_marker(model: Path, tmp_path: Path, marker: Any) -> None:
    bad = with_meta(model, tmp_path / "bad.npz", format=marker)
    assert_refused(bad, "not an mnistnn model file")


def test_newer_format_version(model: Path, tmp_path: Path) -> None:
    bad = with_meta(model, tmp_path / "bad.npz", format_version=2)
    assert_refused(bad, "format_version 2", "newer mnistnn", "upgrade")


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, 1.5, True, None, ...])
def test_unknown_format_version(model: Path, tmp_path: Path, version: Any) -> None:
    bad = with_meta(model, tmp_path / "bad.npz", format_version=version)
    assert_refused(bad, "unknown format_version")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("class", ..., "'class' must be a non-empty string"),
        ("class", "", "'class' must be a non-empty string"),
        ("layer_sizes", ..., "'layer_sizes' must be a list"),
        ("layer_sizes", [784], "'layer_sizes' must be a list"),
        ("layer_sizes", [784, 16.0, 10], "'layer_sizes' must be a list"),
        ("layer_sizes", [784, 0, 10], "'layer_sizes' must be a list"),
        ("dtype", "float16", "'dtype' must be 'float32' or 'float64'"),
        ("params", ..., "'params' must be a dict"),
        ("training", "fast", "'training' must be a dict"),
        ("created", ..., "'created' must be a str"),
        ("mnistnn_version", 1, "'mnistnn_version' must be a str"),
    ],
)
def test_invalid_metadata_values(
    model: Path, tmp_path: Path, key: str, value: Any, fragment: str
) -> None:
    assert_refused(with_meta(model, tmp_path / "bad.npz", **{key: value}), fragment)


def test_unknown_metadata_keys_are_kept(model: Path, tmp_path: Path) -> None:
    path = with_meta(model, tmp_path / "more.npz", notes="retrained on Fashion-MNIST")
    assert load_model(path)[2]["notes"] == "retrained on Fashion-MNIST"


def test_missing_entry(model: Path, tmp_path: Path) -> None:
    assert_refused(rewrite(model, tmp_path / "bad.npz", drop=("b2",)), "missing entries ['b2']")


def test_extra_entry(model: Path, tmp_path: Path) -> None:
    bad = rewrite(model, tmp_path / "bad.npz", W3=np.zeros((10, 10), np.float32))
    assert_refused(bad, "unexpected entries ['W3']")


def test_layer_sizes_disagree_with_entries(model: Path, tmp_path: Path) -> None:
    bad = with_meta(model, tmp_path / "bad.npz", layer_sizes=[784, 10])
    assert_refused(bad, "unexpected entries ['W2', 'b2']")


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The header of an .npy file holding ``shape`` of ``descr``, without its data."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return out.getvalue()


def test_headers_that_promise_more_data_than_the_file_holds(model: Path, tmp_path: Path) -> None:
    """A 3 KB file whose metadata and .npy headers agree on a 784 -> 2**31 -> 10 network: the
    headers are checked against the bytes each entry holds before anything is allocated."""
    n = 2**31
    meta = json.loads(str(entries(model)["metadata"]))
    meta["layer_sizes"] = [784, n, 10]
    bad = tmp_path / "huge.npz"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, shape in [("W1", (n, 784)), ("b1", (n,)), ("W2", (10, n)), ("b2", (10,))]:
            zf.writestr(f"{name}.npy", npy_header("<f4", shape) + bytes(64))
        data = io.BytesIO()
        np.save(data, metadata_array(meta))
        zf.writestr("metadata.npy", data.getvalue())
    tracemalloc.start()
    try:
        assert_refused(bad, "'W1.npy' declares shape (2147483648, 784)", "holds 64 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # 6 TiB before


def test_entry_sizes_must_fit_the_file(model: Path, tmp_path: Path) -> None:
    """The zip directory says how big each entry is; a size the file cannot hold is refused."""
    data = bytearray(model.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first entry of the zip's central directory
    while data[central + 46 : central + 52] != b"W1.npy":
        central = data.index(b"PK\x01\x02", central + 4)
    data[central + 24 : central + 28] = (2**31).to_bytes(4, "little")  # uncompressed size
    bad = tmp_path / "sizes.npz"
    bad.write_bytes(bytes(data))
    assert_refused(bad, "'W1.npy' has inconsistent sizes")


def test_metadata_nested_too_deeply(model: Path, tmp_path: Path) -> None:
    text = str(entries(model)["metadata"])[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    bad = rewrite(model, tmp_path / "deep.npz", metadata=np.array(text))
    assert_refused(bad, "nested too deeply")


def test_layer_sizes_longer_than_the_archive(model: Path, tmp_path: Path) -> None:
    bad = with_meta(model, tmp_path / "bad.npz", layer_sizes=[784] + [10] * 1_000_000)
    message = assert_refused(bad, "lists 1000000 layers", "holds only 5 entries")
    assert len(message) < 300


@pytest.mark.parametrize(
    ("name", "array", "fragment"),
    [
        ("W2", np.zeros((10, 15), np.float32), "W2 has shape (10, 15)"),
        ("W1", np.zeros((784, 16), np.float32), "W1 has shape (784, 16)"),
        ("b1", np.zeros((16, 1), np.float32), "b1 has shape (16, 1)"),
        ("b2", np.zeros((), np.float32), "b2 has shape ()"),
    ],
)
def test_wrong_shape(
    model: Path, tmp_path: Path, name: str, array: np.ndarray, fragment: str
) -> None:
    bad = rewrite(model, tmp_path / "bad.npz", **{name: array})
    assert_refused(bad, fragment, "needs")


def test_mixed_dtype(model: Path, tmp_path: Path) -> None:
    b1 = entries(model)["b1"].astype(np.float64)
    bad = rewrite(model, tmp_path / "bad.npz", b1=b1)
    assert_refused(bad, "['float32', 'float64']", "one dtype")


def test_dtype_disagrees_with_metadata(model: Path, tmp_path: Path) -> None:
    bad = with_meta(model, tmp_path / "bad.npz", dtype="float64")
    assert_refused(bad, "metadata says 'float64'")


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, np.bool_])
def test_non_float_dtype(model: Path, tmp_path: Path, dtype: type) -> None:
    arrays = entries(model)
    cast = {k: v.astype(dtype) for k, v in arrays.items() if k != "metadata"}
    bad = rewrite(model, tmp_path / "bad.npz", **cast)
    assert_refused(bad, "must be float32 or float64")


@pytest.mark.parametrize(("name", "value"), [("W1", np.nan), ("b2", np.inf), ("W2", -np.inf)])
def test_non_finite_values(model: Path, tmp_path: Path, name: str, value: float) -> None:
    array = entries(model)[name].copy()
    array.flat[3] = value
    bad = rewrite(model, tmp_path / "bad.npz", **{name: array})
    with pytest.raises(ModelFormatError, match=f"{name} contains NaN or infinite") as info:
        load_model(bad)
    assert str(bad) in str(info.value)
    # read_metadata reads only the headers, so it does not see the values
    assert read_metadata(bad)["layer_sizes"] == [784, 16, 10]


def test_wrong_class(model: Path) -> None:
    assert_refused(
        model,
        "this file holds a NNetworkMinimal",
        "load it with NNetworkMinimal.load",
        expected_class="NNetworkExtended",
    )
    assert load_model(model, expected_class="NNetworkMinimal")[2]["class"] == "NNetworkMinimal"


# --------------------------------------------------------------------------------------------
# Pickles are never loaded


class TouchOnUnpickle:
    """Unpickling this object creates the file ``marker`` (a harmless stand-in for an exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def evil_array(marker: Path) -> np.ndarray:
    array = np.empty(1, dtype=object)
    array[0] = TouchOnUnpickle(marker)
    return array


def test_the_pickle_payload_works_when_loaded_unsafely(tmp_path: Path) -> None:
    """Control for the tests below: the payload does run if a loader allows pickles."""
    marker = tmp_path / "executed"
    path = tmp_path / "evil.npz"
    np.savez(path, W1=evil_array(marker))
    with np.load(path, allow_pickle=True) as npz:
        npz["W1"]
    assert marker.exists()


@pytest.mark.parametrize("entry", ["W1", "b2", "metadata"])
def test_object_arrays_are_refused_unexecuted(model: Path, tmp_path: Path, entry: str) -> None:
    marker = tmp_path / "executed"
    bad = rewrite(model, tmp_path / "evil.npz", **{entry: evil_array(marker)})
    assert_refused(bad, "contains pickled data", "refusing to load", f"['{entry}']")
    assert_refused(bad, "contains pickled data", expected_class="NNetworkMinimal")
    assert not marker.exists()


def test_object_array_with_unknown_name_is_refused_unexecuted(model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    bad = rewrite(model, tmp_path / "evil.npz", payload=evil_array(marker))
    assert_refused(bad, "contains pickled data")
    assert not marker.exists()


# --------------------------------------------------------------------------- issue 31


def patched_central_directory(src: Path, dest: Path, *, flag: int = 0, method: int | None = None):
    """A copy of ``src`` whose central-directory records get ``flag`` bits (1: encrypted) or
    compression ``method``: what another zip tool might write."""
    data = bytearray(src.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + 8 : at + 10] = (int.from_bytes(data[at + 8 : at + 10], "little") | flag).to_bytes(
            2, "little"
        )
        if method is not None:
            data[at + 10 : at + 12] = method.to_bytes(2, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    dest.write_bytes(data)
    return dest


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"flag": 1}, "is encrypted"),
        ({"method": 93}, "compression method 93"),
        ({"method": zipfile.ZIP_BZIP2}, "compression method 12"),
        ({"method": zipfile.ZIP_LZMA}, "compression method 14"),
    ],
    ids=["encrypted", "method-93", "bzip2", "lzma"],
)
def test_entries_zipfile_cannot_or_should_not_read(
    model: Path, tmp_path: Path, change: dict[str, int], phrase: str
) -> None:
    """Issue 31 #2: RuntimeError / NotImplementedError used to escape from load and metadata."""
    bad = patched_central_directory(model, tmp_path / "bad.npz", **change)
    for read in (load_model, read_metadata):
        with pytest.raises(ModelFormatError, match=phrase):
            read(bad)


def test_a_corrupt_deflate_stream_is_a_model_format_error(model: Path, tmp_path: Path) -> None:
    """zlib.error used to escape from a savez_compressed file whose data was damaged."""
    packed = io.BytesIO()
    np.savez_compressed(packed, **entries(model))
    data = bytearray(packed.getvalue())
    first = data.find(b"PK\x03\x04")
    name_len, extra_len = (
        int.from_bytes(data[first + k : first + k + 2], "little")
        for k in (26, 28)
    )
    start = first + 30 + name_len + extra_len
    data[start : start + 8] = b"\xff" * 8
    (tmp_path / "bad.npz").write_bytes(data)
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        load_model(tmp_path / "bad.npz")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_that_could_overflow_are_refused(tmp_path: Path, dtype: type) -> None:
    """Issue 31 #3: finite weights of 3e38 loaded, and predict printed 'nan%'."""
    ws, bs = make_net(SIZES[2], dtype, seed=0)
    huge = float(np.finfo(dtype).max) / 10
    for name, value in (("W1", huge), ("W2", huge), ("b2", 6 * huge)):
        bad_ws, bad_bs = [w.copy() for w in ws], [b.copy() for b in bs]
        target = {"W1": bad_ws[0], "W2": bad_ws[1], "b2": bad_bs[1]}[name]
        target.flat[0] = value
        path = save_model(tmp_path / f"{name}.npz", bad_ws, bad_bs, META)
        layer = name[1]
        with pytest.raises(ModelFormatError, match=f"layer {layer} can reach .* overflow"):
            load_model(path)
    # The bound is far from any trained network: weights of 1e3 everywhere load.
    big_ws = [np.full_like(w, 1e3) for w in ws]
    load_model(save_model(tmp_path / "big.npz", big_ws, bs, META))
