"""Training outcomes of `run_pretrain` on tiny models: learning, exact resume (in process and after SIGKILL),
SIGTERM, NaN, the mlm-only objective and several data directories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from pretrain_fixtures import make_tokenized_dir, tiny_config
from safetensors.torch import load_file

from bertcli.errors import RunFailure
from bertcli.modeling import PretrainingModel
from bertcli.pipelines.pretrain import _dataloaders, load_pretrain_data, run_pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tokenized_dir(tmp_path_factory.mktemp("learnable"))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_tokenized_dir(tmp_path_factory.mktemp("small"), n_train=100, n_validation=32, seed=1)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> bool:
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return left.keys() == right.keys() and all((left[k] == right[k]).all() for k in left)


def test_tiny_model_learns_mlm_and_nsp_clearly_above_chance(data, tmp_path):
    no_dropout = {"hidden_size": 64, "intermediate_size": 128, "hidden_dropout_prob": 0.0,
                  "attention_probs_dropout_prob": 0.0}  # fmt: skip
    cfg = tiny_config(data, tmp_path / "run", model=no_dropout, max_steps=400, learning_rate=3e-3, log_every=50,
                      eval_every=400, save_every=0, eval_max_batches=None)  # fmt: skip
    result = run_pretrain(cfg)
    train = [r for r in _records(tmp_path / "run") if r["split"] == "train"]
    for key in ("mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "lr", "grad_norm", "tokens_per_s",
                "samples_per_s"):  # fmt: skip
        assert key in train[0], key
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"] - 0.5
    # Chance, from the held-out tokens themselves: a model that knows only how often each token occurs has a loss
    # of their entropy (3.7 nats) and, always naming the most frequent token, an accuracy of its share (4.6%); NSP
    # 50%. The run ends 1.2 nats below that entropy and at 2.4-2.7 times that accuracy on AVX-512 and AVX2 alike
    # (float sums differ between CPUs; a bound a few percent from one machine's figure would be a flaky test).
    entropy, most_frequent = _token_chance(data)
    assert result["eval_mlm_loss"] < entropy - 0.7
    assert result["eval_mlm_accuracy"] > 1.5 * most_frequent
    assert result["eval_nsp_accuracy"] > 0.8


def _token_chance(data_dir: Path) -> tuple[float, float]:
    """(entropy of the validation split's non-special tokens in nats, share of the most frequent one)."""
    import collections
    import math

    import datasets

    rows = datasets.load_from_disk(str(data_dir / "dataset"))["validation"]
    counts = collections.Counter()
    for ids, special in zip(rows["input_ids"], rows["special_tokens_mask"]):
        counts.update(i for i, s in zip(ids, special) if not s)
    shares = [n / sum(counts.values()) for n in counts.values()]
    return -sum(p * math.log(p) for p in shares), max(shares)


def test_resume_from_a_mid_run_checkpoint_ends_with_identical_weights(small_data, tmp_path):
    # 100 rows / batch 8 = 13 micro-batches per epoch, accumulation 2: the run crosses epochs mid-step.
    settings = {"max_steps": 24, "save_every": 8, "keep_last": 5, "gradient_accumulation_steps": 2,
                "eval_every": 12, "log_every": 5}  # fmt: skip
    run_pretrain(tiny_config(small_data, tmp_path / "a", data={"batch_size": 8}, **settings))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    for step in (16, 24):
        shutil.rmtree(tmp_path / "b" / "checkpoints" / f"step-{step}")
    result = run_pretrain(tiny_config(small_data, tmp_path / "b", data={"batch_size": 8}, **settings), resume=True)
    assert result["step"] == 24 and result["status"] == "completed"
    assert _same_weights(tmp_path / "a" / "final", tmp_path / "b" / "final")
    steps = [r["step"] for r in _records(tmp_path / "b") if r["split"] == "train"]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after the resume"


def test_evaluations_after_a_resume_repeat_those_of_the_unbroken_run(small_data, tmp_path):
    # Resumed after the evaluation at step 4, the run's first evaluation (step 8) is the unbroken run's second:
    # both must see the same masks. (Accelerate's loader calls dataset.set_epoch on each complete pass.)
    settings = {"max_steps": 12, "eval_every": 4, "save_every": 6, "keep_last": 5, "eval_max_batches": None}
    run_pretrain(tiny_config(small_data, tmp_path / "a", **settings))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-12")
    run_pretrain(tiny_config(small_data, tmp_path / "b", **settings), resume=True)
    evals = [[r for r in _records(tmp_path / run) if r["split"] == "eval"] for run in ("a", "b")]
    assert [r["step"] for r in evals[0]] == [4, 8, 12]
    assert evals[0] == evals[1]


def _cli(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bertcli", "pretrain", "--config", str(config), *extra]


def _popen(config: Path) -> subprocess.Popen:
    # The subprocess uses as many threads as this process: float sums (and so weights) depend on the thread count.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(_cli(config), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    return path


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out waiting for the training subprocess"
        time.sleep(0.05)


def test_sigkill_between_checkpoints_then_resume_matches_an_uninterrupted_run(small_data, tmp_path):
    settings = {"max_steps": 120, "save_every": 20, "keep_last": 3, "log_every": 10, "eval_every": 100}
    reference = tiny_config(small_data, tmp_path / "reference", **settings)
    run_pretrain(reference)
    killed = tiny_config(small_data, tmp_path / "killed", **settings)
    config = _write_config(killed, tmp_path / "killed.yaml")
    proc = _popen(config)
    _wait_for(lambda: (tmp_path / "killed" / "checkpoints" / "step-40").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)  # no handler can run: whatever was being written stays half-written
    proc.communicate()
    assert not (tmp_path / "killed" / "final").exists()
    from typer.testing import CliRunner

    from bertcli.cli.app import app

    result = CliRunner().invoke(app, ["pretrain", "--config", str(config), "--resume"])
    assert result.exit_code == 0, result.output
    assert _same_weights(tmp_path / "reference" / "final", tmp_path / "killed" / "final")


@pytest.mark.parametrize(("stop", "keep_last"), [(signal.SIGTERM, 2), (signal.SIGINT, 0)],
                         ids=["SIGTERM", "SIGINT-keep_last-0"])  # fmt: skip
def test_stop_signal_saves_a_checkpoint_and_exits_cleanly_then_resume_finishes(small_data, tmp_path, stop, keep_last):
    # keep_last 0 keeps the checkpoint a stop writes (for --resume) and removes it once the resumed run completes
    cfg = tiny_config(small_data, tmp_path / "run", max_steps=100_000, save_every=0, log_every=5, eval_every=0,
                      keep_last=keep_last)  # fmt: skip
    config = _write_config(cfg, tmp_path / "run.yaml")
    proc = _popen(config)
    metrics = tmp_path / "run" / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and metrics.stat().st_size > 0, proc)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "checkpoint saved" in stderr
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert len(saved) == 1 and (saved[0] / "trainer_state.json").is_file()
    step = int(saved[0].name.split("-")[1])
    assert step >= 5
    resumed = tiny_config(small_data, tmp_path / "run", max_steps=step + 3, save_every=0, eval_every=0,
                          keep_last=keep_last)  # fmt: skip
    result = run_pretrain(resumed, resume=True)  # a longer or shorter max_steps is allowed on resume
    assert result["status"] == "completed" and result["step"] == step + 3
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints").exists() == (keep_last > 0)


def test_keep_last_0_leaves_only_final(small_data, tmp_path, monkeypatch):
    import bertcli.pipelines.pretrain as pretrain

    cfg = tiny_config(small_data, tmp_path / "run", max_steps=6, save_every=2, keep_last=0, eval_every=0)
    saved, original = [], pretrain.save_checkpoint

    def spy(acc, folder, step, *args):
        saved.append((step, sorted(p.name for p in folder.glob("step-*"))))  # what is there before this save
        return original(acc, folder, step, *args)

    monkeypatch.setattr(pretrain, "save_checkpoint", spy)
    assert run_pretrain(cfg)["status"] == "completed"
    # during the run the newest checkpoint stays (a crash can resume); none is written at the end
    assert saved == [(2, []), (4, ["step-2"])]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(small_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = PretrainingModel.forward

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 7:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(PretrainingModel, "forward", poisoned)
    cfg = tiny_config(small_data, tmp_path / "run", max_steps=20, save_every=3, keep_last=5, eval_every=0)
    with pytest.raises(RunFailure, match="at step 7"):
        run_pretrain(cfg)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-3", "step-6"]
    assert not (tmp_path / "run" / "final").exists()


def test_mlm_only_objective_on_two_concatenated_data_dirs(small_data, data, tmp_path):
    cfg = tiny_config([small_data, data], tmp_path / "run", max_steps=6, log_every=3, eval_every=6)
    cfg.objective = "mlm"
    loaded = load_pretrain_data(cfg)
    assert len(loaded.train) == 100 + 1200 and len(loaded.validation) == 32 + 128
    run_pretrain(cfg)
    records = _records(tmp_path / "run")
    assert all("mlm_loss" in r and "nsp_loss" not in r for r in records)


def test_logs_reach_tensorboard_through_accelerate(small_data, tmp_path):
    run_pretrain(tiny_config(small_data, tmp_path / "run", max_steps=4, log_every=2, tensorboard=True))
    events = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)


def test_evaluation_masks_are_fixed_and_training_masks_change_each_epoch(small_data, tmp_path):
    cfg = tiny_config(small_data, tmp_path / "run")
    train, evaluation = _dataloaders(cfg, load_pretrain_data(cfg))
    first, again = list(evaluation), list(evaluation)
    assert all((a["input_ids"] == b["input_ids"]).all() and (a["labels"] == b["labels"]).all()
               for a, b in zip(first, again, strict=True))  # fmt: skip
    rows = train.dataset.__getitems__(list(range(16)))
    train.dataset.set_epoch(1)
    later = train.dataset.__getitems__(list(range(16)))
    masks = train.collate_fn(rows)["labels"], train.collate_fn(later)["labels"]
    assert not (masks[0] == masks[1]).all()
