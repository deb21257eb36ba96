"""`bertcli finetune swag` and `bertcli eval --task swag` through the real CLI on a generated SWAG-layout csv
(the right ending holds a positive word, the others negative ones): a tiny BERT learns it, best/ loads in
AutoModelForMultipleChoice, predictions name the chosen index and text, eval agrees with finetune, gates on
accuracy and compares models; JSON lines with varying numbers of choices and a ChID blank run end to end; bad
input is one line, exit 2, before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest
from finetune_fixtures import save_tiny_model
from multiple_choice_fixtures import choice_rows, swag_task, varying_records, write_jsonl, write_swag_csv
from typer.testing import CliRunner

from bertcli.cli.app import app

# 60 steps; the tiny model leaves chance after ~20 of them: the evaluations at 30 and 60 see it learnt
SETTINGS = ["--set", "train.learning_rate=3e-3", "--set", "data.batch_size=16", "--set", "train.epochs=6",
            "--set", "train.eval_every=30", "--set", "data.max_seq_length=32",
            "--set", "train.log_every=1000"]  # fmt: skip


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def files(train, dev):
    return ["--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finetune run of a random 2-layer, 32-wide BertForPreTraining (our pretrain's final/ layout)."""
    root = tmp_path_factory.mktemp("swag")
    model = save_tiny_model(root / "model", kind="pretraining")
    train, dev = swag_task(root)
    code, output = invoke("finetune", "swag", "--model", model, "-o", root / "run", *files(train, dev), *SETTINGS)
    assert code == 0, output
    return root, output


