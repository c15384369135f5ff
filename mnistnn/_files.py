"""Writing files safely: atomically, and without leaving temporaries behind for ever.

Every file the package writes (IDX files, model files, downloaded data, the data folder's
stamp) goes through :func:`atomic_write`: the content is written to a temporary sibling of the
target, flushed to disk, then renamed over the target, so the target is either the old file or
the complete new one, never a partial file.

Temporaries (files, and the work folders of :func:`temp_dir`) are named
``.<target name>.<process id>-<12 hex digits>.tmp`` (the target name shortened so that the whole
name stays within the 255 bytes file systems allow).  A process killed with ``kill -9`` cannot
remove its own; :func:`remove_stale` removes those whose process is gone, and nothing else.

What may be written over is decided here, once (:func:`writable_target`): a regular file, or
nothing yet.  A folder, a device, a FIFO or a socket is never replaced (:class:`NotAFileError`);
a symbolic link is written *through*: the file it leads to is replaced atomically and the link
stays, as a shell's ``>`` would do.  Reading goes through :func:`open_regular`, which refuses the
same kinds of path without blocking (a FIFO with no writer would block ``open`` for ever).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "NotAFileError",
    "atomic_write",
    "check_writable",
    "open_regular",
    "remove_stale",
    "temp_dir",
    "writable_target",
]

_STARTED = time.time()  # no temporary of this process can be older than this module
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<pid>[0-9]+)-[0-9a-f]{12}\.tmp$")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX only; Windows has no FIFOs to block on
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | _NONBLOCK
NAME_MAX = 255
"""The longest file name (in bytes) that common file systems allow (ext4, APFS, NTFS)."""
_STEM_MAX = NAME_MAX - len(".") - len(".4294967295-0123456789ab.tmp")  # room for any pid
_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
)


class NotAFileError(OSError):
    """A path that exists but is not a regular file (a device, FIFO, socket...): mnistnn neither
    replaces nor reads one.  ``filename`` is the path, ``strerror`` says what it is."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is, when it is not a regular file; else None."""
    return next((name for test, name in _KINDS if test(mode)), None)


def _refuse(path: str | os.PathLike[str], kind: str, what: str) -> OSError:
    """The error for a ``path`` of ``kind`` that is not a regular file; ``what`` is the advice."""
    if kind == "folder":
        return IsADirectoryError(errno.EISDIR, f"is a folder, not a file; {what}", os.fspath(path))
    return NotAFileError(errno.EEXIST, f"is a {kind}, not a regular file; {what}", os.fspath(path))


def _stem(target_name: str) -> str:
    """``target_name``, shortened (at a character) so a temporary's name fits in NAME_MAX."""
    while len(os.fsencode(target_name)) > _STEM_MAX:
        target_name = target_name[:-1]
    return target_name


def _temp_name(target_name: str) -> str:
    return f".{_stem(target_name)}.{os.getpid()}-{secrets.token_hex(6)}.tmp"


def writable_target(path: str | os.PathLike[str]) -> Path:
    """The file that writing ``path`` replaces: ``path`` itself, or for a symbolic link the
    file it leads to (the link is kept, as a shell's ``>`` keeps it).

    Raises ``IsADirectoryError`` for a folder and :class:`NotAFileError` for anything else that
    is not a regular file (a device, FIFO or socket, or a link to one), naming ``path``: the
    package never replaces those (``/dev/null`` stays ``/dev/null``, even for root).
    """
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    kind = _kind(mode)
    if kind is not None:
        via = "" if target == Path(path) else f" (a link to {target}, which is a {kind})"
        raise _refuse(path, kind, f"mnistnn replaces only regular files{via}: choose another path")
    return target


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``open(path, "rb")`` for a regular file (symbolic links followed); anything else is
    refused at once, as by :func:`writable_target`, without blocking (a FIFO is opened
    non-blocking, so one with no writer cannot hang the caller).  To read a pipe, open it
    yourself and pass the file object where a reader accepts one."""
    fd = os.open(path, _READ_FLAGS)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _refuse(path, kind, "mnistnn reads only regular files")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _naming(exc: OSError, target: Path) -> OSError:
    """``exc`` again, but naming ``target`` (the path the caller gave), not our temporary."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, os.fspath(target))


def _create(target: Path, named: str | os.PathLike[str]) -> tuple[int, Path]:
    """Create an empty temporary sibling of ``target``: ``(fd, path)``; errors name ``named``.

    Mode 0o666 lets the umask decide, so the file gets the permissions of any ordinary new file.
    """
    while True:
        tmp = target.parent / _temp_name(target.name)
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _naming(exc, Path(named)) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` when the ``with`` block ends.

    The file is a temporary sibling of ``path``; it is flushed, fsynced and renamed over ``path``
    only if the block finishes without an exception (raise in the block to abandon the write).
    On any error the temporary is removed and a previous ``path`` is left untouched.  An error
    creating or renaming the temporary is raised as an ``OSError`` naming ``path``.  Stale
    temporaries of ``path`` (see :func:`remove_stale`) are removed first.

    What is replaced is decided by :func:`writable_target`, before anything is written and
    again just before the rename: a folder, device, FIFO or socket is refused, a symbolic link
    is written through.
    """
    target = writable_target(path)
    remove_stale(target.parent, target.name)
    fd, tmp = _create(target, path)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if writable_target(path) != target:  # the link was changed meanwhile: start again
            raise _naming(OSError(errno.EAGAIN, "changed while being written"), Path(path))
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _naming(exc, Path(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(target.parent)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise the ``OSError`` (naming ``path``) that writing ``path`` would raise, if any.

    Creates and removes a temporary sibling: the one test that the folder, its permissions and
    its file system allow the write (``os.access`` does not know about read-only mounts).  A
    ``path`` that :func:`writable_target` refuses raises its error.
    """
    fd, tmp = _create(writable_target(path), path)
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def temp_dir(folder: str | os.PathLike[str], label: str) -> Iterator[Path]:
    """A new private folder ``folder/.<label>.<pid>-<hex>.tmp``, removed with its content."""
    while True:
        path = Path(folder) / _temp_name(label)
        try:
            path.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale(folder: str | os.PathLike[str], target_name: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` left by processes that no longer run.

    Only names of our pattern are considered (with ``target_name``, only temporaries of that
    target).  One is stale when the process whose id it carries has ended, or when it carries
    this process's id but is older than this process (an earlier process with the same id).
    Errors (e.g. a read-only folder) are ignored.  Returns the paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or (target_name is not None and match["target"] != _stem(target_name)):
            continue
        try:
            if not _is_stale(int(match["pid"]), entry.stat(follow_symlinks=False).st_mtime):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _is_stale(pid: int, mtime: float) -> bool:
    if pid == os.getpid():
        return mtime < _STARTED
    if os.name == "nt":
        return not _windows_process_runs(pid)
    if os.name != "posix":  # no known way to ask whether the process runs: keep it
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # it exists (another user's) / not a process id
        return False
    return False


def _windows_process_runs(pid: int) -> bool:
    """Whether process ``pid`` runs, on Windows (``os.kill(pid, 0)`` would end it there): it
    runs unless OpenProcess finds no such process or GetExitCodeProcess says it has ended."""
    import ctypes
    from ctypes import wintypes

    if not 0 < pid <= 0xFFFFFFFF:  # not a process id: keep its temporary
        return True
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    query_limited_information, invalid_parameter, still_active = 0x1000, 87, 259
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:  # no such process, or one we may not look at (it runs)
        return ctypes.get_last_error() != invalid_parameter  # type: ignore[attr-defined]
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable where the OS allows it (POSIX); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
