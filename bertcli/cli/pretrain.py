"""`bertcli pretrain`: BertForPreTraining (masked LM + next sentence prediction) on tokenize output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from bertcli.cli.common import ConfigOpt, DebugOpt, OverwriteOpt, PrintConfigOpt, SetOpt, err, exit_codes
from bertcli.training.checkpoint import STATE_FILE

_STEP = re.compile(r"^step-\d+$")


def pretrain(
    data: Annotated[
        list[str] | None, typer.Argument(help="Output directories of `bertcli tokenize`. Sets data.dirs.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output directory (output.dir).")] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Continue pretraining this checkpoint folder (model.init_from): a BertForPreTraining, "
            "BertForMaskedLM or BertModel saved by transformers, or a pretrain run's final/ or checkpoints/step-N. "
            "Tokenize the data with its tokenizer (--set tokenizer.path=DIR).",
        ),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a stopped run from the latest complete checkpoint in the output directory, or from "
            "the checkpoint folder given after it (--resume OUT/checkpoints/step-N). Model and data config must "
            "be unchanged.",
        ),
    ] = False,
    print_config: PrintConfigOpt = False,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Pretrain BERT (BertForPreTraining: masked LM + next sentence prediction) on `bertcli tokenize` output.

    Example: bertcli pretrain runs/tok -o runs/pre --config configs/pretrain/small.yaml --set
    train.max_steps=2000

    Continue a released or earlier model: bertcli pretrain runs/tok -o runs/dapt --init-from CHECKPOINT --set
    objective=mlm (tokenize runs/tok with --set tokenizer.path=CHECKPOINT).

    Multi-GPU / multi-node: accelerate launch -m bertcli pretrain ... (see docs/pretrain.md). Ctrl-C or SIGTERM saves a
    checkpoint and stops (exit 130); --resume continues exactly where it stopped.
    """
    with exit_codes(debug):
        from bertcli.config import dump_config, load_config
        from bertcli.schema.pretrain import PretrainConfig

        data, checkpoint = _split_checkpoint(data or [], resume)
        values = {
            "data.dirs": data or None,
            "output.dir": str(output) if output else None,
            "model.init_from": str(init_from) if init_from else None,
        }
        cfg = load_config(PretrainConfig, config, overrides, values)
        if print_config:
            print(dump_config(cfg, "pretrain"), end="")
            return
        from bertcli.pipelines.pretrain import run_pretrain

        result = run_pretrain(cfg, overwrite=overwrite, resume=checkpoint or resume)
        if result["status"] == "interrupted" and result.get("note"):  # an --overwrite run, discarded
            err(f"stopped at step {result['step']}; {result['note']}")
            raise typer.Exit(130)
        if result["status"] == "interrupted":
            err(
                f"stopped at step {result['step']}; checkpoint saved. Continue with: "
                "bertcli pretrain --resume "
                f"--config {Path(result['output']) / 'config.yaml'}"
            )
            raise typer.Exit(130)
        if result["main_process"]:  # under accelerate launch every process returns here; one reports
            err(f"done: {result['output']}/final (step {result['step']})")


def _split_checkpoint(args: list[str], resume: bool) -> tuple[list[str], str | None]:
    """`--resume PATH`: a positional argument that is a checkpoint folder (named step-N, or holding
    trainer_state.json) is the checkpoint to resume from; the others are data directories. (Typer options cannot
    take an optional value.)"""
    checkpoints = [a for a in args if resume and ((Path(a) / STATE_FILE).is_file() or _STEP.match(Path(a).name))]
    if len(checkpoints) > 1:
        from bertcli.errors import UsageError

        raise UsageError(f"--resume takes one checkpoint folder, got {len(checkpoints)}: {', '.join(checkpoints)}")
    return [a for a in args if a not in checkpoints], (checkpoints[0] if checkpoints else None)
