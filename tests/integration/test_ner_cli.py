"""`bertcli finetune ner` and `bertcli eval --task ner` through the real CLI on a synthetic, learnable NER task:
the tiny model learns it, best/ loads in pipeline("token-classification"), eval scores it with seqeval, writes
CoNLL predictions and gates on f1; bad input is one line, exit 2, before anything is written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertcli.cli.app import app

FIRST = ["alice", "bob", "carol", "dave"]
LAST = ["smith", "jones"]
PLACES = ["paris", "rome", "oslo", "london"]  # london is two pieces: lon ##don
FILLER = "went to the and met in a saw today with".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FIRST, *LAST, *PLACES[:3], "lon", "##don", *FILLER, "."]


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    """Filler words with a person (a first name, sometimes a surname) and a place put in between."""
    words = [(rng.choice(FILLER), "O") for _ in range(rng.randint(2, 6))]
    words.insert(rng.randint(0, len(words)), (rng.choice(PLACES), "B-LOC"))
    person = [(rng.choice(FIRST), "B-PER")] + ([(rng.choice(LAST), "I-PER")] if rng.random() < 0.5 else [])
    words[rng.randint(0, len(words)) : 0] = person  # as a block: nothing comes between a name and its surname
    return words + [(".", "O")]


def write_conll(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    blocks = ["\n".join(f"{w} {t}" for w, t in sentence(rng)) for _ in range(n)]
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finetune run of a random 2-layer, 32-wide BERT on the synthetic task."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("ner")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(str(root / "bare"))
    BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}).save_pretrained(str(root / "bare"))
    train, dev = write_conll(root / "train.txt", 160, 1), write_conll(root / "dev.txt", 60, 2)
    code, output = invoke("finetune", "ner", "--model", root / "bare", "-o", root / "run", "--set",
                          f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]", "--set",
                          "train.learning_rate=3e-3", "--set", "data.batch_size=16", "--set", "train.epochs=4",
                          "--set", "data.max_seq_length=32")  # fmt: skip
    assert code == 0, output
    return root, output


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_tiny_model_learns_the_task_and_reports_seqeval_scores(trained):
    root, output = trained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    best = metrics["best"]["metrics"]["validation"]
    assert best["f1"] > 0.8, best  # chance (a random tag per word) is far below 0.1
    assert {"precision", "recall", "accuracy", "PER/f1", "LOC/f1"} <= set(best)
    assert metrics["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and metrics["main_metric"] == "f1"
    saved = json.loads((root / "run" / "best" / "config.json").read_text())
    assert saved["architectures"] == ["BertForTokenClassification"]
    assert saved["id2label"] == {"0": "O", "1": "B-LOC", "2": "I-LOC", "3": "B-PER", "4": "I-PER"}
    assert "pipeline('token-classification')" in output


def test_best_loads_in_the_token_classification_pipeline(trained):
    from transformers import pipeline

    root, _ = trained
    tag = pipeline("token-classification", model=str(root / "run" / "best"), aggregation_strategy="simple")
    found = {(e["entity_group"], e["word"]) for e in tag("bob smith went to paris with carol .")}
    assert {("PER", "bob smith"), ("LOC", "paris"), ("PER", "carol")} <= found, found
    # only first pieces are trained (HF's convention): "first" reads a word's tag from its first piece, as we do
    words = pipeline("token-classification", model=str(root / "run" / "best"), aggregation_strategy="first")
    assert ("LOC", "london") in {(e["entity_group"], e["word"]) for e in words("alice went to london .")}


def test_eval_scores_writes_conll_predictions_and_gates_on_f1(trained, tmp_path):
    root, _ = trained
    best, dev = root / "run" / "best", root / "dev.txt"
    code, output = invoke("eval", "--model", best, "--data", dev, "-o", tmp_path / "ev", "--predictions")
    assert code == 0, output  # no --task: a token classifier is evaluated as ner
    scores = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    trained_best = json.loads((root / "run" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    assert scores["f1"] == pytest.approx(trained_best["f1"], abs=1e-9)
    assert scores["PER/f1"] == pytest.approx(trained_best["PER/f1"], abs=1e-9)  # per type, in metrics.json
    lines = (tmp_path / "ev" / "predictions.conll").read_text().split("\n")
    gold = [line for line in dev.read_text().split("\n") if line and not line.startswith("-DOCSTART-")]
    rows = [line for line in lines if line]
    assert len(rows) == len(gold) and all(r.rsplit(" ", 1)[0] == g for r, g in zip(rows, gold))
    assert lines.count("") == 60 + 1  # a blank line after each sentence (and the file's last newline)
    f1 = scores["f1"]
    code, output = invoke("eval", "--task", "ner", "--model", best, "--data", dev, "--fail-under", f"f1={f1 - 0.01}")
    assert code == 0, output
    code, output = invoke("eval", "--task", "ner", "--model", best, "--data", dev, "--fail-under", f"f1={f1 + 0.01}")
    assert code == 3, output
    # finetune's own metrics.json as the baseline: the same model on the same file scores the same (per-type keys
    # are not gated)
    code, output = invoke("eval", "--model", best, "--data", dev, "--baseline", root / "run" / "metrics.json")
    assert code == 0 and "f1 >= " in output and "PER/f1 >=" not in output, output


@pytest.mark.parametrize(
    "text,message",
    [
        ("alice B-PER\nwent O extra\n", "bad.txt:2: 3 columns, the file's first token line has 2"),
        ("alice O\nsmith I-PER\n", "bad.txt:2: tag 'I-PER' after 'O' does not continue an entity"),
        ("alice B-PERSON\n", "bad.txt:1: tag 'B-PERSON' is not one of the labels"),
        (
            "alice I-PER\nsmith I-PER\nbob B-PER\n",
            "(false reads it as seqeval's default mode does); the tags look like "
            "IOB1: --set task.scheme=iob1 reads them",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_output(trained, tmp_path, text, message):
    root, _ = trained
    bad = tmp_path / "bad.txt"
    bad.write_text(text, encoding="utf-8")
    code, output = invoke("finetune", "ner", "--model", root / "bare", "-o", tmp_path / "out", "--set",
                          f"data.train_file={root / 'train.txt'}", "--set", f"data.validation_files=[{bad}]",
                          "--set", "task.strict=true")  # fmt: skip
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "out").exists()


def test_iob1_file_finetuned_as_iob2_prints_one_line_suggesting_iob1(trained, tmp_path):
    root, _ = trained
    iob2 = (root / "train.txt").read_text(encoding="utf-8")
    text = iob2.replace("B-", "I-")  # every entity opens with I- (one person and one place a sentence: none touch)
    iob1 = tmp_path / "eng.train"
    iob1.write_text(text, encoding="utf-8")
    code, output = invoke("finetune", "ner", "--model", root / "bare", "-o", tmp_path / "out", "--set",
                          f"data.train_file={iob1}", "--set", f"data.validation_files=[{root / 'dev.txt'}]", "--set",
                          "train.max_steps=1", "--set", "data.max_seq_length=32")  # fmt: skip
    assert code == 0, output
    hint = [line.strip() for line in output.splitlines() if "the tags look like IOB1" in line]
    starts = iob2.count("B-")
    assert hint == [
        f"{iob1}: the tags look like IOB1 ({starts} entities start with I-, B- only between touching entities of a "
        "type); task.scheme iob1 (--set task.scheme=iob1) reads them exactly"
    ]


def test_resumed_ner_run_equals_the_unbroken_one(trained, tmp_path, monkeypatch):
    """Ctrl-C in step 6 of 8 saves a checkpoint; --resume continues it to the unbroken run's numbers and weights."""
    import os
    import signal

    from bertcli.config import load_config
    from bertcli.pipelines import finetune
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.tagging import training as tagging

    root, _ = trained

    def run(out: Path, resume: bool = False) -> dict:
        values = {"task.name": "ner", "model.path": str(root / "bare"), "output.dir": str(out),
                  "data.train_file": str(root / "train.txt"), "data.validation_files": [str(root / "dev.txt")],
                  "data.batch_size": 16, "data.max_seq_length": 32, "train.learning_rate": 3e-3,
                  "train.max_steps": 8, "train.eval_every": 3, "train.log_every": 1000}  # fmt: skip
        return finetune.run_finetune(load_config(FinetuneConfig, values=values), resume=resume)

    unbroken = run(tmp_path / "unbroken")
    calls, forward = [0], tagging.tagging_loss_and_sums

    def forward_then_stop(m, batch):
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(m, batch)

    monkeypatch.setattr(tagging, "tagging_loss_and_sums", forward_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "broken")
    monkeypatch.undo()
    assert (tmp_path / "broken" / "checkpoints" / "step-6").is_dir()
    resumed = run(tmp_path / "broken", resume=True)
    assert resumed["runs"][0]["evaluations"] == unbroken["runs"][0]["evaluations"]
    weights = [(tmp_path / name / "best" / "model.safetensors").read_bytes() for name in ("unbroken", "broken")]
    assert weights[0] == weights[1]


