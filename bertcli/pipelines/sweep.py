"""`bertcli finetune --sweep KEY=v1,v2,... [--sweep ...]`: a grid of whole fine-tuning runs, one per combination
of the values, each a `run_finetune` of the config with those keys set, and the best of them kept.

Output layout (OUTPUT is the config's output.dir):
    OUTPUT/sweep/<run>/   each run's own finetune output (config.yaml, metrics.json, best/, ...); <run> names the
                          values, e.g. lr=2e-5,bs=32
    OUTPUT/sweep.json     every run's values, best main metric, its step, seed and wall time; the best run
    OUTPUT/sweep.md       the same as a Markdown table (also printed)
    OUTPUT/best/          a copy of the best run's best/ (its model, tokenizer, card and config.yaml)

A run is chosen by the best main metric its metrics.json reports (`best.main`: the task's main metric on the
evaluation split it selects by; the best seed's with several seeds). Running the same command again skips the runs
that finished (their metrics.json is there and their config.yaml matches), continues an interrupted one from its
latest checkpoint (or trains it again when it left none), and trains the rest; a run whose folder holds another
config is an error (--overwrite trains every run again). Every value is checked before anything is trained.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bertcli.config import absolute_paths, config_keys, load_config, parse_override_value
from bertcli.errors import UsageError
from bertcli.outputs import TMP_PREFIX, atomic_dir, write_json, write_text
from bertcli.run_lock import LOCK_NAME
from bertcli.run_output import RunOutput
from bertcli.schema.finetune import FinetuneConfig
from bertcli.training.checkpoint import config_differences, latest_checkpoint

SWEEP_DIR = "sweep"
SWEEP_OUTPUTS = (SWEEP_DIR, "sweep.json", "sweep.md", "best", LOCK_NAME)  # what a sweep's OUTPUT may hold
NOT_SWEPT = ("output.dir",)  # each run's folder is the sweep's to choose
# Short names in a run's folder name; other keys go by their last part (the whole key where two would clash).
SHORT = {"train.learning_rate": "lr", "data.batch_size": "bs", "train.epochs": "ep", "train.max_steps": "steps",
         "train.layer_lr_decay": "llrd", "model.reinit_top_layers": "reinit", "train.weight_decay": "wd",
         "train.warmup_ratio": "warmup", "model.classifier_dropout": "dropout"}  # fmt: skip


STATUS = {"new": "trained", "retrained": "trained", "resumed": "continued", "skipped": "skipped"}  # by plan_run


@dataclass
class Axis:
    key: str  # a dotted config key
    texts: list[str]  # the values as given (folder names and the table show these)
    values: list[Any]  # as YAML reads them, as --set does


@dataclass
class Point:
    name: str  # the run's folder under OUTPUT/sweep
    texts: dict[str, str]
    values: dict[str, Any]
    cfg: FinetuneConfig


def parse_sweeps(items: list[str]) -> list[Axis]:
    """`--sweep KEY=v1,v2,...` options as axes; a key that is not a config key, or values that are not a list,
    is a UsageError naming it."""
    keys, axes = config_keys(FinetuneConfig), []
    for item in items:
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key or not raw:
            raise UsageError(f"--sweep {item!r}: expected KEY=v1,v2,..., e.g. --sweep train.learning_rate=2e-5,3e-5")
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else " (bertcli finetune --print-config shows every key)"
            raise UsageError(f"--sweep {key}: no such config key{hint}")
        if key in NOT_SWEPT or any(axis.key == key for axis in axes):
            why = "each run's folder is OUTPUT/sweep/<run>" if key in NOT_SWEPT else "give it once, with every value"
            raise UsageError(f"--sweep {key}: cannot be swept ({why})")
        texts = split_values(raw)
        if len(set(texts)) != len(texts) or any(not t for t in texts):
            raise UsageError(f"--sweep {key}={raw}: give distinct, non-empty values separated by commas")
        axes.append(Axis(key, texts, [parse_override_value(t) for t in texts]))
    return axes


def split_values(raw: str) -> list[str]:
    """Split on the commas outside brackets and quotes: `[a, b],[c]` is two values."""
    parts, depth, quote, current = [], 0, "", []
    for char in raw:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    return parts + ["".join(current).strip()]


def grid(cfg: FinetuneConfig, axes: list[Axis]) -> list[Point]:
    """Every combination of the axes' values, each as a validated config writing in OUTPUT/sweep/<name>."""
    shorts = short_names([a.key for a in axes])
    points = []
    for combo in itertools.product(*(range(len(a.texts)) for a in axes)):
        texts = {a.key: a.texts[i] for a, i in zip(axes, combo)}
        values = {a.key: a.values[i] for a, i in zip(axes, combo)}  # as --set reads them
        name = ",".join(f"{shorts[key]}={_safe(text)}" for key, text in texts.items())
        points.append(make_point(cfg, name, texts, values))
    if len({p.name for p in points}) != len(points):
        raise UsageError("--sweep: two values give one folder name (only letters, digits and . _ + - are kept); "
                         "make the values differ in those")  # fmt: skip
    return points


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's name in a run's folder name: SHORT's, else its last part (the whole key where two would clash)."""
    shorts = {key: SHORT.get(key, key.rsplit(".", 1)[-1]) for key in keys}
    return {key: key if list(shorts.values()).count(s) > 1 else s for key, s in shorts.items()}


