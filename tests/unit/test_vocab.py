"""Domain vocabulary (bertcli/vocab.py): counting the corpus's long words, extending a WordPiece vocabulary, and
growing a checkpoint's embeddings with rows started at the mean of each new word's old pieces."""

from __future__ import annotations

import pytest
import torch

from bertcli.config import load_config
from bertcli.errors import ConfigError, UsageError
from bertcli.schema.tokenize import TokenizeConfig, TokenizerSection
from bertcli.tokenizer import train_tokenizer
from bertcli.vocab import INIT, add_domain_words, count_long_words, extend_vocabulary, grow_embeddings

GENERAL = [
    "the players were playing in the park while the player watched",
    "she plays the piano and he played the violin yesterday",
    "today the weather is fine and we are walking to the river",
    "abcdefghijklmnopqrstuvwxyz",  # every letter in the alphabet: domain words split into pieces, not [UNK]
] * 10
DOMAIN = ["immunohistochemistry", "thrombocytopenia", "cardiomyopathy"]


@pytest.fixture(scope="module")
def base():
    return train_tokenizer(iter([GENERAL]), TokenizerSection(vocab_size=120, min_frequency=2), max_length=64)


@pytest.fixture(scope="module")
def extended(base, tmp_path_factory):
    return extend_vocabulary(base, DOMAIN[:2], tmp_path_factory.mktemp("work"))


def tiny_model(vocab_size: int, tied: bool = True):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        tie_word_embeddings=tied,
    )
    model = BertForPreTraining(config).eval()
    with torch.no_grad():  # a trained model's bias is not zero: make the mean of the pieces' biases tell
        model.cls.predictions.bias.normal_()
    return model


def documents(tok, docs: list[list[str]]):
    """A tokenized corpus as tokenize's first pass hands it on: one row per document, its sentences' ids."""
    from datasets import Dataset

    return Dataset.from_dict({"ids": [[tok(s, add_special_tokens=False)["input_ids"] for s in doc] for doc in docs]})


def test_long_words_are_counted_as_the_tokenizer_splits_them(base):
    import numpy as np

    docs = documents(
        base,
        [
            ["Immunohistochemistry of the river", "the THROMBOCYTOPENIA and immunohistochemistry"],
            ["cardiomyopathy", "immunohistochemistry, the player"],
        ],
    )
    vocab = base.get_vocab()
    continuation = np.zeros(len(vocab), dtype=bool)
    continuation[[i for t, i in vocab.items() if t.startswith("##")]] = True
    counts = count_long_words(docs, continuation, min_pieces=3)
    pieces = {w: tuple(base(w, add_special_tokens=False)["input_ids"]) for w in DOMAIN}
    assert all(len(p) >= 3 for p in pieces.values())
    assert counts[pieces["immunohistochemistry"]] == 3 and counts[pieces["thrombocytopenia"]] == 1
    assert counts[pieces["cardiomyopathy"]] == 1  # a sentence of one word: it starts at the sentence start
    assert all(len(key) >= 3 for key in counts)  # "the", "player": too few pieces to count
    # only the documents a dataset holds count: a select() keeps the others in its table
    assert count_long_words(docs.select([1]), continuation, 3)[pieces["immunohistochemistry"]] == 1


def test_the_most_frequent_long_words_join_the_vocabulary(base, tmp_path, capsys):
    docs = documents(base, [["immunohistochemistry thrombocytopenia immunohistochemistry cardiomyopathy"] * 3] * 2)
    cfg = TokenizerSection(path="x", add_words=1, add_words_min_count=2)
    tok, record = add_domain_words(base, docs, cfg, tmp_path)
    word = {"word": "immunohistochemistry", "count": 12, "pieces": base.tokenize("immunohistochemistry")}
    assert record["unk_words_not_added"]["occurrences"] == 0 and record["unk_words_not_added"]["examples"] == []
    assert record == {"original_vocab_size": len(base), "added_words": [word],
                      "unk_words_not_added": record["unk_words_not_added"]}  # fmt: skip
    assert tok("immunohistochemistry", add_special_tokens=False)["input_ids"] == [len(base)]
    assert "added 1 of the 1 words" in capsys.readouterr().out
    cfg = TokenizerSection(path="x", add_words=5, add_words_min_count=7)  # the other two: seen 6 times
    assert add_domain_words(base, docs, cfg, tmp_path)[1]["added_words"] == [word]


