"""`bertcli finetune` through the real CLI: a run, every handled bad input (exit 2, one line, nothing
overwritten), and every shipped config validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_fixtures import (
    VOCAB,
    make_tokenizer,
    save_tiny_model,
    sentiment_rows,
    sentiment_task,
    sst2_folder,
    write_rows,
)
from typer.testing import CliRunner

from bertcli.cli.app import app
from bertcli.config import load_config
from bertcli.schema.finetune import FinetuneConfig

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "data.max_seq_length=64", "--set", "train.learning_rate=1e-3", "--set", "data.batch_size=16"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "pretraining", "pretraining")


@pytest.fixture
def guarded_out(tmp_path):
    """An output folder holding an earlier run's file, which no failing command may touch."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    return out


def invoke(*args):
    result = CliRunner().invoke(app, ["finetune", *map(str, args)])
    return result.exit_code, result.output


def custom_args(model, train, dev, out, *extra):
    return ["custom", "--model", model, "-o", out, "--set", f"data.train_file={train}",
            "--set", f"data.validation_files=[{dev}]", *FAST, *extra]  # fmt: skip


def test_cli_run_from_a_pretraining_checkpoint_with_seeds(model, tmp_path):
    folder = sst2_folder(tmp_path / "SST-2", n_train=160, n_dev=40)
    code, output = invoke("sst2", "--model", model, "--data", folder, "-o", tmp_path / "run", "--seeds", "1,2",
                          *FAST, "--set", "train.epochs=2")  # fmt: skip
    assert code == 0, output
    assert "newly initialised: classifier.bias, classifier.weight" in output
    assert "over seeds [1, 2]" in output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seeds"] == [1, 2] and "validation/accuracy" in metrics["summary"]
    rerun = load_config(FinetuneConfig, tmp_path / "run" / "config.yaml")
    assert rerun.train.seeds == [1, 2] and rerun.task.name == "sst2"
    code, output = invoke("sst2", "--model", model, "--data", folder, "-o", tmp_path / "run", *FAST)
    assert code == 2 and "not empty" in output  # no --overwrite: the earlier run is kept


def expect_usage_error(code, output, out, *needles):
    assert code == 2, output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output
    for needle in needles:
        assert needle in output, output
    assert json.loads((out / "metrics.json").read_text()) == {"earlier": True}
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_label_not_in_label_list(model, tmp_path, guarded_out):
    train, dev = sentiment_task(tmp_path / "d", 40, 10)
    with dev.open("a") as handle:
        handle.write("the cat,neutral\n")
    args = custom_args(model, train, dev, guarded_out, "--set", "task.labels=[negative,positive]", "--overwrite")
    expect_usage_error(*invoke(*args), guarded_out, f"{dev}:12", "'neutral'")


def test_missing_column_lists_found_columns(model, tmp_path, guarded_out):
    train, dev = sentiment_task(tmp_path / "d", 40, 10)
    args = custom_args(model, train, dev, guarded_out, "--set", "task.text_columns=[sentence]", "--overwrite")
    expect_usage_error(*invoke(*args), guarded_out, "no column 'sentence'", "columns found: 'text', 'label'")


def test_empty_split(model, tmp_path, guarded_out):
    train, _ = sentiment_task(tmp_path / "d", 40, 10)
    empty = write_rows(tmp_path / "d" / "empty.csv", [])
    expect_usage_error(*invoke(*custom_args(model, train, empty, guarded_out, "--overwrite")), guarded_out,
                       f"{empty}", "empty")  # fmt: skip


def test_non_numeric_regression_label(model, tmp_path, guarded_out):
    train, dev = sentiment_task(tmp_path / "d", 40, 10)
    args = custom_args(model, train, dev, guarded_out, "--set", "task.regression=true", "--overwrite")
    expect_usage_error(*invoke(*args), guarded_out, f"{train}:2", "is not a number")


def test_empty_text(model, tmp_path, guarded_out):
    train = write_rows(tmp_path / "train.tsv", [("good film", "positive"), ("   ", "negative")])
    args = custom_args(model, train, train, guarded_out, "--overwrite")
    expect_usage_error(*invoke(*args), guarded_out, f"{train}:3", "empty text in column 'text'")


def test_folder_that_is_not_a_checkpoint(tmp_path, guarded_out):
    train, dev = sentiment_task(tmp_path / "d", 40, 10)
    (tmp_path / "notmodel").mkdir()
    args = custom_args(tmp_path / "notmodel", train, dev, guarded_out, "--overwrite")
    expect_usage_error(*invoke(*args), guarded_out, "not a model checkpoint")


def test_tokenizer_that_does_not_match(model, tmp_path, guarded_out):
    train, dev = sentiment_task(tmp_path / "d", 40, 10)
    make_tokenizer(tmp_path / "tok", VOCAB + ["x1", "x2", "x3"])
    args = custom_args(model, train, dev, guarded_out, "--set", f"model.tokenizer_path={tmp_path / 'tok'}",
                       "--overwrite")  # fmt: skip
    expect_usage_error(*invoke(*args), guarded_out, "do not belong together")


