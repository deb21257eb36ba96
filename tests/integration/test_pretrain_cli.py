"""`bertcli pretrain` end to end on real `bertcli tokenize` output: outputs that load with transformers, a config
that reproduces the run, every handled bad input (exit 2, one line, nothing overwritten), and two processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from bertcli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "model": {"preset": "tiny", "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64},
    "data": {"batch_size": 8},
    "train": {"max_steps": 12, "learning_rate": 2e-3, "warmup_steps": 2, "log_every": 4, "eval_every": 6,
              "save_every": 6, "eval_max_batches": 2, "tensorboard": False},
}  # fmt: skip


def _config(tmp_path: Path, name: str = "tiny.yaml", **sections) -> Path:
    data = {k: {**v, **sections.get(k, {})} for k, v in TINY.items()}
    path = tmp_path / name
    path.write_text("# bertcli pretrain --config " + name + "\n" + yaml.safe_dump(data), encoding="utf-8")
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["pretrain", *args])


@pytest.fixture(scope="module")
def finished(tokenized_dir, tmp_path_factory):
    """One completed CLI run: (its output folder, the config file it ran with)."""
    root = tmp_path_factory.mktemp("pretrain-cli")
    config = _config(root)
    result = _invoke(str(tokenized_dir), "-o", str(root / "run"), "--config", str(config))
    assert result.exit_code == 0, result.output
    return root / "run", config


def test_final_loads_with_auto_model_and_fill_mask_pipeline(finished):
    from transformers import AutoModelForPreTraining, BertForPreTraining, pipeline

    out, _ = finished
    model = AutoModelForPreTraining.from_pretrained(str(out / "final"))
    assert isinstance(model, BertForPreTraining) and model.config.hidden_size == 32
    fill = pipeline("fill-mask", model=str(out / "final"))
    predictions = fill(f"the river {fill.tokenizer.mask_token} bright")
    assert len(predictions) == 5 and all("token_str" in p for p in predictions)
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "final/README.md", "final/tokenizer.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    card = (out / "final" / "README.md").read_text()
    assert "BertForPreTraining" in card and "eval_mlm_loss" in card and "fill-mask" in card
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-12", "step-6"]
    schedule = json.loads((out / "checkpoints" / "step-6" / "scheduler.json").read_text())
    assert schedule["last_epoch"] == 6 and not list((out / "checkpoints").rglob("custom_checkpoint_*"))


def test_saved_config_yaml_reproduces_the_run(finished, tmp_path):
    out, _ = finished
    result = _invoke("--config", str(out / "config.yaml"), "-o", str(tmp_path / "again"))
    assert result.exit_code == 0, result.output
    first = load_file(str(out / "final" / "model.safetensors"))
    again = load_file(str(tmp_path / "again" / "final" / "model.safetensors"))
    assert all((first[k] == again[k]).all() for k in first)


def test_config_yaml_holds_absolute_paths_and_resumes_from_another_directory(tokenized_dir, tmp_path, monkeypatch):
    # Issue 28: the printed `--resume --config pre/config.yaml` must work from any directory, not only the run's.
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    shutil.copytree(tokenized_dir, work / "tok")
    elsewhere.mkdir()
    config = _config(tmp_path, train={"max_steps": 4, "save_every": 2, "eval_every": 2, "keep_last": 3})
    monkeypatch.chdir(work)
    first = _invoke("tok", "-o", "pre", "--config", str(config))
    assert first.exit_code == 0, first.output
    saved = yaml.safe_load((work / "pre" / "config.yaml").read_text())
    assert saved["data"]["dirs"] == [str(work / "tok")] and saved["output"]["dir"] == str(work / "pre")
    monkeypatch.chdir(elsewhere)
    resumed = _invoke("--config", "../work/pre/config.yaml", "--resume", "--set", "train.max_steps=6")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and "step-4" in resumed.output
    assert (work / "pre" / "checkpoints" / "step-6").is_dir() and not list(elsewhere.iterdir())


def _incomplete(tokenized_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "incomplete"
    shutil.copytree(tokenized_dir, copy)
    shutil.rmtree(copy / "dataset")
    return copy


BAD = [
    ("missing data dir", lambda d, t: [str(t / "nowhere")], "not a complete `bertcli tokenize` output"),
    ("incomplete data dir", lambda d, t: [str(_incomplete(d, t))], "missing dataset"),
    ("vocab mismatch", lambda d, t: [str(d), "--set", "model.vocab_size=999"], "model.vocab_size is 999"),
    ("sequence too long", lambda d, t: [str(d), "--set", "model.max_position_embeddings=32"],
     "max_position_embeddings is 32"),
    ("batch size 0", lambda d, t: [str(d), "--set", "data.batch_size=0"], "data.batch_size"),
    ("unknown preset", lambda d, t: [str(d), "--set", "model.preset=huge"], "model.preset"),
    ("fp16 on cpu", lambda d, t: [str(d), "--set", "train.mixed_precision=fp16"], "fp16 needs a GPU"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "args", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_2_and_nothing_overwritten(tokenized_dir, tmp_path, case, args, needle):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run's file")
    result = _invoke(*args(tokenized_dir, tmp_path), "-o", str(out), "--config", str(_config(tmp_path)),
                     "--overwrite")  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "an earlier run's file"


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_resume_refusals_leave_the_run_untouched(finished, tokenized_dir, tmp_path):
    out, config = finished
    half = tmp_path / "step-99"  # a checkpoint whose save never finished: no trainer_state.json
    shutil.copytree(out / "checkpoints" / "step-6", half)
    (half / "trainer_state.json").unlink()
    old = tmp_path / "step-98"  # an earlier bertcli's: the schedule pickled, by Accelerate's custom objects
    shutil.copytree(out / "checkpoints" / "step-6", old)
    marker = tmp_path / "the-pickle-ran"
    torch.save(_RunsCode(marker), old / "custom_checkpoint_0.pkl")
    (old / "scheduler.json").unlink()
    no_schedule = tmp_path / "step-97"
    shutil.copytree(out / "checkpoints" / "step-6", no_schedule)
    (no_schedule / "scheduler.json").unlink()
    torn = tmp_path / "step-96"  # found only once the model is built: the run's log must still be as it was
    shutil.copytree(out / "checkpoints" / "step-6", torn)
    (torn / "scheduler.json").write_text('{"last_epoch": ')
    before = _snapshot(out)
    cases = [
        ([str(tokenized_dir), "-o", str(tmp_path / "empty"), "--config", str(config), "--resume"],
         "nothing to resume"),
        (["-o", str(out), "--config", str(out / "config.yaml"), "--set", "model.hidden_size=64", "--resume"],
         "model.hidden_size: was 32, now 64"),
        (["-o", str(out), "--config", str(out / "config.yaml"), "--set", "masking.mlm_probability=0.2",
          "--resume", str(out / "checkpoints" / "step-6")], "masking.mlm_probability"),
        (["-o", str(out), "--config", str(out / "config.yaml"), "--resume", str(half)], "not a complete checkpoint"),
        (["-o", str(out), "--config", str(out / "config.yaml"), "--resume", str(old)], "does not load pickles"),
        (["-o", str(out), "--config", str(out / "config.yaml"), "--resume", str(no_schedule)], "no scheduler.json"),
        (["-o", str(out), "--config", str(out / "config.yaml"), "--resume", str(torn)], "cannot be read"),
        ([str(tokenized_dir), "-o", str(out), "--config", str(config)], "not empty"),
    ]  # fmt: skip
    for args, needle in cases:
        result = _invoke(*args)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr, result.stderr
    assert _snapshot(out) == before
    assert not (tmp_path / "empty").exists() and not marker.exists()


class _RunsCode:
    """Unpickled, it creates `path`: what a tampered checkpoint could do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_follow_the_one_process_loss_trajectory(tokenized_dir, tmp_path):
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = _config(tmp_path, model=no_dropout, train={"max_steps": 20, "log_every": 2, "save_every": 0})
    one = _invoke(str(tokenized_dir), "-o", str(tmp_path / "one"), "--config", str(config))
    assert one.exit_code == 0, one.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), "-m", "bertcli", "pretrain", str(tokenized_dir), "-o", str(tmp_path / "two"),
              "--config", str(config), "--set", "data.batch_size=4"]  # same global batch: 2 x 4 = 8  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout + done.stderr

    def losses(run: str) -> list[tuple[int, float]]:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]

    single, double = losses("one"), losses("two")
    assert [s for s, _ in single] == [s for s, _ in double] == list(range(2, 21, 2))  # logged once, not twice
    # Same examples and the same masks per step; only the MLM mean is taken per process before averaging.
    assert max(abs(a - b) for (_, a), (_, b) in zip(single, double, strict=True)) < 0.1
    assert double[-1][1] < double[0][1]
