"""Print the config reference (docs/config.md) from the pydantic schemas: every key, its type, default and description.

    python -m bertcli.schema.docs > docs/config.md      (what `make docs` runs)

The output depends on the schemas alone, so a test can compare it with the committed file and the reference cannot
drift from the code.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bertcli.config import _submodel
from bertcli.schema.eval import EvalConfig
from bertcli.schema.finetune import FinetuneConfig
from bertcli.schema.pretrain import PretrainConfig
from bertcli.schema.tokenize import TokenizeConfig

# The root schema of each command, in pipeline order (the CLI modules load the same classes).
COMMANDS: dict[str, type[BaseModel]] = {
    "tokenize": TokenizeConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "eval": EvalConfig,
}
PLAIN_COMMANDS = ("export",)  # commands without a config: their few options are all there is (`--help`)

HEADER = """\
# Config reference

<!-- Generated from bertcli/schema/ by `make docs` (python -m bertcli.schema.docs). Do not edit by hand. -->

Every command reads one YAML config and command-line overrides, in this order (later wins):

1. the defaults (listed below; the shipped YAMLs under [`configs/`](../configs/) show them with comments),
2. `--config FILE.yaml`,
3. `--set section.key=value`, repeatable (values are YAML: `3`, `5e-5`, `true`, `null`, `[a, b]`),
4. the command's own options (such as `-o/--output` or input paths; the descriptions say which key each sets).

Configs are typed and grouped by concern (`input`, `tokenizer`, `nsp`, `model`, `data`, `train`, ...). An unknown
key, a wrong type or an out-of-range value is an error (exit code 2) naming the key, the YAML file and line (or
`--set`) and, for an unknown key, the nearest valid one; a section given a value (`--set nsp=5`) lists the
section's keys; every problem is reported at once:

```
$ bertcli tokenize --config my.yaml
config error: unknown key 'nsp.max_seq_lenght' (my.yaml:7); did you mean 'nsp.max_seq_length'?
config error: 'nsp.nsp_probability' (my.yaml:9): Input should be less than or equal to 1, got 1.5; valid: 0.0 <= nsp_probability <= 1.0
```

Every seed key takes an integer from 0 to 2**32 - 1, the range numpy accepts. `--print-config` prints the resolved
config and exits; every run saves it as `config.yaml` in its output directory, and `bertcli COMMAND --config
OUT/config.yaml` repeats the run.
"""  # noqa: E501 - the error lines are shown as printed, one line each


def render() -> str:
    """The whole reference as Markdown."""
    parts = [HEADER]
    for command, schema in COMMANDS.items():
        shipped = f"[`configs/{command}/`](../configs/{command}/)"
        parts.append(f"\n## bertcli {command}\n\nShipped, commented configs: {shipped}.\n")
        top = [(name, field) for name, field in schema.model_fields.items() if not _submodel(field.annotation)]
        if top:  # keys outside any section (pretrain's objective)
            parts.append(f"\n### Top-level keys\n\n{_table(top, prefix='')}")
        for name, field in schema.model_fields.items():
            section = _submodel(field.annotation)
            if section:
                parts.append(f"\n### `{name}`\n\n{_table(_flatten(section), prefix=name + '.')}")
    return "".join(parts)


def _flatten(schema: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """(dotted key, field) for every leaf key of a section, nested sections expanded, in declaration order."""
    rows = []
    for name, field in schema.model_fields.items():
        sub = _submodel(field.annotation)
        rows.extend(_flatten(sub, f"{prefix}{name}.") if sub else [(f"{prefix}{name}", field)])
    return rows


def _table(rows: list[tuple[str, FieldInfo]], prefix: str) -> str:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, field in rows:
        kind = _type_name(field.annotation) + _bounds(field)
        cells = (f"`{prefix}{key}`", kind, f"`{_default(field)}`", field.description or "")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " / ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _bounds(field: FieldInfo) -> str:
    """The field's bounds, those of its list items included: ' (>= 0, <= 1)'."""
    found = []
    for item in [*field.metadata, *_item_metadata(field.annotation)]:
        found += [f"{symbol} {getattr(item, b)}" for b, symbol in SYMBOLS.items() if hasattr(item, b)]
    return f" ({', '.join(found)})" if found else ""


def _item_metadata(annotation: Any) -> list:
    out = []
    for arg in get_args(annotation):
        if get_origin(arg) is Annotated:
            out += [m for a in get_args(arg)[1:] for m in getattr(a, "metadata", [a])]
        else:
            out += _item_metadata(arg)
    return out


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


if __name__ == "__main__":
    print(render(), end="")
