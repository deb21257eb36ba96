"""`run_eval`: score one or more models on one data set; report, gate, and write predictions or GLUE files.

    plan (task, metrics, gates, labels checked, data read: no model loaded yet, so bad input costs nothing)
      -> per model: load -> encode once -> batches sorted by length (dynamic padding) -> gather -> metrics
      -> gates -> report on stdout (+ metrics.json, predictions, submission file)

Fine-tuned models (`--task TASK`) are planned, run, scored and their predictions written by the task's family
(`bertcli.tasks.base.TaskFamily`, found by `bertcli.tasks.registry`; metrics through `bertcli.metrics`, offline
`evaluate` modules); this module names no family. `BertForPreTraining` models (`--task pretraining`, or no task)
get MLM loss, perplexity, masked-token accuracy and NSP accuracy under fixed masks, a `BertForMaskedLM` the MLM
ones (see `pretraining/evaluation.py`).

Under `accelerate launch` every process runs its share of the batches; `gather_for_metrics` drops the samples
Accelerate repeats to even out the last batch, and the example indices travel with the outputs, so predictions
land in file order exactly once. Files are written and the report printed by the main process only.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from bertcli.config import dump_config
from bertcli.errors import UsageError
from bertcli.gates import Gate, GateResult, build_gates, check_gates
from bertcli.metrics import PRETRAINING_METRICS
from bertcli.outputs import write_text
from bertcli.pipelines.floor import check_eval_floor, eval_floor
from bertcli.report import EvalResult, Floor, file_sha256, render, submission_name, write_metrics
from bertcli.run_output import RunOutput
from bertcli.schema.eval import EvalConfig
from bertcli.tasks.base import EvalPlan as Plan
from bertcli.tasks.evaluation import eval_accelerator
from bertcli.tasks.evaluation import note as _note
from bertcli.tasks.registry import families, family_for, family_of

REPORT_FILES = {"table": "report.txt", "markdown": "report.md", "junit": "report.xml", "json": "report.json"}
PRETRAINING = "pretraining"


@dataclass
class EvalOutcome:
    results: list[EvalResult]
    gates: list[GateResult]
    report: str
    output_dir: Path | None
    main_process: bool = True  # under a launcher, the one process that printed the report and wrote the files
    floor: Floor | None = None  # --floor: the classical floor's row (the main process's)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


def run_eval(cfg: EvalConfig, overwrite: bool = False) -> EvalOutcome:
    """Evaluate every model of `cfg.model.paths` on `cfg.data.path`; print the report, write the files.

    Returns the outcome; the caller decides what a failed gate means (the CLI exits with code 3)."""
    plan = make_plan(cfg)
    check_eval_floor(cfg, plan)  # its training file, before any model is loaded
    accelerator = eval_accelerator(cfg)  # before anything else touches Accelerate's process state
    output = _plan_outputs(cfg, plan, overwrite)
    read_counts, read_lines = ({}, []) if plan.kind == PRETRAINING else family_of(plan.spec).eval_reading(plan)
    if accelerator.is_main_process:
        for line in read_lines:  # once per file, not once per model
            _note(line)
    with output or nullcontext():  # one run at a time in the output folder
        return _evaluate(cfg, plan, accelerator, output, read_counts)


def _evaluate(cfg: EvalConfig, plan: Plan, accelerator, output: RunOutput | None, read_counts: dict) -> EvalOutcome:
    floor = eval_floor(cfg, plan) if accelerator.is_main_process else None  # first: a bad file costs no model load
    results = []
    for path in cfg.model.paths:
        if plan.kind == PRETRAINING:
            from bertcli.pretraining.evaluation import evaluate_pretraining

            results.append(evaluate_pretraining(path, plan, cfg, accelerator))
        else:
            results.append(family_of(plan.spec).evaluate(path, plan, cfg, accelerator))
            results[-1].engine, results[-1].precision = cfg.model.runtime, cfg.model.precision
    gate_results = [g for r in results for g in check_gates(plan.gates, r.model, r.metrics)]
    if accelerator.is_main_process:
        data = {"path": str(plan.data), "sha256": _data_hash(plan, cfg), "examples": results[0].examples,
                **read_counts}  # fmt: skip
        report = render(cfg.output.format, results, gate_results, data, accelerator.num_processes, floor)
        written = _write_outputs(cfg, plan, output, results, gate_results, report, data, accelerator.num_processes,
                                 floor)  # fmt: skip
        print(report, end="", flush=True)
        for line in written:
            _note(line)
    else:
        report = ""
    accelerator.wait_for_everyone()  # no process exits (a failed gate) while the main one still writes
    out = output.out if output else None
    return EvalOutcome(results, gate_results, report, out, accelerator.is_main_process, floor)


# --- the plan: every check that needs no model -------------------------------------------------------------


def make_plan(cfg: EvalConfig) -> Plan:
    """Resolve the task, its metrics and gates, check each model's head and labels, and read a task's data."""
    configs = {p: _model_config(Path(p), cfg.model.tokenizer_path) for p in cfg.model.paths}
    name = cfg.task.name or _task_from_models(configs)
    predictions_only = cfg.output.predictions_only or cfg.output.submission_dir is not None
    if cfg.model.runtime == "onnx":
        from bertcli.export import RUNTIME, require_onnx

        if name.lower() == PRETRAINING:
            raise UsageError("model.runtime onnx runs fine-tuned models; a pretrained model's eval runs on torch")
        require_onnx(modules=RUNTIME)  # before anything is read or written (an export made for the run: later)
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
    family = family_for(name.lower())
    task = family.eval_plan(cfg, name, configs, predictions_only)
    return Plan(family.name, task.spec.name, task.spec, task.metrics, _gates(cfg, task.metrics), predictions_only,
                Path(cfg.data.path), task.examples, configs)  # fmt: skip


def _gates(cfg: EvalConfig, available) -> list[Gate]:
    g = cfg.gates
    return build_gates(list(available), g.fail_under, g.fail_over, g.baseline, g.max_drop)


def _model_config(path: Path, tokenizer_path: str | None = None) -> dict:
    """The model folder's config.json, its weights checked; with model.tokenizer_path, that tokenizer checked
    against the model (its size, and its tokens against the model's own tokenizer) before any output exists."""
    from bertcli.model_dir import check_checkpoint_dir, load_tokenizer_for

    raw = check_checkpoint_dir(path)
    if tokenizer_path is not None:
        load_tokenizer_for(path, Path(tokenizer_path), raw.get("vocab_size", -1))
    return raw


def _architectures(raw: dict) -> list[str]:
    return list(raw.get("architectures") or [])


def _task_from_models(configs: dict[str, dict]) -> str:
    for family in families():
        if family.claims_models(configs):
            return family.task_names[0]
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
    inputs = {"model.paths": cfg.model.paths, "data.path": cfg.data.path, "gates.baseline": cfg.gates.baseline,
              "floor.train_file": cfg.floor.train_file}  # fmt: skip
    return RunOutput.plan(o.dir, overwrite, OUTPUTS, inputs)


def _write_outputs(
    cfg, plan: Plan, output: RunOutput | None, results, gates, report: str, data: dict, processes: int, floor=None
) -> list[str]:
    """Write every requested file; return what was written, for the user."""
    written = []
    o = cfg.output
    if o.submission_dir is not None:
        result = results[0]
        target = Path(o.submission_dir) / submission_name(plan.task, plan.data)
        family_of(plan.spec).write_submission(target, plan, result)
        written.append(f"GLUE submission file: {target}")
    if output is None:
        return written
    out = output.create()
    try:
        _write_files(cfg, out, results, gates, report, data, processes, plan, floor)
    except BaseException:
        output.discard()
        raise
    output.commit()
    out = output.out
    written.append(f"saved: {out}/metrics.json, {out}/{REPORT_FILES[o.format]}, {out}/config.yaml")
    return written


def _write_files(cfg, out: Path, results, gates, report: str, data: dict, processes: int, plan: Plan,
                 floor: Floor | None = None) -> None:  # fmt: skip
    o = cfg.output
    write_metrics(out / "metrics.json", results, data, gates, processes, floor)
    write_text(out / REPORT_FILES[o.format], report)
    write_text(out / "config.yaml", dump_config(cfg, "eval"))
    if o.predictions or o.predictions_only:
        family = family_of(plan.spec)
        ext = family.eval_predictions_ext
        for i, result in enumerate(results):
            name = f"predictions.{ext}" if len(results) == 1 else f"predictions-{i + 1}-{Path(result.model).name}.{ext}"
            family.write_predictions(out / name, plan, result)


def _data_hash(plan: Plan, cfg: EvalConfig) -> str | None:
    path = Path(str(plan.data))
    if plan.kind == PRETRAINING and (path / "dataset" / cfg.data.split).is_dir():
        return file_sha256(path / "dataset" / cfg.data.split)
    if path.exists():
        return file_sha256(path)
    from bertcli.corpus import resolve_inputs  # a glob of raw text files: one hash over theirs, in order

    return hashlib.sha256("".join(file_sha256(p) for p in resolve_inputs([str(plan.data)])).encode()).hexdigest()