def test_two_gloo_processes_tag_every_dev_sentence_once(trained, tmp_path):
    """torchrun, 2 CPU processes: windows padded to different widths per process are gathered once each, so the
    f1 finetune reports equals a one-process eval of its best/."""
    import os
    import socket
    import subprocess
    import sys

    root, _ = trained
    dev = write_conll(tmp_path / "dev.txt", 37, 3)  # odd: the processes' shares are unequal
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
              "-m", "bertcli", "finetune", "ner", "--model", str(root / "bare"), "-o", str(tmp_path / "two"),
              "--set", f"data.train_file={root / 'train.txt'}", "--set", f"data.validation_files=[{dev}]",
              "--set", "train.learning_rate=3e-3", "--set", "data.batch_size=16", "--set", "train.epochs=2",
              "--set", "data.max_seq_length=32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(launch, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert result["runs"][0]["steps"] == 2 * 5  # 160 sentences in batches of 16: 10 batches, 5 per process
    code, output = invoke("eval", "--model", tmp_path / "two" / "best", "--data", dev, "-o", tmp_path / "ev")
    assert code == 0, output
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    reported = result["best"]["metrics"]["validation"]
    assert scored["f1"] == pytest.approx(reported["f1"], abs=1e-12)
    assert scored["accuracy"] == pytest.approx(reported["accuracy"], abs=1e-12)


