"""The floor beside `run_eval`'s and `run_finetune`'s results: the task family's classical model (`TaskFamily.floor`:
bag-of-words, most frequent tag per word, ...) fitted on a training file, scored on the same examples with the
same metrics, and how far each model is above it on the main metric. Gates never read it.

    eval:      floor.train_file (`--floor FILE`) -> a row of the comparison table, "floor" in metrics.json
    finetune:  output.floor -> fitted on the run's own training file, for each evaluation file; printed after the
               best result, kept in metrics.json's "floor"
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bertcli.errors import UsageError
from bertcli.report import Floor
from bertcli.tasks.base import EvalPlan, FinetuneData
from bertcli.tasks.evaluation import note
from bertcli.tasks.registry import family_of


def check_eval_floor(cfg, plan: EvalPlan) -> None:
    """Before any model is loaded: a floor needs a task's metrics and a training file that exists."""
    train = cfg.floor.train_file
    if train is None:
        return
    if plan.spec is None:
        raise UsageError("floor.train_file: a pretrained model's eval has no floor (it has no task); drop --floor")
    if not plan.metrics:
        raise UsageError("--floor is scored with the task's metrics, and --predictions-only (or --submission-dir) "
                         "computes none; drop one or the other")  # fmt: skip
    from bertcli.tasks.floor import check_train_file

    check_train_file(train)


def main_metric(spec, metrics: list[str]) -> str:
    """The metric models are compared on: the task's main one, or the first reported when that one is not."""
    return spec.main_metric if spec.main_metric in metrics else metrics[0]


def eval_floor(cfg, plan: EvalPlan) -> Floor | None:
    """`bertcli eval --floor FILE`: the floor fitted on FILE and scored on the plan's examples."""
    if cfg.floor.train_file is None:
        return None
    result = _fit(family_of(plan.spec), Path(cfg.floor.train_file), plan, cfg)
    return Floor(result, main_metric(plan.spec, plan.metrics), str(cfg.floor.train_file))


def _fit(family, train: Path, plan: EvalPlan, cfg):
    start = time.perf_counter()
    result = family.floor(train, plan, cfg)
    if result is None:
        raise UsageError(f"task {plan.task} has no floor; drop floor.train_file (--floor) or output.floor")
    note(f"floor: {result.model} fitted on {train} in {time.perf_counter() - start:.1f}s")
    return result


def finetune_floor(cfg, data: FinetuneData) -> dict[str, Any] | None:
    """output.floor: the floor fitted on the run's training file and scored on each evaluation file, as
    metrics.json's "floor" (its name, train_file, the main metric, the metrics per split)."""
    if not cfg.output.floor:
        return None
    spec, family = data.spec, family_of(data.spec)
    metrics, name = {}, None
    for split in data.evals:
        plan = EvalPlan(family.name, spec.name, spec, list(spec.metrics), [], False, Path(data.files[split]))
        result = _fit(family, Path(data.files["train"]), plan, cfg)
        metrics[split], name = result.metrics, result.model
    return {"name": name, "train_file": data.files["train"], "metric": spec.main_metric, "metrics": metrics}


def add_floor(result: dict[str, Any], floor: dict[str, Any] | None) -> None:
    """metrics.json's "floor", with how far the best model is above it (`above`: on the main metric, averaged
    over the evaluation files as the best checkpoint was picked)."""
    if floor is None:
        return
    metric = floor["metric"]
    value = statistics.fmean(m[metric] for m in floor["metrics"].values())
    best = result["best"]
    # with data.holdout_fraction, best["main"] is the held-out score and best["final"] the evaluation files' (the
    # floor's examples): compare like with like
    final = best.get("final")
    model = statistics.fmean(s[metric] for s in final.values()) if final else best["main"]
    result["floor"] = {**floor, "main": value, "above": model - value}


def floor_line(result: dict[str, Any]) -> str | None:
    """The summary's line: "floor (bag-of-words (...)): accuracy 0.7100; best model +0.1200"."""
    floor = result.get("floor")
    if floor is None:
        return None
    return f"floor ({floor['name']}): {floor['metric']} {floor['main']:.4f}; best model {floor['above']:+.4f}"
