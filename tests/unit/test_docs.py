"""docs/config.md is what the schemas generate, covers every key of every command, and no doc links to nothing."""

from __future__ import annotations

import re
from pathlib import Path

from bertcli.cli.app import app
from bertcli.config import config_keys
from bertcli.schema.docs import COMMANDS, render

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def test_committed_config_reference_is_what_the_schemas_generate():
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/config.md differs from the pydantic schemas: run make docs and commit it"


def test_reference_names_every_key_of_every_command_with_its_default():
    text = render()
    for command, schema in COMMANDS.items():
        part = text.split(f"## bertcli {command}\n", 1)[1].split("\n## bertcli ", 1)[0]
        for key in config_keys(schema):
            assert f"| `{key}` |" in part, f"{command}: {key} missing from the reference"
    assert "| `train.learning_rate` | float (> 0.0, <= 1.0) | `2e-05` | Peak learning rate of AdamW. |" in text
    assert "| `input.format` | auto / sentences / paragraphs / jsonl | `auto` |" in text


def test_reference_covers_every_cli_command():
    registered = {info.name for info in app.registered_commands}
    assert registered == set(COMMANDS)


def test_every_relative_link_in_readme_and_docs_points_to_a_file():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 9  # README + the docs pages
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            if not path or re.match(r"^[a-z]+:", path):  # an anchor on the same page, or a URL
                continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, f"links to missing files: {broken}"
