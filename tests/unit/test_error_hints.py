"""Every config key that a message, help text or docstring names is a real key of some command's schema."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bertcli.config import config_keys
from bertcli.schema.eval import EvalConfig
from bertcli.schema.finetune import FinetuneConfig
from bertcli.schema.pretrain import PretrainConfig
from bertcli.schema.tokenize import TokenizeConfig

PACKAGE = Path(__file__).resolve().parents[2] / "bertcli"
KEYS = {key for schema in (TokenizeConfig, PretrainConfig, FinetuneConfig, EvalConfig) for key in config_keys(schema)}
SECTIONS = {key.split(".")[0] for key in KEYS}
DOTTED = re.compile(r"(?<![\w.])[a-z_]+(?:\.[a-z0-9_]+)+")

# Dotted names that start like a section but are not config keys.
NOT_KEYS = {
    "train.tsv": "a GLUE file name",
    "model.safetensors": "a weights file name",
    "model.onnx": "the ONNX export's file name (MODEL/onnx/model.onnx)",
    "model.safetensors.index.json": "the index file of sharded weights",
    "tokenizer.json": "a fast tokenizer's file name",
    "tokenizer.pad": "a method of transformers' tokenizers",
    "train.json": "CLUENER's training file name",
    "nsp.max_seq_lenght": "the misspelt key of the example error in docs/config.md",
}


def dotted_names() -> list[tuple[str, int, str]]:
    """(file, line, name) of every dotted name starting with a section, in every string literal of the package
    (f-strings' literal parts included)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in DOTTED.findall(node.value):
                    if name.split(".")[0] in SECTIONS:
                        found.append((str(path.relative_to(PACKAGE.parent)), node.lineno, name))
    return found


def test_every_key_a_message_names_exists():
    names = dotted_names()
    assert any(name == "split.validation_fraction" for _, _, name in names)  # the scan sees messages
    wrong = "\n".join(f"{file}:{line}: {name}" for file, line, name in names if name not in KEYS | set(NOT_KEYS))
    assert not wrong, f"no such config key (fix the name, or list a real non-key in NOT_KEYS):\n{wrong}"


def test_the_allowlist_holds_only_names_still_used():
    used = {name for _, _, name in dotted_names()}
    assert set(NOT_KEYS) <= used and not set(NOT_KEYS) & KEYS
