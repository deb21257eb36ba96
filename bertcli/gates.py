"""CI gates over evaluation metrics: `--fail-under METRIC=VALUE`, `--fail-over METRIC=VALUE`, and
`--baseline metrics.json --max-drop D`.

Gates are built and checked against the metric names before any model runs, so a typo or a malformed
baseline costs no compute (exit 2). After the run each gate gives one `GateResult`; any failure means exit 3
with a line per failed gate naming the metric, its value and the bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bertcli.errors import GateFailure, UsageError
from bertcli.files import why_missing
from bertcli.metrics import resolve


@dataclass(frozen=True)
class Gate:
    metric: str  # canonical metric name
    bound: float
    at_least: bool  # True: value >= bound passes; False: value <= bound passes
    source: str  # what the user wrote, for messages: "--fail-under accuracy=0.8", "baseline b.json - 0.01"

    @property
    def name(self) -> str:
        return f"{self.metric} {'>=' if self.at_least else '<='} {self.bound:.4f}"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    model: str
    value: float

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):  # an undefined metric (constant predictions) never passes
            return False
        return self.value >= self.gate.bound if self.gate.at_least else self.value <= self.gate.bound

    def describe(self) -> str:
        relation = ("<" if self.gate.at_least else ">") if not self.passed else (">=" if self.gate.at_least else "<=")
        return f"{self.gate.metric} {self.value:.4f} {relation} {self.gate.bound:.4f} ({self.gate.source})"


def parse_bounds(items: Iterable[str], option: str) -> dict[str, float]:
    """`["accuracy=0.8", "f1=0.7"]` -> {"accuracy": 0.8, "f1": 0.7}; a malformed item is a UsageError."""
    bounds: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not name.strip() or math.isnan(value):
            raise UsageError(f"{option} {item!r}: expected METRIC=NUMBER, for example {option} accuracy=0.8")
        bounds[name.strip()] = value
    return bounds


def build_gates(
    available: list[str],
    fail_under: Mapping[str, float] | None = None,
    fail_over: Mapping[str, float] | None = None,
    baseline: str | Path | None = None,
    max_drop: float = 0.01,
) -> list[Gate]:
    """The gates of one evaluation whose metrics will be `available`; UsageError for a metric that is unknown,
    not computed by this evaluation, or gated in the wrong direction, and for a malformed baseline."""
    gates = []
    for option, bounds, at_least in (("--fail-under", fail_under, True), ("--fail-over", fail_over, False)):
        for name, bound in (bounds or {}).items():
            metric = _gated_metric(name, available, f"metric in {option}")
            spec = resolve(metric)
            if spec.higher_is_better != at_least:
                other = "--fail-over" if at_least else "--fail-under"
                better = "higher" if spec.higher_is_better else "lower"
                raise UsageError(f"{option} {name}: {better} {metric} is better; use {other} {metric}={bound}")
            gates.append(Gate(metric, float(bound), at_least, f"{option} {name}={bound}"))
    if baseline is not None:
        gates.extend(_baseline_gates(Path(baseline), available, max_drop))
    return gates


def _gated_metric(name: str, available: list[str], where: str) -> str:
    metric = resolve(name, where).name
    if metric not in available:
        raise UsageError(
            f"{where} '{name}': this evaluation computes {', '.join(available) or 'no metrics'}, not {metric}"
        )
    return metric


def read_baseline(path: Path) -> dict[str, float | None]:
    """The metrics of a baseline `metrics.json`: an eval run's (top-level "metrics", or a one-model "results"
    list) or a finetune run's (its best checkpoint on its one validation split)."""
    if not path.is_file():
        raise UsageError(f"baseline {path} {why_missing(path)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"baseline {path}: not a JSON file ({err}); give the metrics.json of an eval run") from None
    if isinstance(data, dict) and "metrics" not in data and isinstance(data.get("results"), list):
        if len(data["results"]) == 1 and isinstance(data["results"][0], dict):
            data = data["results"][0]
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(data.get("best"), dict) and not isinstance(metrics, dict):
        metrics = _finetune_best(path, data["best"])
    if not isinstance(metrics, dict):
        raise UsageError(
            f'baseline {path}: no "metrics" object of metric name -> number; '
            "give the metrics.json of a one-model `bertcli eval` run"
        )
    for name, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f'baseline {path}: "metrics.{name}" is {value!r}, not a number')
    return {name: (None if value is None else float(value)) for name, value in metrics.items()}


def _finetune_best(path: Path, best: dict) -> dict | None:
    """A finetune run's metrics.json: its best checkpoint's scores on its one validation split."""
    splits = best.get("metrics")
    if not isinstance(splits, dict) or not all(isinstance(v, dict) for v in splits.values()):
        return None
    if len(splits) != 1:
        raise UsageError(
            f"baseline {path}: a finetune run scored on {len(splits)} splits ({', '.join(splits)}); "
            "give the metrics.json of a `bertcli eval` run on the split you evaluate"
        )
    return next(iter(splits.values()))


def _baseline_gates(path: Path, available: list[str], max_drop: float) -> list[Gate]:
    if not max_drop >= 0:
        raise UsageError(f"--max-drop {max_drop}: must be 0 or more")
    baseline = read_baseline(path)
    gates = []
    for name, value in baseline.items():
        try:
            metric = resolve(name).name
        except UsageError:
            continue  # a number this tool does not gate (another tool's extra keys)
        if metric not in available or value is None or math.isnan(value):
            continue
        higher = resolve(metric).higher_is_better
        bound = value - max_drop if higher else value + max_drop
        sign = "-" if higher else "+"
        gates.append(Gate(metric, bound, higher, f"baseline {path}: {value:.4f} {sign} {max_drop:g}"))
    if not gates:
        raise UsageError(
            f"baseline {path} shares no metric with this evaluation "
            f"(baseline: {', '.join(baseline) or 'none'}; this eval: {', '.join(available)})"
        )
    return gates


def check_gates(gates: list[Gate], model: str, metrics: Mapping[str, float]) -> list[GateResult]:
    """One result per gate for one model's metrics (a missing metric counts as NaN, so it fails)."""
    return [GateResult(g, model, float(metrics.get(g.metric, math.nan))) for g in gates]


def raise_on_failure(results: list[GateResult], several_models: bool = False) -> None:
    """GateFailure (exit 3) naming each failed gate's metric, value and bound; nothing when all passed."""
    failed = [r for r in results if not r.passed]
    if failed:
        parts = [(f"{r.model}: " if several_models else "") + r.describe() for r in failed]
        raise GateFailure(f"{len(failed)} of {len(results)} gate(s) failed: " + "; ".join(parts))
