"""The `bertcli` command: registers one thin command module per pipeline stage."""

from __future__ import annotations

from typing import Annotated

import typer

from bertcli import __version__
from bertcli.cli import eval as eval_cli
from bertcli.cli import export, finetune, pretrain, tokenize

app = typer.Typer(
    name="bertcli",
    help="Pretrain BERT from raw text, then fine-tune and evaluate it on GLUE-style, NER and QA tasks. Works offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("tokenize")(tokenize.tokenize)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("eval")(eval_cli.eval_command)
app.command("export")(export.export_command)


def _version(value: bool) -> None:
    if value:
        print(f"bertcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Pretrain BERT from raw text, then fine-tune and evaluate it on GLUE-style, NER and QA tasks. Works offline.

    Exit codes: 0 success, 1 runtime failure, 2 bad usage, config or input, 3 a failed evaluation gate.
    """


def main() -> None:
    app()
