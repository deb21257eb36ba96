"""A write that fails (disk full, an I/O error) while saving a checkpoint, final/ or best/: exit 1 with one line
naming what was being written, no temporary folder left taking the space, the previous checkpoint byte for byte
as it was. The disk fills in the way the real one does (checked by hand on a 3 MB tmpfs): torch's zip writer
raises a RuntimeError without the errno after writing part of the file, and safetensors an error whose message
says "No space left on device (os error 28)"; the writers here do the same, and disk_usage reports a full disk."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from finetune_fixtures import save_tiny_model, sentiment_task
from pretrain_fixtures import make_tokenized_dir
from safetensors import SafetensorError
from typer.testing import CliRunner

from bertcli.cli.app import app
from bertcli.errors import RunFailure
from bertcli.outputs import TMP_PREFIX, WriteFailure, atomic_dir, atomic_file, write_failure

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 173632 vs 173524"
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> Path:
    return make_tokenized_dir(tmp_path_factory.mktemp("tok"), n_train=64, n_validation=16)


def pretrain(tokenized: Path, out: Path, *extra: str, max_steps: int = 4, save_every: int = 2):
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                  "max_position_embeddings": 64},
        "data": {"batch_size": 8},
        "train": {"max_steps": max_steps, "learning_rate": 2e-3, "warmup_steps": 1, "log_every": 2, "eval_every": 0,
                  "save_every": save_every, "tensorboard": False},
    }))  # fmt: skip
    result = CliRunner().invoke(app, ["pretrain", str(tokenized), "-o", str(out), "--config", str(config), *extra])
    return result


def error_line(result) -> str:
    """The one error line (tqdm's bar shares stderr, and may end without a newline before it)."""
    assert "Traceback" not in result.output, result.output
    errors = [line[line.index("error: ") :] for line in result.stderr.replace("\r", "\n").splitlines()
              if "error: " in line]  # fmt: skip
    assert len(errors) == 1, result.stderr
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"{TMP_PREFIX}*")]


def full_disk(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(3 << 20, 3 << 20, 0))


def fail_second_optimizer_save(monkeypatch, error: BaseException, checkpoints: Path, seen: dict) -> None:
    """torch.save of the second checkpoint's optimizer.bin writes part of the file, then raises `error`; the
    checkpoint before it is photographed at that moment."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.bin"):
            calls.append(f)
            if len(calls) == 2:
                seen["previous"] = snapshot(checkpoints / "step-2")
                Path(f).write_bytes(b"PK\x03\x04" + bytes(4096))
                raise error
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_writing_a_checkpoint(tokenized, tmp_path, monkeypatch):
    out, seen = tmp_path / "run", {}
    fail_second_optimizer_save(monkeypatch, RuntimeError(TORCH_SHORT_WRITE), out / "checkpoints", seen)
    full_disk(monkeypatch)
    result = pretrain(tokenized, out)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith(f"error: no space left on device while writing {out / 'checkpoints' / 'step-4'}; "), line
    assert "step-2 is intact" in line and "--resume" in line and "inline_container" not in line
    assert leftovers(out) == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    assert snapshot(out / "checkpoints" / "step-2") == seen["previous"]
    monkeypatch.undo()  # space freed: the run continues from the intact checkpoint
    resumed = pretrain(tokenized, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and (out / "final" / "model.safetensors").is_file()


def test_disk_full_while_logging_names_metrics_jsonl_on_a_line_of_its_own(tokenized, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = Path.open

    def open_(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    result = pretrain(tokenized, out)
    assert result.exit_code == 1, result.output
    assert error_line(result).startswith(f"error: no space left on device while writing {out / 'metrics.jsonl'}")
    assert "\nerror: " in result.stderr.replace("\r", "\n")  # the progress bar was closed first


def test_another_write_failure_names_the_checkpoint_and_the_reason(tokenized, tmp_path, monkeypatch):
    out, seen = tmp_path / "run", {}
    fail_second_optimizer_save(monkeypatch, OSError(errno.EIO, "Input/output error"), out / "checkpoints", seen)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 40, 1 << 30, 1 << 39))
    result = pretrain(tokenized, out)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith(f"error: could not write {out / 'checkpoints' / 'step-4'}: [Errno 5] Input/output error;")
    assert "step-2 is intact" in line
    assert leftovers(out) == [] and snapshot(out / "checkpoints" / "step-2") == seen["previous"]


def fail_safetensors_save_pretrained(monkeypatch, seen: dict, checkpoints: Path | None = None) -> None:
    """save_pretrained's safetensors writer writes part of the file, then fails as on a full disk."""
    import transformers.modeling_utils

    def save_file(tensors, filename, metadata=None):
        if checkpoints is not None:
            seen["checkpoints"] = snapshot(checkpoints)
        Path(filename).write_bytes(bytes(4096))
        raise SafetensorError(SAFETENSORS_FULL)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)


def test_disk_full_while_writing_final(tokenized, tmp_path, monkeypatch):
    out, seen = tmp_path / "run", {}
    fail_safetensors_save_pretrained(monkeypatch, seen, out / "checkpoints")  # disk_usage untouched: the message says
    result = pretrain(tokenized, out, max_steps=2, save_every=0)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith(f"error: no space left on device while writing {out / 'final'}; free some space"), line
    assert leftovers(out) == [] and not (out / "final").exists()
    assert snapshot(out / "checkpoints") == seen["checkpoints"] and (out / "checkpoints" / "step-2").is_dir()


