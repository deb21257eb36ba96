"""The config system: YAML + --set overrides -> typed schema; every problem reported at once with its key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from bertcli.config import absolute_paths, config_keys, dump_config, load_config
from bertcli.errors import ConfigError
from bertcli.schema.tokenize import TokenizeConfig

REPO = Path(__file__).resolve().parents[2]
# The command named on a shipped YAML's first line -> the schema that validates it. A YAML naming a command
# missing here fails the test below, so configs cannot drift from code.
SCHEMAS = {
    "tokenize": "bertcli.schema.tokenize:TokenizeConfig",
    "pretrain": "bertcli.schema.pretrain:PretrainConfig",
    "finetune": "bertcli.schema.finetune:FinetuneConfig",
    "eval": "bertcli.schema.eval:EvalConfig",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def problems(excinfo) -> list[str]:
    return excinfo.value.problems


def test_yaml_and_overrides_are_typed(tmp_path):
    path = write(tmp_path, "input:\n  paths: [a.txt]\nnsp:\n  max_seq_length: 256\n")
    cfg = load_config(TokenizeConfig, path, ["nsp.short_seq_prob=0.2", "tokenizer.lowercase=false", "nsp.seed=7"])
    assert cfg.nsp.max_seq_length == 256 and cfg.nsp.short_seq_prob == 0.2
    assert cfg.tokenizer.lowercase is False and cfg.nsp.seed == 7
    assert cfg.input.paths == ["a.txt"]


def test_unknown_key_names_file_line_and_nearest_key(tmp_path):
    path = write(tmp_path, "input:\n  paths: [a.txt]\nnsp:\n  max_seq_lenght: 256\n")
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, path)
    (msg,) = problems(e)
    assert "nsp.max_seq_lenght" in msg and f"{path}:4" in msg and "did you mean 'nsp.max_seq_length'" in msg


def test_key_in_wrong_section_suggests_where_it_lives(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, None, ["input.paths=[a]", "nsp.vocab_size=100"])
    assert "did you mean 'tokenizer.vocab_size'" in problems(e)[0]


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "input:\n  paths: [a.txt]\nnsp:\n  max_seq_length: four\n  short_seq_prob: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, path, ["tokenizer.vocab_sise=10"])
    msgs = problems(e)
    assert len(msgs) == 3
    assert any("nsp.max_seq_length" in m and f"{path}:4" in m and "integer" in m for m in msgs)
    assert any("nsp.short_seq_prob" in m and "less than or equal to 1" in m for m in msgs)
    assert any("tokenizer.vocab_sise" in m and "--set" in m for m in msgs)


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, None, ["nsp.seed"])
    assert "expected KEY=VALUE" in problems(e)[0]
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, write(tmp_path, "nsp: [1, 2\n"))
    assert "not valid YAML" in problems(e)[0]


def test_dump_roundtrip_reproduces_config(tmp_path):
    cfg = load_config(TokenizeConfig, None, ["input.paths=[x.txt]", "nsp.max_seq_length=64", "nsp.dupe_factor=3"])
    text = dump_config(cfg, "tokenize")
    assert text.startswith("# Resolved config") and "bertcli tokenize --config config.yaml" in text
    again = load_config(TokenizeConfig, write(tmp_path, text))
    assert again == absolute_paths(cfg)  # paths are stored absolute, so the file works from any directory
    assert again.input.paths == [os.path.abspath("x.txt")] and again.output.dir == os.path.abspath("runs/tokenize")


def test_config_keys_lists_dotted_keys():
    keys = config_keys(TokenizeConfig)
    assert "nsp.max_seq_length" in keys and "tokenizer.vocab_size" in keys and "input.paths" in keys


def shipped_yamls() -> list[Path]:
    return sorted((REPO / "configs").rglob("*.yaml"))


# Keys a template leaves to the command line (its usage comment shows them), filled here as the CLI would.
RUNTIME_VALUES = {"eval": {"model.paths": ["MODEL_DIR"], "data.path": "DATA_FILE"}}


@pytest.mark.parametrize("path", shipped_yamls(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_loads_and_validates(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))])
    match = re.search(r"^#.*?\bbertcli (\w+)", header, re.MULTILINE)
    assert match, f"{path}: must start with a comment showing the `bertcli COMMAND ...` that uses it"
    command = match.group(1)
    assert command in SCHEMAS, f"{path}: no schema registered for command {command!r}"
    module, name = SCHEMAS[command].split(":")
    schema = getattr(__import__(module, fromlist=[name]), name)
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    load_config(schema, path, values=RUNTIME_VALUES.get(command))


def test_shipped_yamls_exist():
    assert any(p.parent.name == "tokenize" for p in shipped_yamls())


# --- seeds: 0 to 2**32 - 1 (what numpy takes), every seed key of every command ------------------------------


REQUIRED = {  # the least each schema needs besides the key under test
    "tokenize": {"input.paths": ["c.txt"]},
    "pretrain": {"data.dirs": ["tok"]},
    "finetune": {"model.path": "m", "data.train_file": "t.csv"},
    "eval": {"model.paths": ["m"], "data.path": "d.tsv"},
}


def schema_of(command: str):
    module, name = SCHEMAS[command].split(":")
    return getattr(__import__(module, fromlist=[name]), name)


SEED_KEYS = [
    (c, key)
    for c in SCHEMAS
    for key in config_keys(schema_of(c))
    if key.rsplit(".", 1)[-1] in ("seed", "seeds") or key.endswith("_seed")
]  # not average_seeds (a switch)


def test_seed_keys_are_found():
    assert {("finetune", "train.seeds"), ("pretrain", "masking.eval_seed"), ("tokenize", "split.seed")} < set(SEED_KEYS)


@pytest.mark.parametrize("command,key", SEED_KEYS, ids=lambda x: str(x))
def test_every_seed_key_takes_0_to_2_32_minus_1_and_names_the_range(command, key):
    schema = schema_of(command)
    plural = key.endswith("seeds")
    for bad in (-1, 2**32):
        with pytest.raises(ConfigError) as e:
            load_config(schema, overrides=[f"{key}={[7, bad] if plural else bad}"], values=REQUIRED[command])
        (problem,) = problems(e)
        assert problem.startswith(f"'{key}.1' (--set)" if plural else f"'{key}' (--set)"), problem
        assert f"got {bad}" in problem and "<= 4294967295" in problem and "valid: 0 <= " in problem
    for good in (0, 2**32 - 1):
        load_config(schema, overrides=[f"{key}={[good] if plural else good}"], values=REQUIRED[command])


def test_out_of_range_values_name_both_bounds_of_their_key():
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, overrides=["input.paths=[a]", "nsp.nsp_probability=1.5", "run.num_proc=0"])
    assert problems(e) == [
        "'nsp.nsp_probability' (--set): Input should be less than or equal to 1, got 1.5; "
        "valid: 0.0 <= nsp_probability <= 1.0",
        "'run.num_proc' (--set): Input should be greater than or equal to 1, got 0; valid: 1 <= num_proc <= 256",
    ]


def test_a_directory_given_as_config_file_says_so(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, tmp_path)
    assert problems(e) == [
        f"config file {tmp_path} is a directory; --config takes a YAML file (the shipped ones are under configs/)"
    ]
    write(tmp_path, "nsp:\n  seed: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, tmp_path)
    assert problems(e) == [
        f"config file {tmp_path} is a directory; --config takes a YAML file, such as {tmp_path}/c.yaml"
    ]


def test_a_section_given_a_value_says_it_is_a_section_and_lists_its_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, overrides=["input.paths=[a]", "nsp=5"])
    assert problems(e) == [
        "'nsp' (--set) is a section, not a value (got 5); set one of its keys: nsp.mode, nsp.max_seq_length, "
        "nsp.short_seq_prob, nsp.nsp_probability, nsp.dupe_factor, nsp.seed"
    ]
    path = write(tmp_path, "input:\n  paths: [a.txt]\ntokenizer: wordpiece\n")
    with pytest.raises(ConfigError) as e:
        load_config(TokenizeConfig, path)
    (problem,) = problems(e)
    assert problem.startswith(f"'tokenizer' ({path}:3) is a section, not a value (got 'wordpiece'); set one of")
    assert "tokenizer.vocab_size, " in problem


SECTIONS = [(c, s) for c in SCHEMAS for s in sorted({k.split(".")[0] for k in config_keys(schema_of(c)) if "." in k})]


@pytest.mark.parametrize("command,section", SECTIONS, ids=lambda x: str(x))
def test_every_section_of_every_command_given_a_value_lists_its_keys(command, section):
    with pytest.raises(ConfigError) as e:
        values = {k: v for k, v in REQUIRED[command].items() if not k.startswith(f"{section}.")}
        load_config(schema_of(command), overrides=[f"{section}=5"], values=values)
    (problem,) = [p for p in problems(e) if p.startswith(f"'{section}' (--set)")]
    keys = [k for k in config_keys(schema_of(command)) if k.startswith(f"{section}.")]
    assert problem.endswith(f"is a section, not a value (got 5); set one of its keys: {', '.join(keys)}"), problem