def test_eval_of_two_taggers_gives_one_table(trained, tmp_path):
    import shutil

    root, _ = trained
    other = shutil.copytree(root / "run" / "best", tmp_path / "other")
    code, output = invoke("eval", "--model", root / "run" / "best", "--model", other, "--data", root / "dev.txt",
                          "-o", tmp_path / "ev", "--predictions")  # fmt: skip
    assert code == 0, output
    header = next(line for line in output.splitlines() if line.startswith("model"))
    assert header.split()[:5] == ["model", "f1", "precision", "recall", "accuracy"]  # per-type: metrics.json only
    results = json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"]
    assert results[0]["metrics"] == results[1]["metrics"] and "LOC/f1" in results[0]["metrics"]
    assert len(list((tmp_path / "ev").glob("predictions-*.conll"))) == 2


def test_predictions_only_tags_a_file_of_tokens(trained, tmp_path):
    root, _ = trained
    tokens = tmp_path / "test.txt"
    tokens.write_text("bob\nwent\nto\nparis\n.\n\ncarol\nsmith\n", encoding="utf-8")
    code, output = invoke("eval", "--model", root / "run" / "best", "--data", tokens, "-o", tmp_path / "ev",
                          "--predictions-only")  # fmt: skip
    assert code == 0, output
    rows = (tmp_path / "ev" / "predictions.conll").read_text().split("\n\n")[:2]
    assert [[line.split()[0] for line in block.splitlines()] for block in rows] == [
        ["bob", "went", "to", "paris", "."], ["carol", "smith"]]  # fmt: skip
    assert all(len(line.split()) == 2 for block in rows for line in block.splitlines())  # token, predicted tag
    code, output = invoke("eval", "--model", root / "run" / "best", "--data", tokens)
    assert code == 2 and "no tags" in output and "--predictions-only" in output, output


