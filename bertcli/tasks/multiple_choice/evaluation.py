"""Evaluate multiple-choice models (`bertcli eval --task swag` / `multiple_choice`): the plan's questions ->
(context, choice) pairs -> one chosen index per question -> accuracy. Several models are compared on the same
questions; gates read their accuracy. Predictions are JSON lines: id, the chosen index and its text, and the right
index (`label`) when the file has labels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.metrics import resolve
from bertcli.report import EvalResult
from bertcli.tasks.base import EvalTask
from bertcli.tasks.multiple_choice.data import choice_task, read_choices
from bertcli.tasks.multiple_choice.features import (
    choice_metrics,
    encode_choices,
    predicted_choices,
    write_choice_predictions,
)

HEAD = "ForMultipleChoice"


def is_choice_model(raw: dict) -> bool:
    """Whether a model's config.json names a multiple-choice head."""
    return any(a.endswith(HEAD) for a in raw.get("architectures") or [])


def choice_plan(cfg, name: str, configs: dict[str, dict], predictions_only: bool) -> EvalTask:
    """Every model checked to be a multiple-choice model, the metrics (accuracy, or what task.metrics names:
    accuracy is the only one that scores chosen indices) and the questions read."""
    for path, raw in configs.items():
        if not is_choice_model(raw):
            archs = ", ".join(raw.get("architectures") or [raw.get("model_type", "?")])
            raise UsageError(f"{path} is a {archs}, not a multiple-choice model: task {name} needs a model "
                             f"fine-tuned with `bertcli finetune {name.lower()}`")  # fmt: skip
    if cfg.output.submission_dir is not None:
        raise UsageError(f"--submission-dir writes GLUE's files; for {name.lower()} use --predictions "
                         "(predictions.jsonl)")  # fmt: skip
    spec = choice_task(name.lower())  # eval's --task is case-insensitive
    wanted = [resolve(m).name for m in (cfg.task.metrics or spec.metrics)]
    other = [m for m in wanted if m != "accuracy"]
    if other:
        raise UsageError(f"metric {other[0]} does not score a multiple-choice task; it is scored by accuracy")
    if predictions_only and (cfg.gates.fail_under or cfg.gates.fail_over or cfg.gates.baseline):
        raise UsageError("gates need metrics, and --predictions-only computes none; drop one or the other")
    examples = read_choices(cfg.data.path, cfg.data.format, empty_text=cfg.data.empty_text)
    if examples.labels is None and not predictions_only:
        raise UsageError(f"{cfg.data.path} has no labels, and accuracy needs them; pass --predictions-only to "
                         "write predictions without metrics")  # fmt: skip
    return EvalTask(spec, examples, [] if predictions_only else wanted)


def choice_reading(plan) -> tuple[dict[str, int], list[str]]:
    """`TaskFamily.eval_reading`: the questions skipped for an empty text (data.empty_text=skip)."""
    skipped = plan.examples.skipped_empty
    return {"skipped_empty": skipped}, [f"{plan.data}: {skipped} question(s) skipped (empty text)"] if skipped else []


def evaluate_choice_model(path: str, plan, cfg, accelerator, family) -> EvalResult:
    """The chosen index of every question (and accuracy, when the file has labels) of one model."""
    from bertcli.model_dir import load_tokenizer_for
    from bertcli.tasks.evaluation import eval_batches, eval_forward, import_modeling, max_length_of, note
    from bertcli.tasks.multiple_choice.features import ChoiceCollator, predict_choices

    start = time.perf_counter()
    import_modeling(cfg.model.runtime)
    imported = time.perf_counter()
    examples, raw = plan.examples, plan.configs[path]
    tok = load_tokenizer_for(Path(path), cfg.model.tokenizer_path, raw["vocab_size"], use_only=True, light=True)
    features = encode_choices(tok, examples, max_length_of(cfg, raw))
    order = np.argsort(-features.lengths, kind="stable")  # longest first: least padding
    forward = eval_forward(family, path, cfg, accelerator, lambda: _load_choice_model(path))
    loader = eval_batches(accelerator, order, cfg.data.batch_size, ChoiceCollator(features))
    loaded = time.perf_counter()
    predicted = predicted_choices(predict_choices(accelerator, forward, loader, len(examples)))
    computed = time.perf_counter()
    metrics = choice_metrics(predicted, examples) if plan.metrics else {}
    if features.truncated or features.choices_cut:
        note(f"{path}: {features.truncated} question(s) had their context cut to fit, {features.choices_cut} "
             "choice(s) were cut too")  # fmt: skip
    done = time.perf_counter()
    return EvalResult(
        model=path, task=plan.task, metrics=metrics, examples=len(examples),
        runtime={"import_s": imported - start, "load_s": loaded - imported, "compute_s": computed - loaded,
                 "metrics_s": done - computed, "total_s": done - imported},
        index=list(examples.ids), predictions=predicted, references=examples.labels,
    )  # fmt: skip


def _load_choice_model(path: str):
    from transformers import AutoModelForMultipleChoice

    from bertcli.tasks.evaluation import load_trained_head

    return load_trained_head(path, AutoModelForMultipleChoice, "multiple-choice model", "multiple-choice",
                             "classifier")  # fmt: skip


def write_eval_predictions(path: Path, plan, result: EvalResult) -> None:
    write_choice_predictions(path, plan.examples, result.predictions)
