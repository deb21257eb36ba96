"""The README stays a short guide whose commands run as written: every `bertcli` line of its bash blocks names a
real command, shipped files that exist, and options and `--set` keys that the command's own config loading accepts
(checked with `--print-config`, which validates the whole config and runs nothing). The examples in docs/*.md
must name real options and keys too."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertcli.cli.app import app
from bertcli.schema.docs import COMMANDS, PLAIN_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELL_ENDS = {"|", ">", ">>", "2>&1", ";", "&&", "||"}  # what follows is another program or a redirection


def bertcli_lines(markdown: str) -> list[list[str]]:
    """The arguments after `bertcli` of every command line in the ```bash blocks (`\\` continuations joined)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("bertcli"):  # bertcli or .venv/bin/bertcli
                args = words[1:]
                ends = [i for i, w in enumerate(args) if w in SHELL_ENDS]
                commands.append(args[: ends[0]] if ends else args)
    return commands


def test_extractor_joins_continuations_and_drops_comments_and_redirections():
    text = "```bash\nmake demo\n.venv/bin/bertcli eval -m a \\\n    -d b  # note\nbertcli tokenize x | head\n```\n"
    assert bertcli_lines(text) == [["eval", "-m", "a", "-d", "b"], ["tokenize", "x"]]


def test_readme_is_a_short_guide():
    size = len(README.read_bytes())
    assert size <= 20_000, f"README.md is {size} bytes; keep it under 20,000 (reference material goes in docs/)"


README_COMMANDS = bertcli_lines(README.read_text(encoding="utf-8"))


def test_readme_shows_every_command():
    shown = {args[0] for args in README_COMMANDS}
    assert set(COMMANDS) <= shown <= set(COMMANDS) | set(PLAIN_COMMANDS)


def _checked(args: list[str]) -> list[str]:
    """The command line that checks `args` without running anything: --print-config validates a command's whole
    config; a command without one (PLAIN_COMMANDS) is parsed with --help, which rejects unknown options."""
    return [*args, "--help" if args and args[0] in PLAIN_COMMANDS else "--print-config"]


@pytest.mark.parametrize("args", README_COMMANDS, ids=[" ".join(a)[:80] for a in README_COMMANDS])
def test_readme_command_parses_and_names_existing_files(args, monkeypatch):
    monkeypatch.chdir(ROOT)
    for i, word in enumerate(args):
        if word in ("--config", "-c"):
            assert (ROOT / args[i + 1]).is_file(), f"bertcli {' '.join(args)}: no config file {args[i + 1]}"
        if re.match(r"^(data|configs)/", word):  # shipped files (runs/ and the like are made by earlier steps)
            assert glob.glob(word), f"bertcli {' '.join(args)}: {word} matches no file in the repository"
    result = CliRunner().invoke(app, _checked(args))
    assert result.exit_code == 0, f"bertcli {' '.join(args)} --print-config failed:\n{result.output}"


def docs_commands() -> list[tuple[str, list[str]]]:
    """(page, arguments) of every `bertcli` line in docs/*.md; blocks inside list items are indented."""
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = re.sub(r"^[ \t]+(?=```|\S)", "", page.read_text(encoding="utf-8"), flags=re.M)
        found += [(page.name, args) for args in bertcli_lines(text)]
    return found


DOCS_COMMANDS = docs_commands()


@pytest.mark.parametrize("page,args", DOCS_COMMANDS, ids=[f"{p}: {' '.join(a)[:70]}" for p, a in DOCS_COMMANDS])
def test_docs_command_parses(page, args, monkeypatch):
    """The docs' examples use files the reader brings (glue/, models/), but their options and keys must be real.
    A --config under runs/ is an earlier run's saved config.yaml, which this checkout does not have."""
    monkeypatch.chdir(ROOT)
    configs = [args[i + 1] for i, word in enumerate(args) if word in ("--config", "-c")]
    for config in configs:
        assert config.startswith("runs/") or (ROOT / config).is_file(), f"{page}: bertcli {' '.join(args)}: no {config}"
    if all(config.startswith("runs/") for config in configs) and configs:
        return  # a run's own config.yaml: its keys were checked when the run wrote it
    result = CliRunner().invoke(app, _checked(args))
    assert result.exit_code == 0, f"{page}: bertcli {' '.join(args)} --print-config failed:\n{result.output}"


def test_docs_show_commands_of_every_page():
    assert {page for page, _ in DOCS_COMMANDS} >= {
        "tokenize.md",
        "pretrain.md",
        "finetune.md",
        "eval.md",
        "tasks.md",
        "chinese.md",
    }
