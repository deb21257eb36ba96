"""Where a run writes, so that `--overwrite` never destroys the previous run before the new one exists.

    with RunOutput.plan(out, overwrite, outputs=("final", "metrics.jsonl"), inputs={"data.dirs": dirs}) as target:
        target.create()        # main process only
        ... write everything under target.work ...
        target.commit()        # main process, once the new run is complete

An output directory that is new or empty is written directly (`work` is `out`). Over an earlier run (`--overwrite`)
the new run is written in a staging folder inside it, `OUT/.tmp-new-run/`, and the earlier run stays untouched and
complete until the new one has finished. `commit` then moves the earlier run's outputs aside, moves the new ones in
and deletes the old ones: a few renames on one file system. A new run that fails or is interrupted is discarded
(`discard`) and the earlier run is left as it was; one killed outright leaves its staging folder, which the next run
in OUT removes (every `.tmp-*` entry is ours and temporary). Files in OUT that are not the command's outputs (your
notes, say) are kept. A run into a new or empty folder that fails before it saved anything to resume from or use (a
checkpoint `step-N/` or a model's weights) takes its outputs with it (config.yaml, logs, a half-written dataset), so
that the same command runs again without --overwrite; one that saved a checkpoint keeps everything for `--resume`.

One run at a time writes in OUT: `plan` takes OUT's lock (`bertcli.run_lock`) before it looks at the folder, and the
run holds it until it ends: `with output:` around the rest of the run releases it, however the run ends (a folder
that `plan` made for the lock and the run left empty goes with it). Under a launcher only the main process takes it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.outputs import TMP_PREFIX, WriteFailure
from bertcli.run_lock import LOCK_NAME, RunLock

STAGE = f"{TMP_PREFIX}new-run"
_ASIDE = f"{TMP_PREFIX}previous-run"


@dataclass
class RunOutput:
    out: Path  # the output directory the user named
    work: Path  # where this run writes: `out`, or `out/.tmp-new-run` while an earlier run is kept
    outputs: tuple[str, ...]  # glob patterns of the command's own outputs: the earlier run's are replaced on commit
    existed: bool = True  # whether `out` was there before: a run that fails before writing anything removes it
    lock: RunLock | None = field(default=None, repr=False)  # OUT's lock, held by the main process
    committing: bool = field(default=False, repr=False)  # commit has begun to replace the earlier run
    fresh: bool = False  # a new run written in `out` itself (new or empty before it): nothing there is older

    @property
    def staged(self) -> bool:
        return self.work != self.out

    @classmethod
    def plan(
        cls,
        out: Path | str,
        overwrite: bool,
        outputs: tuple[str, ...],
        inputs: dict[str, object] | None = None,
    ) -> RunOutput:
        """Take OUT's lock (main process), check the output directory and decide where the run writes; writes
        nothing else. Every process of a launch calls it before the main one creates anything, so all of them
        agree. The caller holds the lock until the run ends: `with RunOutput.plan(...) as output:`."""
        out = Path(out)
        check_apart(out, inputs or {})
        if out.exists() and not out.is_dir():
            raise UsageError(f"output {out} exists and is not a directory; choose another output directory")
        output = cls.continuing(out, outputs)  # the lock first: two runs cannot both find the folder empty
        try:
            earlier = out.is_dir() and any(_is_kept(p) for p in out.iterdir())
            if earlier and not overwrite:
                raise UsageError(
                    f"output directory {out} is not empty (it holds another run); choose another directory or pass "
                    "--overwrite to replace that run once the new one completes"
                )
        except BaseException:
            output.release()
            raise
        output.work = out / STAGE if earlier else out
        output.fresh = not earlier
        return output

    @classmethod
    def continuing(cls, out: Path | str, outputs: tuple[str, ...]) -> RunOutput:
        """A run that writes in `out` itself (a resumed one, or a new one after `plan`'s checks): OUT's lock is
        taken (main process; a UsageError names the run that holds it) and nothing else is looked at."""
        out = Path(out)
        existed = out.exists()
        lock = RunLock.take(out) if _main_process() else None
        return cls(out, out, tuple(outputs), existed, lock)

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(self, kind, err, traceback) -> None:
        """The run has ended: a run that failed before its commit is discarded, the lock released. A write that
        failed (a full disk) in a staged run says that the earlier run is unchanged."""
        if err is not None and self.lock is not None and not self.committing:
            self.discard()
        self.release()
        if isinstance(err, WriteFailure) and self.staged and not self.committing:
            raise err.noting(self.kept_note()) from err

    def release(self) -> None:
        """Let go of OUT's lock (main process), and remove OUT if this run made it and left it empty."""
        if self.lock is None:
            return
        self.lock.release()
        self.lock = None
        if not self.existed:
            try:
                self.out.rmdir()
            except OSError:  # not empty: the run wrote its outputs (or another run has begun there)
                pass

    def create(self) -> Path:
        """Make the folders (main process), removing what an interrupted earlier attempt left (`.tmp-*`)."""
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        self.work.mkdir(exist_ok=True)
        return self.work

    def commit(self) -> None:
        """Replace the earlier run's outputs with the new run's (main process, after every process has written)."""
        self.committing = True
        if not self.staged:
            return
        aside = self.out / _ASIDE
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        new = [p.name for p in self.work.iterdir()]
        old = {p.name for pattern in self.outputs for p in self.out.glob(pattern) if _is_kept(p)}
        for name in old | {n for n in new if (self.out / n).exists()}:
            os.replace(self.out / name, aside / name)
        for name in new:
            os.replace(self.work / name, self.out / name)
        self.work.rmdir()
        shutil.rmtree(aside, ignore_errors=True)

    def discard(self) -> None:
        """Drop a staged run that did not complete (the earlier run was never touched), a fresh run's outputs when
        it saved nothing to resume from, and a folder this run created and left empty: a failed run leaves no trace,
        not even an empty directory, unless it leaves a checkpoint or a model."""
        if self.staged:
            shutil.rmtree(self.work, ignore_errors=True)
        elif self.fresh and not _worth_keeping(self.out):
            for path in {p for pattern in self.outputs for p in self.out.glob(pattern) if _is_kept(p)}:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if not self.existed and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def kept_note(self) -> str:
        """What a user reads when a staged run stops before it completes."""
        return (
            f"the previous run in {self.out} is unchanged: --overwrite replaces it only when the new run completes, "
            "and this one was discarded"
        )


def check_apart(out: Path, inputs: dict[str, object]) -> None:
    """Refuse an output directory that contains, or lies inside, an input of the run (a model, tokenizer, data
    folder or file, checkpoint, baseline): writing there would change the input, and --overwrite replace it.
    `inputs` maps a config key (or option) to a path, a list of paths, or None."""
    target = Path(out).resolve()
    for key, value in inputs.items():
        for raw in value if isinstance(value, (list, tuple)) else [value]:
            if raw is None or str(raw) == "":
                continue
            path = Path(raw).resolve()
            if path == target or target in path.parents:
                where = "is" if path == target else "contains"
                raise UsageError(
                    f"output directory {out} {where} the input {raw} ({key}); write the run to another directory "
                    "(-o), or the run would replace what it reads"
                )
            if path in target.parents:
                raise UsageError(
                    f"output directory {out} is inside the input {raw} ({key}); write the run to a directory "
                    "outside it (-o)"
                )


def _worth_keeping(out: Path) -> bool:
    """Whether a failed run in `out` saved something to resume from or use: a checkpoint or a model's weights."""
    return any(p.is_dir() for p in out.rglob("step-*")) or any(out.rglob("model.safetensors"))


def _is_kept(path: Path) -> bool:
    """An entry that belongs to a run or to the user, not one of our temporary ones, the lock of the run that
    writes there, or macOS's .DS_Store."""
    return not path.name.startswith(TMP_PREFIX) and path.name not in (LOCK_NAME, ".DS_Store")


def _main_process() -> bool:
    """Whether this is the main process of a launch (torchrun, accelerate launch, MPI), or the only process; read
    from the launcher's environment, as Accelerate reads it, since `plan` runs before the Accelerator exists."""
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"):
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name]) == 0
    return True
