"""What a fine-tuning run reports: each seed's `SeedRun`, metrics.json (every evaluation, each seed's best, the
mean/median/std over seeds), the console summary and the model card; and a finished seed's results in
seed-N/result.json, which `--resume` reads back instead of training the seed again."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertcli.distill.layers import describe_source
from bertcli.distill.teacher import card_lines
from bertcli.errors import UsageError
from bertcli.model_dir import LoadReport
from bertcli.outputs import write_json
from bertcli.pipelines.finetune_selection import selection_record, summary_lines
from bertcli.pipelines.floor import floor_line
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.base import FinetuneData
from bertcli.tasks.registry import family_of
from bertcli.training.adapters import card_lines as adapter_card_lines

SEED_RESULT = "result.json"  # in seed-N/: a finished seed's SeedRun, so --resume need not train it again


@dataclass
class SeedRun:
    """One seed's training: its load report, every evaluation, the best one, and how it ended."""

    seed: int
    report: LoadReport
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stopped_early: bool = False
    train_seconds: float = 0.0  # the whole loop, evaluations included
    eval_seconds: float = 0.0
    steps: int = 0
    steps_per_epoch: int = 1
    stop_requested: bool = False  # Ctrl-C or SIGTERM in the seed's last step: it finished, the run stops after it
    final: dict[str, Any] | None = None  # with a holdout: the validation files' scores of the best model, at the end


def write_seed_run(path: Path, run: SeedRun) -> None:
    """A finished seed's results: its metrics.json "runs" entry and its load report."""
    write_json(path, {**run_entry(run), "load_report": run.report.as_dict()})


def read_seed_run(path: Path) -> SeedRun:
    """A finished seed's SeedRun as `write_seed_run` saved it."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        report = LoadReport.from_dict(saved["load_report"])
        return SeedRun(saved["seed"], report, saved["evaluations"], saved["best"], saved["stopped_early"],
                       saved["train_seconds"], saved["eval_seconds"], saved["steps"],
                       final=saved.get("final"))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path} cannot be read ({err!r}); delete it to train that seed again") from None


def result_document(cfg: FinetuneConfig, data: FinetuneData, runs: list[SeedRun]) -> dict[str, Any]:
    spec = data.spec
    best_run = max(runs, key=lambda r: r.best["main"] if r.best and not math.isnan(r.best["main"]) else -math.inf)
    summary: dict[str, dict[str, Any]] = {}
    scores = [{**r.best["metrics"], **(r.final or {})} for r in runs]  # with a holdout: it, then the reported
    for split in scores[0]:
        for metric in spec.metrics:
            values = [s[split][metric] for s in scores]
            summary[f"{split}/{metric}"] = {
                "mean": statistics.fmean(values),
                "median": statistics.median(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
    return {
        "task": spec.name,
        "model": cfg.model.path,
        "labels": list(spec.label_names) if spec.label_names else None,
        "regression": spec.is_regression,
        "metrics": list(spec.metrics),
        "main_metric": spec.main_metric,
        "files": data.files,
        "data": data.counts,
        "load_report": runs[0].report.as_dict(),
        "seeds": [r.seed for r in runs],
        "runs": [run_entry(r) for r in runs],
        "best": {"seed": best_run.seed, **best_run.best, **({"final": best_run.final} if best_run.final else {})},
        "selection": selection_record(data, cfg.data.holdout_fraction),
        "summary": summary,
    }


def run_entry(r: SeedRun) -> dict[str, Any]:
    """A seed's entry in metrics.json "runs" (and, with its load report, its seed-N/result.json)."""
    return {
        "seed": r.seed,
        "steps": r.steps,
        "train_seconds": round(r.train_seconds, 3),
        "eval_seconds": round(r.eval_seconds, 3),
        "stopped_early": r.stopped_early,
        "evaluations": r.evaluations,
        "best": r.best,
        **({"final": r.final} if r.final is not None else {}),
    }


