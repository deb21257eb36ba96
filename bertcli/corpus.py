"""Raw text files -> documents made of sentences.

Three layouts, all UTF-8 and optionally gzip-compressed (``auto`` picks one per file from its name and the length
of its lines, see `file_format`):
- ``sentences``  one sentence per line, a blank line between documents (the layout of Google's BERT).
- ``paragraphs`` one paragraph per line, a blank line between documents; paragraphs are split into sentences by
  sentencex (rule based: "Mr.", "e.g." and "3.5" do not end a sentence; Chinese 。！？ do).
- ``jsonl``      one JSON object per line, one document per object; its text field is split like ``paragraphs``
  (newlines inside the text separate paragraphs).

Documents are yielded one at a time, so memory does not grow with the corpus. A file can be cut into shards at
document boundaries (`plan_units`) so that worker processes read, split and tokenize its parts side by side; the
documents of the shards, in shard order, are the documents of the file, in order.
"""

from __future__ import annotations

import functools
import glob
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bertcli.config import not_utf8
from bertcli.errors import UsageError
from bertcli.files import why_missing, wide_text_error


def resolve_inputs(patterns: list[str]) -> list[Path]:
    """Expand files and globs, in the order given (each glob sorted); every pattern must match something, and
    every file name must be UTF-8 (it is written into stats.json and config.yaml)."""
    files: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise UsageError(f"input glob {pattern!r} matches no files; check the pattern and the directory")
            for match in matches:
                _check_utf8_name(match, pattern)
            files.extend(matches)
        elif Path(pattern).is_file():
            files.append(Path(pattern))
        elif Path(pattern).exists():
            raise UsageError(f"input {pattern} is a directory; give files or a glob like '{pattern}/*.txt'")
        else:
            raise UsageError(f"input file {pattern} {why_missing(pattern)}")
    return list(dict.fromkeys(files))  # a file named twice is read once


def _check_utf8_name(path: Path, pattern: str) -> None:
    shown = not_utf8(str(path))
    if shown is not None:
        raise UsageError(
            f"input file name '{shown}' (matched by {pattern!r}) is not valid UTF-8; rename it to UTF-8, e.g. with "
            f"`convmv -f latin1 -t utf-8 --notest {pattern}` if the name is Latin-1"
        )


# input.format auto reads a text file as paragraphs when its lines are far longer than a sentence: on average at
# least PARAGRAPH_CHARS characters, or PARAGRAPH_SENTENCES sentence ends (one review, one abstract per line).
# Read as sentences, such lines would be cut at nsp.max_seq_length and most of their text lost.
PARAGRAPH_CHARS = 300
PARAGRAPH_SENTENCES = 3
SNIFF_BYTES = 1 << 18  # the start of the file that decides
_SENTENCE_END = re.compile(r"[.!?。！？](?=[\s\"'”’)\]]|$)")


