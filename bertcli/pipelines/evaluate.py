"""`run_eval`: score one or more models on one data set; report, gate, and write predictions or GLUE files.

    plan (task, metrics, gates, labels checked, data read: no model loaded yet, so bad input costs nothing)
      -> per model: load -> encode once -> batches sorted by length (dynamic padding) -> gather -> metrics
      -> gates -> report on stdout (+ metrics.json, predictions, submission file)

Fine-tuned models (`--task TASK`) are scored with the task's GLUE metrics through `bertcli.metrics` (offline
`evaluate` modules). `BertForPreTraining` models (`--task pretraining`, or no task) get MLM loss, perplexity,
masked-token accuracy and NSP accuracy under fixed masks, a `BertForMaskedLM` the MLM ones (see
`evaluate_pretraining.py`).

Under `accelerate launch` every process runs its share of the batches; `gather_for_metrics` drops the samples
Accelerate repeats to even out the last batch, and the example indices travel with the outputs, so predictions
land in file order exactly once. Files are written and the report printed by the main process only.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertcli.config import dump_config
from bertcli.errors import UsageError
from bertcli.gates import Gate, GateResult, build_gates, check_gates
from bertcli.metrics import PRETRAINING_METRICS, compute_metrics, resolve
from bertcli.outputs import write_text
from bertcli.pipelines.evaluate_span import (
    SPAN,
    evaluate_qa,
    is_span_task,
    span_plan_parts,
    span_reading,
    write_qa_predictions,
)
from bertcli.pipelines.evaluate_tagging import NER, evaluate_tagger, tagging_plan_parts, write_conll_predictions
from bertcli.report import (
    EvalResult,
    file_sha256,
    render,
    submission_name,
    write_metrics,
    write_predictions,
    write_submission,
)
from bertcli.run_output import RunOutput
from bertcli.schema.eval import EvalConfig
from bertcli.tasks import TaskExamples, TaskSpec, custom_task, glue_task, read_examples, with_labels
from bertcli.tasks.tagging import reading_notes

REPORT_FILES = {"table": "report.txt", "markdown": "report.md", "junit": "report.xml", "json": "report.json"}
PRETRAINING = "pretraining"


@dataclass
class Plan:
    """Everything decided before a model is loaded."""

    kind: str  # "task" or "pretraining"
    task: str
    spec: TaskSpec | None
    metrics: list[str]
    gates: list[Gate]
    predictions_only: bool
    data: Path | str
    examples: TaskExamples | None = None
    configs: dict[str, dict] = field(default_factory=dict)  # model path -> its config.json


@dataclass
class EvalOutcome:
    results: list[EvalResult]
    gates: list[GateResult]
    report: str
    output_dir: Path | None
    main_process: bool = True  # under a launcher, the one process that printed the report and wrote the files

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


def run_eval(cfg: EvalConfig, overwrite: bool = False) -> EvalOutcome:
    """Evaluate every model of `cfg.model.paths` on `cfg.data.path`; print the report, write the files.

    Returns the outcome; the caller decides what a failed gate means (the CLI exits with code 3)."""
    plan = make_plan(cfg)
    accelerator = _accelerator(cfg)  # before anything else touches Accelerate's process state
    if plan.kind == NER and accelerator.is_main_process:
        for line in reading_notes(plan.spec, plan.examples):  # once per file, not once per model
            _note(line)
    output = _plan_outputs(cfg, plan, overwrite)
    read_counts, read_line = span_reading(plan) if plan.kind == SPAN else ({}, "")  # QA: answers located, skips
    if read_line and accelerator.is_main_process:
        _note(read_line)
    with output or nullcontext():  # one run at a time in the output folder
        return _evaluate(cfg, plan, accelerator, output, read_counts)


def _evaluate(cfg: EvalConfig, plan: Plan, accelerator, output: RunOutput | None, read_counts: dict) -> EvalOutcome:
    results = []
    for path in cfg.model.paths:
        if plan.kind == PRETRAINING:
            from bertcli.pipelines.evaluate_pretraining import evaluate_pretraining

            results.append(evaluate_pretraining(path, plan, cfg, accelerator))
        elif plan.kind in (NER, SPAN):
            results.append((evaluate_tagger if plan.kind == NER else evaluate_qa)(path, plan, cfg, accelerator))
        else:
            results.append(evaluate_classifier(path, plan, cfg, accelerator))
    gate_results = [g for r in results for g in check_gates(plan.gates, r.model, r.metrics)]
    if accelerator.is_main_process:
        data = {"path": str(plan.data), "sha256": _data_hash(plan, cfg), "examples": results[0].examples,
                **read_counts}  # fmt: skip
        report = render(cfg.output.format, results, gate_results, data, accelerator.num_processes)
        written = _write_outputs(cfg, plan, output, results, gate_results, report, data, accelerator.num_processes)
        print(report, end="", flush=True)
        for line in written:
            _note(line)
    else:
        report = ""
    accelerator.wait_for_everyone()  # no process exits (a failed gate) while the main one still writes
    out = output.out if output else None
    return EvalOutcome(results, gate_results, report, out, accelerator.is_main_process)


# --- the plan: every check that needs no model -------------------------------------------------------------


def make_plan(cfg: EvalConfig) -> Plan:
    """Resolve the task, its metrics and gates, check each model's head and labels, and read a task's data."""
    configs = {p: _model_config(Path(p), cfg.model.tokenizer_path) for p in cfg.model.paths}
    name = cfg.task.name or _task_from_models(configs)
    predictions_only = cfg.output.predictions_only or cfg.output.submission_dir is not None
    if name.lower() == PRETRAINING:
        if predictions_only or cfg.output.predictions:
            raise UsageError(
                "a pretrained model's eval has no predictions to write; drop --predictions, --predictions-only "
                "and --submission-dir"
            )
        for path, raw in configs.items():
            _check_pretraining_head(path, raw)
        metrics = list(PRETRAINING_METRICS)
        return Plan(PRETRAINING, PRETRAINING, None, metrics, _gates(cfg, metrics), False, cfg.data.path, None, configs)
    if name.lower() == NER:
        return _tagging_plan(cfg, configs, predictions_only)
    if is_span_task(name):  # extractive QA (evaluate_span)
        spec, questions, metrics = span_plan_parts(cfg, name.lower(), configs, predictions_only)
        return Plan(SPAN, spec.name, spec, metrics, _gates(cfg, metrics), predictions_only, Path(cfg.data.path),
                    questions, configs)  # fmt: skip
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
    gates = _gates(cfg, metrics)
    return Plan("task", spec.name, spec, metrics, gates, predictions_only, Path(cfg.data.path), examples, configs)


def _tagging_plan(cfg: EvalConfig, configs: dict[str, dict], predictions_only: bool) -> Plan:
    """A token-classification eval: entity-level seqeval scores and token accuracy (`evaluate_tagging`)."""
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
    return Plan(NER, NER, spec, metrics, _gates(cfg, metrics), predictions_only, Path(cfg.data.path), sentences,
                configs)  # fmt: skip


def _gates(cfg: EvalConfig, available) -> list[Gate]:
    g = cfg.gates
    return build_gates(list(available), g.fail_under, g.fail_over, g.baseline, g.max_drop)


def _model_config(path: Path, tokenizer_path: str | None = None) -> dict:
    """The model folder's config.json, its weights checked; with model.tokenizer_path, that tokenizer checked
    against the model (its size, and its tokens against the model's own tokenizer) before any output exists."""
    from bertcli.pipelines.finetune_model import check_checkpoint_dir, load_tokenizer_for

    raw = check_checkpoint_dir(path)
    if tokenizer_path is not None:
        load_tokenizer_for(path, Path(tokenizer_path), raw.get("vocab_size", -1))
    return raw


def _architectures(raw: dict) -> list[str]:
    return list(raw.get("architectures") or [])


def _task_from_models(configs: dict[str, dict]) -> str:
    if all(any(a.endswith("ForTokenClassification") for a in _architectures(raw)) for raw in configs.values()):
        return NER  # a token classifier's only task here
    for path, raw in configs.items():
        if not any(a.endswith(("ForPreTraining", "ForMaskedLM")) for a in _architectures(raw)):
            arch = ", ".join(_architectures(raw)) or raw.get("model_type", "?")
            raise UsageError(
                f"no task given and {path} is a {arch}: pass --task (a GLUE task, custom; squad, squad_v2 or "
                "cmrc2018 for a QA model) for a fine-tuned model, or --task pretraining for a BertForPreTraining"
            )
    return PRETRAINING


def _check_pretraining_head(path: str, raw: dict) -> None:
    archs = _architectures(raw)
    if archs and not {"BertForPreTraining", "BertForMaskedLM"} & set(archs):
        raise UsageError(
            f"{path} is a {', '.join(archs)}, not a BertForPreTraining or BertForMaskedLM: it has no MLM head to "
            "evaluate (for a fine-tuned model pass its --task)"
        )


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


# --- fine-tuned models --------------------------------------------------------------------------------------


def _accelerator(cfg: EvalConfig):
    from accelerate import Accelerator

    from bertcli.training.devices import distributed_without_accelerator

    return Accelerator(cpu=cfg.run.device == "cpu" or distributed_without_accelerator())


def load_task_model(path: str, cfg: EvalConfig, raw: dict):
    """(model, tokenizer) of a saved sequence classifier; an error if its head would be initialised afresh."""
    from transformers import AutoModelForSequenceClassification

    from bertcli.pipelines.finetune_model import load_tokenizer_for

    tok = load_tokenizer_for(Path(path), cfg.model.tokenizer_path, raw["vocab_size"])
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
    return model.eval(), tok


def import_modeling() -> None:
    """Import transformers' model code (most of a CI eval's start-up) at a point where it can be timed."""
    import transformers.modeling_utils  # noqa: F401
    from transformers.models.bert import modeling_bert  # noqa: F401 - the architecture this tool is about


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No transformers warnings or progress bars while loading: stderr keeps one line per problem."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class _Positions(torch.utils.data.Dataset):
    """Example indices in evaluation order (longest first): a plain sequential DataLoader over it batches by
    length, and Accelerate can shard it and count its remainder like any dataset."""

    def __init__(self, order: np.ndarray):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> int:
        return int(self.order[i])


def evaluate_classifier(path: str, plan: Plan, cfg: EvalConfig, accelerator) -> EvalResult:
    """Predictions (and metrics, when the data has labels) of one fine-tuned model on the plan's examples."""
    from bertcli.pipelines.finetune_data import BatchCollator, encode_examples
    from bertcli.pipelines.finetune_model import ClassifierForward

    start = time.perf_counter()
    import_modeling()
    imported = time.perf_counter()
    spec, examples = plan.spec, plan.examples
    model, tok = load_task_model(path, cfg, plan.configs[path])
    # the model cannot take more positions than it has embeddings for, whatever data.max_seq_length says
    max_length = min(cfg.data.max_seq_length, model.config.max_position_embeddings)
    split = encode_examples(tok, examples, max_length, spec.is_regression)
    order = np.argsort(-split.lengths, kind="stable")  # longest first: least padding, and OOM shows at once
    loader = torch.utils.data.DataLoader(
        _Positions(order), batch_size=cfg.data.batch_size, collate_fn=BatchCollator(split)
    )
    model = accelerator.prepare_model(model, evaluation_mode=True)
    loader = accelerator.prepare_data_loader(loader)
    forward = ClassifierForward(model)
    loaded = time.perf_counter()
    preload = MetricsPreloader(plan.metrics)
    logits = _predict(forward, loader, accelerator, len(split), spec.num_labels, after_first_batch=preload.start)
    computed = time.perf_counter()
    preload.join()  # whatever import is left after the forward passes counts as import time, not the model's
    waited = time.perf_counter() - computed
    computed += waited
    result = _classifier_result(path, plan, examples, logits)
    if split.truncated:
        _note(f"{path}: {split.truncated} of {len(split)} examples truncated to {max_length} tokens")
    done = time.perf_counter()
    result.runtime = {
        "import_s": imported - start + waited,  # the libraries' import, paid by the first model only
        "load_s": loaded - imported,
        "compute_s": computed - waited - loaded,
        "metrics_s": done - computed,
        "total_s": done - imported - waited,  # the model's own time: a comparison table is fair to the first model
    }
    return result


@torch.inference_mode()
def _predict(forward, loader, accelerator, n: int, width: int, after_first_batch=None) -> np.ndarray:
    out = np.full((n, width), np.nan, dtype=np.float64)
    for step, batch in enumerate(loader):
        index = batch.pop("example_index")
        batch.pop("labels", None)
        logits = forward(**batch).float()
        index, logits = accelerator.gather_for_metrics((index, logits))
        out[index.cpu().numpy()] = logits.cpu().numpy()
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
        self.modules = [f"bertcli.metrics.{resolve(n).module}" for n in names if resolve(n).module]
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - compute_metrics imports it again and reports the error
                return

    def start(self) -> None:
        if self.modules and self.thread is None:
            self.thread = threading.Thread(target=self._run, name="bertcli-metrics-import", daemon=True)
            self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def _classifier_result(path: str, plan: Plan, examples: TaskExamples, logits: np.ndarray) -> EvalResult:
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


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- outputs ------------------------------------------------------------------------------------------------


# What --overwrite replaces of an earlier eval in the output directory.
OUTPUTS = ("metrics.json", *REPORT_FILES.values(), "config.yaml", "predictions*.tsv", "predictions*.conll",
           "predictions*.json")  # fmt: skip


def _plan_outputs(cfg: EvalConfig, plan: Plan, overwrite: bool) -> RunOutput | None:
    """Check every output option before any model is loaded (every process: nothing is written here). The folder
    is made when the results are written; an earlier eval's files stay until then."""
    o = cfg.output
    if (o.predictions or o.predictions_only) and not (o.dir or o.submission_dir):
        raise UsageError("predictions need a folder: pass --output DIR (or --submission-dir DIR for GLUE's server)")
    if o.submission_dir is not None:
        if len(cfg.model.paths) != 1:
            raise UsageError("--submission-dir takes exactly one --model (one GLUE file per task)")
        target = Path(o.submission_dir) / submission_name(plan.task, plan.data)
        if target.exists() and not overwrite:
            raise UsageError(f"{target} exists; pass --overwrite to replace it")
    if o.dir is None:
        return None
    inputs = {"model.paths": cfg.model.paths, "data.path": cfg.data.path, "gates.baseline": cfg.gates.baseline}
    return RunOutput.plan(o.dir, overwrite, OUTPUTS, inputs)


def _write_outputs(
    cfg, plan: Plan, output: RunOutput | None, results, gates, report: str, data: dict, processes: int
) -> list[str]:
    """Write every requested file; return what was written, for the user."""
    written = []
    o = cfg.output
    if o.submission_dir is not None:
        result = results[0]
        target = Path(o.submission_dir) / submission_name(plan.task, plan.data)
        values = None if plan.spec.is_regression else list(plan.spec.label_values)
        write_submission(target, result.predictions, result.index, values)
        written.append(f"GLUE submission file: {target}")
    if output is None:
        return written
    out = output.create()
    try:
        _write_files(cfg, out, results, gates, report, data, processes, plan)
    except BaseException:
        output.discard()
        raise
    output.commit()
    out = output.out
    written.append(f"saved: {out}/metrics.json, {out}/{REPORT_FILES[o.format]}, {out}/config.yaml")
    return written


def _write_files(cfg, out: Path, results, gates, report: str, data: dict, processes: int, plan: Plan) -> None:
    o = cfg.output
    write_metrics(out / "metrics.json", results, data, gates, processes)
    write_text(out / REPORT_FILES[o.format], report)
    write_text(out / "config.yaml", dump_config(cfg, "eval"))
    if o.predictions or o.predictions_only:
        ext = {NER: "conll", SPAN: "json"}.get(plan.kind, "tsv")
        for i, result in enumerate(results):
            name = f"predictions.{ext}" if len(results) == 1 else f"predictions-{i + 1}-{Path(result.model).name}.{ext}"
            if plan.kind == SPAN:
                write_qa_predictions(out / name, result)
            elif plan.kind == NER:
                write_conll_predictions(out / name, plan.examples, result)
            else:
                write_predictions(out / name, result)


def _data_hash(plan: Plan, cfg: EvalConfig) -> str | None:
    path = Path(str(plan.data))
    if plan.kind == PRETRAINING and (path / "dataset" / cfg.data.split).is_dir():
        return file_sha256(path / "dataset" / cfg.data.split)
    if path.exists():
        return file_sha256(path)
    from bertcli.corpus import resolve_inputs  # a glob of raw text files: one hash over theirs, in order

    return hashlib.sha256("".join(file_sha256(p) for p in resolve_inputs([str(plan.data)])).encode()).hexdigest()