def print_summary(result: dict[str, Any], out: Path, loads: str) -> None:
    """The best evaluation, the spread over seeds, and where best/ is; `loads`: what it loads in."""
    best = result["best"]
    shown = "  ".join(
        f"{s}/{k} {v:.4f}" for s, vals in best["metrics"].items() for k, v in vals.items() if "/" not in k
    )
    print(f"best: seed {best['seed']} step {best['step']}: {shown}")
    if line := floor_line(result):
        print(line)
    if len(result["seeds"]) > 1:
        for key, stats in result["summary"].items():
            print(f"  {key}: mean {stats['mean']:.4f}  median {stats['median']:.4f}  std {stats['std']:.4f}"
                  f"  over seeds {result['seeds']}")  # fmt: skip
    for line in summary_lines(result):
        print(line)
    print(f"saved {out / 'best'} (loads in {loads}) and {out / 'metrics.json'}")


def finetune_card(cfg: FinetuneConfig, data: FinetuneData, result: dict[str, Any]) -> str:
    """Markdown model card of the best fine-tuned model."""
    spec, best, train = data.spec, result["best"], cfg.train
    labels = "regression (one score)" if spec.is_regression else ", ".join(f"{i}: {n}" for i, n in
                                                                          enumerate(spec.label_names))  # fmt: skip
    kept = result["soup"] if result.get("soup", {}).get("kept") else best  # the model in best/: soup or seed
    scored = {**kept["metrics"], **kept.get("final", {})}  # with a holdout: it, then the validation files
    rows = [f"| {s} | {k} | {v:.4f} |" for s, vals in scored.items() for k, v in vals.items()]
    seeds = [f"| {k} | {v['mean']:.4f} | {v['median']:.4f} | {v['std']:.4f} |" for k, v in result["summary"].items()]
    family = family_of(spec)
    tag = family.pipeline_tag
    lines = [
        "---", "library_name: transformers", f"pipeline_tag: {tag}",
        f"tags: [bert, bertcli, {spec.name}]", "---", "",
        f"# {spec.name} {family.model_kind} fine-tuned with bertcli", "",
        f"Fine-tuned from `{describe_source(cfg.model.path, cfg.model.init_layers)}` with `bertcli finetune`. "
        f"Labels: {labels}.", "",
        f"Newly initialised on load: {', '.join(result['load_report']['newly_initialised']) or 'nothing'}.", "",
        "## Data", "",
        *[family.card_data_line(n, data.files[n], c, cfg.data.max_seq_length) for n, c in data.counts.items()],
        "", "## Training", "",
        f"- AdamW lr {train.learning_rate}, weight decay {train.weight_decay}, warmup ratio {train.warmup_ratio}, "
        f"schedule {train.scheduler}, batch {cfg.data.batch_size}, epochs {train.epochs}, max_steps "
        f"{train.max_steps}, seeds {result['seeds']}",
        *card_lines(cfg.distill),
        f"- best checkpoint: seed {best['seed']}, step {best['step']} (by {spec.main_metric})",
        *adapter_card_lines(cfg, family.auto_class), "",
        *selection_card_lines(result), "",
        f"## Metrics ({'the soup' if kept is not best else 'best checkpoint'})", "",
        "| split | metric | value |", "| --- | --- | --- |", *rows, "",
        f"Over seeds {result['seeds']} (each seed's best):", "",
        "| metric | mean | median | std |", "| --- | --- | --- | --- |", *seeds, "",
        "## Use", "", "```python", *family.usage(spec), "```", "",
    ]  # fmt: skip
    return "\n".join(lines)


def selection_card_lines(result: dict[str, Any]) -> list[str]:
    """The card's lines on how the model was picked and, with train.average_seeds, on the soup."""
    picked = ", ".join(result["selection"]["splits"])
    lines = [
        f"- picked on: {picked}"
        + (
            " (the scores below are those the choice looked at)"
            if result["selection"]["looked_at_reported_data"]
            else " (held out of the training file; the validation files scored once)"
        )
    ]
    soup = result.get("soup")
    if soup and soup["kept"]:
        lines.append(
            f"- this model: the uniform soup (mean weights) of seeds {soup['seeds']}' best models"
            + (", its head fitted anew on the training rows (train.soup_head refit)" if "head" in soup else "")
            + f", {picked} {soup['main']:.4f} against {soup['best_seed_main']:.4f} for seed {soup['best_seed']}"
        )
    elif soup:
        lines.append(
            f"- the soup of seeds {soup['seeds']} scored {soup['main']:.4f} on {picked}, not above seed "
            f"{soup['best_seed']}: this model is that seed's"
        )
    return lines
