"""What every command shares: the config options, error-to-exit-code mapping, and printing to stderr.

Heavy libraries (torch, transformers, datasets) are imported inside command bodies, never here, so that
`bertcli --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see configs/). Defaults fill what it leaves out."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override one config key, e.g. --set train.learning_rate=5e-5 (repeatable).",
    ),
]
PrintConfigOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved config as YAML and exit.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace the run in a non-empty output directory, once the new run completes (a failed or interrupted "
        "new run leaves it as it was).",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def exit_codes(debug: bool) -> Iterator[None]:
    """Map failures to exit codes: 2 bad usage/config/input, 1 runtime failure, 3 failed gate, 130 Ctrl-C."""
    from bertcli.errors import BertcliError, ConfigError

    try:
        yield
    except typer.Exit:
        raise
    except ConfigError as e:
        if debug:
            raise
        for problem in e.problems:
            err(f"config error: {problem}")
        raise typer.Exit(e.exit_code) from None
    except BertcliError as e:
        if debug:
            raise
        err(f"error: {e}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if debug:
            raise
        err(f"error: {type(e).__name__}: {e} (run again with --debug for the traceback)")
        raise typer.Exit(1) from None