def make_point(cfg: FinetuneConfig, name: str, texts: dict[str, str], values: dict[str, Any]) -> Point:
    """`cfg` with `values` set and output.dir OUTPUT/sweep/<name>, validated; a UsageError names the run."""
    cfg = absolute_paths(cfg)
    data = cfg.model_dump(mode="json")
    for key, value in {**values, "output.dir": str(Path(cfg.output.dir) / SWEEP_DIR / name)}.items():
        section, _, leaf = key.rpartition(".")
        _section(data, section)[leaf] = value
    try:
        point = FinetuneConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in err.errors())
        raise UsageError(f"--sweep run {name}: {problems}") from None
    typed = {key: _get(point, key) for key in values}  # 2e-5 as the number the run used, not YAML's text
    return Point(name, texts, typed, point)


def _get(cfg: FinetuneConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)[:40]


def _section(data: dict, dotted: str) -> dict:
    for part in filter(None, dotted.split(".")):
        data = data.setdefault(part, {})  # a section at its default is already in the dump
    return data


# --- the sweep --------------------------------------------------------------------------------------------------


def run_sweep(cfg: FinetuneConfig, sweeps: list[str], overwrite: bool = False) -> dict[str, Any]:
    """Run (or read back) every grid point, then write the table and copy the best run's best/; returns the
    content of sweep.json. Ctrl-C stops the run in training (its checkpoint is kept) and the sweep: finished runs
    stay, and the same command continues."""
    points = grid(cfg, parse_sweeps(sweeps))
    out = Path(absolute_paths(cfg).output.dir)
    with RunOutput.continuing(out, SWEEP_OUTPUTS) as output:  # one sweep at a time in OUTPUT
        main = output.lock is not None  # the main process of a launch (or the only one) prints and writes
        check_output(out)
        plans = {p.name: plan_run(p, overwrite) for p in points}  # every folder looked at before anything trains
        rows = [run_point(p, plans[p.name], f"[sweep {i}/{len(points)}] {p.name}", main, out)
                for i, p in enumerate(points, 1)]  # fmt: skip
        result = table(points, rows)
        if main:
            write_results(out, result, points)
        return result


def run_point(point: Point, plan: str, label: str, main: bool, out: Path) -> dict[str, Any]:
    """Train, continue or skip one run as `plan` says; its row of the table."""
    from bertcli.pipelines.finetune import run_finetune

    if plan == "skipped":
        _say(main, f"{label}: finished earlier, skipped (results read from its metrics.json)")
        return _row(point, plan)
    _say(main, f"{label}: {'continuing from its latest checkpoint' if plan == 'resumed' else 'training'}")
    try:  # its result is metrics.json's content, on every process (a replaced run's file is the main one's to move)
        result = run_finetune(point.cfg, overwrite=plan == "retrained", resume=plan == "resumed")
    except KeyboardInterrupt:
        _say(main, f"sweep stopped in {point.name}; the finished runs are kept: run the same command again to "
                   "continue", sys.stderr)  # fmt: skip
        raise
    except BaseException:
        _remove_if_empty(out / SWEEP_DIR)  # a first run that failed before writing leaves no trace
        raise
    return _row(point, plan, result)


def _say(main: bool, line: str, stream=None) -> None:
    if main:
        print(line, file=stream or sys.stdout, flush=True)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or not there
        pass


