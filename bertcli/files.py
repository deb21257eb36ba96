"""What is wrong with a file the user named, said plainly: one that cannot be found (missing, a symlink loop, a link
to nothing) and one of text in UTF-16 or UTF-32 where UTF-8 is read (its byte-order mark says which)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from bertcli.errors import UsageError

# UTF-32's little-endian mark begins with UTF-16's: it is looked for first.
_BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def why_missing(path: Path | str) -> str:
    """Why `path` cannot be opened, to end a sentence that names it: "does not exist", "is a symlink loop (...)",
    "is a symbolic link to X, which does not exist"."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symlink loop (its symbolic links lead back to themselves); point it at a real file or folder"
        if os.path.islink(path):
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    return "does not exist"


def wide_encoding(head: bytes) -> str | None:
    """ "UTF-16" or "UTF-32" if `head`, the first bytes of a file, starts with that encoding's byte-order mark."""
    return next((name for mark, name in _BYTE_ORDER_MARKS if head.startswith(mark)), None)


def wide_text_error(path: Path | str, head: bytes, compressed: bool = False) -> UsageError | None:
    """The error for a UTF-16/32 file (by its first bytes `head`, uncompressed) where UTF-8 is read: replacing
    its bytes would read garbage, so it is converted. None for any other file."""
    name = wide_encoding(head)
    if name is None:
        return None
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    target = path.with_name(f"{stem}-utf8{dot}{suffixes}")
    convert = f"iconv -f {name} -t UTF-8 {path} > {target}"
    if compressed:
        convert = f"zcat {path} | iconv -f {name} -t UTF-8 | gzip > {target}"
    return UsageError(
        f"{path} is {name} text (it starts with a {name} byte-order mark), not UTF-8; convert it: {convert}"
    )
