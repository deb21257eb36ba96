"""The classical floor through the real CLI: `bertcli eval --floor TRAIN_FILE` adds a row to the comparison (table,
JSON, Markdown, metrics.json) that no gate reads; `bertcli finetune --set output.floor=true` prints it beside the
best result; a bad training file is a one-line error (exit 2) before anything is loaded or written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_fixtures import make_tokenizer, save_tiny_model, sentiment_rows, sst2_folder, tiny_config, write_rows
from typer.testing import CliRunner

from bertcli.cli.app import app

FLOOR = "bag-of-words (tf-idf + logistic regression)"


def _classifier(path: Path, seed: int) -> Path:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    labels = ["negative", "positive"]
    config = tiny_config(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(str(path))
    make_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("floor")
    folder = sst2_folder(root / "SST-2", n_train=160, n_dev=40)
    flipped = [(text, "0" if label == "positive" else "1") for text, label in sentiment_rows(160, 1)]
    return {
        "a": _classifier(root / "a", 0),
        "b": _classifier(root / "b", 1),
        "train": folder / "train.tsv",
        "dev": folder / "dev.tsv",
        "flipped": write_rows(root / "flipped.tsv", flipped, columns=("sentence", "label")),
        "folder": folder,
    }


def run(*args):
    return CliRunner().invoke(app, ["eval", *(str(a) for a in args)])


def sst2(tiny, *args):
    return run("--model", tiny["a"], "--model", tiny["b"], "--task", "sst2", "--data", tiny["dev"], *args)


def test_the_floor_is_a_row_of_the_table_and_each_model_says_how_far_above_it_it_is(tiny):
    result = sst2(tiny, "--floor", tiny["train"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[1].split() == ["model", "accuracy", "above", "floor", "(accuracy)", "examples", "seconds"]
    assert [line.split()[0] for line in lines[3:5]] == [str(tiny["a"]), str(tiny["b"])]
    assert lines[5].startswith(FLOOR)
    floor = float(lines[5][len(FLOOR) :].split()[0])
    assert floor >= 0.9  # the sentiment words of the training file predict the dev file's labels
    for line in lines[3:5]:
        accuracy, above = float(line.split()[1]), float(line.split()[2])
        assert above == pytest.approx(accuracy - floor, abs=1.5e-4)  # the table's four decimals
    assert f"floor: {FLOOR} fitted on {tiny['train']}" in result.stderr


def test_the_floor_never_sees_the_evaluated_labels(tiny):
    # a training file whose words predict the opposite labels: the floor fitted on it scores near 0 on dev
    result = sst2(tiny, "--floor", tiny["flipped"], "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["floor"]["metrics"]["accuracy"] <= 0.1


def test_the_floor_in_json_markdown_and_metrics_json(tiny, tmp_path):
    result = sst2(tiny, "--floor", tiny["train"], "--format", "json", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["floor"]["model"] == FLOOR and doc["floor"]["examples"] == 40
    assert doc["floor"]["metric"] == "accuracy" and doc["floor"]["train_file"] == str(tiny["train"])
    floor = doc["floor"]["metrics"]["accuracy"]
    for entry in doc["results"]:
        assert entry["above_floor"]["accuracy"] == pytest.approx(entry["metrics"]["accuracy"] - floor)
    assert json.loads(result.stdout)["floor"] == doc["floor"]
    markdown = sst2(tiny, "--floor", tiny["train"], "--format", "markdown")
    assert markdown.exit_code == 0, markdown.output
    table = [line for line in markdown.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| model | accuracy | above floor (accuracy) | examples | seconds |"
    assert table[-1].startswith(f"| {FLOOR} | {floor:.4f} |  | 40 |")


def test_gates_never_read_the_floor(tiny):
    # a bound no random model reaches and the floor does: the models fail it, the floor is not gated
    result = sst2(tiny, "--floor", tiny["train"], "--fail-under", "accuracy=0.9", "--format", "json")
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["floor"]["metrics"]["accuracy"] >= 0.9
    assert [g["model"] for g in doc["gates"]] == [str(tiny["a"]), str(tiny["b"])]


def test_a_missing_floor_file_is_a_one_line_error_before_anything_is_written(tiny, tmp_path):
    out = tmp_path / "out"
    result = sst2(tiny, "--floor", tmp_path / "nope.tsv", "--output", out)
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"error: floor training file {tmp_path / 'nope.tsv'} does not exist (floor.train_file)"
    )
    assert not out.exists()


def test_a_floor_needs_metrics(tiny, tmp_path):
    result = sst2(tiny, "--floor", tiny["train"], "--predictions-only", "--output", tmp_path / "out")
    assert result.exit_code == 2
    assert "--predictions-only (or --submission-dir) computes none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_finetune_prints_the_floor_beside_the_best_result(tiny, tmp_path):
    model = save_tiny_model(tmp_path / "pretraining", "pretraining")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["finetune", "sst2", "--model", str(model), "--data", str(tiny["folder"]),
                                      "-o", str(out), "--set", "output.floor=true", "--set", "train.max_steps=2",
                                      "--set", "data.max_seq_length=64"])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "metrics.json").read_text())
    floor = doc["floor"]
    assert floor["name"] == FLOOR and floor["metric"] == "accuracy" and floor["train_file"] == str(tiny["train"])
    assert floor["main"] == floor["metrics"]["validation"]["accuracy"] >= 0.9
    assert floor["above"] == pytest.approx(doc["best"]["main"] - floor["main"])
    line = f"floor ({FLOOR}): accuracy {floor['main']:.4f}; best model {floor['above']:+.4f}"
    lines = result.stdout.splitlines()
    assert lines[lines.index(line) - 1].startswith("best: seed")  # right under the best result


def test_a_pretrained_models_eval_has_no_floor(tiny, tmp_path):
    model = save_tiny_model(tmp_path / "pretraining", "pretraining")
    result = run("--model", model, "--task", "pretraining", "--data", tiny["dev"], "--floor", tiny["train"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: floor.train_file: a pretrained model's eval has no floor (it has no task); drop --floor"
    )
