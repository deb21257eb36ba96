"""Evaluate a token classifier (`--task ner`): the plan's sentences -> windows -> one tag per word -> seqeval.

The model's own label list (id2label, saved by finetune) is the task's; every tag of the file must be one of
them. Predictions are written in CoNLL layout: each input line (the token and any other columns), then the gold
tag when the file has one, then the predicted tag; a blank line between sentences. That is the layout conlleval
reads (gold and predicted tags last).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.metrics import resolve
from bertcli.outputs import atomic_file
from bertcli.report import EvalResult
from bertcli.schema.eval import EvalConfig
from bertcli.tasks.base import EvalTask
from bertcli.tasks.evaluation import (
    eval_batches,
    eval_forward,
    import_modeling,
    load_trained_head,
    max_length_of,
    note,
    predict_features,
)
from bertcli.tasks.tagging.data import TaggedSentences, encode_sentences, read_tagged, tagging_task
from bertcli.tasks.tagging.features import TaggingCollator, TaggingSplit, score_split

NER = "ner"


def tagging_plan(cfg: EvalConfig, configs: dict[str, dict], predictions_only: bool) -> EvalTask:
    """A token-classification eval: entity-level seqeval scores and token accuracy."""
    if cfg.output.submission_dir is not None:
        raise UsageError("--submission-dir writes GLUE's files; for ner use --predictions (CoNLL layout)")
    spec, sentences = tagging_plan_parts(cfg, configs, predictions_only)
    wanted = [resolve(m).name for m in (cfg.task.metrics or spec.metrics)]
    unknown = [m for m in wanted if m not in spec.metrics]
    if unknown:
        raise UsageError(f"task ner reports {', '.join(spec.metrics)}, not {unknown[0]} (task.metrics)")
    metrics = [] if predictions_only else wanted
    if predictions_only and (cfg.gates.fail_under or cfg.gates.fail_over or cfg.gates.baseline):
        raise UsageError("gates need metrics, and --predictions-only computes none; drop one or the other")
    return EvalTask(spec, sentences, metrics)


def tagging_plan_parts(cfg: EvalConfig, configs: dict[str, dict], predictions_only: bool):
    """(spec, sentences): the spec with the first model's labels, every model checked to be a token classifier
    with the same labels, and the data read and checked against them."""
    t = cfg.task
    for path, raw in configs.items():  # first: another model's labels (a QA model's start/end) are no tags
        archs = list(raw.get("architectures") or [])
        if archs and not any(a.endswith("ForTokenClassification") for a in archs):
            raise UsageError(f"{path} is a {', '.join(archs)}, not a token classifier: task ner needs a model "
                             "fine-tuned with `bertcli finetune ner`")  # fmt: skip
    first = next(iter(configs.values()))
    id2label = first.get("id2label") or {}
    labels = t.labels or [id2label[k] for k in sorted(id2label, key=int)]
    spec = tagging_task(t.scheme, labels, strict=t.strict, tag_column=t.tag_column, tokens_field=t.tokens_field,
                        tags_field=t.tags_field, strip_position_digits=t.strip_position_digits,
                        nested=t.nested)  # fmt: skip
    for path, raw in configs.items():
        own = [(raw.get("id2label") or {})[k] for k in sorted(raw.get("id2label") or {}, key=int)]
        if own != list(spec.label_names):
            raise UsageError(f"{path} has labels {own} but the task has {list(spec.label_names)}: compare models "
                             "trained on the same tags")  # fmt: skip
    sentences = read_tagged(spec, cfg.data.path, cfg.data.format)
    if sentences.tags is None and not predictions_only:
        raise UsageError(f"{cfg.data.path} has no tags, and metrics need them; pass --predictions-only to tag it")
    return spec, sentences


def evaluate_tagger(path: str, plan, cfg: EvalConfig, accelerator, family) -> EvalResult:
    """Tags (and metrics, when the data has tags) of one token classifier on the plan's sentences."""
    from bertcli.model_dir import load_tokenizer_for

    start = time.perf_counter()
    import_modeling(cfg.model.runtime)
    imported = time.perf_counter()
    spec, sentences = plan.spec, plan.examples
    tok = load_tokenizer_for(Path(path), cfg.model.tokenizer_path, plan.configs[path]["vocab_size"],
                            words_pre_split=True, use_only=True)  # fmt: skip
    max_length = max_length_of(cfg, plan.configs[path])
    split = TaggingSplit(sentences, encode_sentences(tok, sentences, spec, max_length))
    order = np.argsort(-split.lengths, kind="stable")  # longest first: least padding
    forward = eval_forward(family, path, cfg, accelerator, lambda: _load_tagger(path))
    loader = eval_batches(accelerator, order, cfg.data.batch_size, TaggingCollator(split, tok))
    loaded = time.perf_counter()
    logits = predict_features(accelerator, forward, loader, len(split))
    computed = time.perf_counter()
    metrics, tags = score_split(spec, split, logits)
    metrics = {k: v for k, v in metrics.items() if k in plan.metrics or "/" in k}  # TYPE/f1: per entity type
    if split.features.windowed:
        note(f"{path}: {split.features.windowed} sentences longer than {max_length} pieces were cut into windows")
    done = time.perf_counter()
    return EvalResult(
        model=path, task=NER, metrics=metrics if plan.metrics else {}, examples=len(sentences),
        runtime={"import_s": imported - start, "load_s": loaded - imported, "compute_s": computed - loaded,
                 "metrics_s": done - computed, "total_s": done - imported},
        label_names=list(spec.label_names), index=[str(i) for i in range(len(sentences))],
        predictions=tags, references=sentences.tags,
    )  # fmt: skip


def _load_tagger(path: str):
    from transformers import AutoModelForTokenClassification

    return load_trained_head(path, AutoModelForTokenClassification, "token classifier", "tagging", "classifier")


def write_conll_predictions(path: Path, sentences: TaggedSentences, result: EvalResult) -> None:
    """The input in CoNLL layout with the predicted tag as the last column (the gold tag before it)."""
    with atomic_file(path) as handle:
        for i, words in enumerate(sentences.words):
            for j, word in enumerate(words):
                cells = [word, *(sentences.columns[i][j] if sentences.columns else [])]
                if sentences.tags is not None:
                    cells.append(sentences.tags[i][j])
                cells.append(result.predictions[i][j])
                handle.write(" ".join(cells) + "\n")
            handle.write("\n")
