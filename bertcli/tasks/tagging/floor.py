"""The tagging family's floor: each word gets the tag it carries most often in the training file (a tie: the tag
it carried first); a word the training file never has gets O. Scored with seqeval, as the models are."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from bertcli.report import EvalResult
from bertcli.tasks.base import EvalPlan
from bertcli.tasks.floor import check_train_file, evaluated_examples, floor_result
from bertcli.tasks.tagging.data import TaggedSentences, read_tagged, tagging_metrics

NAME = "most frequent tag per word"


def most_frequent_tags(train: TaggedSentences) -> dict[str, str]:
    """word -> the tag it carries most often in `train` (Counter keeps first-seen order among equal counts)."""
    counts: dict[str, Counter] = {}
    for words, tags in zip(train.words, train.tags or []):
        for word, tag in zip(words, tags):
            counts.setdefault(word, Counter())[tag] += 1
    return {word: seen.most_common(1)[0][0] for word, seen in counts.items()}


def tagging_floor(train_path: Path, plan: EvalPlan, cfg) -> EvalResult:
    """`TaskFamily.floor`: the most frequent tag of each word, learnt from `train_path` alone."""
    started = time.perf_counter()
    fmt = cfg.data.format
    train = read_tagged(plan.spec, check_train_file(train_path), fmt, require_labels=True)
    sentences = evaluated_examples(plan, lambda path: read_tagged(plan.spec, path, fmt, require_labels=True))
    tag_of = most_frequent_tags(train)
    predictions = [[tag_of.get(word, "O") for word in words] for words in sentences.words]
    metrics = tagging_metrics(sentences.tags, predictions, plan.spec)
    return floor_result(NAME, plan, metrics, len(sentences), started, predictions)