# --- Chinese NER files as distributed: CLUENER JSON under msra_ner.yaml, Weibo NER's word positions ----------------

ZH_NAMES, ZH_COMPANIES, ZH_FILLER = ["张三", "李四", "王五"], ["浙商银行", "万达"], list("我在和去了的看见今天很好")
ZH_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({c for w in ZH_NAMES + ZH_COMPANIES for c in w}),
            *ZH_FILLER, "《", "》"]  # fmt: skip


def cluener_record(rng: random.Random) -> dict:
    """Filler characters around a name and a company; every third record, a book title holding the company."""
    name, company = rng.choice(ZH_NAMES), rng.choice(ZH_COMPANIES)
    pad = lambda: "".join(rng.choice(ZH_FILLER) for _ in range(rng.randint(1, 3)))  # noqa: E731
    book = rng.random() < 1 / 3
    entity = f"《{company}》" if book else company
    text = pad() + name + pad() + entity + pad()
    at, where = text.index(name), text.index(entity)
    label = {"name": {name: [[at, at + len(name) - 1]]}}
    label["company"] = {company: [[text.index(company), text.index(company) + len(company) - 1]]}
    if book:
        label["book"] = {entity: [[where, where + len(entity) - 1]]}
    return {"text": text, "label": label}


def test_cluener_json_named_txt_finetunes_with_msra_ner_yaml_then_evals_weibo_positions(tmp_path):
    """The issue's files end to end: CLUENER JSON lines named .txt, nested spans and all, read through
    configs/finetune/msra_ner.yaml (data.format auto); the model then scores a Weibo-layout file (口0) in eval."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    rng = random.Random(5)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(ZH_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(str(tmp_path / "bare"))
    BertTokenizerFast(vocab={t: i for i, t in enumerate(ZH_VOCAB)}).save_pretrained(str(tmp_path / "bare"))
    records = [cluener_record(rng) for _ in range(48)]
    books = sum("book" in r["label"] for r in records)
    train, dev = tmp_path / "cluener_train.txt", tmp_path / "cluener_dev.txt"
    for path, part in ((train, records[:40]), (dev, records[40:])):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    msra = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "msra_ner.yaml"
    code, output = invoke("finetune", "--config", msra, "--model", tmp_path / "bare", "-o", tmp_path / "run",
                          "--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]",
                          "--set", "train.max_steps=4", "--set", "data.batch_size=16", "--set",
                          "data.max_seq_length=32", "--set", "task.nested=inner")  # fmt: skip
    assert code == 0, output
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    dropped = {name: result["data"][name]["dropped_nested_spans"] for name in ("train", "validation")}
    assert dropped["train"] + dropped["validation"] == books > 0  # each book title held a company: the book went
    note = f"{train}: CLUENER spans inside (or crossing) another, dropped: {dropped['train']} (task.nested inner"
    assert note in output and "the tags look like IOB1" not in output, output
    labels = result["labels"]
    assert labels == ["O", "B-company", "I-company", "B-name", "I-name"]  # inner: no book left to learn

    weibo = tmp_path / "weiboNER_2nd_conll.dev"
    weibo.write_text("我0\tO\n张0\tB-name\n三1\tI-name\n在0\tO\n万0\tB-company\n达1\tI-company\n\n", encoding="utf-8")
    best = tmp_path / "run" / "best"
    code, output = invoke("eval", "--model", best, "--data", weibo, "-o", tmp_path / "ev", "--predictions",
                          "--set", "task.strip_position_digits=true")  # fmt: skip
    assert code == 0, output
    rows = [line.split() for line in (tmp_path / "ev" / "predictions.conll").read_text().splitlines() if line]
    assert [r[0] for r in rows] == list("我张三在万达") and [r[1] for r in rows][1:3] == ["B-name", "I-name"]
    assert "every token ends in digits" not in output
    code, output = invoke("eval", "--model", best, "--data", weibo)  # as written: 张0 is no character of the vocab
    assert code == 0 and output.count("task.strip_position_digits true reads the characters alone") == 1, output
