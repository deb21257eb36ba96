"""`bertcli pretrain`: BertForPreTraining (masked LM + next sentence prediction) on tokenize output."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertcli.cli.common import ConfigOpt, DebugOpt, OverwriteOpt, PrintConfigOpt, SetOpt, err, exit_codes

LATEST = "latest"  # what a bare --resume stands for


def pretrain(
    data: Annotated[
        list[str] | None, typer.Argument(help="Output directories of `bertcli tokenize`. Sets data.dirs.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output directory (output.dir).")
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            is_flag=False,
            flag_value=LATEST,
            metavar="[CHECKPOINT]",
            help="Continue a stopped run: alone, from the latest complete checkpoint in the output directory;"
            " "
            "with a path, from that checkpoints/step-N folder. The model and data config must be unchanged.",
        ),
    ] = None,
    print_config: PrintConfigOpt = False,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Pretrain BERT (BertForPreTraining: masked LM + next sentence prediction) on `bertcli tokenize` output.

    Example: bertcli pretrain runs/tok -o runs/pre --config configs/pretrain/small.yaml --set
    train.max_steps=2000

    Multi-GPU / multi-node: accelerate launch -m bertcli pretrain ... (see README). Ctrl-C or SIGTERM saves a
    checkpoint and stops (exit 130); --resume continues exactly where it stopped.
    """
    with exit_codes(debug):
        from bertcli.config import dump_config, load_config
        from bertcli.schema.pretrain import PretrainConfig

        values = {"data.dirs": data or None, "output.dir": str(output) if output else None}
        cfg = load_config(PretrainConfig, config, overrides, values)
        if print_config:
            print(dump_config(cfg, "pretrain"), end="")
            return
        from bertcli.pipelines.pretrain import run_pretrain

        result = run_pretrain(cfg, overwrite=overwrite, resume=True if resume == LATEST else resume)
        if result["status"] == "interrupted":
            err(
                f"stopped at step {result['step']}; checkpoint saved. Continue with: "
                "bertcli pretrain --resume "
                f"--config {Path(result['output']) / 'config.yaml'}"
            )
            raise typer.Exit(130)
        err(f"done: {result['output']}/final (step {result['step']})")
