"""Raw text files -> documents made of sentences.

Three layouts, all UTF-8 and optionally gzip-compressed:
- ``sentences``  one sentence per line, a blank line between documents (the layout of Google's BERT).
- ``paragraphs`` one paragraph per line, a blank line between documents; paragraphs are split into sentences by
  sentencex (rule based: "Mr.", "e.g." and "3.5" do not end a sentence; Chinese 。！？ do).
- ``jsonl``      one JSON object per line, one document per object; its text field is split like ``paragraphs``
  (newlines inside the text separate paragraphs).

Documents are yielded one at a time, so memory does not grow with the corpus.
"""

from __future__ import annotations

import glob
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from bertcli.errors import UsageError


def resolve_inputs(patterns: list[str]) -> list[Path]:
    """Expand files and globs, in the order given (each glob sorted); every pattern must match something."""
    files: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise UsageError(f"input glob {pattern!r} matches no files; check the pattern and the directory")
            files.extend(matches)
        elif Path(pattern).is_file():
            files.append(Path(pattern))
        elif Path(pattern).exists():
            raise UsageError(f"input {pattern} is a directory; give files or a glob like '{pattern}/*.txt'")
        else:
            raise UsageError(f"input file {pattern} does not exist")
    return list(dict.fromkeys(files))  # a file named twice is read once


def read_documents(
    files: list[str], fmt: str, text_field: str = "text", language: str = "en", on_bad_bytes: str = "error"
) -> Iterator[dict]:
    """Yield ``{"sentences": [str, ...], "bad_bytes": int}`` per non-empty document of every file, in order.

    A generator for ``datasets.Dataset.from_generator``; ``bad_bytes`` counts replaced undecodable sequences.
    """
    for name in files:
        path = Path(name)
        lines = _decoded_lines(path, on_bad_bytes)
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


def _text_documents(lines: Iterator[tuple[str, int]], split: bool, language: str):
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


def _jsonl_documents(path: Path, lines: Iterator[tuple[str, int]], text_field: str, language: str):
    for lineno, (line, bad) in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict) or text_field not in record:
            found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise UsageError(
                f"{path}:{lineno}: no field {text_field!r} (found: {found}); set input.text_field to the text field"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise UsageError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, expected text")
        sentences = [s for para in text.splitlines() if para.strip() for s in split_sentences(para, language)]
        yield sentences, bad


def _decoded_lines(path: Path, on_bad_bytes: str) -> Iterator[tuple[str, int]]:
    """Lines without their newline, and the count of undecodable byte sequences replaced in each.

    Read as bytes so that an error can name the exact byte offset (of the uncompressed stream for .gz files).
    """
    gz = path.suffix == ".gz"
    opener = gzip.open if gz else open
    offset = 0
    try:
        with opener(path, "rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not text
                    raw, offset = raw[3:], 3
                try:
                    yield raw.decode("utf-8").rstrip("\r\n"), 0
                except UnicodeDecodeError as e:
                    if on_bad_bytes != "replace":
                        where = f"byte offset {offset + e.start}" + (" of the uncompressed text" if gz else "")
                        raise UsageError(
                            f"{path}: line {lineno}, {where}: not UTF-8 (byte {raw[e.start : e.start + 1]!r}); "
                            "convert the file to UTF-8 or pass --set input.on_bad_bytes=replace"
                        ) from None
                    text = raw.decode("utf-8", errors="replace")
                    yield (
                        text.rstrip("\r\n"),
                        text.count("\ufffd") - raw.decode("utf-8", "ignore").count("\ufffd"),
                    )
                offset += len(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UsageError(f"{path}: not a readable gzip file ({e}); re-compress it or remove the .gz suffix") from None
