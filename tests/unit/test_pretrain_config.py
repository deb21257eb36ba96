"""The pretrain schema, the shipped YAMLs, and the checkpoint bookkeeping (find latest, retention,
differences)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertcli.config import config_keys, load_config
from bertcli.errors import ConfigError
from bertcli.schema.pretrain import PRESETS, PretrainConfig
from bertcli.training.checkpoint import STATE_FILE, config_differences, latest_checkpoint, prune_checkpoints

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs" / "pretrain").glob("*.yaml")) + [ROOT / "configs" / "demo" / "pretrain.yaml"]
RECIPES = {"cpu-1h", "tapt"}  # named for a compute budget, not for the preset shape they train


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_validates_and_documents_every_key(path):
    cfg = load_config(PretrainConfig, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ") and "bertcli pretrain --config" in text.splitlines()[1] + text.splitlines()[0]
    for key in config_keys(PretrainConfig):
        assert f"{key.rsplit('.', 1)[-1]}:" in text, f"{key} is not in {path.name}"
    # base.yaml, base-phase1.yaml: the preset the name begins with
    if path.parent.name == "pretrain" and path.stem not in RECIPES:
        assert cfg.model.preset == path.stem.split("-")[0]


def test_presets_cover_the_bert_family():
    assert set(PRESETS) == {"tiny", "mini", "small", "medium", "base", "large"}
    assert {p["hidden_size"] for p in PRESETS.values()} == {128, 256, 512, 768, 1024}
    for path in SHIPPED[:-1]:
        assert path.stem in RECIPES or path.stem.split("-")[0] in PRESETS


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.preset=huge", "model.preset"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.hidden_size=129", "not a multiple of num_attention_heads"),
        ("masking.random_replace_prob=0.5", "must not exceed 1"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("objective=nsp", "objective"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, None, [override, "data.dirs=[x]"])
    assert needle in str(err.value)


def _checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    path = root / f"step-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / STATE_FILE).write_text("{}")
    return path


def test_latest_ignores_half_written_and_temporary_checkpoints(tmp_path):
    _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, complete=False)  # killed before its state file was written
    (tmp_path / ".tmp-step-40").mkdir()  # killed before the rename
    assert latest_checkpoint(tmp_path) == tmp_path / "step-20"
    assert latest_checkpoint(tmp_path / "absent") is None


def test_keep_last_k(tmp_path):
    for step in (5, 10, 15, 20):
        _checkpoint(tmp_path, step)
    prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-15", "step-20"]


def test_config_differences_name_each_changed_key_of_the_guarded_sections():
    old = {
        "model": {"hidden_size": 128, "preset": "tiny"},
        "train": {"learning_rate": 1e-3},
        "objective": "mlm",
    }
    new = {
        "model": {"hidden_size": 256, "preset": "tiny"},
        "train": {"learning_rate": 5e-4},
        "objective": "mlm+nsp",
    }
    found = config_differences(old, new, ("model", "objective"))
    assert found == [
        "model.hidden_size: was 128, now 256",
        "objective: was 'mlm', now 'mlm+nsp'",
    ]