def check_output(out: Path) -> None:
    """OUTPUT holds nothing but a sweep's files (or nothing): a sweep never writes over another kind of run."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a directory; choose another output directory")
    if not out.is_dir():  # another process of a launch, before the main one has made it
        return
    others = sorted(p.name for p in out.iterdir() if p.name not in SWEEP_OUTPUTS and not p.name.startswith(TMP_PREFIX))
    if others:
        raise UsageError(f"output directory {out} holds files that are not a sweep's ({', '.join(others[:3])}); "
                         "choose another output directory for the sweep")  # fmt: skip


def plan_run(point: Point, overwrite: bool) -> str:
    """What to do with a run's folder: new, skipped (finished with this config), resumed (a checkpoint with this
    config), retrained (with --overwrite, or an interrupted run that left no checkpoint)."""
    folder = Path(point.cfg.output.dir)
    if not folder.is_dir() or not any(p for p in folder.iterdir() if p.name != LOCK_NAME):
        return "new"
    if overwrite:
        return "retrained"
    if (folder / "config.yaml").is_file():
        changed = _changes(folder / "config.yaml", point.cfg)
        if changed:
            raise UsageError(f"{folder} holds a run with another config ({'; '.join(changed[:3])}); pass "
                             "--overwrite to train every run again, or choose another output directory")  # fmt: skip
    if (folder / "metrics.json").is_file():
        return "skipped"
    checkpoints = [folder / "checkpoints", *sorted(folder.glob("seed-*/checkpoints"))]
    finished_seeds = list(folder.glob("seed-*/result.json"))
    if finished_seeds or any(latest_checkpoint(c) is not None for c in checkpoints):
        return "resumed"
    return "retrained"


def _changes(saved_file: Path, cfg: FinetuneConfig) -> list[str]:
    """How the config a run was trained with differs from this point's, every key compared but the output folder
    (and train.mixed_precision, which the run records as `auto` resolved)."""
    saved = load_config(FinetuneConfig, saved_file).model_dump(mode="json")
    current = absolute_paths(cfg).model_dump(mode="json")
    keys = tuple(k for k in config_keys(FinetuneConfig) if k != "output.dir")
    if current["train"]["mixed_precision"] == "auto":
        keys = tuple(k for k in keys if k != "train.mixed_precision")
    return config_differences(saved, current, keys)


def _row(point: Point, plan: str, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's line in the table, from its metrics.json (`metrics`: its content, as the run returned it)."""
    path = Path(point.cfg.output.dir) / "metrics.json"
    try:
        metrics = metrics or json.loads(path.read_text(encoding="utf-8"))
        best = metrics["best"]
        wall = sum(r["train_seconds"] for r in metrics["runs"])
        return {"run": point.name, "values": point.values, "main_metric": metrics["main_metric"],
                "best_main": best["main"], "best_step": best["step"], "best_seed": best.get("seed"),
                "wall_seconds": round(wall, 1), "status": STATUS[plan]}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path} cannot be read ({err!r}); delete {path.parent} to train that run again") from None


def score(row: dict[str, Any]) -> float:
    """The number a run is chosen by: its best main metric (NaN: -inf, never chosen)."""
    return -math.inf if row["best_main"] is None or math.isnan(row["best_main"]) else row["best_main"]


def table(points: list[Point], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """sweep.json's content: the values swept, how the best is chosen, every run's row and the best one."""
    best = max(rows, key=score)  # the first of equals, in grid order
    axes = {key: [p.values[key] for p in points] for key in points[0].values}
    return {
        "axes": {key: _unique(values) for key, values in axes.items()},
        "selected_by": f"each run's best {best['main_metric']} as its metrics.json reports it (best.main)",
        "runs": rows,
        "best": best,
    }


def _unique(values: list[Any]) -> list[Any]:
    seen, out = set(), []
    for v in values:
        if json.dumps(v) not in seen:
            seen.add(json.dumps(v))
            out.append(v)
    return out


def _markdown(result: dict[str, Any], points: list[Point]) -> str:
    keys = list(points[0].texts)
    metric = result["best"]["main_metric"]
    head = ["run", *keys, f"best {metric}", "step", "seed", "wall s", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for point, row in zip(points, result["runs"]):
        mark = " (best)" if row is result["best"] else ""
        cells = [point.name + mark, *(point.texts[k] for k in keys), f"{row['best_main']:.4f}", str(row["best_step"]),
                 str(row["best_seed"]), f"{row['wall_seconds']:.1f}", row["status"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, result: dict[str, Any], points: list[Point]) -> None:
    """sweep.json, sweep.md and OUTPUT/best (the best run's best/, replaced whole or not at all)."""
    table = _markdown(result, points)
    print(table, end="", flush=True)
    source = out / SWEEP_DIR / result["best"]["run"] / "best"
    with atomic_dir(out / "best") as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    write_text(out / "sweep.md", f"# Sweep in {out}\n\nSelected by {result['selected_by']}.\n\n{table}")
    write_json(out / "sweep.json", result)
    print(f"best run: {result['best']['run']} ({result['best']['main_metric']} {result['best']['best_main']:.4f}); "
          f"saved {out / 'best'}, {out / 'sweep.json'} and {out / 'sweep.md'}", flush=True)  # fmt: skip
