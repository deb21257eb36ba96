"""One config system for every command: YAML file + dotted `--set` overrides -> one validated pydantic object.

    cfg = load_config(TokenizeConfig, Path("configs/tokenize/default.yaml"), ["nsp.max_seq_length=256"])

Problems (unknown keys, wrong types, out-of-range values, YAML syntax) are collected and raised together as one
`ConfigError`, each line naming the dotted key, where it came from (file and line, or `--set`) and, for an unknown
key, the nearest valid one.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bertcli.errors import ConfigError
from bertcli.files import why_missing

T = TypeVar("T", bound=BaseModel)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, numbers given where text is expected are accepted."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_default=True)


PATH = {"path": True}  # json_schema_extra of a field that holds file or folder paths: config.yaml stores them absolute

MAX_SEED = 2**32 - 1  # numpy's legacy seeding (np.random.seed, used by accelerate's set_seed) takes no more
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]  # the type of every seed key


def load_config(
    schema: type[T],
    path: Path | str | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> T:
    """Build `schema` from defaults <- YAML file <- `--set key=value` overrides <- explicit `values` (CLI options).

    `values` maps dotted keys to already-typed values (None entries are ignored), for options like `--output`.
    """
    data: dict[str, Any] = {}
    origins: dict[tuple, str] = {}
    problems: list[str] = []
    if path is not None:
        data, origins = _read_yaml(Path(path))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected KEY=VALUE, for example --set train.learning_rate=5e-5")
            continue
        _assign(data, key.strip(), _parse_scalar(raw), origins, "--set", problems)
    for key, value in (values or {}).items():
        if value is not None:
            _assign(data, key, value, origins, "command line", problems)
    problems += _undecodable_names(data, origins)
    if problems:
        raise ConfigError(problems)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError([_describe(e, schema, origins) for e in err.errors()]) from None


def dump_config(cfg: BaseModel, command: str) -> str:
    """The resolved config as YAML, headed by the command that re-runs it. Paths are absolute (`absolute_paths`),
    so the file works from any directory."""
    head = (
        f"# Resolved config of a `bertcli {command}` run. Re-run it with:\n#   bertcli {command} --config config.yaml\n"
    )
    data = absolute_paths(cfg).model_dump(mode="json")
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def absolute_paths(cfg: T) -> T:
    """`cfg` with every field marked `PATH` (a path or a list of them, globs included) made absolute against the
    current directory, in this section and the sections below it."""
    update: dict[str, Any] = {}
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            update[name] = absolute_paths(value)
        elif isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("path"):
            if isinstance(value, str):
                update[name] = os.path.abspath(value)
            elif isinstance(value, list):
                update[name] = [os.path.abspath(item) for item in value]
    return cfg.model_copy(update=update)


def not_utf8(name: str) -> str | None:
    """None if `name` is valid UTF-8 text, else the name with its bad bytes escaped ('caf\\xe9.txt').

    A file name in another encoding (Latin-1 from an old archive) reaches Python with its bytes kept as lone
    surrogates (PEP 383): it opens, but cannot be written into a UTF-8 config.yaml or stats.json."""
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def config_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a schema (sections expanded), for suggestions and docs tests."""
    keys = []
    for name, field in schema.model_fields.items():
        sub = _submodel(field.annotation)
        keys.extend(config_keys(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"])
    return keys


# --- YAML with line numbers -------------------------------------------------------------------------------


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, str]]:
    if path.is_dir():
        inside = sorted(path.glob("*.y*ml"))
        such = f", such as {inside[0]}" if inside else " (the shipped ones are under configs/)"
        raise ConfigError([f"config file {path} is a directory; --config takes a YAML file{such}"])
    if not path.is_file():
        raise ConfigError([f"config file {path} {why_missing(path)}"])
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML ({getattr(err, 'problem', err)})"]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (like `train:`)"])
    origins: dict[tuple, str] = {}
    _collect_lines(node, (), path, origins)
    return data, origins