def test_unknown_task_and_eval_only_task(model, tmp_path, guarded_out):
    folder = sst2_folder(tmp_path / "SST-2", 20, 10)
    expect_usage_error(*invoke("sst3", "--model", model, "--data", folder, "-o", guarded_out, "--overwrite"),
                       guarded_out, "did you mean 'sst2'")  # fmt: skip
    expect_usage_error(*invoke("ax", "--model", model, "--data", folder, "-o", guarded_out, "--overwrite"),
                       guarded_out, "evaluation only")  # fmt: skip


def test_glue_folder_without_dev_file(model, tmp_path, guarded_out):
    folder = sst2_folder(tmp_path / "SST-2", 20, 10)
    (folder / "dev.tsv").unlink()
    expect_usage_error(*invoke("sst2", "--model", model, "--data", folder, "-o", guarded_out, "--overwrite"),
                       guarded_out, "no evaluation file")  # fmt: skip


def test_fp16_on_a_machine_without_a_gpu(model, tmp_path, guarded_out):
    """Accelerate would train in fp32 and call it fp16: refused, like pretrain (training.devices.make_accelerator)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: fp16 is allowed")
    folder = sst2_folder(tmp_path / "SST-2", 20, 10)
    args = (
        "--model",
        model,
        "--data",
        folder,
        "-o",
        guarded_out,
        "--overwrite",
        *FAST,
        "--set",
        "train.mixed_precision=fp16",
    )
    expect_usage_error(*invoke("sst2", *args), guarded_out, "fp16 needs a GPU")


def test_bad_seeds_option(model, tmp_path):
    code, output = invoke("sst2", "--model", model, "--data", tmp_path, "--seeds", "1,x")
    assert code == 2 and "comma-separated integers" in output


def test_config_error_names_the_key(model, tmp_path):
    code, output = invoke("sst2", "--model", model, "--data", tmp_path, "--set", "train.learnig_rate=1")
    assert code == 2 and "did you mean 'train.learning_rate'" in output


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "finetune").glob("*.yaml")) + [
    ROOT / "configs" / "demo" / "finetune.yaml"], ids=lambda p: p.name)  # fmt: skip
def test_every_shipped_config_validates(path):
    assert path.read_text(encoding="utf-8").startswith("# bertcli finetune")
    cfg = load_config(FinetuneConfig, path)
    if cfg.task.name in ("squad", "squad_v2", "cmrc2018"):  # BERT's SQuAD runs: lr 3e-5, 2 epochs, 384 / 128
        assert cfg.train.learning_rate == 3e-5 and cfg.data.batch_size == 32 and cfg.train.epochs == 2
        assert cfg.train.warmup_ratio == 0.1 and cfg.data.max_seq_length == 384 and cfg.task.doc_stride == 128
    elif cfg.task.name == "swag":  # BERT's SWAG run: lr 2e-5, batch 16, 3 epochs
        assert cfg.train.learning_rate == 2e-5 and cfg.data.batch_size == 16 and cfg.train.epochs == 3
        assert cfg.train.warmup_ratio == 0.1 and cfg.data.max_seq_length == 128
    elif path.name == "small-data.yaml":  # the small-set recipe: longer, stopped early on a held-out split
        assert cfg.data.holdout_fraction == 0.1 and cfg.train.early_stopping_patience and cfg.train.epochs > 3
    elif cfg.task.name != "custom":
        assert 2e-5 <= cfg.train.learning_rate <= 5e-5 and cfg.data.batch_size == 32
        assert cfg.train.epochs == 3 and cfg.train.warmup_ratio == 0.1 and cfg.data.max_seq_length == 128


def test_a_config_exists_for_every_glue_task():
    names = {p.stem for p in (ROOT / "configs" / "finetune").glob("*.yaml")}
    assert {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "custom"} <= names


# --- two processes ----------------------------------------------------------------------------------------------


def test_two_gloo_processes_share_the_batches_and_evaluate_every_example_once(model, tmp_path):
    """torchrun, 2 CPU processes: each trains on half of the batches (the step count halves), evaluation gathers
    every dev example once (eval of best/ in one process gives the number finetune reported), one metrics.json."""
    import os
    import socket
    import subprocess
    import sys

    folder = sst2_folder(tmp_path / "SST-2", n_train=320, n_dev=75)  # 75: the processes' eval shares are unequal
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
              "-m", "bertcli", "finetune", "sst2", "--model", str(model), "--data", str(folder),
              "-o", str(tmp_path / "two"), *FAST, "--set", "train.epochs=8"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "two" / "metrics.json").read_text())
    run = result["runs"][0]
    # 320 examples in batches of 16 = 20 batches an epoch, 10 per process: 10 steps an epoch, 8 epochs
    assert run["steps"] == 80 and [e["step"] for e in run["evaluations"]] == list(range(10, 81, 10))
    accuracies = [e["metrics"]["validation"]["accuracy"] for e in run["evaluations"]]
    assert all(abs(a * 75 - round(a * 75)) < 1e-9 for a in accuracies)  # out of 75 examples, none counted twice
    assert result["best"]["metrics"]["validation"]["accuracy"] >= 0.9  # it learns
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "eval"] == list(range(10, 81, 10))  # logged once
    code, output = invoke_eval("-m", tmp_path / "two" / "best", "-t", "sst2", "-d", folder / "dev.tsv",
                               "-o", tmp_path / "eval")  # fmt: skip
    assert code == 0, output
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["accuracy"]
    assert scored == pytest.approx(result["best"]["metrics"]["validation"]["accuracy"], abs=1e-12)


def invoke_eval(*args):
    result = CliRunner().invoke(app, ["eval", *map(str, args)])
    return result.exit_code, result.output


def test_left_truncation_keeps_the_end_of_long_texts_and_best_keeps_the_side(model, tmp_path):
    """The label word sits at the end of a 30-word prefix that is the same in every row: cut to 16 pieces from the
    right, every input is that prefix (the model can only guess one class); from the left, it learns the task, and
    the saved tokenizer, `bertcli eval` and pipeline() cut the same end."""
    from transformers import AutoTokenizer, pipeline

    prefix = "the cat sat on the mat and " * 4 + "it was"
    rows = {split: [(f"{prefix} {text}", label) for text, label in sentiment_rows(n, seed)]
            for split, n, seed in (("train", 320, 1), ("dev", 80, 2))}  # fmt: skip
    train, dev = (write_rows(tmp_path / f"{split}.tsv", rows[split]) for split in ("train", "dev"))
    scores = {}
    for side, epochs in (("right", 1), ("left", 6)):
        extra = ["data.max_seq_length=16", f"data.truncation_side={side}", f"train.epochs={epochs}"]
        code, output = invoke(*custom_args(model, train, dev, tmp_path / side, *(f"--set={x}" for x in extra)))
        assert code == 0, output
        metrics = json.loads((tmp_path / side / "metrics.json").read_text())
        scores[side] = metrics["summary"]["validation/accuracy"]["mean"]
    positive = sum(label == "positive" for _, label in rows["dev"]) / len(rows["dev"])
    assert scores["right"] in (pytest.approx(positive), pytest.approx(1 - positive))  # one input, so one class
    assert scores["left"] >= 0.9
    best = tmp_path / "left" / "best"
    assert AutoTokenizer.from_pretrained(str(best)).truncation_side == "left"
    result = CliRunner().invoke(
        app, ["eval", "--model", str(best), "--task", "custom", "--data", str(dev), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["accuracy"] == pytest.approx(scores["left"])
    classify = pipeline("text-classification", model=str(best), truncation=True, max_length=16)
    predicted = [p["label"] for p in classify([text for text, _ in rows["dev"]])]
    right = sum(p == label for p, (_, label) in zip(predicted, rows["dev"], strict=True))
    assert right / len(rows["dev"]) == pytest.approx(scores["left"])


def test_left_truncation_is_refused_where_inputs_are_windowed(model, tmp_path, guarded_out):
    train = tmp_path / "train.conll"
    train.write_text("good O\n\n", encoding="utf-8")
    code, output = invoke("ner", "--model", model, "-o", guarded_out, "--set", f"data.train_file={train}",
                          "--set", "data.truncation_side=left")  # fmt: skip
    expect_usage_error(code, output, guarded_out, "data.truncation_side", "windows")


def test_config_yaml_holds_absolute_paths_and_repeats_from_another_directory(model, tmp_path, monkeypatch):
    # Issue 28: a run's config.yaml names its model, data and output by absolute path, so `--config run/config.yaml`
    # (and --resume with it) works from any directory, not only the one the run started in.
    import shutil

    import yaml

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    sentiment_task(work / "data", n_train=48, n_dev=16)
    shutil.copytree(model, work / "model")
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    code, output = invoke(*custom_args("model", "data/train.csv", "data/dev.csv", "ft", "--set", "train.max_steps=2"))
    assert code == 0, output
    saved = yaml.safe_load((work / "ft" / "config.yaml").read_text())
    assert saved["model"]["path"] == str(work / "model") and saved["output"]["dir"] == str(work / "ft")
    assert saved["data"]["train_file"] == str(work / "data" / "train.csv")
    assert saved["data"]["validation_files"] == [str(work / "data" / "dev.csv")]
    monkeypatch.chdir(elsewhere)
    code, output = invoke("--config", "../work/ft/config.yaml", "-o", "again")
    assert code == 0, output
    assert (elsewhere / "again" / "best" / "config.json").is_file()
