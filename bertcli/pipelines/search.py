"""`bertcli finetune --search optuna --trials N --sweep KEY=LOW:HIGH[:log] [--sweep KEY=a,b,...]`: beyond a grid,
Optuna's TPE sampler (seeded by train.seed) picks N runs from ranges and lists, each a whole `run_finetune`, in the
sweep's layout and with its table and best/ (`pipelines.sweep`).

A range LOW:HIGH is of integers when both ends are, else of floats (a float is rounded to 3 significant digits, so
a run's folder name gives its value); `:log` samples it on a log scale (learning rates). A list is a choice. Running
the same command again replays the search: the sampler, given the same seed and the same scores (read back from the
finished runs), proposes the same runs, so finished ones are skipped and the rest trained. A proposal equal to an
earlier run is scored by that run, not trained again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertcli.config import absolute_paths
from bertcli.errors import UsageError
from bertcli.pipelines.sweep import (
    SWEEP_OUTPUTS,
    Axis,
    Point,
    check_output,
    make_point,
    parse_sweeps,
    plan_run,
    run_point,
    run_sweep,
    score,
    short_names,
    table,
    write_results,
)
from bertcli.run_output import RunOutput
from bertcli.schema.finetune import FinetuneConfig


def run_runs(cfg: FinetuneConfig, sweeps: list[str], search: str, trials: int, overwrite: bool = False,
             resume: bool = False) -> dict[str, Any]:  # fmt: skip
    """`finetune --sweep ... [--search grid|optuna --trials N]`: the grid (`pipelines.sweep.run_sweep`) or the
    Optuna search (`run_search`); returns sweep.json's content."""
    if search not in ("grid", "optuna"):
        raise UsageError(f"--search {search}: expected grid or optuna")
    if not sweeps:
        raise UsageError(f"--search {search} needs a --sweep KEY=... for each key it searches")
    if resume:
        raise UsageError("--sweep continues a sweep's unfinished runs by itself: drop --resume")
    if search == "optuna":
        return run_search(cfg, sweeps, trials, overwrite)
    return run_sweep(cfg, sweeps, overwrite)


@dataclass
class Range:
    low: float
    high: float
    integer: bool
    log: bool


def parse_space(axes: list[Axis]) -> dict[str, Range | list[Any]]:
    """Each --sweep as a range (one value LOW:HIGH[:log]) or a list of choices; UsageError naming the key."""
    space: dict[str, Range | list[Any]] = {}
    for axis in axes:
        if len(axis.texts) == 1 and ":" in axis.texts[0]:
            space[axis.key] = _range(axis.key, axis.texts[0])
        elif all(v is None or isinstance(v, (bool, int, float, str)) for v in axis.values):
            space[axis.key] = axis.values
        else:
            raise UsageError(f"--sweep {axis.key}: --search optuna chooses among numbers and words, not lists")
    return space


def _range(key: str, text: str) -> Range:
    parts = text.split(":")
    log = len(parts) == 3 and parts[2] == "log"
    ends = [_number(p) for p in parts[:2]] if len(parts) == 2 or log else None
    if not ends or None in ends or not ends[0] < ends[1] or (log and ends[0] <= 0):
        raise UsageError(f"--sweep {key}={text}: a range is LOW:HIGH or LOW:HIGH:log with numbers LOW < HIGH "
                         "(above 0 for log), e.g. 1e-5:1e-4:log")  # fmt: skip
    return Range(ends[0], ends[1], all(isinstance(e, int) for e in ends), log)


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def _suggest(trial, key: str, dimension: Range | list[Any]) -> tuple[Any, str]:
    """The trial's value for `key` and its text in the run's folder name."""
    if isinstance(dimension, list):
        value = trial.suggest_categorical(key, dimension)
        return value, str(value)
    if dimension.integer:
        value = trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
        return value, str(value)
    text = f"{trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log):.3g}"
    return float(text), text


def _check_space(cfg: FinetuneConfig, space: dict[str, Range | list[Any]]) -> None:
    """Both ends of every range, and every choice, make a valid config (the other keys at their first value):
    a UsageError naming it comes before anything trains."""
    first = {k: d.low if isinstance(d, Range) else d[0] for k, d in space.items()}
    for key, dimension in space.items():
        for value in (dimension.low, dimension.high) if isinstance(dimension, Range) else dimension:
            make_point(cfg, f"{key}={value}", {}, {**first, key: value})


def run_search(cfg: FinetuneConfig, sweeps: list[str], trials: int, overwrite: bool = False) -> dict[str, Any]:
    """`trials` runs chosen by Optuna's TPE sampler over the --sweep ranges and lists; returns sweep.json's
    content (with a "search" entry saying how the runs were chosen)."""
    import optuna

    space = parse_space(parse_sweeps(sweeps))
    shorts = short_names(list(space))
    _check_space(cfg, space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=cfg.train.seed)  # the same proposals for the same scores
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = Path(absolute_paths(cfg).output.dir)
    with RunOutput.continuing(out, SWEEP_OUTPUTS) as output:
        main = output.lock is not None
        check_output(out)
        points: list[Point] = []
        rows: list[dict[str, Any]] = []
        for i in range(1, trials + 1):
            trial = study.ask()
            chosen = {key: _suggest(trial, key, dimension) for key, dimension in space.items()}
            texts = {key: text for key, (_, text) in chosen.items()}
            name = ",".join(f"{shorts[key]}={text}" for key, text in texts.items())
            earlier = next((r for r in rows if r["run"] == name), None)
            if earlier is None:
                point = make_point(cfg, name, texts, {key: value for key, (value, _) in chosen.items()})
                earlier = run_point(point, plan_run(point, overwrite), f"[trial {i}/{trials}] {name}", main, out)
                points.append(point)
                rows.append(earlier)
            study.tell(trial, score(earlier) if score(earlier) > float("-inf") else float("nan"))  # NaN: failed
        result = table(points, rows) | {"search": {"sampler": "optuna TPE", "seed": cfg.train.seed, "trials": trials}}
        if main:
            write_results(out, result, points)
        return result
