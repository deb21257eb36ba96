"""`bertcli eval` end to end on tiny models built here: metrics, gates, reports, predictions, GLUE files, bad input."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertcli.cli.app import app

WORDS = "the a cat dog sat ran on mat good bad fine awful great movie film plot was is very not".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"


def _tokenizer(path: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(200)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=60, special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    fast.save_pretrained(str(path))
    return fast


def _bert_config(vocab_size: int, **kw):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, **kw,
    )  # fmt: skip


def _classifier(path: Path, tok, seed: int, labels: list[str] | None):
    """A saved BertForSequenceClassification (labels None: a one-score regression head)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    if labels is None:
        config = _bert_config(len(tok), num_labels=1, problem_type="regression")
    else:
        config = _bert_config(len(tok), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    tok = _tokenizer(root / "tokenizer")
    rng = random.Random(1)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))

    sst = [[s, int("good" in s)] for s in (sentence() for _ in range(120))]
    pairs = [[sentence(), sentence(), round(rng.uniform(0, 5), 2)] for _ in range(40)]
    return {
        "sst2_a": _classifier(root / "sst2_a", tok, 0, ["negative", "positive"]),
        "sst2_b": _classifier(root / "sst2_b", tok, 1, ["negative", "positive"]),
        "cola": _classifier(root / "cola", tok, 2, ["unacceptable", "acceptable"]),
        "stsb": _classifier(root / "stsb", tok, 3, None),
        "mnli": _classifier(root / "mnli", tok, 4, ["entailment", "neutral", "contradiction"]),
        "sst2_dev": _tsv(root / "sst2_dev.tsv", ["sentence", "label"], sst),
        "sst2_test": _tsv(root / "sst2_test.tsv", ["index", "sentence"], [[i, s] for i, (s, _) in enumerate(sst)]),
        "stsb_dev": _tsv(root / "stsb_dev.tsv", ["sentence1", "sentence2", "score"], pairs),
        "mnli_test": _tsv(
            root / "test_mismatched.tsv",
            ["index", "sentence1", "sentence2"],
            [[i, a, b] for i, (a, b, _) in enumerate(pairs)],
        ),  # fmt: skip
        "root": root,
    }


def run(*args):
    return CliRunner().invoke(app, ["eval", *(str(a) for a in args)])


def sst2(tiny, *args):
    return run("--model", tiny["sst2_a"], "--task", "sst2", "--data", tiny["sst2_dev"], *args)