def file_format(path: str | Path, declared: str) -> str:
    """The layout a file is read in: `declared`, or for "auto" jsonl if the name ends in .jsonl or .json (before
    an optional .gz), else paragraphs if its lines are paragraph-long (see PARAGRAPH_CHARS), else sentences."""
    if declared != "auto":
        return declared
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    try:
        stat = os.stat(path)
    except OSError:  # not there (yet): the reader names the problem
        return "sentences"
    return _sniff_text_layout(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _sniff_text_layout(path: str, mtime_ns: int, size: int) -> str:
    """paragraphs or sentences, from the non-blank lines of the file's start (cached per file version: every shard
    of the file asks)."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):  # the reader reports an unreadable file
        return "sentences"
    lines = [line.strip() for line in head.decode("utf-8", errors="replace").splitlines()]
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line is likely cut short
    lines = [line for line in lines if line]
    if not lines:
        return "sentences"
    chars = sum(len(line) for line in lines) / len(lines)
    ends = sum(len(_SENTENCE_END.findall(line)) for line in lines) / len(lines)
    return "paragraphs" if chars >= PARAGRAPH_CHARS or ends >= PARAGRAPH_SENTENCES else "sentences"


def describe_formats(files: list[str]) -> str:
    """What input.format auto chose, for the log: "input.format=auto: 3 file(s), 2 as jsonl and 1 as sentences"."""
    counts = Counter(file_format(f, "auto") for f in files).most_common()
    listed = " and ".join(f"{n} as {fmt}" for fmt, n in counts)
    return (
        f"input.format=auto: {len(files)} file(s), {listed} (.jsonl and .json files are jsonl; other files are "
        f"paragraphs when their lines average {PARAGRAPH_CHARS}+ characters or {PARAGRAPH_SENTENCES}+ sentences, "
        "else sentences; set input.format to choose)"
    )


def read_documents(
    files: list[str], fmt: str, text_field: str = "text", language: str = "en", on_bad_bytes: str = "error"
) -> Iterator[dict]:
    """Yield ``{"sentences": [str, ...], "bad_bytes": int}`` per non-empty document of every file, in order;
    ``bad_bytes`` counts replaced undecodable sequences."""
    for name in files:
        yield from read_shard(Shard(str(name)), fmt, text_field, language, on_bad_bytes)


@dataclass(frozen=True)
class Shard:
    """Bytes ``[start, end)`` of one file (``end`` None: to the end), cut at a document boundary."""

    path: str
    start: int = 0
    end: int | None = None


def plan_units(files: list[str], fmt: str, n_units: int) -> list[list[Shard]]:
    """Cut the files into `n_units` units of about equal bytes; a unit is a list of shards (it can span the end of
    one file and the start of the next). Every cut falls on a document boundary: after a blank line (after any line
    for jsonl), up to one document after its target, so a unit can be empty. Gzip files cannot be cut without
    reading them whole. The units in order hold the documents of the files in order.
    """
    sizes = [Path(f).stat().st_size for f in files]
    total = sum(sizes)
    targets = [total * j // n_units for j in range(1, n_units)]  # cuts, as offsets into all files end to end
    units: list[list[Shard]] = [[]]
    file_start = 0
    for name, size in zip(files, sizes):
        start = 0  # of the shard being cut from this file
        with open(name, "rb") as handle:
            for target in (t - file_start for t in targets if file_start < t <= file_start + size):
                if start < target < size and not name.endswith(".gz"):
                    cut = _document_boundary(handle, target, file_format(name, fmt))
                    units[-1].append(Shard(name, start, cut if cut < size else None))
                    start = cut
                units.append([])  # the next unit starts here (it stays empty if an earlier cut overshot it)
        if start < size:
            units[-1].append(Shard(name, start))
        file_start += size
    return units + [[] for _ in range(n_units - len(units))]


def _document_boundary(handle, offset: int, fmt: str) -> int:
    """The first offset at or after `offset` where a document starts (or the end of the file)."""
    handle.seek(offset - 1)
    if handle.read(1) != b"\n":
        handle.readline()  # the rest of the line `offset` falls in
    if fmt == "jsonl":
        return handle.tell()
    for line in iter(handle.readline, b""):
        if not line.strip():  # a blank line ends a document
            return handle.tell()
    return handle.tell()


def read_shard(
    shard: Shard, fmt: str, text_field: str = "text", language: str = "en", on_bad_bytes: str = "error"
) -> Iterator[dict]:
    """Yield ``{"sentences": [...], "bad_bytes": int}`` per non-empty document of one shard, in order."""
    path, fmt = Path(shard.path), file_format(shard.path, fmt)
    lines = _Lines(path, on_bad_bytes, shard.start, shard.end)
    if fmt == "jsonl":
        docs = _jsonl_documents(path, lines, text_field, language)
    else:
        docs = _text_documents(lines, split=fmt == "paragraphs", language=language)
    for sentences, bad in docs:
        if sentences:
            yield {"sentences": sentences, "bad_bytes": bad}


def split_sentences(paragraph: str, language: str) -> list[str]:
    """Sentences of one paragraph, stripped, empty ones dropped."""
    import sentencex

    return [s.strip() for s in sentencex.segment(language, paragraph) if s.strip()]


def _text_documents(lines: _Lines, split: bool, language: str):
    sentences: list[str] = []
    bad = 0
    for line, line_bad in lines:
        line = line.strip()
        bad += line_bad
        if not line:
            if sentences:
                yield sentences, bad
            sentences, bad = [], 0
        elif split:
            sentences.extend(split_sentences(line, language))
        else:
            sentences.append(line)
    if sentences:
        yield sentences, bad


def _jsonl_documents(path: Path, lines: _Lines, text_field: str, language: str):
    for line, bad in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            where = f"{path}:{lines.lineno()}"
            raise UsageError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict) or text_field not in record:
            found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise UsageError(
                f"{path}:{lines.lineno()}: no field {text_field!r} (found: {found}); "
                "set input.text_field to the text field"
            )
        text = record[text_field]
        if not isinstance(text, str):
            where = f"{path}:{lines.lineno()}"
            raise UsageError(f"{where}: field {text_field!r} is {type(text).__name__}, expected text")
        sentences = [s for para in text.splitlines() if para.strip() for s in split_sentences(para, language)]
        yield sentences, bad


class _Lines:
    """The decoded lines of bytes ``[start, end)`` of a file, as ``(text without newline, replaced bad bytes)``.

    Read as bytes so that an error can name the exact byte offset (of the uncompressed stream for .gz files);
    the line number, needed only for an error, is counted then.
    """

    def __init__(self, path: Path, on_bad_bytes: str, start: int = 0, end: int | None = None):
        self.path, self.on_bad_bytes, self.start, self.end = path, on_bad_bytes, start, end
        self.offset, self.lines_read = start, 0  # of the line being handed out

    def lineno(self) -> int:
        """1-based number of the line last handed out."""
        before = 0
        if self.start:
            with open(self.path, "rb") as handle:
                remaining = self.start
                while remaining:
                    chunk = handle.read(min(remaining, 1 << 24))
                    before += chunk.count(b"\n")
                    remaining -= len(chunk)
        return before + self.lines_read

    def __iter__(self) -> Iterator[tuple[str, int]]:
        path, gz = self.path, self.path.suffix == ".gz"
        try:
            with (gzip.open if gz else open)(path, "rb") as handle:
                if self.start:
                    handle.seek(self.start)
                self.offset = self.start
                for raw in handle:
                    if self.end is not None and self.offset >= self.end:
                        return
                    self.lines_read += 1
                    if self.offset == 0 and (wide := wide_text_error(path, raw, gz)):  # replacing: garbage
                        raise wide
                    if self.offset == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not text
                        raw, self.offset = raw[3:], 3
                    try:
                        yield raw.decode("utf-8").rstrip("\r\n"), 0
                    except UnicodeDecodeError as e:
                        if self.on_bad_bytes != "replace":
                            where = f"byte offset {self.offset + e.start}" + (" of the uncompressed text" if gz else "")
                            raise UsageError(
                                f"{path}: line {self.lineno()}, {where}: not UTF-8 "
                                f"(byte {raw[e.start : e.start + 1]!r}); "
                                "convert the file to UTF-8 or pass --set input.on_bad_bytes=replace"
                            ) from None
                        text = raw.decode("utf-8", errors="replace")
                        yield (
                            text.rstrip("\r\n"),
                            text.count("\ufffd") - raw.decode("utf-8", "ignore").count("\ufffd"),
                        )
                    self.offset += len(raw)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise UsageError(
                f"{path}: not a readable gzip file ({e}); re-compress it or remove the .gz suffix"
            ) from None
