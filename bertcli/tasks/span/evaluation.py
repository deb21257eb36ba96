"""Evaluate an extractive QA model (`--task squad`, `squad_v2`, `cmrc2018`): the plan's questions -> windows ->
n-best answers -> the official scripts' exact match and F1 (`bertcli.tasks.span`, `bertcli.metrics.squad`).

The file's answers are scored by their texts alone, as the official scripts score them; what reading it located,
fixed or skipped (`tasks.span.locate_answer`, data.empty_text) is printed and kept in metrics.json's `data`.

Predictions are written as `predictions.json`, question id -> answer text ("" for no answer), the layout the
SQuAD evaluation scripts read. For squad_v2 the scores include HasAns_* / NoAns_* and the best null threshold on
the file (best_f1_thresh; finetune and eval take it as task.null_score_diff_threshold).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.outputs import write_json
from bertcli.report import EvalResult
from bertcli.schema.eval import EvalConfig
from bertcli.tasks.base import EvalTask
from bertcli.tasks.evaluation import (
    eval_batches,
    eval_forward,
    import_modeling,
    load_trained_head,
    max_length_of,
    predict_features,
)
from bertcli.tasks.span.data import check_scorable, describe_reading, encode_qa, read_qa, span_task
from bertcli.tasks.span.features import SpanCollator, SpanSplit, fast_tokenizer, score_span_split


def span_plan(cfg: EvalConfig, name: str, configs: dict[str, dict], predictions_only: bool) -> EvalTask:
    """`TaskFamily.eval_plan` for a QA task: the spec, the questions read and checked, the metrics to report."""
    spec, questions, metrics = span_plan_parts(cfg, name.lower(), configs, predictions_only)
    return EvalTask(spec, questions, metrics)


def span_plan_parts(cfg: EvalConfig, name: str, configs: dict[str, dict], predictions_only: bool):
    """(spec, questions, metrics): every model checked to be a QA model, the file read and checked."""
    t = cfg.task
    if cfg.output.submission_dir is not None:
        raise UsageError(f"--submission-dir writes GLUE's files; for {name} use --predictions (predictions.json)")
    if t.doc_stride >= cfg.data.max_seq_length:
        raise UsageError(f"task.doc_stride {t.doc_stride} must be smaller than data.max_seq_length "
                         f"{cfg.data.max_seq_length} (BERT's SQuAD runs: 128 and 384)")  # fmt: skip
    spec = span_task(name, doc_stride=t.doc_stride, n_best_size=t.n_best_size, max_answer_length=t.max_answer_length,
                     null_score_diff_threshold=t.null_score_diff_threshold)  # fmt: skip
    for path, raw in configs.items():
        archs = list(raw.get("architectures") or [])
        if archs and not any(a.endswith("ForQuestionAnswering") for a in archs):
            raise UsageError(f"{path} is a {', '.join(archs)}, not a QA model: task {name} needs a model "
                             f"fine-tuned with `bertcli finetune {name}`")  # fmt: skip
    from bertcli.metrics import resolve

    wanted = [resolve(m).name for m in (t.metrics or spec.metrics)]
    unknown = [m for m in wanted if m not in spec.metrics]
    if unknown:
        raise UsageError(f"task {name} reports {', '.join(spec.metrics)}, not {unknown[0]} (task.metrics)")
    if predictions_only and (cfg.gates.fail_under or cfg.gates.fail_over or cfg.gates.baseline):
        raise UsageError("gates need metrics, and --predictions-only computes none; drop one or the other")
    questions = read_qa(spec, cfg.data.path, cfg.data.empty_text)  # answers located, empty ones counted
    if not predictions_only:
        check_scorable(spec, questions, cfg.data.path)
    return spec, questions, [] if predictions_only else wanted


def span_reading(plan) -> tuple[dict[str, int], list[str]]:
    """(the counts of what reading the plan's QA file located, fixed and skipped, for metrics.json's data; one
    line of them for the user). Scores never need answer_start: unlocatable answers are scored by their text."""
    counts = dict(plan.examples.counts)
    return counts, [f"{plan.data}: {len(plan.examples)} questions; {describe_reading(counts)}"]


def evaluate_qa(path: str, plan, cfg: EvalConfig, accelerator, family) -> EvalResult:
    """Answers (and scores) of one QA model on the plan's questions."""
    start = time.perf_counter()
    import_modeling(cfg.model.runtime)
    imported = time.perf_counter()
    raw = plan.configs[path]
    tok = fast_tokenizer(Path(path), Path(cfg.model.tokenizer_path) if cfg.model.tokenizer_path else None,
                         raw["vocab_size"], use_only=True)  # fmt: skip
    max_length = max_length_of(cfg, raw)
    split = SpanSplit(plan.examples, encode_qa(tok, plan.examples, plan.spec, max_length))
    order = np.argsort(-split.lengths, kind="stable")  # longest first: least padding
    forward = eval_forward(family, path, cfg, accelerator, lambda: _load_qa_model(path))
    loader = eval_batches(accelerator, order, cfg.data.batch_size, SpanCollator(split, tok))
    loaded = time.perf_counter()
    logits = predict_features(accelerator, forward, loader, len(split))
    computed = time.perf_counter()
    metrics, answers = score_span_split(plan.spec, split, logits, score=bool(plan.metrics))
    metrics = {k: v for k, v in metrics.items() if k in plan.metrics or k not in plan.spec.metrics}  # v2 extras kept
    done = time.perf_counter()
    ids = list(plan.examples.ids)
    return EvalResult(
        model=path, task=plan.task, metrics=metrics if plan.metrics else {}, examples=len(ids),
        runtime={"import_s": imported - start, "load_s": loaded - imported, "compute_s": computed - loaded,
                 "metrics_s": done - computed, "total_s": done - imported},
        index=ids, predictions=[answers.texts[q] for q in ids],
    )  # fmt: skip


def _load_qa_model(path: str):
    from transformers import AutoModelForQuestionAnswering

    return load_trained_head(path, AutoModelForQuestionAnswering, "QA model", "QA", "qa_outputs")


def write_qa_predictions(path: Path, result: EvalResult) -> None:
    """predictions.json: question id -> answer text, as the SQuAD scripts read it."""
    write_json(path, dict(zip(result.index, result.predictions)))
