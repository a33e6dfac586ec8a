"""Atomic file replacement, the one way osma writes stores and weights.

Write a temporary file in the target's folder, fsync it, rename it over the target, fsync
the folder. Readers see the old file or the new one, never a half-written one, and a
failure at any point leaves the old file as it was and no temporary file behind.

A writer killed outright (SIGKILL, power loss) cannot clean up after itself. Its temporary
file carries its PID (``.NAME.PID.XXXXXXXX.tmp``), so that the next writer, holding the
file's lock (``locked``), can tell a dead writer's leftovers from a live writer's work and
remove them (``remove_stale_temporaries``).

Errors stay ``OSError``: the callers know what was being written and say so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

LOCK_TIMEOUT_S = 120.0
LEGACY_TEMP_AGE_S = 3600.0
"""Temporaries without a PID (osma before PIDs were recorded) older than this are stale."""


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` (its return value is ignored), then make ``tmp_path`` durable and rename it to
    ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp (and safetensors, rewriting it) make 0600
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """``data`` as the new content of ``path``, atomically."""
    atomic_write(path, lambda tmp: _write_all(tmp, data))


def _write_all(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def fsync_dir(directory: Path) -> None:
    """Make a rename durable where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def lock_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def locked(path: Path | str, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``PATH.lock``, which every writer of ``PATH`` takes, and clear dead writers' leftovers.

    Raises ``filelock.Timeout`` when another process holds it past ``timeout``, ``OSError``
    when the lock file cannot be created (read-only or full disk). Not re-entrant: a
    process that holds it and asks again waits for itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(path)))
    lock.acquire(timeout=timeout)
    try:
        remove_stale_temporaries(path)
        yield
    finally:
        lock.release()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` may still write: running, or not ours to ask about (counted alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:  # a zombie has exited and writes nothing more
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def stale_temporaries(path: Path | str) -> list[Path]:
    """Temporary files of ``path`` left by writers that are no longer running."""
    path = Path(path)
    name = re.escape(path.name)
    with_pid = re.compile(rf"^\.{name}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")
    seed = re.compile(rf"^\.{name}\.seed-(\d+)$")  # first-use seed copies of older osma
    legacy = re.compile(rf"^\.{name}\.[A-Za-z0-9_]{{8}}\.tmp$")  # older osma: no PID
    stale = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = with_pid.match(entry.name) or seed.match(entry.name)
        if match:
            if not process_alive(int(match.group(1))):
                stale.append(entry)
        elif legacy.match(entry.name):
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > LEGACY_TEMP_AGE_S:
                    stale.append(entry)
    return stale


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Remove what ``stale_temporaries`` finds; call it holding the lock. Returns what went."""
    removed = []
    for tmp in stale_temporaries(path):
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # read-only: leave it, the write that follows will say why
        removed.append(tmp)
    return removed


def describe(exc: OSError) -> str:
    """An OSError's reason in words, without the file name (callers name the file)."""
    if exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def is_not_writable(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