def test_extended_vocabulary_keeps_every_old_id(base, extended):
    old, new = base.get_vocab(), extended.get_vocab()
    assert all(new[token] == i for token, i in old.items())
    assert [new[w] for w in DOMAIN[:2]] == [len(base), len(base) + 1] and len(extended) == len(base) + 2
    # a longer word starting with a new word now takes it as its first piece: WordPiece matches the longest prefix
    assert extended.tokenize("thrombocytopenias") == ["thrombocytopenia", "##s"]
    assert extended.tokenize("the cardiomyopathy") == base.tokenize("the cardiomyopathy")


def test_new_rows_start_at_the_mean_of_the_old_pieces(base, extended):
    model = tiny_model(len(base))
    old_weight = model.get_input_embeddings().weight.detach().clone()
    old_bias = model.cls.predictions.bias.detach().clone()
    report = grow_embeddings(model, base, extended)
    assert report["added_rows"] == 2 and report["init"] == INIT
    assert report["words"] == DOMAIN[:2]
    weight, bias = model.get_input_embeddings().weight, model.cls.predictions.bias
    assert weight.shape == (len(extended), 32) and bias.shape == (len(extended),)
    assert model.config.vocab_size == len(extended)
    assert torch.equal(weight[: len(base)], old_weight) and torch.equal(bias[: len(base)], old_bias)
    for word in DOMAIN[:2]:
        pieces = base(word, add_special_tokens=False)["input_ids"]
        row = extended.convert_tokens_to_ids(word)
        assert torch.allclose(weight[row], old_weight[pieces].mean(dim=0), atol=1e-6)
        assert torch.allclose(bias[row], old_bias[pieces].mean(), atol=1e-6)
    decoder = model.get_output_embeddings()
    assert decoder.weight is weight and decoder.bias is bias  # still tied: training one trains the other


def test_an_untied_decoder_grows_its_own_rows_from_the_pieces(base, extended):
    model = tiny_model(len(base), tied=False)
    old_decoder = model.get_output_embeddings().weight.detach().clone()
    grow_embeddings(model, base, extended)
    decoder = model.get_output_embeddings().weight
    assert decoder is not model.get_input_embeddings().weight and decoder.shape[0] == len(extended)
    assert torch.equal(decoder[: len(base)], old_decoder)
    pieces = base("thrombocytopenia", add_special_tokens=False)["input_ids"]
    assert torch.allclose(decoder[len(base) + 1], old_decoder[pieces].mean(dim=0), atol=1e-6)


def test_text_without_new_words_gives_the_same_outputs(base, extended):
    model = tiny_model(len(base))
    texts = ["the player watched the river", "she played the violin"]
    batch = base(texts, padding=True, return_tensors="pt")
    assert torch.equal(extended(texts, padding=True, return_tensors="pt")["input_ids"], batch["input_ids"])
    with torch.no_grad():
        before = model(**batch)
        grow_embeddings(model, base, extended)
        after = model(**batch)
    assert torch.allclose(after.prediction_logits[..., : len(base)], before.prediction_logits, atol=1e-5)
    assert torch.allclose(after.seq_relationship_logits, before.seq_relationship_logits, atol=1e-5)


def test_a_tokenizer_that_does_not_extend_the_old_one_is_refused(base, extended):
    other = train_tokenizer(iter([[s[::-1] for s in GENERAL]]), TokenizerSection(vocab_size=110), max_length=64)
    for old, new in ((base, other), (extended, base)):
        model = tiny_model(len(old))
        with pytest.raises(UsageError, match="does not extend the model's") as caught:
            grow_embeddings(model, old, new)
        assert "\n" not in str(caught.value)
        assert model.get_input_embeddings().num_embeddings == len(old)  # nothing changed


def test_add_words_needs_a_given_tokenizer():
    with pytest.raises(ConfigError, match=r"tokenizer.add_words=5 extends a given tokenizer: set tokenizer.path"):
        load_config(TokenizeConfig, overrides=["input.paths=[a.txt]", "tokenizer.add_words=5"])
    cfg = load_config(TokenizeConfig, overrides=["input.paths=[a.txt]", "tokenizer.path=t", "tokenizer.add_words=5"])
    assert (cfg.tokenizer.add_words, cfg.tokenizer.add_words_min_pieces, cfg.tokenizer.add_words_min_count) == (5, 3, 2)
