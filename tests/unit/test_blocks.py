"""MLM-only sequences (`nsp.mode: none`, `bertcli.blocks`): a split's documents as one stream with [SEP] between
them, cut into full sequences of one segment; nothing lost, nothing repeated, and whole words still masked whole."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
import torch

from bertcli.blocks import build_block_batch, count_blocks, stream_offsets
from bertcli.masking import IGNORE_INDEX, mask_whole_words

CLS, SEP = -1, -2


def make_documents(n_docs: int, seed: int = 0):
    """Documents of sentences whose token ids are unique (a global counter), with word-start flags: a word is one
    to three tokens."""
    rng = random.Random(seed)
    docs, flags, counter = [], [], 0
    for _ in range(n_docs):
        doc, doc_flags = [], []
        for _ in range(rng.randint(1, 6)):
            sentence = list(range(counter, counter + rng.randint(1, 90)))  # some longer than a sequence
            counter += len(sentence)
            starts = [1 if i == 0 or rng.random() < 0.5 else 0 for i in range(len(sentence))]
            doc.append(sentence)
            doc_flags.append(starts)
        docs.append(doc)
        flags.append(doc_flags)
    return docs, flags


def blocks(docs, flags, rows, max_seq_length=32, batches=1, chunks=1):
    """Run the datasets.map function itself over a split's sequence indices, in `batches` batches, on documents
    stored as Arrow in `chunks` record batches (as worker shards are)."""
    from datasets import Dataset, Features, Sequence, Value, concatenate_datasets

    features = Features({"ids": Sequence(Sequence(Value("int32"))), "word_starts": Sequence(Sequence(Value("int8")))})
    cuts = np.linspace(0, len(docs), chunks + 1).astype(int)
    stored = concatenate_datasets(
        [
            Dataset.from_dict({"ids": docs[lo:hi], "word_starts": flags[lo:hi]}, features=features)
            for lo, hi in zip(cuts[:-1], cuts[1:])
        ]
    )
    offsets = stream_offsets(np.array([sum(len(s) for s in docs[r]) for r in rows]))
    n = count_blocks(offsets[-1], max_seq_length)
    out = []
    for part in np.array_split(np.arange(n), batches):
        table = build_block_batch(
            pa.table({"block": pa.array(part)}), documents=stored, split_rows=np.array(rows), offsets=offsets,
            max_seq_length=max_seq_length, cls_id=CLS, sep_id=SEP,
        )  # fmt: skip
        out += table.to_pylist()
    return out


def stream(docs, rows):
    text = []
    for k, r in enumerate(rows):
        text += [SEP] * (k > 0) + [t for s in docs[r] for t in s]
    return text


@pytest.mark.parametrize("max_seq_length", [8, 32, 128])
def test_sequences_are_full_one_segment_and_their_concatenation_is_the_text(max_seq_length):
    docs, flags = make_documents(50)
    rows = list(range(3, 50, 2))  # a split: every other document
    got = blocks(docs, flags, rows, max_seq_length)
    assert len(got) > 3
    for k, row in enumerate(got):
        ids = row["input_ids"]
        assert ids[0] == CLS and ids[-1] == SEP
        assert len(ids) == max_seq_length or k == len(got) - 1  # full, but the stream's last
        assert 2 < len(ids) <= max_seq_length
        assert row["token_type_ids"] == [0] * len(ids)
        assert row["special_tokens_mask"] == [int(t < 0) for t in ids]  # [CLS], the separators, the end [SEP]
        assert "next_sentence_label" not in row
    assert [t for row in got for t in row["input_ids"][1:-1]] == stream(docs, rows)  # no token lost or repeated


def test_word_starts_follow_the_documents_and_a_cut_word_starts_its_sequence():
    docs, flags = make_documents(30, seed=3)
    rows = list(range(30))
    got = blocks(docs, flags, rows, max_seq_length=16)
    expected = []
    for k, r in enumerate(rows):
        expected += [1] * (k > 0) + [f for s in flags[r] for f in s]
    position = 0
    for row in got:
        inner = row["word_starts"][1:-1]
        assert row["word_starts"][0] == row["word_starts"][-1] == 1
        assert inner[0] == 1
        assert inner[1:] == expected[position + 1 : position + len(inner)]
        position += len(inner)
    assert position == len(expected)


def test_output_does_not_depend_on_batching_or_storage():
    docs, flags = make_documents(40, seed=5)
    rows = list(range(40))
    whole = blocks(docs, flags, rows)
    assert blocks(docs, flags, rows, batches=7, chunks=3) == whole


def test_one_document_and_an_empty_split():
    docs, flags = make_documents(1, seed=1)
    got = blocks(docs, flags, [0], max_seq_length=8)
    assert [t for row in got for t in row["input_ids"][1:-1]] == stream(docs, [0])
    assert stream_offsets(np.zeros(0, dtype=np.int64)).tolist() == [0] and count_blocks(0, 8) == 0


def test_whole_word_masking_on_mlm_only_sequences_chooses_whole_words():
    docs, flags = make_documents(40, seed=7)
    got = blocks(docs, flags, list(range(40)), max_seq_length=64)
    for index, row in enumerate(got):
        ids = torch.tensor(row["input_ids"]).clamp(min=0) + 10  # real-looking ids; specials marked apart
        special = torch.tensor(row["special_tokens_mask"]).bool()
        starts = torch.tensor(row["word_starts"]).bool()
        gen = torch.Generator().manual_seed(index)
        _, labels = mask_whole_words(ids, special, starts, gen, 0.15, 0.8, 0.1, 4, 10_000)
        chosen = (labels != IGNORE_INDEX).tolist()
        assert not any(c for c, s in zip(chosen, special.tolist()) if s)
        word = torch.cumsum(starts | special, 0).tolist()
        for w in set(word):
            members = [c for c, x, s in zip(chosen, word, special.tolist()) if x == w and not s]
            assert all(members) or not any(members)  # a word is chosen whole or not at all
        assert any(chosen)
