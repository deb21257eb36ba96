"""`bertcli tokenize --set tokenizer.path=DIR --set tokenizer.add_words=N` through the real CLI: a released-style
tokenizer, made here, is extended with a domain corpus's frequent long words, and the data is tokenized with them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import WORDS
from typer.testing import CliRunner

from bertcli.cli.app import app
from bertcli.schema.tokenize import TokenizerSection
from bertcli.tokenizer import train_tokenizer

# how often each domain word occurs in the corpus: two are added, the third is seen once (below min_count 2)
DOMAIN = {"immunohistochemistry": 30, "thrombocytopenia": 12, "cardiomyopathy": 1}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A general-domain tokenizer: the domain words are not in its vocabulary, so it splits them into pieces."""
    rng = random.Random(1)
    text = [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(200)] + ["abcdefghijklmnopqrstuvwxyz ."]
    tok = train_tokenizer(iter([text]), TokenizerSection(vocab_size=400, min_frequency=2), max_length=128)
    path = tmp_path_factory.mktemp("base")
    tok.save_pretrained(str(path))
    return path


def domain_corpus(path: Path) -> list[str]:
    """Short sentences (none cut at max_seq_length), the domain words spread over them; returns the sentences."""
    rng = random.Random(0)
    words = [w for w, n in DOMAIN.items() for _ in range(n)] + [rng.choice(WORDS) for _ in range(600)]
    rng.shuffle(words)
    sentences = [" ".join(words[k : k + 8]).capitalize() + "." for k in range(0, len(words), 8)]
    with open(path, "w", encoding="utf-8") as f:
        for k, sentence in enumerate(sentences):
            f.write(sentence + ("\n\n" if k % 5 == 4 else "\n"))  # documents of five sentences
    return sentences


def test_tokenize_adds_the_frequent_long_words_and_uses_them(tmp_path, base):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    sentences = domain_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    args = ["tokenize", str(tmp_path / "corpus.txt"), "-o", str(out), "--set", f"tokenizer.path={base}"]
    args += ["--set", "tokenizer.add_words=5", "--set", "run.num_proc=1", "--set", "split.validation_fraction=0.1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "added 2 of the 5 words" in result.output

    old, new = AutoTokenizer.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["original_vocab_size"] == len(old) and stats["vocab_size"] == len(new) == len(old) + 2
    assert stats["added_words"] == [
        {"word": word, "count": DOMAIN[word], "pieces": old.tokenize(word)}
        for word in ("immunohistochemistry", "thrombocytopenia")
    ]
    assert all(len(w["pieces"]) >= 3 for w in stats["added_words"])
    new_ids = {new.convert_tokens_to_ids(w["word"]) for w in stats["added_words"]}
    assert new_ids == {len(old), len(old) + 1}
    assert [new.tokenize(w) for w in DOMAIN] == [
        ["immunohistochemistry"],
        ["thrombocytopenia"],
        old.tokenize("cardiomyopathy"),
    ]

    # Every segment of every instance is a stretch of the corpus as the saved tokenizer encodes it (truncation
    # only trims segment ends), and the new words are there as their new ids.
    encoded = new(sentences, add_special_tokens=False)["input_ids"]
    corpus = " " + " ".join(str(i) for ids in encoded for i in ids) + " "
    ds = load_from_disk(str(out / "dataset"))
    seen = set()
    for row in (row for split in ds.values() for row in split):
        segments: dict[int, list[int]] = {0: [], 1: []}
        for i, segment, special in zip(row["input_ids"], row["token_type_ids"], row["special_tokens_mask"]):
            if not special:
                segments[segment].append(i)
        for ids in segments.values():
            assert " " + " ".join(map(str, ids)) + " " in corpus
            seen.update(ids)
    assert new_ids <= seen


def test_words_the_tokenizer_maps_to_unk_are_counted_and_named(tmp_path, base):
    # Issue 28: such words are never proposed (they have no pieces); stats.json says so, with their count.
    domain_corpus(tmp_path / "corpus.txt")
    with open(tmp_path / "corpus.txt", "a", encoding="utf-8") as f:
        f.write("\nThe λόγος of the river.\nA λόγος and a 😀 here.\nAnd λόγος again.\n")  # letters base never saw
    out = tmp_path / "out"
    args = ["tokenize", str(tmp_path / "corpus.txt"), "-o", str(out), "--set", f"tokenizer.path={base}"]
    args += ["--set", "tokenizer.add_words=5", "--set", "run.num_proc=1", "--set", "split.validation_fraction=0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 words of the corpus map to [UNK] and cannot be added (e.g. λόγος, 😀)" in result.output
    stats = json.loads((out / "stats.json").read_text())
    unk = stats["unk_words_not_added"]
    assert unk["occurrences"] == 4 and unk["examples"] == ["λόγος", "😀"] and "never proposed" in unk["why"]
    assert not {"λόγος", "λογος", "😀"} & {w["word"] for w in stats["added_words"]}


def test_add_words_without_a_given_tokenizer_is_a_config_error(tmp_path):
    domain_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["tokenize", str(tmp_path / "corpus.txt"), "-o", str(out), "--set", "tokenizer.add_words=5"]
    )
    assert result.exit_code == 2 and not out.exists()
    assert "tokenizer.add_words=5 extends a given tokenizer: set tokenizer.path too" in result.output
    assert "Traceback" not in result.output


def test_add_words_with_a_tokenizer_that_is_not_wordpiece_is_refused_before_any_output(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {f"{name}_token": f"[{name.upper()}]" for name in ("cls", "sep", "pad", "mask", "unk")}
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(str(tmp_path / "bpe"))
    domain_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    args = ["tokenize", str(tmp_path / "corpus.txt"), "-o", str(out), "--set", f"tokenizer.path={tmp_path / 'bpe'}"]
    result = CliRunner().invoke(app, [*args, "--set", "tokenizer.add_words=5"])
    assert result.exit_code == 2 and not out.exists()
    assert "tokenizer.add_words works with WordPiece tokenizers (BERT's)" in result.output
    assert "has a BPE model" in result.output and "Traceback" not in result.output
    assert "Reading and tokenizing" not in result.output  # refused up front, not after a pass over the corpus
