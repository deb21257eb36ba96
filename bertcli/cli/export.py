"""`bertcli export`: a fine-tuned model folder -> MODEL/onnx/model.onnx (and model-int8.onnx) for ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertcli.cli.common import DebugOpt, exit_codes


def export_command(
    model: Annotated[Path, typer.Argument(help="A fine-tuned model folder (a finetune run's best/).")],
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write model-int8.onnx (ONNX Runtime's dynamic int8 quantization).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing MODEL/onnx/ folder.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Export a fine-tuned model to ONNX, for `bertcli eval --runtime onnx` (faster on a CI runner's CPU).

    Writes MODEL/onnx/model.onnx, with --int8 MODEL/onnx/model-int8.onnx too, and export.json. Works for every
    task family: classification and regression, tagging (ner), QA (squad, squad_v2, cmrc2018), multiple choice.

    Example: bertcli export runs/sst2/best --int8
    """
    with exit_codes(debug):
        from bertcli.pipelines.export import run_export

        run_export(model, "int8" if int8 else "fp32", overwrite=overwrite)
