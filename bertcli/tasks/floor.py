"""What every family's floor shares: the training file checked, the evaluated examples found, the result built.

A floor is a classical model fitted on the training file alone (`TaskFamily.floor`: bag-of-words for
classification, the most frequent tag per word for tagging, ...): the score a fine-tuned encoder must clear. It
predicts the same examples the models are scored on and is scored with the same metrics; `bertcli eval --floor`
adds it as a row of the comparison, `finetune` with output.floor prints it beside the best result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertcli.errors import UsageError
from bertcli.files import why_missing
from bertcli.report import EvalResult
from bertcli.tasks.base import EvalPlan

SEED = 0  # the cross-validation folds' shuffle: the same file gives the same floor, run after run
FOLDS = 5  # stratified folds of the training file that pick the regularisation strength


def check_train_file(path: Path | str) -> Path:
    """`path` if it is a file, else the one-line error that names it."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"floor training file {path} is a directory; give the training file itself (floor.train_file)")
    if not path.is_file():
        raise UsageError(f"floor training file {path} {why_missing(path)} (floor.train_file)")
    return path


def evaluated_examples(plan: EvalPlan, read: Callable[[Path], Any]) -> Any:
    """The examples the models are scored on: eval's plan has them; finetune's evaluation files are read as the
    run reads them (`read(path)`)."""
    return plan.examples if plan.examples is not None else read(Path(str(plan.data)))


def floor_result(name: str, plan: EvalPlan, metrics: dict[str, float], examples: int, started: float,
                 predictions: list | None = None) -> EvalResult:  # fmt: skip
    """The floor's row: named `name`, with the plan's metrics and the extras the models report too (a tagging
    task's per-type scores, squad_v2's HasAns/NoAns ones); none of the task's others."""
    kept = {k: float(v) for k, v in metrics.items() if k in plan.metrics or k not in plan.spec.metrics}
    return EvalResult(model=name, task=plan.task, metrics=kept, examples=examples,
                      runtime={"total_s": time.perf_counter() - started}, predictions=predictions)  # fmt: skip
