"""Shared fixtures: a folder that nobody can write, not even root; a deadline for calls that could
block; a process that dies at once.  Tests marked ``posix`` (FIFOs, sockets, device files) are
skipped where the OS has no such files (Windows)."""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

ReadOnlyRunner = Callable[..., "subprocess.CompletedProcess[str]"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``posix`` on an OS without FIFOs (Windows), saying why."""
    if hasattr(os, "mkfifo"):
        return
    skip = pytest.mark.skip(reason="needs FIFOs, sockets or device files, which Windows has not")
    for item in items:
        if "posix" in item.keywords:
            item.add_marker(skip)


class HardKill(NamedTuple):
    """How a child process kills itself at once, with no cleanup (as ``kill -9`` would)."""

    statement: str  # Python code, after ``import os``
    returncode: int  # what subprocess reports for the child


@pytest.fixture
def hard_kill() -> HardKill:
    """SIGKILL; on Windows, where ``os.kill`` calls TerminateProcess for any signal but the
    console ones, SIGTERM's number, which becomes the exit code."""
    if hasattr(signal, "SIGKILL"):
        return HardKill(f"os.kill(os.getpid(), {int(signal.SIGKILL)})", -int(signal.SIGKILL))
    return HardKill(f"os.kill(os.getpid(), {int(signal.SIGTERM)})", int(signal.SIGTERM))

_REMOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def _can_remount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture
def run_read_only() -> ReadOnlyRunner:
    """``run(folder, argv, **kwargs)``: run ``argv`` while ``folder`` is read-only for it.

    As an ordinary user the folder loses its write permission for the run; as root (who may
    write anywhere) the command runs in its own mount namespace where ``folder`` is a read-only
    bind mount, which nothing outside that process sees.  Output is captured as text.
    """

    def run(
        folder: Path, argv: Sequence[str | os.PathLike[str]], **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        argv = [os.fspath(a) for a in argv]
        options = {"capture_output": True, "text": True, "timeout": 600, "check": False, **kwargs}
        if not hasattr(os, "geteuid"):  # Windows: a folder's read-only flag does not stop writes
            pytest.skip("read-only folders are tested on POSIX systems only")
        if os.geteuid() != 0:
            mode = folder.stat().st_mode
            folder.chmod(mode & ~0o222)
            try:
                return subprocess.run(argv, **options)  # type: ignore[call-overload]
            finally:
                folder.chmod(mode)
        if not _can_remount():
            pytest.skip("running as root without the right to make a read-only mount")
        wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _REMOUNT]
        return subprocess.run([*wrapper, str(folder), *argv], **options)  # type: ignore[call-overload]

    return run


@pytest.fixture
def deadline() -> Iterator[Callable[[float], None]]:
    """``deadline(seconds)``: fail the test with ``TimeoutError`` if it is still running after
    ``seconds`` (POSIX: SIGALRM), so a read that would block for ever fails instead of hanging.
    Without SIGALRM (Windows) the whole run stops there with every thread's traceback."""
    if not hasattr(signal, "SIGALRM"):
        yield lambda seconds: faulthandler.dump_traceback_later(seconds, exit=True)
        faulthandler.cancel_dump_traceback_later()
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("still blocked at the deadline: this call hangs")

    previous = signal.signal(signal.SIGALRM, expire)

    def start(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield start
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)
