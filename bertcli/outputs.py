"""Output directories and atomic writes: nothing a user had is lost, nothing half-written is left in its place.

Every file goes to a temporary name beside its target and is renamed over it (`os.replace` is atomic on one file
system), so an interrupted run leaves either the old complete file or the new complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bertcli.errors import UsageError

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_output_dir(path: Path, overwrite: bool, option: str = "--overwrite") -> Path:
    """Create `path`, refusing a non-empty directory unless the user passed --overwrite."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"output {path} exists and is not a directory; choose another output directory")
    if path.is_dir() and any(p.name != ".DS_Store" for p in path.iterdir()) and not overwrite:
        raise UsageError(
            f"output directory {path} is not empty (it holds another run); "
            f"choose another directory or pass {option} to replace its files"
        )
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob(f"{TMP_PREFIX}*"):  # left by an interrupted earlier run
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_file(target: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside `target`; on success rename it over `target`, on failure delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> None:
    with atomic_file(target) as handle:
        handle.write(text)


def write_json(target: Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it replaces `target` (old one removed after)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
