"""`bertcli finetune --sweep` through the real CLI on a tiny model: a 2x1 grid writes both runs, the table and
OUTPUT/best = the better run's best/; an interrupted sweep keeps its finished runs and the same command continues
the rest; run again, it trains nothing; a key that does not exist, or a value the key does not take, exits 2
naming it, before anything is written."""

from __future__ import annotations

import json

import pytest
from finetune_fixtures import save_tiny_model, sentiment_task
from typer.testing import CliRunner

from bertcli.cli.app import app


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "bare", "bare")


def invoke(*args):
    result = CliRunner().invoke(app, ["finetune", *map(str, args)])
    return result.exit_code, result.output


def sweep_args(model, train, dev, out, *sweeps):
    return ["custom", "--model", model, "-o", out, "--set", f"data.train_file={train}",
            "--set", f"data.validation_files=[{dev}]", "--set", "data.max_seq_length=32", "--set", "train.epochs=2",
            "--set", "train.log_every=1000", *(x for s in sweeps for x in ("--sweep", s))]  # fmt: skip


def test_grid_writes_every_run_the_table_and_the_best_and_a_rerun_skips_finished_runs(model, tmp_path, monkeypatch):
    from bertcli.pipelines import finetune

    train, dev = sentiment_task(tmp_path / "data", n_train=96, n_dev=32)
    out = tmp_path / "out"
    args = sweep_args(model, train, dev, out, "train.learning_rate=3e-3,1e-6", "data.batch_size=16")
    names = ["lr=3e-3,bs=16", "lr=1e-6,bs=16"]

    # the second run is interrupted (Ctrl-C) before it trains: the first stays finished, no table is written
    real, calls = finetune.run_finetune, []

    def stopped_second(cfg, **kwargs):
        calls.append(cfg.output.dir)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, **kwargs)

    monkeypatch.setattr(finetune, "run_finetune", stopped_second)
    code, output = invoke(*args)
    assert code == 130 and "sweep stopped in lr=1e-6,bs=16; the finished runs are kept" in output, output
    first = out / "sweep" / names[0] / "metrics.json"
    assert first.is_file() and not (out / "sweep.json").exists() and not (out / "best").exists()
    first_mtime = first.stat().st_mtime_ns
    monkeypatch.undo()

    code, output = invoke(*args)  # continues: the first is read back, the second trained
    assert code == 0, output
    assert f"[sweep 1/2] {names[0]}: finished earlier, skipped" in output
    assert f"[sweep 2/2] {names[1]}: training" in output
    assert first.stat().st_mtime_ns == first_mtime
    table = json.loads((out / "sweep.json").read_text())
    assert [r["run"] for r in table["runs"]] == names
    assert [r["values"] for r in table["runs"]] == [
        {"train.learning_rate": 3e-3, "data.batch_size": 16},
        {"train.learning_rate": 1e-6, "data.batch_size": 16},
    ]
    assert [r["status"] for r in table["runs"]] == ["skipped", "trained"]
    runs = [json.loads((out / "sweep" / n / "metrics.json").read_text()) for n in names]
    for row, metrics in zip(table["runs"], runs):
        assert row["best_main"] == metrics["best"]["main"] and row["best_step"] == metrics["best"]["step"]
        assert row["main_metric"] == "accuracy" and row["wall_seconds"] > 0
    better = 0 if runs[0]["best"]["main"] >= runs[1]["best"]["main"] else 1  # the first of equals
    assert table["best"]["run"] == names[better]
    kept = out / "sweep" / names[better] / "best"
    assert (out / "best" / "model.safetensors").read_bytes() == (kept / "model.safetensors").read_bytes()
    assert (out / "best" / "config.yaml").read_text() == (kept / "config.yaml").read_text()
    markdown = (out / "sweep.md").read_text()
    assert f"| {names[better]} (best) |" in markdown and "best accuracy" in markdown and markdown.count("\n| lr=") == 2
    assert "| lr=" in output  # the table is printed too

    stamps = [(out / "sweep" / n / "metrics.json").stat().st_mtime_ns for n in names]
    code, output = invoke(*args)  # everything finished: nothing is trained again
    assert code == 0, output
    assert output.count("finished earlier, skipped") == 2 and ": training" not in output
    assert [(out / "sweep" / n / "metrics.json").stat().st_mtime_ns for n in names] == stamps
    assert [r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]] == ["skipped", "skipped"]

    # the same grid over a changed config: an error naming the run and the change, nothing trained or replaced
    code, output = invoke(*args, "--set", "train.epochs=3")
    assert code == 2 and f"{out / 'sweep' / names[0]} holds a run with another config (train.epochs: was 2.0" in output
    assert [(out / "sweep" / n / "metrics.json").stat().st_mtime_ns for n in names] == stamps


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("train.learnin_rate=1e-3,1e-4", "error: --sweep train.learnin_rate: no such config key; did you mean "
         "'train.learning_rate'?"),
        ("train.nonsense=1,2", "error: --sweep train.nonsense: no such config key"),
        ("train.learning_rate=fast,1e-4", "error: --sweep run lr=fast: 'train.learning_rate': Input should be a "
         "valid number"),
        ("output.dir=a,b", "error: --sweep output.dir: cannot be swept"),
        ("train.learning_rate", "error: --sweep 'train.learning_rate': expected KEY=v1,v2,..."),
    ],
)  # fmt: skip
def test_a_bad_sweep_exits_2_naming_the_key_before_anything_is_written(model, tmp_path, sweep, message):
    train, dev = sentiment_task(tmp_path / "data", n_train=16, n_dev=8)
    out = tmp_path / "out"
    code, output = invoke(*sweep_args(model, train, dev, out, sweep))
    assert code == 2 and message in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_sweep_refuses_an_output_folder_holding_another_run(model, tmp_path):
    train, dev = sentiment_task(tmp_path / "data", n_train=16, n_dev=8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    code, output = invoke(*sweep_args(model, train, dev, out, "train.learning_rate=1e-3,1e-4"))
    assert code == 2 and f"output directory {out} holds files that are not a sweep's (metrics.json)" in output
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == '{"earlier": true}'


def test_a_run_stopped_in_training_continues_from_its_checkpoint(model, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from bertcli.config import load_config
    from bertcli.pipelines.sweep import run_sweep
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.classification import training

    train, dev = sentiment_task(tmp_path / "data", n_train=64, n_dev=16)
    cfg = load_config(FinetuneConfig, values={
        "task.name": "custom", "model.path": str(model), "output.dir": str(tmp_path / "out"),
        "data.train_file": str(train), "data.validation_files": [str(dev)], "data.max_seq_length": 32,
        "data.batch_size": 16, "train.epochs": 2, "train.log_every": 1000,
    })  # fmt: skip
    calls, forward = [0], training._loss_and_sums

    def forward_then_stop(*args):
        calls[0] += 1
        if calls[0] == 2:  # Ctrl-C in the second step: the run saves step-2 and stops
            os.kill(os.getpid(), signal.SIGINT)
        return forward(*args)

    monkeypatch.setattr(training, "_loss_and_sums", forward_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, ["train.warmup_ratio=0.1"])
    monkeypatch.undo()
    run = tmp_path / "out" / "sweep" / "warmup=0.1"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-2"] and not (run / "metrics.json").exists()
    capsys.readouterr()
    result = run_sweep(cfg, ["train.warmup_ratio=0.1"])
    output = capsys.readouterr().out
    assert "[sweep 1/1] warmup=0.1: continuing from its latest checkpoint" in output
    assert f"resumed from {run / 'checkpoints' / 'step-2'} at step 2" in output
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["step"] for e in metrics["runs"][0]["evaluations"]] == [4, 8]  # 4 steps an epoch, 2 epochs
    assert result["runs"][0]["status"] == "continued"
    assert result["best"]["run"] == "warmup=0.1" and (tmp_path / "out" / "best" / "model.safetensors").is_file()


def test_optuna_search_trains_its_trials_and_a_rerun_replays_them_without_training(model, tmp_path):
    train, dev = sentiment_task(tmp_path / "data", n_train=32, n_dev=8)
    out = tmp_path / "out"
    args = [*sweep_args(model, train, dev, out, "train.learning_rate=1e-4:1e-2:log", "data.batch_size=8,16"),
            "--set", "train.max_steps=2", "--search", "optuna", "--trials", "3"]  # fmt: skip
    code, output = invoke(*args)
    assert code == 0, output
    result = json.loads((out / "sweep.json").read_text())
    assert result["search"] == {"sampler": "optuna TPE", "seed": 42, "trials": 3}
    names = [r["run"] for r in result["runs"]]
    assert 1 <= len(names) <= 3 and len(set(names)) == len(names)  # a repeated proposal is not trained twice
    for row in result["runs"]:
        lr, bs = row["values"]["train.learning_rate"], row["values"]["data.batch_size"]
        assert 1e-4 <= lr <= 1e-2 and bs in (8, 16) and row["run"] == f"lr={lr:.3g},bs={bs}"
        assert (out / "sweep" / row["run"] / "metrics.json").is_file()
    assert result["best"]["best_main"] == max(r["best_main"] for r in result["runs"])
    stamps = [(out / "sweep" / n / "metrics.json").stat().st_mtime_ns for n in names]
    code, output = invoke(*args)  # the same proposals for the same scores: every run is read back
    assert code == 0, output
    assert output.count("finished earlier, skipped") == len(names) and ": training" not in output
    assert [(out / "sweep" / n / "metrics.json").stat().st_mtime_ns for n in names] == stamps
    assert [r["run"] for r in json.loads((out / "sweep.json").read_text())["runs"]] == names


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sweep", "train.learning_rate=1e-3:1e-4", "--search", "optuna"],
         "error: --sweep train.learning_rate=1e-3:1e-4: a range is LOW:HIGH or LOW:HIGH:log"),
        (["--sweep", "train.learning_rate=0:1e-4:log", "--search", "optuna"], "(above 0 for log)"),
        (["--sweep", "train.warmup_ratio=0.1:2", "--search", "optuna"],
         "error: --sweep run train.warmup_ratio=2: 'train.warmup_ratio': Input should be less than or equal to 1"),
        (["--search", "optuna"], "error: --search optuna needs a --sweep KEY=..."),
        (["--sweep", "train.seed=1,2", "--search", "random"], "error: --search random: expected grid or optuna"),
        (["--sweep", "train.seed=1,2", "--resume"], "error: --sweep continues a sweep's unfinished runs by itself"),
    ],
)  # fmt: skip
def test_a_bad_search_exits_2_before_anything_is_written(model, tmp_path, extra, message):
    train, dev = sentiment_task(tmp_path / "data", n_train=16, n_dev=8)
    out = tmp_path / "out"
    code, output = invoke(*sweep_args(model, train, dev, out), *extra)
    assert code == 2 and message in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1
    assert not out.exists()
