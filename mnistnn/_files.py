"""Writing files safely: atomically, and without leaving temporaries behind for ever.

Every file the package writes (IDX files, model files, downloaded data, the data folder's
stamp) goes through :func:`atomic_write`: the content is written to a temporary sibling of the
target, flushed to disk, then renamed over the target, so the target is either the old file or
the complete new one, never a partial file.

Temporaries (files, and the work folders of :func:`temp_dir`) are named
``.<target name>.<process id>-<12 hex digits>.tmp``.  A process killed with ``kill -9`` cannot
remove its own; :func:`remove_stale` removes those whose process is gone, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "check_writable", "remove_stale", "temp_dir"]

_STARTED = time.time()  # no temporary of this process can be older than this module
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<pid>[0-9]+)-[0-9a-f]{12}\.tmp$")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _temp_name(target_name: str) -> str:
    return f".{target_name}.{os.getpid()}-{secrets.token_hex(6)}.tmp"


def _naming(exc: OSError, target: Path) -> OSError:
    """``exc`` again, but naming ``target`` (the path the caller gave), not our temporary."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, os.fspath(target))


def _create(target: Path) -> tuple[int, Path]:
    """Create an empty temporary sibling of ``target``: ``(fd, path)``.

    Mode 0o666 lets the umask decide, so the file gets the permissions of any ordinary new file.
    """
    while True:
        tmp = target.parent / _temp_name(target.name)
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _naming(exc, target) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` when the ``with`` block ends.

    The file is a temporary sibling of ``path``; it is flushed, fsynced and renamed over ``path``
    only if the block finishes without an exception (raise in the block to abandon the write).
    On any error the temporary is removed and a previous ``path`` is left untouched.  An error
    creating or renaming the temporary is raised as an ``OSError`` naming ``path``.  Stale
    temporaries of ``path`` (see :func:`remove_stale`) are removed first.
    """
    target = Path(path)
    remove_stale(target.parent, target.name)
    fd, tmp = _create(target)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _naming(exc, target) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(target.parent)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise the ``OSError`` (naming ``path``) that writing ``path`` would raise, if any.

    Creates and removes a temporary sibling: the one test that the folder, its permissions and
    its file system allow the write (``os.access`` does not know about read-only mounts).
    """
    fd, tmp = _create(Path(path))
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
        if match is None or (target_name is not None and match["target"] != target_name):
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
    if os.name != "posix":  # no safe way to ask whether the process runs: keep it
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # it exists (another user's) / not a process id
        return False
    return False


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
