"""`bertcli eval` of a sequence classifier (a GLUE or custom task): the plan's examples -> token ids once ->
batches sorted by length (dynamic padding) -> gathered logits -> predictions in file order -> GLUE metrics
through `bertcli.metrics` (offline `evaluate` modules). Predictions are written as predictions.tsv (report.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.metrics import compute_metrics, import_metric_module, resolve
from bertcli.report import EvalResult
from bertcli.schema.eval import EvalConfig
from bertcli.tasks.base import EvalPlan, EvalTask
from bertcli.tasks.classification.data import TaskExamples, TaskSpec, custom_task, glue_task, read_examples, with_labels
from bertcli.tasks.evaluation import (
    as_numpy,
    eval_batches,
    eval_forward,
    import_modeling,
    max_length_of,
    no_grad,
    note,
    quiet_loading,
)


def classification_plan(cfg: EvalConfig, name: str, configs: dict[str, dict], predictions_only: bool) -> EvalTask:
    """The spec (custom: the model's own labels), every model's head and labels checked, the file read."""
    spec = _task_spec(cfg, name, configs)
    for path, raw in configs.items():
        _check_classifier(path, raw, spec)
    metrics = [] if predictions_only else [resolve(m).name for m in (cfg.task.metrics or spec.metrics)]
    if predictions_only and (cfg.gates.fail_under or cfg.gates.fail_over or cfg.gates.baseline):
        raise UsageError("gates need metrics, and --predictions-only computes none; drop one or the other")
    examples = read_examples(spec, cfg.data.path, cfg.data.format, empty_text=cfg.data.empty_text)
    if examples.labels is None and not predictions_only:
        raise UsageError(
            f"{cfg.data.path} has no labels (no column {spec.label_column!r}: a test file?) and metrics need them; "
            "pass --predictions-only to write predictions without metrics (--submission-dir for GLUE's server)"
        )
    return EvalTask(spec, examples, metrics)


def _architectures(raw: dict) -> list[str]:
    return list(raw.get("architectures") or [])


def _task_spec(cfg: EvalConfig, name: str, configs: dict[str, dict]) -> TaskSpec:
    if name.lower() != "custom":
        return glue_task(name)
    t = cfg.task
    first = next(iter(configs.values()))
    regression = t.regression if t.regression is not None else first.get("problem_type") == "regression"
    spec = custom_task(t.text_columns, t.label_column, t.labels, regression, t.metrics)
    if not regression and t.labels is None:  # the model's own label list, as finetune saved it
        id2label = first.get("id2label") or {}
        spec = with_labels(spec, [id2label[k] for k in sorted(id2label, key=int)])
    return spec


def _check_classifier(path: str, raw: dict, spec: TaskSpec) -> None:
    """A sequence-classification head whose labels are the task's: named sets must match exactly, in order."""
    archs = _architectures(raw)
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UsageError(
            f"{path} is a {', '.join(archs)} without a sequence-classification head for task '{spec.name}': "
            f"fine-tune it first (bertcli finetune), or evaluate it with --task pretraining"
        )
    id2label = raw.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    wanted = list(spec.label_names or ["score"])
    generic = names == [f"LABEL_{i}" for i in range(len(names))]  # a model saved without label names
    if spec.is_regression != (raw.get("problem_type") == "regression" or len(names) == 1):
        kind = "a regression (one score)" if spec.is_regression else f"a {len(wanted)}-class classification"
        raise UsageError(f"{path} has labels {names} but task '{spec.name}' is {kind} with labels {wanted}")
    if not spec.is_regression and (len(names) != len(wanted) or (names != wanted and not generic)):
        raise UsageError(
            f"{path} has labels {names} but task '{spec.name}' has labels {wanted}: "
            "evaluate the model on the task it was fine-tuned for"
        )


def load_task_model(path: str):
    """A saved sequence classifier (in eval mode); an error if its head would be initialised afresh."""
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_loading():  # a missing head is reported below, as one line
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True, output_loading_info=True
            )
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot load a sequence classifier ({str(err).splitlines()[0]})") from None
    missing = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k]
    if missing:
        raise UsageError(f"{path} has no trained classification head (missing {', '.join(sorted(missing))})")
    return model.eval()


