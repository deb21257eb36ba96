"""ONNX Runtime through the real CLI: `finetune --set output.export_onnx=int8` writes best/onnx/, `bertcli export`
writes MODEL/onnx/ (and refuses to replace it without --overwrite), and `bertcli eval --runtime onnx` scores every
task family (classification, regression, ner, squad, swag) with the same predictions as PyTorch, recording the
runtime and precision in metrics.json. A model folder without onnx/ is exported for the run into a temporary folder
and left as it was; a missing onnxruntime is one line with the install hint."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from finetune_fixtures import FILLER, make_tokenizer, regression_rows, sentiment_task, tiny_config, write_rows
from multiple_choice_fixtures import swag_task
from typer.testing import CliRunner

from bertcli.cli.app import app

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
LABELS = {0: "neg", 1: "pos"}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- a fine-tuned classifier, exported by finetune ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    """A tiny BERT fine-tuned on the learnable sentiment task, best/ exported to fp32 and int8 by finetune."""
    import torch
    from transformers import BertModel

    root = tmp_path_factory.mktemp("onnx-sentiment")
    torch.manual_seed(0)
    BertModel(tiny_config()).save_pretrained(str(root / "bare"))
    make_tokenizer(root / "bare")
    train, dev = sentiment_task(root, n_train=320, n_dev=120)
    code, output = invoke("finetune", "custom", "--model", root / "bare", "-o", root / "run", "--set",
                          f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]", "--set",
                          "train.learning_rate=1e-3", "--set", "train.epochs=6", "--set", "data.batch_size=16",
                          "--set", "data.max_seq_length=32", "--set", "output.export_onnx=int8")  # fmt: skip
    assert code == 0, output
    return root, output


def _eval(model: Path, task: str, data: Path, out: Path, *extra) -> dict:
    code, output = invoke("eval", "-m", model, "-t", task, "-d", data, "-o", out, "--predictions", *extra)
    assert code == 0, output
    return {"doc": json.loads((out / "metrics.json").read_text()), "output": output, "dir": out}


def _predictions(run: dict) -> list[str]:
    (found,) = run["dir"].glob("predictions.*")
    text = found.read_text()
    if found.suffix == ".tsv":  # index, prediction, label, probabilities: the prediction is compared
        return [row.split("\t")[1] for row in text.splitlines()[1:]]
    if found.suffix == ".json":
        return sorted(json.loads(text).items())
    return text.splitlines()


def test_finetune_exports_best_and_onnx_eval_predicts_as_torch_does(sentiment, tmp_path):
    root, output = sentiment
    best = root / "run" / "best"
    assert {p.name for p in (best / "onnx").iterdir()} == {"model.onnx", "model-int8.onnx", "export.json"}
    assert f"to {best / 'onnx'}" in output
    dev = root / "dev.csv"
    torch_run = _eval(best, "custom", dev, tmp_path / "torch")
    onnx_run = _eval(best, "custom", dev, tmp_path / "onnx", "--runtime", "onnx")
    assert "temporary folder" not in onnx_run["output"]  # best/onnx/model.onnx was used
    assert (torch_run["doc"]["runtime"], torch_run["doc"]["precision"]) == ("torch", "fp32")
    assert (onnx_run["doc"]["runtime"], onnx_run["doc"]["precision"]) == ("onnx", "fp32")
    assert _predictions(onnx_run) == _predictions(torch_run)
    assert onnx_run["doc"]["metrics"] == pytest.approx(torch_run["doc"]["metrics"], abs=1e-9)
    assert "onnx fp32" in onnx_run["output"] and "runtime" in onnx_run["output"]  # the report's column
    cut = ["--set", "data.max_seq_length=8"]  # every row cut to 8 pieces: batches without padding carry no mask
    torch_cut = _eval(best, "custom", dev, tmp_path / "torch-cut", *cut)
    onnx_cut = _eval(best, "custom", dev, tmp_path / "onnx-cut", "--runtime", "onnx", *cut)
    assert "truncated to 8 tokens" in onnx_cut["output"]
    assert _predictions(onnx_cut) == _predictions(torch_cut)


def test_int8_predictions_agree_with_torchs_on_most_examples(sentiment, tmp_path):
    root, _ = sentiment
    best, dev = root / "run" / "best", root / "dev.csv"
    torch_run = _eval(best, "custom", dev, tmp_path / "torch")
    int8_run = _eval(best, "custom", dev, tmp_path / "int8", "--runtime", "onnx", "--precision", "int8")
    assert (int8_run["doc"]["runtime"], int8_run["doc"]["precision"]) == ("onnx", "int8")
    same = [a == b for a, b in zip(_predictions(int8_run), _predictions(torch_run), strict=True)]
    agreement = sum(same) / len(same)
    print(f"int8 vs torch fp32: {agreement:.3f} of {len(same)} predictions equal; accuracy "
          f"{int8_run['doc']['metrics']['accuracy']:.4f} vs {torch_run['doc']['metrics']['accuracy']:.4f}")  # fmt: skip
    assert agreement >= 0.95


def test_onnx_eval_under_a_launcher_gathers_each_example_once(sentiment, tmp_path):
    # under torchrun the ONNX eval runs as the torch one does: Accelerate shards the batches (tensors into the
    # session), and the gathered predictions equal the one-process (numpy, no torch) run's
    import os
    import subprocess

    root, _ = sentiment
    best, dev = root / "run" / "best", root / "dev.csv"
    one = _eval(best, "custom", dev, tmp_path / "one", "--runtime", "onnx", "--set", "data.batch_size=7")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "bertcli",
        "eval",
        "-m",
        str(best),
        "-t",
        "custom",
        "-d",
        str(dev),
        "--runtime",
        "onnx",
        "-o",
        str(tmp_path / "two"),
        "--predictions",
        "--set",
        "data.batch_size=7",
    ]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    doc = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (doc["processes"], doc["examples"], doc["runtime"]) == (2, 120, "onnx")
    assert _predictions({"dir": tmp_path / "two"}) == _predictions(one)
    assert doc["metrics"] == pytest.approx(one["doc"]["metrics"], abs=1e-9)


# --- every family, exported on the fly ---------------------------------------------------------------------------


def _save(path: Path, cls: str, **extra) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    getattr(transformers, cls)(tiny_config(**extra)).save_pretrained(str(path))
    make_tokenizer(path)
    return path


def _conll(path: Path, n: int) -> Path:
    rng = random.Random(3)
    blocks = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
        blocks.append("\n".join(f"{w} {rng.choice(TAGS[:2] + TAGS[3:4])}" for w in words))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def _squad(path: Path, n: int) -> Path:
    rng = random.Random(4)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(8, 30))]
        at = rng.randrange(len(words))
        start = len(" ".join(words[:at])) + (1 if at else 0)
        qas = [
            {"id": f"q{i}", "question": "what is the film ?", "answers": [{"text": words[at], "answer_start": start}]}
        ]
        paragraphs.append({"context": " ".join(words), "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def _family_case(kind: str, root: Path) -> tuple[Path, str, Path, list[str]]:
    """(random model of the family, task, data file, extra eval options)."""
    if kind == "regression":
        model = _save(root / "model", "BertForSequenceClassification", num_labels=1, problem_type="regression")
        return model, "custom", write_rows(root / "dev.csv", regression_rows(40, seed=5)), []
    if kind == "ner":
        model = _save(root / "model", "BertForTokenClassification", id2label=dict(enumerate(TAGS)),
                      label2id={t: i for i, t in enumerate(TAGS)})  # fmt: skip
        return model, "ner", _conll(root / "dev.txt", 30), []
    if kind == "squad":  # windows: contexts longer than 24 pieces
        model = _save(root / "model", "BertForQuestionAnswering")
        return model, "squad", _squad(root / "dev.json", 30), ["--set", "data.max_seq_length=24", "--set",
                                                                "task.doc_stride=8"]  # fmt: skip
    model = _save(root / "model", "BertForMultipleChoice")
    _, dev = swag_task(root, n_train=4, n_dev=30)
    return model, "swag", dev, []


@pytest.mark.parametrize("kind", ["regression", "ner", "squad", "swag"])
def test_every_family_scores_on_onnx_as_on_torch_and_the_model_folder_is_left_alone(tmp_path, kind):
    model, task, data, extra = _family_case(kind, tmp_path)
    before = _files(model)
    torch_run = _eval(model, task, data, tmp_path / "torch", *extra)
    onnx_run = _eval(model, task, data, tmp_path / "onnx", "--runtime", "onnx", *extra)
    assert "no onnx/model.onnx; exported to a temporary folder for this run" in onnx_run["output"]
    assert _files(model) == before  # nothing written into the model's folder
    assert (onnx_run["doc"]["runtime"], onnx_run["doc"]["precision"]) == ("onnx", "fp32")
    assert torch_run["doc"]["runtime"] == "torch"
    assert _predictions(onnx_run) == _predictions(torch_run) or kind == "regression"
    if kind == "regression":  # scores: the same to the printed digits
        rows = zip(_predictions(onnx_run), _predictions(torch_run), strict=True)
        assert all(abs(float(a) - float(b)) <= 1e-4 for a, b in rows)
    assert onnx_run["doc"]["metrics"] == pytest.approx(torch_run["doc"]["metrics"], abs=1e-4)


# The CLI in a fresh interpreter, reporting at exit which of torch, Accelerate, transformers and its model folders
# it imported (a check that a package is installed, as transformers and datasets make at import, is not an import;
# `transformers.models` reads the source of every model folder, about 0.4 s: a BERT tokenizer.json that holds what
# BertTokenizer builds is read by the generic fast class, which needs none of them, and `import transformers` alone
# is 0.45 s: classification and multiple choice read it with `tokenizers` alone, JsonBertTokenizer).
NO_TORCH_PROBE = """
import sys
from bertcli.cli.app import main
sys.argv = ["bertcli", *sys.argv[1:]]
try:
    main()
