"""Atomic writes: nothing half-written is left in a complete file's place (`bertcli.run_output` decides where a
run writes and when it replaces an earlier one).

Every file goes to a temporary name beside its target and is renamed over it (`os.replace` is atomic on one file
system), so an interrupted run leaves either the old complete file or the new complete one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bertcli.errors import BertcliError, RunFailure

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteFailure(RunFailure):
    """Writing `path` failed: the disk is full (`no_space`), or the OS or a serializer refused (`reason`). One
    line, exit 1; `advice` says what to do (a default one for a full disk)."""

    def __init__(self, path: Path, reason: str, no_space: bool, advice: str = ""):
        self.path, self.reason, self.no_space = Path(path), reason, no_space
        if no_space:
            message = f"no space left on device while writing {path}"
            advice = advice or "free some space (or choose an output directory on another disk) and run again"
        else:
            message = f"could not write {path}: {reason}"
        self.advice = advice
        super().__init__(f"{message}; {advice}" if advice else message)

    def noting(self, note: str) -> WriteFailure:
        """The same failure, its message ending with `note` (what became of the earlier run, say)."""
        return WriteFailure(self.path, self.reason, self.no_space, f"{self.advice}; {note}" if self.advice else note)


LOW_SPACE = 1 << 20  # bytes: a write that failed with less than this left on its file system ran out of space
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")
# torch's zip writer reports a short write as its own RuntimeError, without the errno
_TORCH_WRITER_TEXT = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")


def write_failure(err: BaseException, path: Path, tmp: Path | None = None) -> WriteFailure | None:
    """`err`, raised while writing `path`, as a one-line WriteFailure; None when it is no write failure (Ctrl-C,
    our own errors, a bug), to be raised as it is. The disk counts as full when ENOSPC (or EDQUOT) is the errno
    of any exception in the chain, or its message says so, or, for an OS, safetensors or torch-writer error, the
    file system has (almost) no free space left: torch's RuntimeError for a short write carries no errno. Call
    it before removing the partial output, which holds the space. A WriteFailure for a file inside `tmp` (the
    temporary folder of `path`) is named by its place in `path`."""
    if isinstance(err, WriteFailure):
        if tmp is not None and err.path.is_relative_to(tmp):
            return WriteFailure(Path(path) / err.path.relative_to(tmp), err.reason, err.no_space)
        return err
    if not isinstance(err, Exception) or isinstance(err, BertcliError):
        return None
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        chain.append(err)
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    said = any(isinstance(e, OSError) and e.errno in _NO_SPACE for e in chain)
    said = said or any(text in str(e).lower() for e in chain for text in _NO_SPACE_TEXT)
    writing = any(
        isinstance(e, OSError)
        or type(e).__name__ == "SafetensorError"
        or (isinstance(e, RuntimeError) and any(text in str(e) for text in _TORCH_WRITER_TEXT))
        for e in chain
    )
    if not said and not writing:
        return None
    reason = next((line.strip() for line in str(chain[0]).splitlines() if line.strip()), type(chain[0]).__name__)
    return WriteFailure(path, reason, said or _free_space(Path(path)) < LOW_SPACE)


def _free_space(path: Path) -> int:
    """Bytes free to this user on the file system of `path` (its nearest existing folder); -1 if unknown."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


@contextmanager
def atomic_file(target: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside `target`; on success rename it over `target`, on failure delete it. A failed
    write (disk full, permissions) raises a one-line WriteFailure naming `target`."""
    target = Path(target)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException as err:
        failure = write_failure(err, target)  # before the partial file goes: it holds the space
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if failure is None or failure is err:
            raise
        raise failure from err


def write_text(target: Path, text: str) -> None:
    with atomic_file(target) as handle:
        handle.write(text)


def write_json(target: Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it replaces `target` (old one removed after). On
    failure the temporary directory is removed and `target` left as it was; a failed write (disk full, e.g. in
    `save_pretrained`) raises a one-line WriteFailure naming `target` (or the file in it)."""
    target = Path(target)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent))
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        replace_dir(tmp, target)
    except BaseException as err:
        failure = write_failure(err, target, tmp)  # before the partial copy goes: it holds the space
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if failure is None or failure is err:
            raise
        raise failure from err


def replace_dir(src: Path, target: Path) -> None:
    """Move a finished directory into place. A directory cannot be renamed over a non-empty one, so the old
    one is first renamed aside: at every moment `target` is either the old complete tree or the new one."""
    old = None
    if target.exists():
        old = target.with_name(f"{TMP_PREFIX}old-{target.name}-{os.getpid()}")
        os.replace(target, old)
    os.replace(src, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
