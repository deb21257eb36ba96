"""Tagging's part in distillation: the teacher's logits of each window's labelled pieces, and sentences of tokens
without tags (`distill.unlabelled_file`) and augmented copies of the training windows (`distill.augment`) appended
to the training windows, whose labels the distillation collator sets to -100 (soft loss only)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bertcli.tasks.tagging.data import IGNORED, TaggingFeatures, encode_sentences, read_tagged


def teacher_rows(logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
    """Each window's (pieces, labels) logits, NaN at the pieces that carry no label ([CLS], [SEP], a word's later
    pieces unless task.label_all_pieces): the soft loss reads the pieces the gold loss reads."""
    out = logits.float().cpu().numpy().copy()
    out[(batch["labels"] == IGNORED).numpy()] = np.nan
    lengths = batch["attention_mask"].sum(1).tolist()
    return [row[:n] for row, n in zip(out, lengths)]


def unlabelled_rows(cfg, data, path: Path):
    """`TaskFamily.unlabelled_rows` for tagging: sentences of tokens in the task's format (a CoNLL file with one
    token per line and no tag column, jsonl tokens; tags there are not read), cut into windows as the training
    file's. Their pieces carry a placeholder tag where a tag would be, so the teacher's rows mark them."""
    from bertcli.tasks.tagging.features import TaggingSplit
    from bertcli.tasks.tagging.training import tagging_counts

    spec = data.spec
    sentences = read_tagged(spec, path, cfg.data.format)
    # a placeholder tag (any of the task's): only where the pieces that carry one are matters
    sentences.tags = [[spec.label_names[0]] * len(words) for words in sentences.words]
    raw = json.loads((Path(data.model_dir) / "config.json").read_text(encoding="utf-8"))
    length = min(cfg.data.max_seq_length, raw.get("max_position_embeddings") or cfg.data.max_seq_length)
    features = encode_sentences(data.tokenizer, sentences, spec, length)  # windows as the training file's
    extra = TaggingSplit(sentences, features)
    counts = tagging_counts(extra)
    return replace(data.train, features=appended(data.train.features, features)), counts


def augmented_rows(cfg, data, augment):
    """`TaskFamily.augmented_rows` for tagging: each window's copies after the training windows. A replaced word
    keeps its one piece, so a copy keeps its window's label places (where the teacher's outputs are learnt)."""
    f = data.train.features
    keep, copies = [], []
    for i, made in enumerate(augment(f.input_ids)):
        keep += [i] * len(made)
        copies += [c.tolist() for c in made]
    if not copies:
        return data.train, 0
    extra = TaggingFeatures(
        input_ids=copies,
        labels=[f.labels[i] for i in keep],
        word_ids=[f.word_ids[i] for i in keep],
        sentence=f.sentence[keep],  # the sentence each copy was made of (numbered past the file's by appended)
        word_start=f.word_start[keep],
    )
    return replace(data.train, features=appended(f, extra)), len(copies)


def appended(train: TaggingFeatures, extra: TaggingFeatures) -> TaggingFeatures:
    """The windows of `extra` after those of `train` (sentence numbers shifted past the training file's)."""
    first = int(train.sentence.max(initial=-1)) + 1
    return TaggingFeatures(
        input_ids=train.input_ids + extra.input_ids,
        labels=train.labels + extra.labels,
        word_ids=train.word_ids + extra.word_ids,
        sentence=np.concatenate([train.sentence, extra.sentence + first]),
        word_start=np.concatenate([train.word_start, extra.word_start]),
        windowed=train.windowed,
        cut_words=train.cut_words,
        empty_words=train.empty_words,
    )
