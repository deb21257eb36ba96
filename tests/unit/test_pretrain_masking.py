"""Masking statistics and determinism of the pretraining collator (DataCollatorForLanguageModeling per
example)."""

from __future__ import annotations

import random

import pytest
import torch
from pretrain_fixtures import make_tokenizer

from bertcli.masking import IGNORE_INDEX, EpochIndexed, PretrainingCollator


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def _rows(tokenizer, n=400, seed=0):
    """Rows of varied length, so batches are padded: [CLS] A [SEP] B [SEP]."""
    rng = random.Random(seed)
    words = [i for t, i in tokenizer.get_vocab().items() if t.startswith("t")]
    rows = []
    for index in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        ids = [2, *rng.choices(words, k=a), 3, *rng.choices(words, k=b), 3]
        special = [1] + [0] * a + [1] + [0] * b + [1]
        rows.append(
            {
                "input_ids": ids,
                "token_type_ids": [0] * (a + 2) + [1] * (b + 1),
                "special_tokens_mask": special,
                "next_sentence_label": index % 2,
                "mask_key": (0, index),
            }
        )
    return rows


def test_rates_of_chosen_mask_random_and_kept_tokens(tokenizer):
    collator = PretrainingCollator(tokenizer, seed=7)
    rows = _rows(tokenizer, n=3000)
    eligible = chosen = as_mask = as_random = kept = 0
    for start in range(0, len(rows), 32):
        part = rows[start : start + 32]
        batch = collator(part)
        for i, row in enumerate(part):
            n = len(row["input_ids"])
            ids, labels = batch["input_ids"][i], batch["labels"][i]
            special = torch.tensor(row["special_tokens_mask"], dtype=torch.bool)
            source = torch.tensor(row["input_ids"])
            picked = labels[:n] != IGNORE_INDEX
            assert not picked[special].any(), "a special token was chosen"
            assert (labels[n:] == IGNORE_INDEX).all(), "padding was chosen"
            assert (batch["attention_mask"][i, n:] == 0).all() and (ids[n:] == tokenizer.pad_token_id).all()
            assert torch.equal(labels[:n][picked], source[picked]), "labels must be the original tokens"
            eligible += int((~special).sum())
            chosen += int(picked.sum())
            as_mask += int((ids[:n][picked] == tokenizer.mask_token_id).sum())
            kept += int((ids[:n][picked] == source[picked]).sum())
            as_random += int(((ids[:n][picked] != source[picked]) & (ids[:n][picked] != tokenizer.mask_token_id)).sum())
    assert eligible > 20000
    assert abs(chosen / eligible - 0.15) < 0.01
    assert abs(as_mask / chosen - 0.8) < 0.02
    # A random replacement can draw the original token back (1 in len(vocab)): counted as kept; tolerated.
    assert abs(as_random / chosen - 0.1) < 0.02
    assert abs(kept / chosen - 0.1) < 0.02


def test_mask_depends_on_key_only_not_on_batch_or_padding(tokenizer):
    collator = PretrainingCollator(tokenizer, seed=3)
    rows = _rows(tokenizer, n=8)
    alone = collator([rows[5]])
    together = collator(rows)
    n = len(rows[5]["input_ids"])
    assert torch.equal(alone["input_ids"][0], together["input_ids"][5][:n])
    assert torch.equal(alone["labels"][0], together["labels"][5][:n])
    other_epoch = collator([{**rows[5], "mask_key": (1, 5)}])
    other_seed = PretrainingCollator(tokenizer, seed=4)([rows[5]])
    assert not torch.equal(alone["input_ids"], other_epoch["input_ids"])
    assert not torch.equal(alone["input_ids"], other_seed["input_ids"])


def test_new_epoch_gives_new_masks_and_batch_has_nsp_labels(tokenizer):
    collator = PretrainingCollator(tokenizer, seed=1)
    data = EpochIndexed(_ListDataset(_rows(tokenizer, n=64)))
    first = collator(data.__getitems__(list(range(64))))
    data.set_epoch(1)
    second = collator(data.__getitems__(list(range(64))))
    assert not torch.equal(first["labels"], second["labels"])
    assert first["next_sentence_label"].tolist() == [i % 2 for i in range(64)]
    assert "next_sentence_label" not in PretrainingCollator(tokenizer, seed=1, with_nsp=False)(data.__getitems__([0]))


def test_whole_word_masking_takes_every_piece_of_a_word(tokenizer):
    vocab = tokenizer.get_vocab()
    collator = PretrainingCollator(tokenizer, seed=0, whole_word_mask=True, mlm_probability=0.3)
    piece = vocab["##ing"]
    word_ids = [vocab[f"t0w{k}"] for k in range(10)]
    rows = []
    for index in range(200):
        body = [x for w in word_ids for x in (w, piece)]  # every word is "tXwK ##ing"
        rows.append(
            {
                "input_ids": [2, *body, 3],
                "token_type_ids": [0] * (len(body) + 2),
                "special_tokens_mask": [1] + [0] * len(body) + [1],
                "next_sentence_label": 0,
                "mask_key": (0, index),
            }
        )
    batch = collator(rows)
    picked = batch["labels"] != IGNORE_INDEX
    heads, tails = picked[:, 1:-1:2], picked[:, 2:-1:2]
    assert picked.any()
    assert torch.equal(heads, tails), "a word was masked without its ## piece, or the other way round"
    # BERT's whole-word masking applies 80/10/10 per token of the chosen words (not [MASK] only, as transformers')
    as_mask = (batch["input_ids"][picked] == tokenizer.mask_token_id).float().mean()
    assert 0.7 < as_mask < 0.9


class _ListDataset:
    """Just enough of datasets.Dataset for EpochIndexed: rows[list_of_indices] -> dict of columns."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, indices):
        picked = [self.rows[i] for i in indices]
        return {k: [r[k] for r in picked] for k in picked[0] if k != "mask_key"}
