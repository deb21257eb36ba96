"""One run at a time in an output directory: a lock file, `OUT/.bertcli.lock`, holds the pid and host of the run
that writes there, from before it looks at the folder until it ends.

The file is created with O_CREAT|O_EXCL, so of two runs started at once exactly one gets it; the other stops
(exit 2) naming the folder and the holder. The holder removes it when it ends, however it ends (the run's
`finally`, and `atexit` for a process that exits in between). A process killed outright (SIGKILL, a power cut)
leaves it behind: a lock whose pid is not running on this host is stale and is taken over, with a notice. A lock of
another host is respected (its pid cannot be checked from here): the message says to delete it if that run is over.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.outputs import TMP_PREFIX

LOCK_NAME = ".bertcli.lock"
_HELD: set[RunLock] = set()  # released at exit if the run's own `finally` never ran


class RunLock:
    """The lock of one output directory, held by this process; `release` removes it (once, and only if ours)."""

    def __init__(self, path: Path, content: bytes):
        self.path, self.content, self.pid = path, content, os.getpid()

    @classmethod
    def take(cls, out: Path) -> RunLock:
        """Lock `out` (made if missing) for this process, or raise UsageError naming the run that holds it."""
        path = out / LOCK_NAME
        content = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}
        ).encode()
        for _ in range(3):  # a stale lock taken over by another run in between: look again
            if _create(out, path, content):
                lock = cls(path, content)
                _HELD.add(lock)
                return lock
            held = _read(path)
            if held is None:  # released in between
                continue
            holder = _holder(held)
            if not _stale(holder):
                raise UsageError(_in_use(out, path, holder))
            if _remove_stale(path, held):
                print(f"note: took over the lock of {out}: {_describe(holder)} is no longer running", file=sys.stderr)
        raise UsageError(f"output directory {out} is in use by another run (lock file {path}); try again")

    def release(self) -> None:
        """Remove the lock file if it is still this run's (not in a forked child, not after a takeover)."""
        if self not in _HELD or os.getpid() != self.pid:
            return
        _HELD.discard(self)
        if _read(self.path) == self.content:
            self.path.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD):
        lock.release()


def _create(out: Path, path: Path, content: bytes) -> bool:
    """Create the lock file holding `content` (and `out`, if missing); False if it exists."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:  # a read-only place, a file where a folder should be: before any work
        raise UsageError(f"cannot write in output directory {out}: {err.strerror}; choose another one (-o)") from None
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return True


def _read(path: Path) -> bytes | None:
    """The lock file's bytes; None if it is gone. Empty bytes are retried once: a holder between creating the
    file and writing its pid."""
    for attempt in range(2):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if data or attempt:
            return data
        time.sleep(0.1)
    return b""


def _holder(data: bytes) -> dict:
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _stale(holder: dict) -> bool:
    """Whether the lock was left by a process of this host that is no longer running. An unreadable lock, or one
    of another host, is not: whether its run is over cannot be told from here."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _remove_stale(path: Path, held: bytes) -> bool:
    """Remove the stale lock holding `held`, unless another run has replaced it in the meantime: it is first
    renamed to a name of this process (atomic: of two runs that take it over at once, one moves it), and the
    renamed file is checked to be the stale one. True if this process removed it."""
    aside = path.with_name(f"{TMP_PREFIX}stale-lock-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved != held and moved is not None and not path.exists():  # another run's fresh lock: put it back
        try:
            os.link(aside, path)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise
    aside.unlink(missing_ok=True)
    return moved == held


def _describe(holder: dict) -> str:
    if not holder:
        return "an unknown run"
    started = f", started {holder['started']}" if holder.get("started") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{started}"


def _in_use(out: Path, path: Path, holder: dict) -> str:
    message = f"output directory {out} is in use by another run ({_describe(holder)}; lock file {path})"
    if holder and holder.get("host") == socket.gethostname():
        return f"{message}; wait for it to end, or write to another directory (-o)"
    return (
        f"{message}; wait for it to end or write to another directory (-o); if no run writes there any more, "
        f"delete {path}"
    )
