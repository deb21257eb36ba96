"""`bertcli finetune --teacher` through the real CLI, for every task family: a student cut from the teacher's layers
(model.init_layers) or given (model.path) learns from the teacher's outputs, best/ loads with transformers' Auto
classes; unlabelled text adds training rows (classification, ner) or is refused (QA); alpha 0 trains on the gold
labels alone, to the same weights as a run without a teacher; a teacher of other labels, another vocabulary or
without the task's head is one line, exit 2, before anything is written.

The teachers are made here with the task's head and labels (random weights: what is tested is the plumbing)."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
from finetune_fixtures import VOCAB, make_tokenizer, save_tiny_model, sentiment_rows, sentiment_task, tiny_config
from multiple_choice_fixtures import swag_task
from typer.testing import CliRunner

from bertcli.cli.app import app

FAST = ["--set", "data.batch_size=16", "--set", "train.learning_rate=1e-3", "--set", "train.epochs=1",
        "--set", "data.max_seq_length=32", "--set", "train.log_every=1000"]  # fmt: skip


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def files(train, dev):
    return ["--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]"]


def save_teacher(path: Path, model_class: str, vocab: list[str] | None = None, **config) -> Path:
    """A 2-layer model with a task head (`model_class`), saved with its tokenizer as a best/ is."""
    import transformers

    torch.manual_seed(1)
    vocab = vocab or VOCAB
    getattr(transformers, model_class)(tiny_config(len(vocab), **config)).save_pretrained(str(path))
    make_tokenizer(path, vocab)
    return path


SENTIMENT = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    sentiment_task(root, n_train=64, n_dev=24)
    save_teacher(root / "teacher", "BertForSequenceClassification", **SENTIMENT)
    save_tiny_model(root / "bare")
    return root


def test_classification_student_of_one_teacher_layer_learns_from_unlabelled_text_too(root, tmp_path):
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("\n".join(text for text, _ in sentiment_rows(30, seed=7)) + "\n\n", encoding="utf-8")
    out = tmp_path / "run"
    code, output = invoke("finetune", "custom", "--teacher", root / "teacher", "-o", out, "--set",
                          "model.init_layers=[1]", "--set", f"distill.unlabelled_file={unlabelled}",
                          *files(root / "train.csv", root / "dev.csv"), *FAST)  # fmt: skip
    assert code == 0, output
    assert "labelled the 94 training rows (30 of them unlabelled)" in output
    assert f"unlabelled: 30 examples from {unlabelled}" in output
    assert "6 per epoch" in output  # 94 rows in batches of 16 (64 labelled rows alone: 4)
    assert "encoder layers [1] of 2" in output and "newly initialised: nothing" in output  # the teacher's head
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["unlabelled"]["examples"] == 30
    from transformers import AutoModelForSequenceClassification

    best = AutoModelForSequenceClassification.from_pretrained(str(out / "best"))
    assert best.config.num_hidden_layers == 1 and best.config.id2label == {0: "negative", 1: "positive"}
    assert "teacher: " in (out / "best" / "config.yaml").read_text()
    card = (out / "best" / "README.md").read_text()
    assert f"distilled from `{root / 'teacher'}` (distill.alpha 0.5" in card and "encoder layers [1] of 2" in card


def test_augmented_copies_of_the_training_rows_join_them_with_the_unlabelled_text(root, tmp_path):
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("\n".join(text for text, _ in sentiment_rows(10, seed=7)) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    code, output = invoke("finetune", "custom", "--teacher", root / "teacher", "-o", out, "--set",
                          "model.init_layers=[1]", "--set", "distill.augment=3", "--set",
                          "distill.augment_candidates=4", "--set", "data.holdout_fraction=0.25", "--set",
                          f"distill.unlabelled_file={unlabelled}", *files(root / "train.csv", root / "dev.csv"),
                          *FAST)  # fmt: skip
    assert code == 0, output
    # 48 rows after the holdout's 16: every one has a word to replace, so 1 to 3 copies each (none of a held row)
    line = next(x for x in output.splitlines() if "distill: teacher" in x)
    rows, copies = re.search(r"labelled the (\d+) training rows \((\d+) of them augmented copies, 10 unlabelled\)",
                             line).groups()  # fmt: skip
    assert 48 < int(copies) <= 3 * 48 and int(rows) == 48 + int(copies) + 10
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("soft_loss" in m for m in metrics)
    card = (out / "best" / "README.md").read_text()
    assert "up to 3 augmented copies of each training row" in card
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(str(out / "best")).config.num_hidden_layers == 1


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_alpha_zero_trains_on_the_gold_labels_alone_like_a_run_without_teacher(root, tmp_path):
    common = ["custom", "-m", root / "bare", *files(root / "train.csv", root / "dev.csv"), *FAST,
              "--set", "train.max_steps=3"]  # fmt: skip
    code, output = invoke("finetune", *common, "-o", tmp_path / "plain")
    assert code == 0, output
    code, output = invoke("finetune", *common, "-o", tmp_path / "alpha0", "--teacher", root / "teacher",
                          "--set", "distill.alpha=0")  # fmt: skip
    assert code == 0, output
    assert "labelled the 64 training rows" in output
    plain, alpha0 = _weights(tmp_path / "plain" / "best"), _weights(tmp_path / "alpha0" / "best")
    assert plain.keys() == alpha0.keys()
    assert all(torch.equal(plain[k], alpha0[k]) for k in plain)
    code, output = invoke("finetune", *common, "-o", tmp_path / "alpha1", "--teacher", root / "teacher",
                          "--set", "distill.alpha=1")  # fmt: skip
    assert code == 0, output
    alpha1 = _weights(tmp_path / "alpha1" / "best")
    assert not all(torch.equal(plain[k], alpha1[k]) for k in plain)  # the teacher's outputs do move the student


def _other_vocab_teacher(path: Path) -> Path:
    vocab = VOCAB[:5] + list(reversed(VOCAB[5:]))  # the same size, other ids
    return save_teacher(path, "BertForSequenceClassification", vocab, **SENTIMENT)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: save_teacher(p, "BertForSequenceClassification", num_labels=3),
            "has the labels ['LABEL_0', 'LABEL_1', 'LABEL_2'], the task has ['negative', 'positive']",
        ),
        (
            lambda p: save_teacher(p, "BertForSequenceClassification", id2label={0: "neg", 1: "pos"}),
            "has the labels ['neg', 'pos'], the task has ['negative', 'positive']",
        ),
        (_other_vocab_teacher, "has another vocabulary than the student's tokenizer (id 5 is"),
        (
            lambda p: save_teacher(p, "BertForSequenceClassification", VOCAB + ["extra"], **SENTIMENT),
            f"has a vocabulary of {len(VOCAB) + 1} tokens, the student's tokenizer {len(VOCAB)}",
        ),
        (lambda p: save_tiny_model(p), "is BertModel, not a fine-tuned SequenceClassification model"),
    ],
    ids=["label-count", "label-names", "vocabulary", "vocabulary-size", "no-head"],
)
def test_a_teacher_that_does_not_fit_is_one_line_exit_2_before_any_output(root, tmp_path, make, message):
    teacher = make(tmp_path / "teacher")
    out = tmp_path / "run"
    code, output = invoke("finetune", "custom", "-m", root / "bare", "--teacher", teacher, "-o", out,
                          *files(root / "train.csv", root / "dev.csv"), *FAST)  # fmt: skip
    assert code == 2, output
    assert message in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "distill.teacher" in errors[0]
    assert not out.exists()


# --- the other families -----------------------------------------------------------------------------------------

NER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alice", "bob", "paris", "rome", "lon", "##don",
             "went", "to", "the", "met", "in", "."]  # fmt: skip
NER_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def _ner_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [(rng.choice(["went", "to", "the", "met", "in"]), "O") for _ in range(rng.randint(2, 5))]
        words.insert(rng.randint(0, len(words)), (rng.choice(["paris", "rome", "london"]), "B-LOC"))
        words.insert(rng.randint(0, len(words)), (rng.choice(["alice", "bob"]), "B-PER"))
        out.append([*words, (".", "O")])
    return out


def _conll(path: Path, sentences, tags: bool = True) -> Path:
    blocks = ["\n".join(f"{w} {t}" if tags else w for w, t in s) for s in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def test_ner_student_learns_per_labelled_piece_and_from_untagged_sentences(tmp_path):
    id2label = dict(enumerate(NER_LABELS))
    teacher = save_teacher(tmp_path / "teacher", "BertForTokenClassification", NER_VOCAB, id2label=id2label,
                           label2id={v: k for k, v in id2label.items()})  # fmt: skip
    train = _conll(tmp_path / "train.txt", _ner_sentences(40, 1))
    dev = _conll(tmp_path / "dev.txt", _ner_sentences(12, 2))
    tokens = _conll(tmp_path / "tokens.txt", _ner_sentences(20, 3), tags=False)  # one token per line, no tags
    out = tmp_path / "run"
    code, output = invoke("finetune", "ner", "--teacher", teacher, "-o", out, "--set", "model.init_layers=1",
                          "--set", f"distill.unlabelled_file={tokens}", *files(train, dev), *FAST)  # fmt: skip
    assert code == 0, output
    assert "labelled the 60 training rows (20 of them unlabelled)" in output
    assert "unlabelled: 20 sentences" in output
    from transformers import AutoModelForTokenClassification

    best = AutoModelForTokenClassification.from_pretrained(str(out / "best"))
    assert best.config.num_hidden_layers == 1 and best.config.id2label == id2label
    # augmented copies of the tagged windows: a replaced word keeps its one piece, so its labels' places
    out = tmp_path / "augmented"
    code, output = invoke("finetune", "ner", "--teacher", teacher, "-o", out, "--set", "model.init_layers=1",
                          "--set", "distill.augment=2", "--set", "distill.augment_candidates=3",
                          *files(train, dev), *FAST)  # fmt: skip
    assert code == 0, output
    copies = int(re.search(r"labelled the \d+ training rows \((\d+) of them augmented copies\)", output).group(1))
    assert 40 < copies <= 80
    assert AutoModelForTokenClassification.from_pretrained(str(out / "best")).config.num_hidden_layers == 1


QA_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "marker", "what", "follows", "?", ".", "red", "blue",
            "green", "the", "cat", "sat", "on", "a", "mat"]  # fmt: skip


def _squad(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(["the", "cat", "sat", "on", "a", "mat"]) for _ in range(rng.randint(4, 16))]
        at, answer = rng.randint(0, len(words)), rng.choice(["red", "blue", "green"])
        words[at:at] = ["marker", answer]
        context = " ".join(words) + " ."
        start = len(" ".join(words[: at + 1])) + 1
        qas = [{"id": f"q{seed}-{i}", "question": "what follows the marker ?",
                "answers": [{"text": answer, "answer_start": start}]}]  # fmt: skip
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_qa_student_learns_start_and_end_and_unlabelled_text_is_refused(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", "BertForQuestionAnswering", QA_VOCAB)
    train, dev = _squad(tmp_path / "train.json", 40, 1), _squad(tmp_path / "dev.json", 12, 2)
    qa = ["--set", "task.doc_stride=8", "--set", "data.max_seq_length=24"]
    out = tmp_path / "run"
    code, output = invoke("finetune", "squad", "--teacher", teacher, "-o", out, "--set", "model.init_layers=[0]",
                          "--set", "distill.soft_loss=mse", *files(train, dev), *FAST, *qa)  # fmt: skip
    assert code == 0, output
    assert "distill: teacher" in output and "soft loss mse" in output
    from transformers import AutoModelForQuestionAnswering

    assert AutoModelForQuestionAnswering.from_pretrained(str(out / "best")).config.num_hidden_layers == 1
    code, output = invoke("finetune", "squad", "--teacher", teacher, "-o", tmp_path / "refused", "--set",
                          f"distill.unlabelled_file={train}", *files(train, dev), *FAST, *qa)  # fmt: skip
    assert code == 2, output
    assert "distill.unlabelled_file: span tasks cannot learn from unlabelled text" in output
    assert not (tmp_path / "refused").exists()
    code, output = invoke("finetune", "squad", "--teacher", teacher, "-o", tmp_path / "refused", "--set",
                          "distill.augment=2", *files(train, dev), *FAST, *qa)  # fmt: skip
    assert code == 2, output
    assert "distill.augment: span tasks cannot learn from augmented copies" in output
    assert not (tmp_path / "refused").exists()


def test_multiple_choice_student_from_its_own_checkpoint_learns_over_the_choices(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", "BertForMultipleChoice")
    student = save_tiny_model(tmp_path / "student")  # model.path: a checkpoint of its own, not the teacher's layers
    train, dev = swag_task(tmp_path, n_train=32, n_dev=12)
    out = tmp_path / "run"
    code, output = invoke("finetune", "swag", "-m", student, "--teacher", teacher, "-o", out,
                          *files(train, dev), *FAST)  # fmt: skip
    assert code == 0, output
    assert "labelled the 32 training rows" in output and "soft loss kl at temperature 2.0" in output
    from transformers import AutoModelForMultipleChoice

    assert AutoModelForMultipleChoice.from_pretrained(str(out / "best")).config.num_hidden_layers == 2


# --- hidden states (distill.hidden_weight) ----------------------------------------------------------------------


def _logged(out: Path, key: str) -> list[float]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in lines if r.get("split") == "train" and key in r]


@pytest.mark.parametrize("family", ["custom", "ner", "squad", "swag"])
def test_every_family_learns_the_teachers_hidden_states_and_attention(root, tmp_path, family):
    """distill.hidden_weight and attention_weight through each family's own forward: a student of its own (2 layers,
    other weights) learns at its layer 0 the teacher's layer 0; both losses are logged and fall, and best/ loads
    with its Auto class."""
    import transformers

    vocab = {"ner": NER_VOCAB, "squad": QA_VOCAB}.get(family, VOCAB)
    torch.manual_seed(5)
    student = tmp_path / "student"
    transformers.BertModel(tiny_config(len(vocab))).save_pretrained(str(student))
    make_tokenizer(student, vocab)
    if family == "custom":
        teacher, train, dev, extra = root / "teacher", root / "train.csv", root / "dev.csv", []
        auto = "AutoModelForSequenceClassification"
    elif family == "ner":
        id2label = dict(enumerate(NER_LABELS))
        teacher = save_teacher(tmp_path / "teacher", "BertForTokenClassification", NER_VOCAB, id2label=id2label,
                               label2id={v: k for k, v in id2label.items()})  # fmt: skip
        train = _conll(tmp_path / "train.txt", _ner_sentences(40, 1))
        dev, extra = _conll(tmp_path / "dev.txt", _ner_sentences(12, 2)), []
        auto = "AutoModelForTokenClassification"
    elif family == "squad":
        teacher = save_teacher(tmp_path / "teacher", "BertForQuestionAnswering", QA_VOCAB)
        train, dev = _squad(tmp_path / "train.json", 40, 1), _squad(tmp_path / "dev.json", 12, 2)
        extra, auto = ["--set", "task.doc_stride=8", "--set", "data.max_seq_length=24"], "AutoModelForQuestionAnswering"
    else:
        teacher = save_teacher(tmp_path / "teacher", "BertForMultipleChoice")
        (train, dev), extra = swag_task(tmp_path, n_train=32, n_dev=12), []
        auto = "AutoModelForMultipleChoice"
    out = tmp_path / "run"
    code, output = invoke("finetune", family, "-m", student, "--teacher", teacher, "-o", out,
                          "--set", "distill.hidden_weight=1", "--set", "distill.attention_weight=1",
                          *files(train, dev), *FAST, "--set", "train.log_every=1",
                          "--set", "train.epochs=3", *extra)  # fmt: skip
    assert code == 0, output
    assert "hidden states x 1.0 + attention scores x 1.0 (student<-teacher layer: 0<-0)" in output
    for key in ("hidden_loss", "attention_loss"):
        losses = _logged(out, key)
        assert len(losses) >= 3 and all(math.isfinite(x) for x in losses)
        assert losses[-1] < 0.9 * losses[0], (key, losses)
    card = (out / "best" / "README.md").read_text()
    assert "hidden states of its layers, distill.hidden_weight 1.0" in card and "distill.attention_weight 1.0" in card
    assert getattr(transformers, auto).from_pretrained(str(out / "best")).config.num_hidden_layers == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["-m", "WIDE"], "distill.hidden_weight: the student's hidden_size is 48, the teacher's"),
        (["--set", "model.init_layers=[1]"], "distill.hidden_weight: a student of 1 layers and a teacher of 2"),
        (
            ["-m", "HEADS", "--set", "distill.hidden_weight=0", "--set", "distill.attention_weight=1"],
            "distill.attention_weight: the student's num_attention_heads is 4, the teacher's",
        ),
    ],
    ids=["width", "one-layer", "heads"],
)
def test_hidden_states_that_cannot_be_matched_are_one_line_exit_2_before_any_output(root, tmp_path, settings, message):
    import transformers

    wide = tmp_path / "wide"
    config = tiny_config()
    config.hidden_size = 48
    transformers.BertModel(config).save_pretrained(str(wide))
    make_tokenizer(wide)
    config = tiny_config()
    config.num_attention_heads = 4
    transformers.BertModel(config).save_pretrained(str(tmp_path / "heads"))
    make_tokenizer(tmp_path / "heads")
    settings = [{"WIDE": str(wide), "HEADS": str(tmp_path / "heads")}.get(s, s) for s in settings]
    out = tmp_path / "run"
    code, output = invoke("finetune", "custom", "--teacher", root / "teacher", "-o", out, "--set",
                          "distill.hidden_weight=1", *settings, *files(root / "train.csv", root / "dev.csv"),
                          *FAST)  # fmt: skip
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], output
    assert not out.exists()
