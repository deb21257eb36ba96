"""The tagging loss under task.loss_weighting: `token` (the default) divides each training batch's summed loss by one
constant, the labelled pieces of an average full batch, so every labelled piece of an epoch weighs alike whatever
batches the length grouping makes; `batch` takes each batch's own mean (HF's CrossEntropyLoss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bertcli.config import load_config
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.tagging import encode_sentences, read_tagged, tagging_task, with_tag_labels
from bertcli.tasks.tagging.family import FAMILY
from bertcli.tasks.tagging.training import TaggingSplit, tagging_loss_and_sums
from bertcli.training.batches import length_grouped_batches

LABELS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alice", "bob", "went", "to", "paris", "lon", "##don", "."]


def tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)


def split_of(tmp_path, sentences: list[list[tuple[str, str]]]) -> TaggingSplit:
    path = tmp_path / "train.txt"
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")
    spec = with_tag_labels(tagging_task(), LABELS)
    read = read_tagged(spec, path)
    return TaggingSplit(read, encode_sentences(tokenizer(), read, spec, 64))


def config(tmp_path, **keys):
    values = {"task.name": "ner", "model.path": str(tmp_path), "data.train_file": str(tmp_path / "train.txt"), **keys}
    return load_config(FinetuneConfig, values=values)


class TokenLogits(torch.nn.Module):
    """A stand-in tagger: each piece's logits depend on its token id alone, so a window's logits do not change with
    the batch it is padded in."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(len(VOCAB), len(LABELS))
        torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return self.table(input_ids)


SHORT = [("bob", "B-PER")]
LONG = [("alice", "B-PER"), ("went", "O"), ("to", "O"), ("london", "B-LOC"), ("and", "O"), ("paris", "B-LOC"),
        (".", "O")]  # fmt: skip


def test_token_weighting_is_the_default_and_divides_the_summed_loss_by_an_average_batch(tmp_path):
    split = split_of(tmp_path, [SHORT, LONG, SHORT, LONG, LONG])  # labelled pieces 1, 7, 1, 7, 7 ("and": [UNK])
    cfg = config(tmp_path, **{"data.batch_size": 2})
    assert cfg.task.loss_weighting == "token"
    collate = FAMILY.train_collator(split, tokenizer(), None, cfg, print)
    batch = collate([0, 1])
    assert float(batch["loss_norm"]) == pytest.approx(2 * (1 + 7 + 1 + 7 + 7) / 5)
    model = TokenLogits()
    loss, sums = tagging_loss_and_sums(model, batch)
    by_hand = 0.0  # -log softmax of the gold label at every labelled piece, summed
    for row, labels in zip(model(batch["input_ids"]).detach(), batch["labels"]):
        for logits, label in zip(row, labels):
            if label != -100:
                by_hand -= float(torch.log_softmax(logits, -1)[label])
    assert loss.item() == pytest.approx(by_hand / (2 * 23 / 5), rel=1e-5)
    assert sums["labelled_pieces"].tolist() == [1.0, 7.0]
    assert "loss_norm" not in FAMILY.collator(split, tokenizer())([0, 1])  # evaluation batches: plain means


def test_batch_weighting_takes_each_batch_mean(tmp_path):
    split = split_of(tmp_path, [SHORT, LONG])
    batch = FAMILY.train_collator(split, tokenizer(), None, config(tmp_path, **{"task.loss_weighting": "batch"}),
                                  print)([0, 1])  # fmt: skip
    assert "loss_norm" not in batch
    model = TokenLogits()
    labelled = batch["labels"] != -100
    gold = torch.log_softmax(model(batch["input_ids"]), -1).gather(-1, batch["labels"].clamp(min=0)[..., None])[..., 0]
    loss, _ = tagging_loss_and_sums(model, batch)
    assert loss.item() == pytest.approx(float(-gold[labelled].mean()), rel=1e-5)


@pytest.mark.parametrize("weighting", ["token", "batch"])
def test_under_token_weighting_an_epoch_weighs_every_piece_alike_however_it_is_batched(tmp_path, weighting):
    """The epoch's summed loss, from length-grouped batches and from random ones: equal (each piece weighs
    1 / loss_norm) under token weighting; under batch weighting the grouped batches of one-word sentences give their
    pieces more weight, and the totals differ."""
    rng = np.random.default_rng(0)
    split = split_of(tmp_path, [LONG if rng.random() < 0.5 else SHORT for _ in range(96)])
    cfg = config(tmp_path, **{"data.batch_size": 8, "task.loss_weighting": weighting})
    collate = FAMILY.train_collator(split, tokenizer(), None, cfg, print)
    model = TokenLogits()

    def epoch(group: int) -> float:
        batches = length_grouped_batches(split.lengths, 8, seed=3, group=group)
        return sum(tagging_loss_and_sums(model, collate(b))[0].item() for b in batches)

    grouped, shuffled = epoch(50), epoch(0)
    if weighting == "token":
        assert grouped == pytest.approx(shuffled, rel=1e-5)
        every_piece = collate(list(range(len(split))))  # one batch of all: its summed loss over the same constant
        assert grouped == pytest.approx(tagging_loss_and_sums(model, every_piece)[0].item(), rel=1e-5)
    else:
        assert not math.isclose(grouped, shuffled, rel_tol=0.05)