finally:
    print("imported:", [m for m in ("torch", "accelerate", "transformers", "transformers.models") if m in sys.modules],
          file=sys.stderr)
"""


@pytest.mark.parametrize("kind", ["regression", "ner", "squad", "swag"])
def test_an_onnx_eval_of_an_exported_model_imports_neither_torch_nor_accelerate_nor_model_code(tmp_path, kind):
    import subprocess

    model, task, data, extra = _family_case(kind, tmp_path)
    code, output = invoke("export", model, "--int8")
    assert code == 0, output
    args = ["eval", "-m", model, "-t", task, "-d", data, "--runtime", "onnx", "--precision", "int8",
            "-o", tmp_path / "ev", "--predictions", *extra]  # fmt: skip
    run = subprocess.run([sys.executable, "-c", NO_TORCH_PROBE, *map(str, args)], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    expected = "['transformers']" if kind in ("ner", "squad") else "[]"  # their padding collators are transformers'
    assert f"imported: {expected}" in run.stderr, run.stderr
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (doc["runtime"], doc["precision"], doc["examples"]) == ("onnx", "int8", 30 if kind != "regression" else 40)
    assert doc["metrics"] and list(doc["metrics"]) == list(
        _eval(model, task, data, tmp_path / "torch", *extra)["doc"]["metrics"]
    )  # the same metrics as torch's eval reports
    assert list((tmp_path / "ev").glob("predictions.*"))


# --- bertcli export and its errors -------------------------------------------------------------------------------


def test_export_refuses_to_replace_an_export_without_overwrite(tmp_path):
    model = _save(tmp_path / "model", "BertForTokenClassification", num_labels=3)
    code, output = invoke("export", model)
    assert code == 0 and f"to {model / 'onnx'}" in output, output
    first = _files(model / "onnx")
    assert set(first) == {"model.onnx", "export.json"}
    code, output = invoke("export", model, "--int8")
    assert code == 2 and f"error: {model / 'onnx'} exists; pass --overwrite to replace it" in output, output
    assert len(output.strip().splitlines()) == 1
    assert _files(model / "onnx") == first  # untouched
    code, output = invoke("export", model, "--int8", "--overwrite")
    assert code == 0, output
    assert set(_files(model / "onnx")) == {"model.onnx", "model-int8.onnx", "export.json"}
    assert not [p for p in model.iterdir() if p.name.startswith(".tmp-")]


def test_eval_refuses_an_export_of_other_weights(tmp_path):
    model = _save(tmp_path / "model", "BertForSequenceClassification", id2label=LABELS)
    code, output = invoke("export", model)
    assert code == 0, output
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)  # new weights in the folder, the old export beside them
    BertForSequenceClassification(tiny_config(id2label=LABELS)).save_pretrained(str(model))
    data = write_rows(tmp_path / "dev.csv", [("good film", "pos"), ("bad film", "neg")])
    code, output = invoke("eval", "-m", model, "-t", "custom", "-d", data, "--runtime", "onnx", "-o", tmp_path / "ev")
    assert code == 2 and "was exported from other weights" in output and "--overwrite" in output, output
    assert not (tmp_path / "ev").exists()


def test_missing_onnxruntime_is_one_line_with_the_install_hint(tmp_path, monkeypatch):
    model = _save(tmp_path / "model", "BertForSequenceClassification", id2label=LABELS)
    data = write_rows(tmp_path / "dev.csv", [("good film", "pos"), ("bad film", "neg")])
    import onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    hint = "needs onnxruntime, which is not installed: pip install 'bertcli[onnx]'"
    evaluate = ("eval", "-m", model, "-t", "custom", "-d", data, "--runtime", "onnx", "-o", tmp_path / "ev")
    for args, written in (
        (evaluate, tmp_path / "ev"),
        (("export", model, "--int8"), model / "onnx"),
        (("finetune", "custom", "--model", model, "-o", tmp_path / "run", "--set", f"data.train_file={data}",
          "--set", "output.export_onnx=fp32"), tmp_path / "run"),
    ):  # fmt: skip
        code, output = invoke(*args)
        assert code == 2 and hint in output, (args, output)
        assert len(output.strip().splitlines()) == 1, output
        assert not written.exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", onnxruntime)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # ONNX Runtime is there, the exporter is not
    code, output = invoke(*evaluate)
    assert code == 2 and "needs onnxscript, which is not installed: pip install 'bertcli[onnx]'" in output, output
    assert f"exporting {model} (it has no onnx/model.onnx)" in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "ev").exists() and not (model / "onnx").exists()


def test_int8_needs_the_onnx_runtime_and_pretraining_runs_on_torch(tmp_path):
    from finetune_fixtures import save_tiny_model

    model = save_tiny_model(tmp_path / "model", kind="pretraining")
    code, output = invoke("eval", "-m", model, "-t", "pretraining", "-d", tmp_path / "x.txt", "--precision", "int8")
    assert code == 2 and "model.precision int8 runs on ONNX Runtime: set model.runtime onnx" in output, output
    (tmp_path / "x.txt").write_text("the cat sat on the mat .\n")
    code, output = invoke("eval", "-m", model, "-t", "pretraining", "-d", tmp_path / "x.txt", "--runtime", "onnx")
    assert code == 2 and "model.runtime onnx runs fine-tuned models" in output, output