def _accuracy(tiny) -> float:
    result = sst2(tiny, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["metrics"]["accuracy"]


# --- metrics and gates ----------------------------------------------------------------------------------------


def test_metrics_equal_sklearn_on_the_models_own_predictions(tiny, tmp_path):
    from sklearn.metrics import accuracy_score

    result = sst2(tiny, "--output", tmp_path / "out", "--predictions")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rows = [line.split("\t") for line in (tmp_path / "out" / "predictions.tsv").read_text().splitlines()]
    assert rows[0] == ["index", "prediction", "label", "prob_negative", "prob_positive", "reference"]
    preds = [int(r[1]) for r in rows[1:]]
    refs = [int("good" in line.split("\t")[0]) for line in tiny["sst2_dev"].read_text().splitlines()[1:]]
    assert doc["metrics"]["accuracy"] == accuracy_score(refs, preds)
    assert all(abs(float(r[3]) + float(r[4]) - 1) < 1e-5 for r in rows[1:])  # probabilities
    assert doc["examples"] == 120 and doc["task"] == "sst2"
    assert doc["data"]["path"] == str(tiny["sst2_dev"]) and len(doc["data"]["sha256"]) == 64
    assert {"load_s", "compute_s", "metrics_s", "total_s"} <= set(doc["runtime_s"])
    assert doc["command_s"] >= doc["runtime_s"]["import_s"] + doc["runtime_s"]["total_s"]  # the whole command
    assert (tmp_path / "out" / "config.yaml").is_file() and (tmp_path / "out" / "report.txt").is_file()


def test_gates_both_ways(tiny):
    accuracy = _accuracy(tiny)
    passed = sst2(tiny, "--fail-under", f"accuracy={accuracy - 0.01}")
    assert passed.exit_code == 0, passed.output
    assert "pass" in passed.stdout
    failed = sst2(tiny, "--fail-under", f"accuracy={accuracy + 0.01}")
    assert failed.exit_code == 3
    assert "FAIL" in failed.stdout  # the report is printed before the exit
    assert f"accuracy {accuracy:.4f} < {accuracy + 0.01:.4f}" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1


def test_baseline_gate_both_ways(tiny, tmp_path):
    first = sst2(tiny, "--output", tmp_path / "base")
    assert first.exit_code == 0, first.output
    baseline = tmp_path / "base" / "metrics.json"
    same = sst2(tiny, "--baseline", baseline, "--max-drop", "0")
    assert same.exit_code == 0, same.output  # the same model and data: no drop
    doc = json.loads(baseline.read_text())
    doc["metrics"]["accuracy"] += 0.05
    better = tmp_path / "better.json"
    better.write_text(json.dumps(doc))
    dropped = sst2(tiny, "--baseline", better, "--max-drop", "0.01")
    assert dropped.exit_code == 3
    assert "accuracy" in dropped.stderr and "baseline" in dropped.stderr


def test_junit_parses_with_one_testcase_per_gate(tiny):
    result = sst2(tiny, "--format", "junit", "--fail-under", "accuracy=0", "--fail-under", "accuracy=1.01")
    assert result.exit_code == 3
    root = ET.fromstring(result.stdout)
    cases = root.findall("testsuite/testcase")
    assert len(cases) == 1  # one gate per metric name: the later --fail-under replaces the earlier
    assert cases[0].find("failure") is not None
    ok = sst2(tiny, "--format", "junit", "--fail-under", "accuracy=0")
    assert [c.find("failure") for c in ET.fromstring(ok.stdout).findall("testsuite/testcase")] == [None]


def test_markdown_renders_a_table(tiny):
    result = sst2(tiny, "--format", "markdown", "--fail-under", "accuracy=0")
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| model | accuracy | examples | seconds |"
    assert table[1] == "| --- | ---: | ---: | ---: |"
    assert table[2].startswith(f"| {tiny['sst2_a']} | ")


def test_two_models_give_one_comparison_table(tiny, tmp_path):
    result = run(
        "--model", tiny["sst2_a"], "--model", tiny["sst2_b"], "--task", "sst2", "--data", tiny["sst2_dev"],
        "--output", tmp_path / "cmp", "--predictions",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[1].split() == ["model", "accuracy", "examples", "seconds"]
    assert [line.split()[0] for line in lines[3:]] == [str(tiny["sst2_a"]), str(tiny["sst2_b"])]
    doc = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert [r["model"] for r in doc["results"]] == [str(tiny["sst2_a"]), str(tiny["sst2_b"])]
    assert len(list((tmp_path / "cmp").glob("predictions-*.tsv"))) == 2


def test_regression_metrics(tiny):
    from scipy.stats import pearsonr

    result = run("--model", tiny["stsb"], "--task", "stsb", "--data", tiny["stsb_dev"], "--format", "json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert set(metrics) == {"pearson", "spearmanr"}
    assert -1 <= metrics["pearson"] <= 1 and metrics["pearson"] != pearsonr([0, 1, 2], [0, 1, 2])[0]


# --- predictions only and GLUE submission files ---------------------------------------------------------------


def test_glue_submission_files(tiny, tmp_path):
    sub = tmp_path / "submission"
    ok = run("-m", tiny["sst2_a"], "-t", "sst2", "-d", tiny["sst2_test"], "--submission-dir", sub)
    assert ok.exit_code == 0, ok.output
    lines = (sub / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 121
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    mm = run("-m", tiny["mnli"], "-t", "mnli", "-d", tiny["mnli_test"], "--submission-dir", sub)
    assert mm.exit_code == 0, mm.output
    lines = (sub / "MNLI-mm.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "neutral", "contradiction"}
    again = run("-m", tiny["mnli"], "-t", "mnli", "-d", tiny["mnli_test"], "--submission-dir", sub)
    assert again.exit_code == 2 and "--overwrite" in again.stderr  # an existing file stays unless asked


def test_stsb_submission_is_clipped(tiny, tmp_path):
    test = _tsv(tmp_path / "test.tsv", ["index", "sentence1", "sentence2"], [[0, "good movie", "a film"]])
    ok = run("-m", tiny["stsb"], "-t", "stsb", "-d", test, "--submission-dir", tmp_path / "sub")
    assert ok.exit_code == 0, ok.output
    header, row = (tmp_path / "sub" / "STS-B.tsv").read_text().splitlines()
    assert header == "index\tprediction" and 0.0 <= float(row.split("\t")[1]) <= 5.0


# --- bad input: one line, exit 2, nothing overwritten ---------------------------------------------------------


@pytest.fixture
def previous_run(tiny, tmp_path) -> Path:
    out = tmp_path / "prev"
    assert sst2(tiny, "--output", out).exit_code == 0
    return out


def _assert_bad(result, *fragments, previous: Path | None = None, before: str | None = None):
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr
    if previous is not None:
        assert (previous / "metrics.json").read_text() == before


def test_model_without_a_head_for_the_task(tiny, tmp_path, previous_run):
    from transformers import BertForPreTraining

    before = (previous_run / "metrics.json").read_text()
    bare = tmp_path / "pretrained"
    BertForPreTraining(_bert_config(60)).save_pretrained(str(bare))
    result = run("-m", bare, "-t", "sst2", "-d", tiny["sst2_dev"], "-o", previous_run, "--overwrite")
    _assert_bad(result, "BertForPreTraining", "without a sequence-classification head", "--task pretraining",
                previous=previous_run, before=before)  # fmt: skip


def test_labels_differ_from_the_task(tiny, previous_run):
    before = (previous_run / "metrics.json").read_text()
    result = run("-m", tiny["cola"], "-t", "sst2", "-d", tiny["sst2_dev"], "-o", previous_run, "--overwrite")
    _assert_bad(result, "['unacceptable', 'acceptable']", "['negative', 'positive']",
                previous=previous_run, before=before)  # fmt: skip


def test_data_without_labels_suggests_predictions_only(tiny):
    result = run("-m", tiny["sst2_a"], "-t", "sst2", "-d", tiny["sst2_test"])
    _assert_bad(result, "has no labels", "--predictions-only")


def test_unknown_metric_in_a_gate(tiny, previous_run):
    before = (previous_run / "metrics.json").read_text()
    result = sst2(tiny, "--fail-under", "acuracy=0.5", "-o", previous_run, "--overwrite")
    _assert_bad(result, "unknown metric", "'acuracy'", "did you mean 'accuracy'", previous=previous_run, before=before)
    result = sst2(tiny, "--fail-under", "f1=0.5")
    _assert_bad(result, "computes accuracy, not f1")


def test_malformed_baseline(tiny, tmp_path, previous_run):
    before = (previous_run / "metrics.json").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text('{"metrics": {"accuracy": "high"}}')
    result = sst2(tiny, "--baseline", bad, "-o", previous_run, "--overwrite")
    _assert_bad(result, str(bad), "not a number", previous=previous_run, before=before)
    bad.write_text("not json")
    _assert_bad(sst2(tiny, "--baseline", bad), "not a JSON file")


def test_malformed_gate_option(tiny):
    _assert_bad(sst2(tiny, "--fail-under", "accuracy"), "expected METRIC=NUMBER")


def test_non_empty_output_needs_overwrite(tiny, previous_run):
    before = (previous_run / "metrics.json").read_text()
    _assert_bad(sst2(tiny, "-o", previous_run), "--overwrite", previous=previous_run, before=before)


# --- pretrained models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tokenized_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertForPreTraining

    tok = AutoTokenizer.from_pretrained(str(tokenized_dir / "tokenizer"))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pretrained") / "final"
    BertForPreTraining(_bert_config(len(tok))).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _pretraining_metrics(model: Path, data: Path, *args) -> dict:
    result = run("--model", model, "--data", data, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pretrained_eval_repeats_exactly_and_matches_the_full_forward(pretrained, tokenized_dir):
    first = _pretraining_metrics(pretrained, tokenized_dir)
    second = _pretraining_metrics(pretrained, tokenized_dir, "--set", "data.batch_size=3")
    assert first["task"] == "pretraining"
    assert set(first["metrics"]) == {"mlm_loss", "perplexity", "mlm_accuracy", "nsp_loss", "nsp_accuracy"}
    for name, value in first["metrics"].items():  # same masks whatever the batching
        assert second["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert _pretraining_metrics(pretrained, tokenized_dir)["metrics"] == first["metrics"]  # bit for bit
    assert first["metrics"]["mlm_loss"] == pytest.approx(_reference_mlm_loss(pretrained, tokenized_dir), rel=1e-5)


def _reference_mlm_loss(model_dir: Path, data_dir: Path) -> float:
    """BertForPreTraining's own full forward, on the masks of pretrain's collator with the default eval seed."""
    import datasets
    import torch
    from transformers import AutoTokenizer, BertForPreTraining

    from bertcli.masking import EpochIndexed, PretrainingCollator

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertForPreTraining.from_pretrained(str(model_dir)).eval()
    split = EpochIndexed(datasets.load_from_disk(str(data_dir / "dataset"))["validation"])
    collate = PretrainingCollator(tok, seed=1234)
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, len(split), 16):
            batch = collate(split.__getitems__(list(range(start, min(start + 16, len(split))))))
            logits = model(
                input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"],
            ).prediction_logits  # fmt: skip
            labels = batch["labels"]
            total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="sum").item()
            count += (labels != -100).sum().item()
    return total / count


def test_pretrained_gate_and_the_wrong_direction(pretrained, tokenized_dir):
    metrics = _pretraining_metrics(pretrained, tokenized_dir)["metrics"]
    ok = run("-m", pretrained, "-d", tokenized_dir, "--fail-over", f"perplexity={metrics['perplexity'] + 1}")
    assert ok.exit_code == 0, ok.output
    bad = run("-m", pretrained, "-d", tokenized_dir, "--fail-under", "perplexity=10")
    _assert_bad(bad, "use --fail-over perplexity")


def test_pretrained_eval_on_raw_text(pretrained, tmp_path):
    from conftest import make_corpus

    corpus = make_corpus(tmp_path / "held_out.txt", docs=8)
    first = _pretraining_metrics(pretrained, corpus, "--set", "data.max_seq_length=48")
    again = _pretraining_metrics(pretrained, corpus, "--set", "data.max_seq_length=48")
    assert first["metrics"] == again["metrics"] and first["examples"] > 0
    # eval scores the text as data.max_seq_length cuts it: tokenize's guard on the cut share does not apply
    cut = _pretraining_metrics(pretrained, corpus, "--set", "data.max_seq_length=8")
    assert cut["examples"] > 0


def test_pretrained_split_missing(pretrained, tokenized_dir):
    _assert_bad(run("-m", pretrained, "-d", tokenized_dir, "--set", "data.split=test"), "no split 'test'")


def test_pretrained_has_no_predictions_to_write(pretrained, tokenized_dir, tmp_path):
    result = run("-m", pretrained, "-d", tokenized_dir, "--predictions", "-o", tmp_path / "out")
    _assert_bad(result, "no predictions to write")
    assert not (tmp_path / "out").exists()  # checked before anything is created


# --- shipped configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_validates(path):
    from bertcli.config import load_config
    from bertcli.schema.eval import EvalConfig

    assert path.read_text().startswith("# bertcli eval ")
    cfg = load_config(EvalConfig, path, values={"model.paths": ["m"], "data.path": "d"})
    assert cfg.model.paths == ["m"]


# --- distributed: every example exactly once ------------------------------------------------------------------


def _torchrun(*args, timeout: int = 300):
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "-m", "bertcli", "eval", *(str(a) for a in args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_gather_each_example_once(tiny, pretrained, tokenized_dir, tmp_path):
    # batch 7 over 120 examples: the two processes get unequal shares, Accelerate pads the last batch
    common = ["-t", "sst2", "-d", tiny["sst2_dev"], "--predictions", "--set", "data.batch_size=7"]
    one = sst2(tiny, "-o", tmp_path / "one", "--predictions", "--set", "data.batch_size=7")
    assert one.exit_code == 0, one.output
    two = _torchrun("-m", tiny["sst2_a"], *common, "-o", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    doc = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert doc["processes"] == 2 and doc["examples"] == 120
    # Every example once, in file order, with the same label; the probabilities (6 decimals) to within the last
    # digit: the two processes pad other batches (and run other thread counts), so float sums differ in the last bits.
    rows = [[line.split("\t") for line in (tmp_path / run / "predictions.tsv").read_text().splitlines()]
            for run in ("two", "one")]  # fmt: skip
    assert len(rows[0]) == len(rows[1]) == 121 and rows[0][0] == rows[1][0]
    for two_row, one_row in zip(rows[0][1:], rows[1][1:], strict=True):
        assert two_row[:3] + two_row[-1:] == one_row[:3] + one_row[-1:]  # index, prediction, label, reference
        assert [float(x) for x in two_row[3:-1]] == pytest.approx([float(x) for x in one_row[3:-1]], abs=2e-6)
    assert doc["metrics"] == json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    # pretraining sums: each example counted once (a duplicate would shift every ratio)
    single = _pretraining_metrics(pretrained, tokenized_dir, "--set", "data.batch_size=5")["metrics"]
    pre = _torchrun("-m", pretrained, "-d", tokenized_dir, "--format", "json", "--set", "data.batch_size=5")
    assert pre.returncode == 0, pre.stderr[-2000:]
    for name, value in json.loads(pre.stdout)["metrics"].items():
        assert value == pytest.approx(single[name], rel=1e-5), name


def test_a_gate_failing_under_two_processes_is_named_once_after_the_files_are_written(tiny, tmp_path):
    # every process fails the gate (the metrics are gathered); only the main one says so, and none exits before
    # the main one has written its files. The launcher's own exit code is 1 for any failed process.
    out = tmp_path / "two"
    done = _torchrun("-m", tiny["sst2_a"], "-t", "sst2", "-d", tiny["sst2_dev"], "-o", out, "--fail-under",
                     "accuracy=1.01")  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("1 of 1 gate(s) failed: accuracy") == 1, done.stderr[-3000:]
    assert "exitcode  : 3" in done.stderr  # what the process returned, as torchrun reports it
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["processes"] == 2 and [g["passed"] for g in doc["gates"]] == [False]


# --- end to end through finetune --------------------------------------------------------------------------------


def test_finetuned_model_scores_as_finetune_reported(tiny, tmp_path):
    """finetune's best/ evaluated by eval on the same dev file gives finetune's own best number, and finetune's
    metrics.json serves as a --baseline."""
    from transformers import BertForPreTraining

    base = tmp_path / "base"
    BertForPreTraining(_bert_config(60)).save_pretrained(str(base))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tiny["sst2_a"])).save_pretrained(str(base))
    glue = tmp_path / "SST-2"
    glue.mkdir()
    rows = tiny["sst2_dev"].read_text().splitlines()
    (glue / "train.tsv").write_text("\n".join(rows[:81]) + "\n")
    (glue / "dev.tsv").write_text("\n".join(rows[:1] + rows[81:]) + "\n")
    finetune = CliRunner().invoke(
        app,
        ["finetune", "sst2", "-m", str(base), "-d", str(glue), "-o", str(tmp_path / "ft"),
         "--set", "train.max_steps=10", "--set", "data.batch_size=16", "--set", "data.max_seq_length=64",
         "--set", "train.learning_rate=1e-3"],
    )  # fmt: skip
    assert finetune.exit_code == 0, finetune.output
    reported = json.loads((tmp_path / "ft" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    result = run("-m", tmp_path / "ft" / "best", "-t", "sst2", "-d", glue / "dev.tsv", "--format", "json",
                 "--baseline", tmp_path / "ft" / "metrics.json", "--max-drop", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["accuracy"] == pytest.approx(reported["accuracy"], abs=1e-12)


def test_pretrained_model_scores_as_pretrain_reported(tokenized_dir, tmp_path):
    """pretrain's final/ evaluated by eval on the validation split gives pretrain's own last evaluation."""
    out = tmp_path / "pt"
    pretrain = CliRunner().invoke(
        app,
        ["pretrain", str(tokenized_dir), "-o", str(out), "--set", "model.hidden_size=32",
         "--set", "model.num_attention_heads=2", "--set", "model.intermediate_size=64",
         "--set", "model.max_position_embeddings=64", "--set", "train.max_steps=6", "--set", "train.eval_every=6",
         "--set", "train.eval_max_batches=null", "--set", "data.batch_size=8", "--set", "train.tensorboard=false"],
    )  # fmt: skip
    assert pretrain.exit_code == 0, pretrain.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reported = [r for r in records if r.get("split") == "eval"][-1]
    metrics = _pretraining_metrics(out / "final", tokenized_dir)["metrics"]
    for name in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"):
        assert metrics[name] == pytest.approx(reported[name], rel=1e-5), name


def test_chinese_classification_file_scores_as_finetune_reported(tmp_path):
    """A Chinese sentence classifier: eval reads the file with the model's own tokenizer (every Chinese character a
    token), as finetune did, so its numbers are finetune's best."""
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizer

    chars = sorted(set("我觉得这部电影很好看精彩无聊难看的他们今天"))
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])})
    base = tmp_path / "base"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertForPreTraining(config).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    rng = random.Random(0)
    words = {"正面": ["很好看", "精彩"], "负面": ["无聊", "难看"]}

    def write(path: Path, n: int) -> Path:
        rows = [(label, rng.choice(["我觉得", "他们今天"]) + "这部电影" + rng.choice(words[label]))
                for label in rng.choices(list(words), k=n)]  # fmt: skip
        path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for label, text in rows), encoding="utf-8")
        return path

    train, dev = write(tmp_path / "train.tsv", 64), write(tmp_path / "dev.tsv", 24)
    finetune = CliRunner().invoke(
        app,
        ["finetune", "custom", "-m", str(base), "-o", str(tmp_path / "ft"), "--set", f"data.train_file={train}",
         "--set", f"data.validation_files=[{dev}]", "--set", "train.max_steps=8", "--set", "data.batch_size=16",
         "--set", "data.max_seq_length=32", "--set", "train.learning_rate=1e-3"],
    )  # fmt: skip
    assert finetune.exit_code == 0, finetune.output
    reported = json.loads((tmp_path / "ft" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    result = run("-m", tmp_path / "ft" / "best", "-t", "custom", "-d", dev, "--format", "json")
    assert result.exit_code == 0, result.output
    texts = [line.split("\t")[0] for line in dev.read_text(encoding="utf-8").splitlines()[1:]]
    assert all(tok.unk_token_id not in ids for ids in tok(texts)["input_ids"])  # every character is a token
    assert json.loads(result.stdout)["metrics"] == pytest.approx(reported, abs=1e-12)


def test_an_mlm_only_run_saves_a_masked_lm_that_eval_scores_on_mlm_alone(tokenized_dir, tmp_path):
    """Issue 28: objective mlm leaves the NSP head untrained, so final/ is a BertForMaskedLM; eval reports MLM only
    (as pretrain's own evaluation did), and a later mlm+nsp run continues from it with a fresh NSP head."""
    from transformers import AutoModelForMaskedLM, BertForMaskedLM, pipeline

    shape = ["--set", "model.hidden_size=32", "--set", "model.num_attention_heads=2", "--set",
             "model.intermediate_size=64", "--set", "model.max_position_embeddings=64"]  # fmt: skip
    common = ["--set", "train.max_steps=4", "--set", "train.eval_every=4", "--set", "train.eval_max_batches=null",
              "--set", "data.batch_size=8", "--set", "train.tensorboard=false"]  # fmt: skip
    out = tmp_path / "mlm"
    first = CliRunner().invoke(app, ["pretrain", str(tokenized_dir), "-o", str(out), *shape, *common,
                                     "--set", "objective=mlm"])  # fmt: skip
    assert first.exit_code == 0, first.output
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    assert isinstance(AutoModelForMaskedLM.from_pretrained(str(out / "final")), BertForMaskedLM)
    fill = pipeline("fill-mask", model=str(out / "final"))
    assert len(fill(f"the river {fill.tokenizer.mask_token} bright")) == 5
    assert "AutoModelForMaskedLM" in (out / "final" / "README.md").read_text()
    reported = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reported = [r for r in reported if r.get("split") == "eval"][-1]
    metrics = _pretraining_metrics(out / "final", tokenized_dir)["metrics"]
    assert set(metrics) == {"mlm_loss", "perplexity", "mlm_accuracy"}  # no NSP head, no NSP numbers
    assert metrics["mlm_loss"] == pytest.approx(reported["mlm_loss"], rel=1e-5)
    second = CliRunner().invoke(app, ["pretrain", str(tokenized_dir), "-o", str(tmp_path / "nsp"), *common,
                                      "--init-from", str(out / "final"), "--set", "objective=mlm+nsp"])  # fmt: skip
    assert second.exit_code == 0, second.output
    assert "the checkpoint has no NSP head (cls.seq_relationship starts fresh)" in second.output
    card = json.loads((tmp_path / "nsp" / "final" / "config.json").read_text())
    assert card["architectures"] == ["BertForPreTraining"]
