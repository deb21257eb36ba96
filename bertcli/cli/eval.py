"""`bertcli eval`: metrics of fine-tuned or pretrained models, CI gates, predictions, GLUE submissions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertcli.cli.common import ConfigOpt, DebugOpt, OverwriteOpt, PrintConfigOpt, SetOpt, exit_codes

GATES = "CI gates (exit code 3 when one fails)"
OUTPUTS = "Outputs"


def eval_command(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model folder (repeatable: one comparison table). model.paths."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            "-t",
            help="GLUE task, custom, ner, squad, squad_v2, cmrc2018 or pretraining (task.name); none: from the model.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Labelled file, test file, tokenize output or raw text (data.path)."),
    ] = None,
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="torch or onnx (ONNX Runtime on the CPU): model.runtime.")
    ] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="fp32, or int8 with --runtime onnx: model.precision.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for metrics.json etc. (output.dir).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="stdout report: table, markdown, junit or json (output.format)."),
    ] = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option("--fail-under", metavar="METRIC=VALUE", help="Fail below VALUE.", rich_help_panel=GATES),
    ] = None,
    fail_over: Annotated[
        list[str] | None,
        typer.Option("--fail-over", metavar="METRIC=VALUE", help="Fail above VALUE (losses).", rich_help_panel=GATES),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="metrics.json of an earlier eval to compare with.", rich_help_panel=GATES),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="Largest drop allowed below the baseline.", rich_help_panel=GATES),
    ] = None,
    predictions: Annotated[
        bool, typer.Option("--predictions", help="Write predictions.tsv.", rich_help_panel=OUTPUTS)
    ] = False,
    predictions_only: Annotated[
        bool,
        typer.Option("--predictions-only", help="No labels, no metrics (test files).", rich_help_panel=OUTPUTS),
    ] = False,
    submission_dir: Annotated[
        Path | None,
        typer.Option("--submission-dir", help="Write the GLUE server's file here.", rich_help_panel=OUTPUTS),
    ] = None,
    floor: Annotated[
        Path | None,
        typer.Option(
            "--floor",
            metavar="TRAIN_FILE",
            help="Add a classical floor fitted on this training file (floor.train_file).",
        ),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    print_config: PrintConfigOpt = False,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Evaluate models offline: GLUE metrics of fine-tuned models, MLM/NSP metrics of pretrained ones.

    Example: bertcli eval -m runs/sst2/best -t sst2 -d glue/SST-2/dev.tsv --fail-under accuracy=0.85

    Exit codes: 0 all gates passed, 2 bad input, 3 a gate failed.
    """
    with exit_codes(debug):
        from bertcli.config import load_config
        from bertcli.gates import parse_bounds
        from bertcli.schema.eval import EvalConfig

        values = {
            "model.paths": model or None,
            "task.name": task,
            "data.path": data,
            "model.runtime": runtime,
            "model.precision": precision,
            "output.dir": str(output) if output else None,
            "output.format": fmt,
            "gates.baseline": str(baseline) if baseline else None,
            "gates.max_drop": max_drop,
            "output.predictions": predictions or None,
            "output.predictions_only": predictions_only or None,
            "output.submission_dir": str(submission_dir) if submission_dir else None,
            "floor.train_file": str(floor) if floor else None,
        }
        for key, option, items in (
            ("fail_under", "--fail-under", fail_under),
            ("fail_over", "--fail-over", fail_over),
        ):
            for name, bound in parse_bounds(items or [], option).items():
                values[f"gates.{key}.{name}"] = bound
        cfg = load_config(EvalConfig, config, overrides, values)
        if print_config:
            from bertcli.config import dump_config

            print(dump_config(cfg, "eval"), end="")
            return
        from bertcli.gates import raise_on_failure
        from bertcli.pipelines.evaluate import run_eval

        outcome = run_eval(cfg, overwrite=overwrite)
        if outcome.failed and not outcome.main_process:
            raise typer.Exit(3)  # the main process names the failed gates, once
        raise_on_failure(outcome.gates, several_models=len(outcome.results) > 1)