def evaluate_classifier(path: str, plan: EvalPlan, cfg: EvalConfig, accelerator, family) -> EvalResult:
    """Predictions (and metrics, when the data has labels) of one fine-tuned model on the plan's examples."""
    from bertcli.model_dir import load_tokenizer_for
    from bertcli.tasks.classification.features import BatchCollator, encode_examples

    start = time.perf_counter()
    import_modeling(cfg.model.runtime)
    imported = time.perf_counter()
    spec, examples, raw = plan.spec, plan.examples, plan.configs[path]
    tok = load_tokenizer_for(Path(path), cfg.model.tokenizer_path, raw["vocab_size"], use_only=True, light=True)
    max_length = max_length_of(cfg, raw)
    split = encode_examples(tok, examples, max_length, spec.is_regression)
    order = np.argsort(-split.lengths, kind="stable")  # longest first: least padding, and OOM shows at once
    forward = eval_forward(family, path, cfg, accelerator, lambda: load_task_model(path))
    loader = eval_batches(accelerator, order, cfg.data.batch_size, BatchCollator(split))
    loaded = time.perf_counter()
    preload = MetricsPreloader(plan.metrics)
    logits = _predict(forward, loader, accelerator, len(split), spec.num_labels, after_first_batch=preload.start)
    computed = time.perf_counter()
    preload.join()  # whatever import is left after the forward passes counts as import time, not the model's
    waited = time.perf_counter() - computed
    computed += waited
    result = _classifier_result(path, plan, examples, logits)
    if split.truncated:
        note(f"{path}: {split.truncated} of {len(split)} examples truncated to {max_length} tokens")
    done = time.perf_counter()
    result.runtime = {
        "import_s": imported - start + waited,  # the libraries' import, paid by the first model only
        "load_s": loaded - imported,
        "compute_s": computed - waited - loaded,
        "metrics_s": done - computed,
        "total_s": done - imported - waited,  # the model's own time: a comparison table is fair to the first model
    }
    return result


def _predict(forward, loader, accelerator, n: int, width: int, after_first_batch=None) -> np.ndarray:
    out = np.full((n, width), np.nan, dtype=np.float64)
    with no_grad(accelerator):
        for step, batch in enumerate(loader):
            index = batch.pop("example_index")
            batch.pop("labels", None)
            index, logits = accelerator.gather_for_metrics((index, forward(**batch)))
            out[as_numpy(index)] = as_numpy(logits)
            if step == 0 and after_first_batch is not None:
                after_first_batch()
    if np.isnan(out).any():  # every example must have come back exactly once
        raise RuntimeError(f"{int(np.isnan(out).any(axis=1).sum())} examples got no prediction")
    return out


class MetricsPreloader:
    """Import the metric modules (evaluate, scikit-learn, scipy: seconds of start-up) on a thread while the
    forward passes run: torch releases the GIL in its kernels, so the import mostly uses time that was idle.

    Started after the first batch, when every module the forward needs is imported, so the two threads never
    wait on each other's import locks. A failed import is simply repeated, and raised, by `compute_metrics`."""

    def __init__(self, names: list[str]):
        self.names = [n for n in names if resolve(n).module]
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        for name in self.names:
            try:
                import_metric_module(name)
            except Exception:  # noqa: BLE001 - compute_metrics imports it again and reports the error
                return

    def start(self) -> None:
        if self.names and self.thread is None:
            self.thread = threading.Thread(target=self._run, name="bertcli-metrics-import", daemon=True)
            self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def _classifier_result(path: str, plan: EvalPlan, examples: TaskExamples, logits: np.ndarray) -> EvalResult:
    spec = plan.spec
    if spec.is_regression:
        predictions, probabilities = logits[:, 0].tolist(), None
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).tolist()
        predictions = logits.argmax(axis=1).tolist()
    metrics = {}
    if plan.metrics:
        metrics = compute_metrics(plan.metrics, predictions, examples.labels, num_labels=spec.num_labels)
    return EvalResult(
        model=path,
        task=plan.task,
        metrics=metrics,
        examples=len(examples),
        label_names=None if spec.is_regression else list(spec.label_names),
        index=list(examples.index),
        predictions=predictions,
        probabilities=probabilities,
        references=examples.labels,
    )
