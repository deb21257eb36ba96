"""TinyBERT's augmentation (`bertcli.distill.augment`): which tokens are words, their nearest neighbours by the
cosine of the embeddings, and copies that replace only one-piece words, by their candidates, at the asked rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertcli.distill.augment import Augmenter, neighbour_table, whole_words

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "walk", "walks", "walked", "run", "ran", "red",
         "blue", "green", "##ing", ".", "42", "x1"]  # fmt: skip
ID = {t: i for i, t in enumerate(VOCAB)}


class Tokenizer:
    all_special_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

    def get_vocab(self):
        return dict(ID)


def embeddings() -> torch.Tensor:
    """Three clusters of directions: walking words, running words, colours; the rest random."""
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(len(VOCAB), 8, generator=gen)
    centres = torch.eye(8)[:3] * 10
    for words, centre in ((["walk", "walks", "walked"], 0), (["run", "ran"], 1), (["red", "blue", "green"], 2)):
        for w in words:
            out[ID[w]] = centres[centre] + 0.1 * torch.randn(8, generator=gen)
    return out


def test_whole_words_are_alphabetic_vocabulary_entries_and_continuations_are_marked():
    words, continuation = whole_words(Tokenizer())
    assert [VOCAB[i] for i in words] == ["walk", "walks", "walked", "run", "ran", "red", "blue", "green"]
    assert [VOCAB[i] for i in np.flatnonzero(continuation)] == ["##ing"]


def test_neighbours_are_the_nearest_other_words_by_cosine_for_the_asked_ids_only():
    words, _ = whole_words(Tokenizer())
    table = neighbour_table(embeddings(), words, [ID["walk"], ID["red"], ID["."], ID["[CLS]"]], k=2)
    assert sorted(VOCAB[i] for i in table[ID["walk"]]) == ["walked", "walks"]  # itself excluded
    assert sorted(VOCAB[i] for i in table[ID["red"]]) == ["blue", "green"]
    for never in ("walks", ".", "[CLS]", "##ing"):  # not asked for, or not a word: no candidates
        assert (table[ID[never]] == -1).all()


def _row(*tokens) -> np.ndarray:
    return np.array([ID[t] for t in tokens])


def test_copies_replace_only_one_piece_words_by_their_candidates():
    augment = Augmenter(embeddings(), Tokenizer(), copies=50, prob=0.5, candidates=2, seed=0)
    row = _row("[CLS]", "walk", "red", "run", "##ing", ".", "[SEP]")  # "run ##ing": one word of two pieces
    copies = augment([row])[0]
    assert 25 <= len(copies) <= 48  # a copy where no word was drawn (1 in 4) is dropped: 37.5 kept on average
    for copy in copies:
        assert len(copy) == len(row) and not (copy == row).all()
        changed = {int(k) for k in np.flatnonzero(copy != row)}
        assert changed <= {1, 2}
        assert VOCAB[copy[1]] in {"walk", "walks", "walked"} and VOCAB[copy[2]] in {"red", "blue", "green"}
    rate = np.mean([c[1] != row[1] for c in copies])
    assert 0.45 < rate < 0.85  # 2/3 of the copies kept (at least one of two words drawn at 0.5)


def test_every_word_is_replaced_at_probability_one_and_a_seed_repeats_its_copies():
    row = _row("[CLS]", "walked", "blue", "[SEP]")
    make = lambda seed: Augmenter(embeddings(), Tokenizer(), 3, 1.0, 2, seed)([row, row[:2]])  # noqa: E731
    first, again, other = make(1), make(1), make(2)
    assert [len(c) for c in first] == [3, 3]
    assert all((c[1:3] != row[1:3]).all() for c in first[0])
    assert all((a == b).all() for a, b in zip(first[0], again[0]))
    assert any((a != b).any() for a, b in zip(first[0], other[0]))


def test_rows_without_a_replaceable_word_get_no_copies():
    augment = Augmenter(embeddings(), Tokenizer(), 5, 1.0, 2, 0)
    assert augment([_row("[CLS]", ".", "42", "[SEP]"), _row("[CLS]", "run", "##ing", "[SEP]")]) == [[], []]
    assert augment([]) == []


@pytest.mark.parametrize("prob", [0.0, 1.5])
def test_augment_prob_is_a_probability(prob):
    from pydantic import ValidationError

    from bertcli.schema.distill import DistillSection

    with pytest.raises(ValidationError, match="augment_prob"):
        DistillSection(teacher="t", augment=2, augment_prob=prob)


def _split():
    from bertcli.tasks.classification.features import EncodedSplit

    ids = np.array([2, 6, 3, 11, 3, 2, 9, 15, 3])  # a pair [CLS] walk [SEP] red [SEP], a text [CLS] run . [SEP]
    segments = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0])
    return EncodedSplit(ids, segments, np.array([0, 5, 9]), np.array([1, 0]), truncated=0, pad_id=0)


def test_classification_copies_follow_the_rows_with_their_segments_and_a_placeholder_label():
    from types import SimpleNamespace

    from bertcli.tasks.classification.distill import augmented_rows

    data = SimpleNamespace(train=_split(), spec=SimpleNamespace(is_regression=False))
    augment = Augmenter(embeddings(), Tokenizer(), copies=2, prob=1.0, candidates=2, seed=0)
    train, made = augmented_rows(None, data, augment)
    assert made == 4 and len(train) == 6 and list(train.lengths) == [5, 4, 5, 5, 4, 4]
    assert list(train.labels) == [1, 0, 0, 0, 0, 0]
    for i, source in ((2, 0), (3, 0), (4, 1), (5, 1)):
        a, b = train.offsets[i], train.offsets[i + 1]
        s, e = data.train.offsets[source], data.train.offsets[source + 1]
        assert (train.segments[a:b] == data.train.segments[s:e]).all()
        changed = train.ids[a:b] != data.train.ids[s:e]
        assert changed.any() and all(VOCAB[data.train.ids[s + k]].isalpha() for k in np.flatnonzero(changed))


def test_a_regression_task_refuses_augmented_copies():
    from types import SimpleNamespace

    from bertcli.errors import UsageError
    from bertcli.tasks.classification.distill import augmented_rows

    data = SimpleNamespace(train=_split(), spec=SimpleNamespace(is_regression=True))
    with pytest.raises(UsageError, match="distill.augment: a regression task"):
        augmented_rows(None, data, Augmenter(embeddings(), Tokenizer(), 2, 1.0, 2, 0))