def _collect_lines(node: yaml.Node, prefix: tuple, path: Path, origins: dict[tuple, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            origins[key] = f"{path}:{key_node.start_mark.line + 1}"
            _collect_lines(value_node, key, path, origins)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            origins[prefix + (i,)] = f"{path}:{item.start_mark.line + 1}"
            _collect_lines(item, prefix + (i,), path, origins)


# --- overrides ----------------------------------------------------------------------------------------------


def _parse_scalar(raw: str) -> Any:
    """`--set` values are YAML scalars or flow collections: 3, 5e-5, true, null, [a, b]. Anything else is text."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML 1.1 reads "1e-5" as text; pydantic turns numeric text into numbers where a number is expected.
    return raw if isinstance(value, dict) else value


parse_override_value = _parse_scalar  # public: `finetune --sweep` reads each of its values as --set reads one


def _assign(data: dict, dotted: str, value: Any, origins: dict, source: str, problems: list[str]) -> None:
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            problems.append(f"{source} {dotted}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
            return
        node = child
    node[parts[-1]] = value
    origins[tuple(parts)] = source


def _undecodable_names(value: Any, origins: dict[tuple, str], loc: tuple = ()) -> list[str]:
    """A problem for each text in the config that is not valid UTF-8 (a file name from another encoding)."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _undecodable_names(item, origins, (*loc, key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _undecodable_names(item, origins, (*loc, i))]
    shown = not_utf8(value) if isinstance(value, str) else None
    if shown is None:
        return []
    key, where = ".".join(str(part) for part in loc), _origin(loc, origins)
    rename = "rename a Latin-1 one with `convmv -f latin1 -t utf-8 --notest NAME`"
    return [f"'{key}' ({where}): '{shown}' is not valid UTF-8; use a UTF-8 name ({rename})"]


# --- error messages -----------------------------------------------------------------------------------------


def _describe(error: dict, schema: type[BaseModel], origins: dict[tuple, str]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    where = _origin(loc, origins)
    where = f" ({where})" if where else ""
    if error["type"] == "extra_forbidden":
        hint = _nearest(schema, loc)
        hint = f"; did you mean '{hint}'?" if hint else ""
        return f"unknown key '{key}'{where}{hint}"
    given = error.get("input")
    section = _section_of(schema, loc)
    if section is not None and error["type"] != "missing" and not isinstance(given, dict):
        keys = ", ".join(config_keys(section, f"{key}."))
        return f"'{key}'{where} is a section, not a value (got {given!r}); set one of its keys: {keys}"
    shown = "" if isinstance(given, dict) or error["type"] == "missing" else f", got {given!r}"
    return f"'{key}'{where}: {error['msg']}{shown}{_valid_range(error, schema)}"


BOUNDS = ("ge", "gt", "le", "lt")  # the attributes of pydantic's bound constraints (annotated_types Ge, Gt, ...)


def _valid_range(error: dict, schema: type[BaseModel]) -> str:
    """For a value out of bounds, both bounds of its field: "; valid: 0 <= seed <= 4294967295"."""
    if error["type"] not in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return ""
    names = [p for p in error["loc"] if isinstance(p, str)]  # list items (train.seeds.0) share their list's bounds
    model: type[BaseModel] | None = schema
    field = None
    for name in names:
        field = model.model_fields.get(name) if model else None
        if field is None:
            return ""
        model = _submodel(field.annotation)
    if field is None:
        return ""
    bounds = {b: getattr(c, b) for c in _constraints(field.annotation, field.metadata) for b in BOUNDS if hasattr(c, b)}
    low = f"{bounds['ge']} <= " if "ge" in bounds else f"{bounds['gt']} < " if "gt" in bounds else ""
    high = f" <= {bounds['le']}" if "le" in bounds else f" < {bounds['lt']}" if "lt" in bounds else ""
    return f"; valid: {low}{names[-1]}{high}" if low and high else ""


def _constraints(annotation: Any, metadata: list) -> Iterator[Any]:
    """The constraints of a field (annotated_types Ge, Le, ...), those of its list items included."""
    yield from metadata
    for arg in get_args(annotation):
        yield from _constraints(arg, getattr(arg, "metadata", []))


def _section_of(schema: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The schema of the section at `loc` (`nsp`, `train`, ...), or None if `loc` is a value or no key."""
    model: type[BaseModel] | None = schema
    for part in loc:
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        if field is None:
            return None
        model = _submodel(field.annotation)
    return model


def _origin(loc: tuple, origins: dict[tuple, str]) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return ""


def _nearest(schema: type[BaseModel], loc: tuple) -> str | None:
    """The valid key closest to an unknown one: first among its siblings, then anywhere in the schema."""
    model: type[BaseModel] | None = schema
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        model = _submodel(field.annotation) if field else None
    wrong = str(loc[-1])
    prefix = ".".join(str(p) for p in loc[:-1])
    if model is not None:
        match = difflib.get_close_matches(wrong, list(model.model_fields), n=1, cutoff=0.6)
        if match:
            return f"{prefix}.{match[0]}" if prefix else match[0]
    everywhere = config_keys(schema)
    match = difflib.get_close_matches(".".join(str(p) for p in loc), everywhere, n=1, cutoff=0.6)
    if not match:  # a key put in the wrong section: compare the last part only
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in everywhere}
        leaf = difflib.get_close_matches(wrong, list(by_leaf), n=1, cutoff=0.75)
        match = [by_leaf[leaf[0]]] if leaf else []
    return match[0] if match else None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
