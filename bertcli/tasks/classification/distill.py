"""Classification's part in distillation: unlabelled texts (`distill.unlabelled_file`) read and encoded, and
augmented copies of the training rows (`distill.augment`), appended to the training split as rows whose labels the
distillation collator sets to -100 (soft loss only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.files import why_missing
from bertcli.tasks.classification.data import TaskExamples, read_examples
from bertcli.tasks.classification.features import EncodedSplit, encode_examples


def unlabelled_rows(cfg, data, path: Path) -> tuple[EncodedSplit, dict[str, int]]:
    """`TaskFamily.unlabelled_rows` for classification: a .txt file holds one text per line (one-text tasks);
    any other file is read as the task's files are, its text columns only."""
    spec = data.spec
    if spec.is_regression:
        raise UsageError("distill.unlabelled_file: a regression task cannot learn from unlabelled text (its gold "
                         "loss has no value to ignore); unset it")  # fmt: skip
    if Path(path).suffix.lower() == ".txt" and cfg.data.format == "auto":
        examples = _text_lines(Path(path), spec)
    else:
        examples = read_examples(spec, path, cfg.data.format, empty_text=cfg.data.empty_text)
    encoded = encode_examples(data.tokenizer, examples, cfg.data.max_seq_length, regression=False)
    counts = {"examples": len(examples), "truncated": encoded.truncated, "skipped_empty": examples.skipped_empty}
    return appended(data.train, encoded), counts


def augmented_rows(cfg, data, augment) -> tuple[EncodedSplit, int]:
    """`TaskFamily.augmented_rows` for classification: each row's copies (both texts of a pair: the segment ids
    stay) after the training rows."""
    if data.spec.is_regression:
        raise UsageError("distill.augment: a regression task cannot learn from augmented copies (its gold loss has "
                         "no value to ignore); set it to 0")  # fmt: skip
    train = data.train
    rows = [(train.offsets[i], train.offsets[i + 1]) for i in range(len(train))]
    ids, segments = [], []
    for (a, b), copies in zip(rows, augment([train.ids[a:b] for a, b in rows])):
        ids += [c.astype(train.ids.dtype) for c in copies]
        segments += [train.segments[a:b]] * len(copies)
    if not ids:
        return train, 0
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(train.offsets.dtype)
    extra = EncodedSplit(np.concatenate(ids), np.concatenate(segments), offsets, None, 0, train.pad_id)
    return appended(train, extra), len(ids)


def _text_lines(path: Path, spec) -> TaskExamples:
    if len(spec.text_columns) > 1:
        raise UsageError(f"{path}: one text per line suits a one-text task, and {spec.name} reads pairs "
                         f"({', '.join(spec.text_columns)}); give a file of the task's format with those "
                         "columns")  # fmt: skip
    if not path.is_file():
        raise UsageError(f"distill.unlabelled_file {path} {why_missing(path)}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    kept = [(i, line.strip()) for i, line in enumerate(lines, start=1) if line.strip()]
    if not kept:
        raise UsageError(f"{path}: no text (every line is empty)")
    # blank lines part the texts: they are not empty texts to count
    return TaskExamples(path, [t for _, t in kept], None, None, [str(i) for i, _ in kept], [i for i, _ in kept])


def appended(train: EncodedSplit, extra: EncodedSplit) -> EncodedSplit:
    """The rows of `extra` after those of `train`, with the placeholder label 0 (set to -100 in each batch)."""
    labels = np.concatenate([train.labels, np.zeros(len(extra), dtype=train.labels.dtype)])
    return EncodedSplit(
        ids=np.concatenate([train.ids, extra.ids]),
        segments=np.concatenate([train.segments, extra.segments]),
        offsets=np.concatenate([train.offsets, extra.offsets[1:] + train.offsets[-1]]),
        labels=labels,
        truncated=train.truncated,  # the training file's count (the unlabelled file's is counted apart)
        pad_id=train.pad_id,
    )
