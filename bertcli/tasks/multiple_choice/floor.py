"""The multiple-choice family's floor: each question picks the choice whose text is closest to its context, by the
cosine of their tf-idf vectors (word unigrams and bigrams, sublinear tf) over a vocabulary fitted on the training
file's texts (contexts and choices; its labels are not needed). The question or SWAG's sent2 counts as context.
Scored by accuracy, as the models are."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.report import EvalResult
from bertcli.tasks.base import EvalPlan
from bertcli.tasks.floor import check_train_file, evaluated_examples, floor_result
from bertcli.tasks.multiple_choice.data import BLANK, ChoiceExamples, read_choices
from bertcli.tasks.multiple_choice.features import choice_metrics

NAME = "bag-of-words (tf-idf cosine of context and choice)"


def _context(examples: ChoiceExamples, i: int) -> str:
    return BLANK.sub(" ", f"{examples.contexts[i]} {examples.prefixes[i]}")  # a ChID blank is no word


def choice_floor(train_path: Path, plan: EvalPlan, cfg) -> EvalResult:
    """`TaskFamily.floor`: the choice nearest its context, tf-idf fitted on `train_path`'s texts alone."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    started = time.perf_counter()
    read = dict(fmt=cfg.data.format, empty_text=cfg.data.empty_text)
    train = read_choices(check_train_file(train_path), **read)
    questions = evaluated_examples(plan, lambda path: read_choices(path, require_labels=True, **read))
    texts = [_context(train, i) for i in range(len(train))] + [c for cs in train.choices for c in cs]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    try:
        vectorizer.fit(texts)
    except ValueError:  # nothing but punctuation
        raise UsageError(f"{train.path}: no words to build a bag-of-words floor from") from None
    contexts = vectorizer.transform([_context(questions, i) for i in range(len(questions))])
    predictions = []
    for i, choices in enumerate(questions.choices):
        similarity = (vectorizer.transform(choices) @ contexts[i].T).toarray().ravel()  # rows are l2-normalised
        predictions.append(int(np.argmax(similarity)))  # the first among equals
    metrics = choice_metrics(predictions, questions)
    return floor_result(NAME, plan, metrics, len(questions), started, predictions)
