"""`--resume` of a fine-tuning run of several seeds: finished seeds are read back, not trained again; the seed that
was stopped continues from its checkpoint; the result is the uninterrupted run's. A changed seed list is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from finetune_fixtures import finetune_values, save_tiny_model, sentiment_task, sigint_in_forward

from bertcli.config import load_config
from bertcli.errors import UsageError
from bertcli.pipelines.finetune import run_finetune
from bertcli.schema.finetune import FinetuneConfig


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "bare", "bare")


def cfg(**values) -> FinetuneConfig:
    return load_config(FinetuneConfig, values=values)


def two_seeds(bare, data: Path, out: Path, n_train: int = 96, **extra) -> dict:
    train, dev = sentiment_task(data, n_train=n_train, n_dev=32)
    return finetune_values(bare, out, **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "train.seeds": [1, 2], "train.epochs": 2, "train.eval_every": 3, **extra,
    })  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder`: its modification time and content."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def without_seconds(runs: list[dict]) -> list[dict]:
    return [{k: v for k, v in run.items() if not k.endswith("_seconds")} for run in runs]


def test_two_seeds_stopped_in_the_second_resume_to_the_uninterrupted_result(bare, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    values = two_seeds(bare, tmp_path / "data", tmp_path / "full", **{"train.save_every": 4, "train.keep_last": 10})
    full = run_finetune(cfg(**values))
    assert [r["steps"] for r in full["runs"]] == [12, 12]  # 96 examples, batches of 16: 6 steps an epoch

    # The same run, sent SIGINT while it trains step 5 of seed 2 (the 12 steps of seed 1, then 5 more forwards).
    sigint_in_forward(monkeypatch, 12 + 5)
    values["output.dir"] = str(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    monkeypatch.undo()
    cut = tmp_path / "cut"
    assert "stopped seed 2 at step 5" in capsys.readouterr().err
    assert (cut / "seed-1" / "result.json").is_file() and not (cut / "seed-2" / "result.json").exists()
    assert sorted(p.name for p in (cut / "seed-2" / "checkpoints").iterdir()) == ["step-4", "step-5"]
    assert not (cut / "metrics.json").exists() and not (cut / "best").exists()
    seed1 = snapshot(cut / "seed-1")

    resumed = run_finetune(cfg(**values), resume=True)
    printed = capsys.readouterr().out
    assert "[seed 1] finished earlier" in printed and "[seed 2] resumed from" in printed
    assert "[seed 1] 12 steps" not in printed  # seed 1 was not trained again
    assert snapshot(cut / "seed-1") == seed1  # nor were its files touched
    saved = json.loads((cut / "metrics.json").read_text())
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(resumed))
    assert without_seconds(saved["runs"]) == without_seconds(expected["runs"])  # every evaluation, exactly
    assert saved["best"] == expected["best"] and saved["summary"] == expected["summary"]
    assert saved["load_report"] == expected["load_report"]
    for best in ("best", f"seed-{expected['best']['seed']}/best", "seed-2/best"):  # bit for bit on the CPU
        a = load_file(str(tmp_path / "full" / best / "model.safetensors"))
        b = load_file(str(cut / best / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), best
    assert (cut / "best" / "README.md").is_file() and (cut / "seed-2" / "result.json").is_file()


def test_resume_of_several_seeds_refuses_another_seed_list_or_nothing_to_resume(bare, tmp_path):
    from typer.testing import CliRunner

    from bertcli.cli.app import app

    values = two_seeds(bare, tmp_path / "data", tmp_path / "out", n_train=32, **{"train.epochs": 1})
    with pytest.raises(UsageError, match="nothing to resume: no seed in .* finished"):
        run_finetune(cfg(**values), resume=True)
    run_finetune(cfg(**values))
    before = snapshot(tmp_path / "out")
    for seeds in ("1,2,3", "2", "2,1"):
        done = CliRunner().invoke(app, ["finetune", "--config", str(tmp_path / "out" / "config.yaml"),
                                        "--seeds", seeds, "--resume"])  # fmt: skip
        assert done.exit_code == 2, done.output
        assert [line for line in done.output.splitlines() if line.strip()] == [
            f"error: cannot resume the run in {tmp_path / 'out'} with a changed config: "
            f"train.seeds: was [1, 2], now [{seeds.replace(',', ', ')}]"
        ]
    assert snapshot(tmp_path / "out") == before  # nothing overwritten


def test_a_stop_in_the_last_step_of_a_seed_keeps_it_and_trains_no_further_seed(bare, tmp_path, monkeypatch, capsys):
    values = two_seeds(bare, tmp_path / "data", tmp_path / "out", n_train=32, **{"train.epochs": 1})  # 2 steps
    sigint_in_forward(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    monkeypatch.undo()
    assert "stopped after seed 1 (finished)" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "seed-1" / "result.json").read_text())["steps"] == 2
    assert not (tmp_path / "out" / "seed-2").exists()
    result = run_finetune(cfg(**values), resume=True)
    assert "[seed 1] finished earlier" in capsys.readouterr().out
    assert result["seeds"] == [1, 2] and [r["steps"] for r in result["runs"]] == [2, 2]


def one_seed(bare, tmp_path: Path, out: Path) -> dict:
    """One seed, 2 epochs of 2 steps, an evaluation every step."""
    train, dev = sentiment_task(tmp_path / "data", n_train=32, n_dev=16)
    return finetune_values(bare, out, **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "train.epochs": 2, "train.eval_every": 1,
    })  # fmt: skip


def test_one_seed_without_save_every_saves_a_checkpoint_on_ctrl_c_and_resumes(bare, tmp_path, monkeypatch):
    values = one_seed(bare, tmp_path, tmp_path / "full")
    full = run_finetune(cfg(**values))  # 4 steps, no checkpoint
    assert not (tmp_path / "full" / "checkpoints").exists()
    values["output.dir"] = str(tmp_path / "cut")
    sigint_in_forward(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-3"]
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = run_finetune(cfg(**values), resume=True)
    assert without_seconds(resumed["runs"]) == without_seconds(full["runs"])


def test_a_checkpoint_that_does_not_fit_the_model_is_a_one_line_error(bare, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    values = one_seed(bare, tmp_path, tmp_path / "cut")
    sigint_in_forward(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    monkeypatch.undo()
    weights = tmp_path / "cut" / "checkpoints" / "step-2" / "model.safetensors"
    state = load_file(str(weights))
    del state["rows.weight"]  # as an older bertcli saved it, before the embedding rows were trained apart
    save_file(state, str(weights))
    with pytest.raises(UsageError, match=r"step-2 does not fit .*rows\.weight.*start the run again") as err:
        run_finetune(cfg(**values), resume=True)
    assert "\n" not in str(err.value), str(err.value)
    assert weights.is_file() and not (tmp_path / "cut" / "metrics.json").exists()  # nothing removed or written


def test_resume_from_an_earlier_checkpoint_logs_the_replayed_steps_once(bare, tmp_path, monkeypatch):
    """Killed after step 3 with step-2 its last checkpoint (SIGKILL saves nothing): the resumed run trains step 3
    again, and metrics.jsonl holds its records once, as the uninterrupted run's does."""
    values = {**one_seed(bare, tmp_path, tmp_path / "full"), "train.save_every": 2, "train.log_every": 1}
    run_finetune(cfg(**values))
    values["output.dir"] = str(tmp_path / "cut")
    sigint_in_forward(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    monkeypatch.undo()
    # what a kill leaves: step 3 logged, its checkpoint never written
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-3")

    def logged(out: Path) -> list[tuple]:
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["seed"], r["split"], r["step"]) for r in records if "step" in r]

    before = logged(tmp_path / "cut")
    assert {split for _, split, _ in before} == {"train", "eval"} and max(step for *_, step in before) == 3
    run_finetune(cfg(**values), resume=True)
    assert logged(tmp_path / "cut") == logged(tmp_path / "full")
