"""Resumable checkpoints: `OUTPUT/checkpoints/step-N/` = Accelerate state (model, optimizer, RNG states of every
process) + `scheduler.json` (the LR schedule) + `trainer_state.json` (loop position, config, data fingerprint) +
`config.yaml`. Accelerate loads its files with torch's weights_only loader; the schedule is JSON rather than one
of Accelerate's custom objects, which it loads with weights_only=False (an unpickler that can run code).

A checkpoint is written under a temporary name and renamed when complete, so a run killed while saving leaves
no `step-N` folder that looks complete but is not; `latest_checkpoint` only ever returns renamed ones.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from bertcli.errors import UsageError
from bertcli.outputs import TMP_PREFIX, WriteFailure, replace_dir, write_failure, write_json, write_text

STATE_FILE = "trainer_state.json"
SCHEDULE_FILE = "scheduler.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# Accelerate warns on every save that it dropped the tied copy of the MLM decoder weight (shared with the word
# embeddings); that is expected, and load_state re-ties it, so the warning would only be noise in the console.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


def save_checkpoint(
    accelerator, checkpoints_dir: Path, step: int, state: dict[str, Any], config_yaml: str, keep_last: int, scheduler
) -> Path:
    """Save on every process (Accelerate writes each process's RNG state), finish and rename on the main
    one. A failed write (disk full: torch reports it as an internal RuntimeError without the errno) removes the
    temporary folder, which would hold the space, keeps the earlier checkpoints, and raises a one-line
    WriteFailure naming the checkpoint."""
    target = Path(checkpoints_dir) / f"step-{step}"
    tmp = Path(checkpoints_dir) / f"{TMP_PREFIX}step-{step}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_text(tmp / "config.yaml", config_yaml)
            write_json(tmp / SCHEDULE_FILE, scheduler.state_dict())  # numbers only (LambdaLR: lr_lambdas are {})
            write_json(tmp / STATE_FILE, state)  # written last: its presence marks a finished save
            replace_dir(tmp, target)
            prune_checkpoints(checkpoints_dir, keep_last)
    except BaseException as err:
        failure = write_failure(err, target, tmp)  # before the partial copy goes: it holds the space
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if failure is None:
            raise
        advice = _after_failed_save(checkpoints_dir, failure.no_space)
        raise WriteFailure(target, failure.reason, failure.no_space, advice) from err
    accelerator.wait_for_everyone()
    return target


def _after_failed_save(checkpoints_dir: Path, no_space: bool) -> str:
    """What a failed save left, and what to do."""
    previous = latest_checkpoint(checkpoints_dir)
    fix = "free some space" if no_space else "fix that"
    if previous is None:
        return f"the partial checkpoint was removed; {fix} (or choose another output directory) and run again"
    return f"the partial checkpoint was removed and {previous.name} is intact: {fix}, then continue with --resume"


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found = []
    if Path(checkpoints_dir).is_dir():
        for path in Path(checkpoints_dir).iterdir():
            match = _STEP_DIR.match(path.name)
            if match and path.is_dir() and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1][1] if found else None


def prune_checkpoints(checkpoints_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints; the newest always stays (keep_last 0 removes it only when
    the run completes, see `remove_checkpoints`), so a stopped run can resume."""
    for _, path in list_checkpoints(checkpoints_dir)[: -max(keep_last, 1)]:
        shutil.rmtree(path, ignore_errors=True)


def remove_checkpoints(checkpoints_dir: Path) -> None:
    """train.keep_last 0, once a run has completed and written its product: no checkpoints/ left."""
    shutil.rmtree(checkpoints_dir, ignore_errors=True)


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The loop position and config a checkpoint was saved with; a one-line error if it is not a
    checkpoint."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise UsageError(
            f"{path} is not a complete checkpoint (no {STATE_FILE}); "
            "give a checkpoints/step-N folder of an earlier run, or --resume alone for the latest one"
        )
    if any(Path(path).glob("custom_checkpoint_*.pkl")):  # checked here, before the run touches its output folder
        raise UsageError(
            f"{path} was written by an earlier bertcli, which kept the LR schedule as a pickle "
            "(custom_checkpoint_0.pkl); bertcli does not load pickles, which can run code: start the run again "
            "without --resume"
        )
    if not (Path(path) / SCHEDULE_FILE).is_file():
        raise UsageError(f"{path} has no {SCHEDULE_FILE} (the LR schedule); resume from another checkpoint")
    try:
        return json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{state_file} cannot be read ({err}); resume from another checkpoint") from None


def load_checkpoint(acc, path: Path, scheduler) -> None:
    """`acc.load_state(path)` and the schedule from scheduler.json, with a one-line error when the saved weights or
    optimizer state do not fit what is being resumed (a checkpoint written by another version of bertcli, or for
    another model), or a file is damaged. Every process loads, then all learn whether each succeeded: when one
    failed, all raise its error, where one going on alone would wait for the others at its first collective."""
    failure = None
    try:
        _load(acc, Path(path), scheduler)
    except UsageError as err:
        failure = str(err)
    failures = [failure]
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        failures = gather_object([failure])
    failed = [(rank, message) for rank, message in enumerate(failures) if message]
    if failed:
        rank, message = failed[0]
        if acc.num_processes > 1:  # end the process group together: a process that exits while another still
            acc.wait_for_everyone()  # holds it can die in teardown (std::terminate) instead of exiting with code 2
            acc.end_training()
        raise UsageError(message if acc.num_processes == 1 else f"{message} (seen by process {rank})")


def _load(acc, path: Path, scheduler) -> None:
    try:
        schedule = json.loads((path / SCHEDULE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path / SCHEDULE_FILE} cannot be read ({err}); resume from another checkpoint") from None
    from accelerate.utils.constants import RNG_STATE_NAME

    _check_random_states(path / f"{RNG_STATE_NAME}_{acc.process_index}.pkl")
    try:
        acc.load_state(str(path))
        scheduler.load_state_dict(schedule)
    except Exception as err:  # noqa: BLE001 - a damaged file or another model: the same advice, on every process
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = " ".join(lines[1:2] or lines[:1]) or type(err).__name__
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise UsageError(
            f"{path} does not fit the model and optimizer being resumed ({detail}); it was written by another "
            "version of bertcli or for another model, or a file in it is damaged: start the run again without "
            "--resume"
        ) from None


def _check_random_states(file: Path) -> None:
    """This process's RNG states, read as Accelerate reads them (weights_only). Accelerate skips a file it cannot
    read with a log line only, and the resumed run would then draw other dropout masks than the unbroken one. A
    missing file is left to Accelerate (its log line): a run resumed on more processes than saved has none."""
    from accelerate.utils import load

    if not file.is_file():
        return
    try:
        load(file)
    except Exception as err:  # noqa: BLE001 - missing, truncated or not a pickle of states: the same advice
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"{file} (the random states of this process) cannot be read ({reason}); resume from another checkpoint"
        ) from None


def config_differences(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """`key: was X, now Y` for every leaf under `keys` (dotted) that differs between two config
    dicts."""
    old, new = _flatten(saved), _flatten(current)
    differences = []
    for key in sorted(set(old) | set(new)):
        if any(key == k or key.startswith(k + ".") for k in keys) and old.get(key) != new.get(key):
            differences.append(f"{key}: was {old.get(key)!r}, now {new.get(key)!r}")
    return differences


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
