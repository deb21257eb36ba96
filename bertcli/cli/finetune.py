"""`bertcli finetune`: a GLUE-style task (or your own labelled files) on a local BERT-family checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertcli.cli.common import ConfigOpt, DebugOpt, OverwriteOpt, PrintConfigOpt, SetOpt, exit_codes


def _seeds(raw: str | None) -> list[int] | None:
    from bertcli.config import MAX_SEED
    from bertcli.errors import UsageError

    if raw is None:
        return None
    try:
        seeds = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {raw!r}: expected comma-separated integers, e.g. --seeds 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {raw!r}: give distinct seeds, e.g. --seeds 1,2,3")
    wrong = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if wrong:
        raise UsageError(f"--seeds {raw!r}: seed {wrong[0]} is out of range; seeds (train.seeds) are 0 to {MAX_SEED}")
    return seeds


def finetune(
    task: Annotated[
        str | None,
        typer.Argument(
            help="A GLUE task (cola, sst2, mrpc, ...), custom, ner, squad, squad_v2 or cmrc2018 (task.name)."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Checkpoint folder to start from (model.path).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="GLUE task folder with train.tsv, dev.tsv (data.dir).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output directory (output.dir).")] = None,
    teacher: Annotated[
        Path | None,
        typer.Option("--teacher", help="A fine-tuned model of the task to distil from (distill.teacher)."),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Several runs, e.g. 1,2,3: mean/median/std (train.seeds).")
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    print_config: PrintConfigOpt = False,
    overwrite: OverwriteOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the stopped run in the output directory: finished seeds are kept, the others continue "
            "from their latest checkpoint.",
        ),
    ] = False,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            metavar="KEY=V1,V2,...",
            help="A grid of whole runs over config keys (repeatable), e.g. --sweep train.learning_rate=2e-5,5e-5 "
            "--sweep data.batch_size=16,32: each in OUTPUT/sweep/<run>, the table in OUTPUT/sweep.md and the best "
            "run's model in OUTPUT/best; the same command again skips finished runs.",
        ),
    ] = None,
    search: Annotated[
        str,
        typer.Option(
            "--search",
            metavar="grid|optuna",
            help="How --sweep picks runs: grid (every combination) or optuna (--trials runs chosen by Optuna's TPE "
            "sampler; --sweep values are then ranges LOW:HIGH[:log] or lists).",
        ),
    ] = "grid",
    trials: Annotated[int, typer.Option("--trials", min=1, help="--search optuna: how many runs.")] = 10,
    debug: DebugOpt = False,
) -> None:
    """Fine-tune a BERT checkpoint on a GLUE task or your own csv/tsv/json/jsonl files; keep the best model.

    Example: bertcli finetune cola --model runs/pretrain/final --data glue/CoLA -o runs/cola --seeds 1,2,3

    Ctrl-C or SIGTERM saves a checkpoint and stops (exit 130); --resume continues where it stopped, without
    training again the seeds that finished.
    """
    with exit_codes(debug):
        from bertcli.config import dump_config, load_config
        from bertcli.schema.finetune import FinetuneConfig

        values = {
            "task.name": task,
            "model.path": str(model) if model else None,
            "data.dir": str(data) if data else None,
            "output.dir": str(output) if output else None,
            "distill.teacher": str(teacher) if teacher else None,
            "train.seeds": _seeds(seeds),
        }
        cfg = load_config(FinetuneConfig, config, overrides, values)
        if print_config:
            print(dump_config(cfg, "finetune"), end="")
            return
        if sweep or search != "grid":  # several runs: a grid (pipelines.sweep) or an Optuna search
            from bertcli.pipelines.search import run_runs

            run_runs(cfg, sweep or [], search, trials, overwrite=overwrite, resume=resume)
            return
        from bertcli.pipelines.finetune import run_finetune

        run_finetune(cfg, overwrite=overwrite, resume=resume)
