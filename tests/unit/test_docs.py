"""docs/config.md is what the schemas generate, covers every key of every command, and no doc links to nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from bertcli.cli.app import app
from bertcli.config import config_keys
from bertcli.schema.docs import COMMANDS, PLAIN_COMMANDS, render

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
    assert registered == set(COMMANDS) | set(PLAIN_COMMANDS)


def anchors(markdown: str) -> Iterator[str]:
    """The #fragments GitHub gives a page's headings (code blocks left out, repeats numbered -1, -2, ...)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    seen: dict[str, int] = {}
    for title in re.findall(r"^#{1,6} (.+)$", prose, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield f"{slug}-{seen[slug]}" if seen[slug] else slug


def test_anchors_are_github_slugs():
    text = "# Output (`-o DIR`)\n```\n# not a heading\n```\n## Named-entity recognition (`task.name: ner`)\n"
    text += "## Speed\n## Speed\n"
    assert list(anchors(text)) == ["output--o-dir", "named-entity-recognition-taskname-ner", "speed", "speed-1"]


def test_every_relative_link_in_readme_and_docs_points_to_a_file_and_heading():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 10  # README + the docs pages
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            path, _, fragment = target.partition("#")
            if re.match(r"^[a-z]+:", path):  # a URL
                continue
            file = (page.parent / path) if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and fragment not in set(anchors(file.read_text(encoding="utf-8"))):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, f"links to nothing: {broken}"
