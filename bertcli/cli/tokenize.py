"""`bertcli tokenize`: raw text -> WordPiece tokenizer -> NSP pretraining pairs (a `datasets` Arrow dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertcli.cli.common import ConfigOpt, DebugOpt, OverwriteOpt, PrintConfigOpt, SetOpt, exit_codes


def tokenize(
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Text files or globs (.txt, .gz, .jsonl). Sets input.paths.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output directory (output.dir).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    preview: Annotated[
        int, typer.Option("--preview", min=0, help="Print N built instances token by token, then finish.")
    ] = 0,
    print_config: PrintConfigOpt = False,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train (or reuse) a WordPiece tokenizer and build next-sentence-prediction pairs from raw text.

    Example: bertcli tokenize corpus/*.txt.gz -o runs/tok --set tokenizer.vocab_size=8000 --preview 2
    """
    with exit_codes(debug):
        from bertcli.config import dump_config, load_config
        from bertcli.schema.tokenize import TokenizeConfig

        values = {"input.paths": inputs or None, "output.dir": str(output) if output else None}
        cfg = load_config(TokenizeConfig, config, overrides, values)
        if print_config:
            print(dump_config(cfg, "tokenize"), end="")
            return
        from bertcli.pipelines.tokenize import run_tokenize

        run_tokenize(cfg, overwrite=overwrite, preview=preview)
