"""Tiny BERT checkpoints and small learnable labelled sets for the finetune tests (made here, no downloads).

The sentiment task is learnable in a few epochs by a randomly initialised 2-layer, 32-wide BERT: a sentence is
positive when it holds one of the positive words, negative when it holds a negative one; the rest is filler.
The regression task's score is the number of "good" words in the sentence (0 to 3).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull"]
FILLER = "the a cat dog sat ran on mat film movie was is very quite this that it and".split()
VOCAB = SPECIALS + POSITIVE + NEGATIVE + FILLER + ["##s", "##ly", "##ing"]


def make_tokenizer(path: Path, vocab: list[str] | None = None):
    """A WordPiece tokenizer over a fixed vocabulary, saved as a transformers fast-tokenizer folder."""
    from transformers import BertTokenizerFast

    vocab = vocab or VOCAB
    tok = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(path))
    return tok


def tiny_config(vocab_size: int = len(VOCAB), **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, **extra,
    )  # fmt: skip


def save_tiny_model(path: Path, kind: str = "bare", seed: int = 0) -> Path:
    """kind: bare (BertModel), pretraining (BertForPreTraining, our pretrain's final/), classifier3 (another
    head: a 3-class sequence classifier)."""
    import torch
    from transformers import BertForPreTraining, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    if kind == "bare":
        model = BertModel(tiny_config())
    elif kind == "pretraining":
        model = BertForPreTraining(tiny_config())
    elif kind == "classifier3":
        model = BertForSequenceClassification(tiny_config(num_labels=3))
    else:
        raise ValueError(kind)
    model.save_pretrained(str(path))
    make_tokenizer(path)
    return path


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append((" ".join(words), "positive" if positive else "negative"))
    return rows


def regression_rows(n: int, seed: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good = rng.randint(0, 3)
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
        for _ in range(good):
            words.insert(rng.randint(0, len(words)), "good")
        rows.append((" ".join(words), float(good)))
    return rows


def write_rows(path: Path, rows: list[tuple], columns=("text", "label")) -> Path:
    """csv/tsv/jsonl by the file's extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        lines = [json.dumps(dict(zip(columns, row, strict=True))) for row in rows]
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        lines = [sep.join(columns)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentiment_task(folder: Path, n_train: int = 320, n_dev: int = 80, ext: str = "csv") -> tuple[Path, Path]:
    train = write_rows(Path(folder) / f"train.{ext}", sentiment_rows(n_train, seed=1))
    dev = write_rows(Path(folder) / f"dev.{ext}", sentiment_rows(n_dev, seed=2))
    return train, dev


def sst2_folder(folder: Path, n_train: int = 320, n_dev: int = 80) -> Path:
    """The sentiment task in SST-2's GLUE layout: train.tsv / dev.tsv with `sentence<TAB>label` (0/1)."""
    for name, rows in (("train.tsv", sentiment_rows(n_train, 1)), ("dev.tsv", sentiment_rows(n_dev, 2))):
        binary = [(text, "1" if label == "positive" else "0") for text, label in rows]
        write_rows(Path(folder) / name, binary, columns=("sentence", "label"))
    return Path(folder)


def finetune_values(model: Path, out: Path, **extra) -> dict:
    """Config values for a fast, learnable run of the tiny model (random init learns at lr 1e-3)."""
    values = {
        "model.path": str(model), "output.dir": str(out), "data.max_seq_length": 64, "data.batch_size": 16,
        "train.learning_rate": 1e-3, "train.epochs": 6, "train.warmup_ratio": 0.1, "train.log_every": 1000,
    }  # fmt: skip
    values.update(extra)
    return values


def sigint_in_forward(monkeypatch, n: int) -> None:
    """Ctrl-C while the n-th training batch is forwarded (one batch a step in these tests): the loop stops after
    that step."""
    import os
    import signal

    from bertcli.tasks.classification import training as classification

    calls, forward = [0], classification._loss_and_sums

    def forward_then_stop(m, batch, regression):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(m, batch, regression)

    monkeypatch.setattr(classification, "_loss_and_sums", forward_then_stop)