def test_disk_full_while_writing_best(tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "model", "pretraining")
    train, dev = sentiment_task(tmp_path / "data", 32, 8)
    fail_safetensors_save_pretrained(monkeypatch, {})
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, ["finetune", "custom", "--model", str(model), "-o", str(out),
                                      "--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]",
                                      "--set", "data.max_seq_length=64", "--set", "train.epochs=1"])  # fmt: skip
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert line.startswith(f"error: no space left on device while writing {out / 'best'}; "), line
    assert leftovers(out) == [] and not (out / "best").exists()


# --- atomic_dir and atomic_file on their own ------------------------------------------------------------------


def test_atomic_dir_keeps_the_old_tree_and_names_the_file_that_failed(tmp_path, monkeypatch):
    target = tmp_path / "best"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"old weights")
    before = snapshot(target)
    full_disk(monkeypatch)
    with pytest.raises(WriteFailure, match=f"no space left on device while writing {target}/README.md; free"):
        with atomic_dir(target) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new weights")
            with atomic_file(tmp / "README.md") as handle:  # a card written into the folder being made
                handle.write("x")
                raise OSError(errno.ENOSPC, "No space left on device")
    assert snapshot(target) == before and leftovers(tmp_path) == []


def test_atomic_file_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(WriteFailure, match=rf"could not write {target}: \[Errno 13\] Permission denied"):
        with atomic_file(target) as handle:
            handle.write("new")
            raise PermissionError(errno.EACCES, "Permission denied")
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_what_counts_as_a_write_failure(tmp_path, monkeypatch):
    assert write_failure(KeyboardInterrupt(), tmp_path) is None
    assert write_failure(ValueError("a bug, not a write"), tmp_path) is None
    assert write_failure(RunFailure("the loss became NaN"), tmp_path) is None
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert write_failure(wrapped, tmp_path).no_space  # the errno anywhere in the chain
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 40, 1 << 30, 1 << 39))
    torch_error = write_failure(RuntimeError(TORCH_SHORT_WRITE), tmp_path / "not" / "there")
    assert torch_error is not None and not torch_error.no_space  # space left: another failure, its reason named
    full_disk(monkeypatch)
    assert write_failure(RuntimeError(TORCH_SHORT_WRITE), tmp_path / "not" / "there").no_space
    assert write_failure(RuntimeError("CUDA error: an illegal memory access"), tmp_path) is None


def test_resume_with_another_width_names_the_width_the_checkpoint_has(tokenized, tmp_path):
    # The run's width comes from its preset (model.hidden_size null in its config): the refusal names the preset's
    # 128, not "was None".
    out = tmp_path / "run"
    first = pretrain(tokenized, out, "--set", "model.hidden_size=null", max_steps=2, save_every=2)
    assert first.exit_code == 0, first.output
    before = snapshot(out)
    wider = pretrain(tokenized, out, "--set", "model.hidden_size=64", "--resume")
    assert wider.exit_code == 2, wider.output
    line = error_line(wider)
    assert "model.hidden_size: was 128, now 64" in line and "None" not in line, line
    assert snapshot(out) == before


def test_a_damaged_random_states_file_is_named_and_the_run_is_left_as_it_was(tokenized, tmp_path):
    # Accelerate would skip it with a log line, and the resumed run would draw other dropout masks.
    out = tmp_path / "run"
    assert pretrain(tokenized, out, max_steps=2, save_every=2).exit_code == 0
    states = out / "checkpoints" / "step-2" / "random_states_0.pkl"
    states.write_bytes(states.read_bytes()[:40])
    before = snapshot(out)
    result = pretrain(tokenized, out, "--set", "train.max_steps=4", "--resume")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"{states} (the random states of this process) cannot be read" in line, line
    assert "resume from another checkpoint" in line and snapshot(out) == before


def test_two_gloo_processes_stop_together_when_one_cannot_load_the_checkpoint(tokenized, tmp_path):
    """Process 1 alone reads random_states_1.pkl, which is damaged: both processes exit with its error (exit 2);
    neither goes on to wait for the other at its first collective."""
    import os
    import socket
    import subprocess
    import sys

    out = tmp_path / "run"
    assert pretrain(tokenized, out, max_steps=2, save_every=2).exit_code == 0  # one process: random_states_0.pkl
    step = out / "checkpoints" / "step-2"
    (step / "random_states_1.pkl").write_bytes((step / "random_states_0.pkl").read_bytes()[:40])
    before = snapshot(out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
              "--tee", "3", "-m", "bertcli", "pretrain", str(tokenized), "-o", str(out), "--config",
              str(tmp_path / "run.yaml"), "--set", "train.max_steps=4", "--resume"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(launch, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    message = f"error: {step / 'random_states_1.pkl'} (the random states of this process) cannot be read"
    for rank in (0, 1):
        lines = [line for line in done.stderr.splitlines() if line.startswith(f"[default{rank}]:error: ")]
        assert len(lines) == 1 and message in lines[0] and lines[0].endswith("(seen by process 1)"), done.stderr
    assert "exitcode  : 2" in done.stderr, done.stderr  # torchrun's summary (its own traceback aside)
    assert "]:Traceback" not in done.stderr  # no process's own traceback
    assert snapshot(out) == before