def test_tiny_model_learns_swag_and_best_loads_as_a_multiple_choice_model(trained):
    import torch
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    root, output = trained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    best = metrics["best"]["metrics"]["validation"]
    assert metrics["main_metric"] == "accuracy" and best["accuracy"] > 0.6, best  # chance: 0.25
    assert metrics["data"]["validation"]["examples"] == 40
    assert json.loads((root / "run" / "best" / "config.json").read_text())["architectures"] == ["BertForMultipleChoice"]
    assert "40 questions, 4 choices each" in output and "AutoModelForMultipleChoice" in output
    model = AutoModelForMultipleChoice.from_pretrained(str(root / "run" / "best")).eval()
    tok = AutoTokenizer.from_pretrained(str(root / "run" / "best"))
    endings = ["the dog bad", "a film awful", "the cat good", "it dull"]
    enc = tok(["the cat sat on the mat"] * 4, endings, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits
    assert logits.shape == (1, 4) and logits.argmax(-1).item() == 2


def test_finetune_writes_the_best_evaluations_predictions_as_index_and_text(trained):
    root, _ = trained
    predictions = read_jsonl(root / "run" / "predictions.jsonl")  # eval's records, eval's file
    rows = choice_rows(40, seed=2)
    assert [p["id"] for p in predictions] == [str(i) for i in range(40)]
    assert all(p["text"] == rows[i]["endings"][p["prediction"]] and p["label"] == rows[i]["label"]
               for i, p in enumerate(predictions))  # fmt: skip
    best = json.loads((root / "run" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    right = sum(p["prediction"] == p["label"] for p in predictions)
    assert right / 40 == pytest.approx(best["accuracy"])


def test_eval_agrees_with_finetune_writes_predictions_and_gates_on_accuracy(trained, tmp_path):
    root, _ = trained
    best, dev = root / "run" / "best", root / "val.csv"
    code, output = invoke("eval", "--task", "swag", "--model", best, "--data", dev, "-o", tmp_path / "ev",
                          "--predictions", "--set", "data.max_seq_length=32")  # fmt: skip
    assert code == 0, output
    accuracy = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["accuracy"]
    trained_best = json.loads((root / "run" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    assert accuracy == pytest.approx(trained_best["accuracy"], abs=1e-9)
    lines = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert lines == read_jsonl(root / "run" / "predictions.jsonl")
    gate = ["eval", "--task", "SWAG", "--model", best, "--data", dev, "--set", "data.max_seq_length=32",
            "--fail-under"]  # fmt: skip
    code, output = invoke(*gate, f"accuracy={accuracy - 0.01}")
    assert code == 0, output
    code, output = invoke(*gate, f"accuracy={accuracy + 0.01}")
    assert code == 3 and "accuracy" in output, output
    code, output = invoke("eval", "--task", "swag", "--model", root / "model", "--data", dev)
    assert code == 2 and "is a BertForPreTraining, not a multiple-choice model" in output, output


def test_eval_compares_two_models_and_finds_the_task_from_the_models(trained, tmp_path):
    root, _ = trained
    best = root / "run" / "best"
    other = shutil.copytree(best, tmp_path / "other")
    code, output = invoke("eval", "--model", best, "--model", other, "--data", root / "val.csv", "-o",
                          tmp_path / "ev", "--predictions")  # fmt: skip
    assert code == 0, output
    rows = [line for line in output.splitlines() if line.startswith((str(best), str(other)))]
    assert len(rows) == 2, output
    results = json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"]
    assert len(results) == 2 and results[0]["metrics"] == results[1]["metrics"]
    assert len(list((tmp_path / "ev").glob("predictions-*.jsonl"))) == 2


def test_eval_predictions_only_on_a_file_without_labels(trained, tmp_path):
    root, _ = trained
    test = write_swag_csv(tmp_path / "test.csv", choice_rows(5, seed=7), labels=False)
    code, output = invoke("eval", "--task", "swag", "--model", root / "run" / "best", "--data", test)
    assert code == 2 and "has no labels" in output and "--predictions-only" in output, output
    code, output = invoke("eval", "--task", "swag", "--model", root / "run" / "best", "--data", test, "-o",
                          tmp_path / "ev", "--predictions-only")  # fmt: skip
    assert code == 0, output
    lines = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all("label" not in x and 0 <= x["prediction"] < 4 for x in lines)
    best = root / "run" / "best"
    code, output = invoke("eval", "--task", "swag", "--model", best, "--data", test, "-o", tmp_path / "ev2",
                          "--predictions-only", "--fail-under", "accuracy=0.5")  # fmt: skip
    assert code == 2 and "gates need metrics" in output and not (tmp_path / "ev2").exists(), output
    code, output = invoke("eval", "--task", "swag", "--model", best, "--data", root / "val.csv", "--set",
                          "task.metrics=[f1]")  # fmt: skip
    assert code == 2 and "metric f1 does not score a multiple-choice task" in output, output
    code, output = invoke("eval", "--task", "swag", "--model", best, "--data", test, "--submission-dir",
                          tmp_path / "sub")  # fmt: skip
    assert code == 2 and "for swag use --predictions" in output and not (tmp_path / "sub").exists(), output
    lines = (root / "val.csv").read_text().splitlines()
    fields = lines[1].split(",")  # the generated texts hold no commas
    fields[7] = " "  # the first question's ending0
    lines[1] = ",".join(fields)
    holey = tmp_path / "holey.csv"
    holey.write_text("\n".join(lines) + "\n")
    code, output = invoke("eval", "--task", "swag", "--model", best, "--data", holey, "-o", tmp_path / "ev3")
    assert code == 2 and "holey.csv:2: choice 0 is empty" in output and not (tmp_path / "ev3").exists(), output
    code, output = invoke("eval", "--task", "swag", "--model", best, "--data", holey, "-o", tmp_path / "ev3",
                          "--set", "data.empty_text=skip")  # fmt: skip
    assert code == 0 and "1 question(s) skipped (empty text)" in output, output
    data = json.loads((tmp_path / "ev3" / "metrics.json").read_text())["data"]
    assert data["examples"] == 39 and data["skipped_empty"] == 1


def test_jsonl_with_varying_choices_and_a_chid_blank_runs_end_to_end(tmp_path):
    model = save_tiny_model(tmp_path / "model", kind="bare")
    records = [{"id": f"q{i}", "context": "the cat #idiom# on the mat" if i % 2 else "a dog ran",
                "choices": ["good film", "bad", "dull"][: 2 + i % 2], "label": i % 2} for i in range(12)]  # fmt: skip
    data = write_jsonl(tmp_path / "d.jsonl", records)
    code, output = invoke("finetune", "multiple_choice", "--model", model, "-o", tmp_path / "run", *files(data, data),
                          "--set", "train.max_steps=2", "--set", "data.batch_size=4", "--set",
                          "data.max_seq_length=16")  # fmt: skip
    assert code == 0, output
    assert "12 questions, 2 to 3 choices, 6 with a #idiom# blank" in output
    predictions = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in records]
    assert all(p["text"] == records[i]["choices"][p["prediction"]] for i, p in enumerate(predictions))


def test_two_gloo_processes_gather_questions_with_different_numbers_of_choices_once(tmp_path):
    """torchrun, 2 CPU processes: the processes' batches hold different numbers of choices (2 to 4) and 15 dev
    questions split unevenly; each question is scored once, in file order, and eval in one process agrees."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    model = save_tiny_model(tmp_path / "model", kind="bare")
    train = write_jsonl(tmp_path / "train.jsonl", varying_records(64, seed=1))
    # the 4 longest dev questions (the first eval batch, process 0's) have 2 choices, the 11 others 4: the
    # processes' logits differ in width, and 15 questions in batches of 4 leave process 1 an extra one to drop
    long, short = choice_rows(4, seed=2, n_choices=2), choice_rows(11, seed=3, n_choices=4)
    dev_records = [{"id": f"q{i}", "context": " ".join([r["sent1"]] * 3) if i < 4 else "the cat",
                    "choices": r["endings"], "label": r["label"]} for i, r in enumerate(long + short)]  # fmt: skip
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_records)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
              "-m", "bertcli", "finetune", "multiple_choice", "--model", str(model), "-o", str(tmp_path / "two"),
              *files(train, dev), "--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set",
              "data.batch_size=8", "--set", "data.eval_batch_size=4", "--set", "data.max_seq_length=32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(launch, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "two" / "metrics.json").read_text())
    accuracies = [e["metrics"]["validation"]["accuracy"] for e in result["runs"][0]["evaluations"]]
    assert len(accuracies) == 2 and all(abs(a * 15 - round(a * 15)) < 1e-9 for a in accuracies)  # none twice
    predictions = read_jsonl(tmp_path / "two" / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [f"q{i}" for i in range(15)]
    code, output = invoke("eval", "--model", tmp_path / "two" / "best", "--data", dev, "-o", tmp_path / "ev",
                          "--predictions", "--set", "data.max_seq_length=32")  # fmt: skip
    assert code == 0, output
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["accuracy"]
    assert scored == pytest.approx(result["best"]["metrics"]["validation"]["accuracy"], abs=1e-12)
    lines = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert [x["prediction"] for x in lines] == [p["prediction"] for p in predictions]


def test_bad_label_is_one_line_exit_2_before_any_output(tmp_path):
    model = save_tiny_model(tmp_path / "model", kind="bare")
    train, dev = swag_task(tmp_path, n_train=8, n_dev=4)
    lines = train.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",7"  # the third question's label: 7 of 4 endings
    train.write_text("\n".join(lines) + "\n")
    code, output = invoke("finetune", "swag", "--model", model, "-o", tmp_path / "run", *files(train, dev))
    assert code == 2 and f"{train}:4: label 7 is out of range: 4 choices" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    code, output = invoke("finetune", "swag", "--model", model, "-o", tmp_path / "run", *files(dev, dev),
                          "--set", "data.pack=true")  # fmt: skip
    assert code == 2 and "data.pack" in output and not (tmp_path / "run").exists(), output
    code, output = invoke("finetune", "swag", "--model", model, "-o", tmp_path / "run", *files(dev, dev),
                          "--set", "data.max_seq_length=128")  # fmt: skip
    assert code == 2 and "data.max_seq_length 128 exceeds the model's max_position_embeddings 64" in output, output
    assert not (tmp_path / "run").exists()


def test_a_swag_run_stopped_by_ctrl_c_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    import os
    import signal

    from bertcli.config import load_config
    from bertcli.pipelines import finetune
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.multiple_choice import training

    model = save_tiny_model(tmp_path / "model", kind="bare")
    train, dev = swag_task(tmp_path, n_train=48, n_dev=16)
    values = {
        "task.name": "swag", "model.path": str(model), "data.train_file": str(train),
        "data.validation_files": [str(dev)], "data.max_seq_length": 32, "data.batch_size": 16, "train.epochs": 2,
        "train.eval_every": 2, "train.learning_rate": 3e-3, "output.dir": str(tmp_path / "a"),
    }  # fmt: skip
    full = finetune.run_finetune(load_config(FinetuneConfig, values=values))  # 3 steps an epoch; stop in the 1st
    calls, forward = [0], training.choice_loss_and_sums

    def forward_then_stop(m, batch):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(m, batch)

    values["output.dir"] = str(tmp_path / "b")
    monkeypatch.setattr(training, "choice_loss_and_sums", forward_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune.run_finetune(load_config(FinetuneConfig, values=values))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-3"]
    resumed = finetune.run_finetune(load_config(FinetuneConfig, values=values), resume=True)
    strip = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in full["runs"]]
    assert [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in resumed["runs"]] == strip
    assert (tmp_path / "a" / "predictions.jsonl").read_text() == (tmp_path / "b" / "predictions.jsonl").read_text()
