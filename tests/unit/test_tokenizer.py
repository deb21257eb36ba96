"""WordPiece training: saved as a transformers fast tokenizer that AutoTokenizer loads and BERT can read."""

from __future__ import annotations

import json

import pytest

from bertcli.errors import UsageError
from bertcli.schema.tokenize import TokenizerSection
from bertcli.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer

TEXT = [
    "the players were playing in the park while the player watched",
    "she plays the piano and he played the violin yesterday",
    "today the weather is fine and we are walking to the river",
    "今天天气很好 我们去公园 playing",
] * 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tok = train_tokenizer(iter([TEXT]), TokenizerSection(vocab_size=300, min_frequency=2), max_length=64)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(str(path))
    return tok, path


def test_special_tokens_come_first(trained):
    tok, _ = trained
    assert tok.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS


def test_reloaded_with_autotokenizer_gives_identical_ids(trained):
    from transformers import AutoTokenizer

    tok, path = trained
    again = AutoTokenizer.from_pretrained(str(path))
    for text in ["the player plays", "今天 playing well", "unseen zzzqx words"]:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.is_fast and type(again).__name__ == "BertTokenizer"


def test_pairs_are_cls_a_sep_b_sep_with_segment_ids(trained):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(trained[1]))
    enc = tok("the park", "the river")
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == [
        "[CLS]",
        "the",
        "park",
        "[SEP]",
        "the",
        "river",
        "[SEP]",
    ]
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_chinese_becomes_single_characters(trained):
    assert trained[0].tokenize("今天天气") == ["今", "天", "天", "气"]


def test_a_rare_word_splits_into_wordpiece_pieces(trained):
    pieces = trained[0].tokenize("playingly")
    assert len(pieces) > 1 and pieces[0] == "playing" and all(p.startswith("##") for p in pieces[1:])


def test_vocab_smaller_than_alphabet_is_an_error():
    with pytest.raises(UsageError, match="tokenizer.vocab_size 20 is smaller than the corpus alphabet"):
        train_tokenizer(iter([TEXT]), TokenizerSection(vocab_size=20), max_length=64)


def test_folder_that_is_not_a_tokenizer(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(UsageError, match="is not a tokenizer folder"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(UsageError, match="could not load the tokenizer"):
        load_tokenizer(tmp_path)


def test_training_is_deterministic():
    """tokenizers' own WordPieceTrainer gives a different vocabulary from run to run (huggingface/tokenizers#1794);
    ours must not, or re-running a config would not reproduce the run."""
    from conftest import make_corpus

    def vocab(tmp):
        lines = [line for line in make_corpus(tmp, docs=30, seed=5).read_text().splitlines() if line]
        return train_tokenizer(iter([lines]), TokenizerSection(vocab_size=400, min_frequency=1), 64).get_vocab()

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        first = vocab(Path(d) / "a.txt")
        assert all(vocab(Path(d) / "a.txt") == first for _ in range(3))


def test_documents_encode_to_the_ids_of_their_sentences(trained):
    """Sentences of many documents in one batch call: the ids of every sentence alone, end to end, and their lengths
    (0 for a sentence that normalisation empties)."""
    import numpy as np

    from bertcli.tokenizer import SentenceEncoder, encode_documents

    tok, _ = trained
    encoder = SentenceEncoder(tok.backend_tokenizer)
    docs = [TEXT[:3], ["\x00", "the park"], ["今天天气很好", "\x01"]]
    for batch in (docs, [*docs, ["a literal [SEP] inside", "the end"]]):
        values, lengths = encode_documents(encoder, batch)
        alone = [tok(s, add_special_tokens=False)["input_ids"] for doc in batch for s in doc]
        assert lengths.tolist() == [len(ids) for ids in alone]
        assert values.tolist() == [i for ids in alone for i in ids]
        assert values.dtype == np.int32


@pytest.fixture(scope="module")
def ascii_backend():
    """A tokenizer whose vocabulary holds every printable ASCII character, in both cases, and some words."""
    import string

    text = TEXT + [string.printable.strip(), "The Players PLAYING Played", "A B C"] * 5
    return train_tokenizer(iter([text]), TokenizerSection(vocab_size=400, lowercase=False), 64).backend_tokenizer


def _ascii_sentences() -> list[str]:
    """Every ASCII character alone, inside and between words, doubled; special tokens in any case, whole, cut
    or joined by a control character; and random ASCII strings."""
    import random

    sentences = []
    for code in range(128):
        c = chr(code)
        sentences += [c, f"The{c}Players", f"a {c}{c} B.", f"{c}[MASK]{c}"]
    sentences += ["[MASK]", "[mask] it", "a[SEP]b", "[Cls] x", "[MA\x01SK]", "[UNK]", "\t\r\x0b\x0c\x1c\x1f\x7f", ""]
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(128)] + ["[MASK]", "[SEP]", "Playing", " "] * 8
    sentences += ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(3000)]
    return sentences


@pytest.mark.parametrize(
    "normalizer",
    [
        None,  # as trained: BertNormalizer(lowercase=False, clean_text=True)
        dict(lowercase=True, clean_text=True),
        dict(lowercase=True, clean_text=False),
        dict(lowercase=False, clean_text=False, strip_accents=True),
    ],
)
def test_sentence_encoder_gives_the_tokenizers_own_ids_for_ascii_text(ascii_backend, normalizer):
    """The ASCII shortcut (BertNormalizer's work done by Python's string methods, then the tokenizer without its
    normaliser) must give exactly what the tokenizer gives, whatever the normaliser's options; and the sentences it
    normalises itself must be what BertNormalizer makes of them."""
    from tokenizers import Tokenizer, normalizers

    from bertcli.tokenizer import SentenceEncoder

    backend = Tokenizer.from_str(ascii_backend.to_str())
    if normalizer is not None:
        backend.normalizer = normalizers.BertNormalizer(**normalizer)
    encoder = SentenceEncoder(backend)
    assert encoder.plain is not None  # the shortcut is taken
    sentences = _ascii_sentences()
    assert [encoder._bert_normalized(s) for s in sentences] == [backend.normalizer.normalize_str(s) for s in sentences]
    expected = [e.ids for e in backend.encode_batch(sentences, add_special_tokens=False)]
    assert encoder.ids(sentences) == expected
    assert [4] in expected and any(3 in ids for ids in expected)  # special tokens were really met
    printable = [ids for ids, s in zip(expected, sentences) if s.isprintable()]
    assert sum(ids.count(1) for ids in printable) < sum(map(len, printable)) / 10  # known pieces, not all [UNK]


def test_sentence_encoder_without_a_bert_normalizer_uses_the_tokenizer_as_it_is(trained):
    from tokenizers import Tokenizer, normalizers

    from bertcli.tokenizer import SentenceEncoder

    backend = Tokenizer.from_str(trained[0].backend_tokenizer.to_str())
    backend.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()])
    encoder = SentenceEncoder(backend)
    assert encoder.plain is None
    sentences = _ascii_sentences()[:500] + ["Café PLAYING", "今天天气"]
    assert encoder.ids(sentences) == [e.ids for e in backend.encode_batch(sentences, add_special_tokens=False)]


def test_sentence_encoder_ignores_padding_and_truncation_saved_in_the_tokenizer(ascii_backend):
    """A tokenizer.json may carry padding or truncation settings; a sentence's ids must still be its own, whole
    (tokenize cuts long sentences itself, and counts them)."""
    from tokenizers import Tokenizer

    from bertcli.tokenizer import SentenceEncoder

    sentences = ["The Players", "a much longer sentence than the first one, with many more words in it"]
    own = [e.ids for e in ascii_backend.encode_batch(sentences, add_special_tokens=False)]
    backend = Tokenizer.from_str(ascii_backend.to_str())
    backend.enable_padding(pad_id=0, pad_token="[PAD]")
    backend.enable_truncation(max_length=4)
    assert [e.ids for e in backend.encode_batch(sentences, add_special_tokens=False)] != own
    assert SentenceEncoder(backend).ids(sentences) == own
    assert len(own[1]) > 4


# --- evaluation's tokenizer class (`tokenizer_class(path, use_only=True)`) ------------------------------------------

_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cafe", "café", "##s", "un", "##able", "is", "a",
          "中", "文", ",", ".", "!", "über", "uber", "hello", "world"]  # fmt: skip
_TEXTS = ["The Cafe is Unable.", "café über Über UBER", "中文 hello,world!", "tab\there\x00 and\u200b zero-width",
          "  ", "Hello WORLD the cafés"]  # fmt: skip


def _bert_folder(path, **flags):
    """A folder saved by BertTokenizer, with the vocab.txt that older folders (and MiniLM's) carry beside it."""
    from transformers import BertTokenizer

    BertTokenizer(vocab={t: i for i, t in enumerate(_VOCAB)}, **flags).save_pretrained(str(path))
    (path / "vocab.txt").write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"do_lower_case": False},
        {"strip_accents": True},
        {"do_lower_case": True, "strip_accents": False},
        {"tokenize_chinese_chars": False},
    ],  # fmt: skip
    ids=["defaults", "cased", "strip-accents", "keep-accents", "no-chinese-split"],
)
def test_eval_reads_tokenizer_json_as_bert_tokenizer_builds_it(tmp_path, flags):
    """A folder saved by BertTokenizer passes `holds_bert_pipeline`; evaluation's generic fast class then has
    BertTokenizer's very backend (every part, serialised) and gives its ids, segments and offsets."""
    from transformers import BertTokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    from bertcli.tokenizer import holds_bert_pipeline, tokenizer_class

    folder = _bert_folder(tmp_path / "tok", **flags)
    assert holds_bert_pipeline(folder, json.loads((folder / "tokenizer_config.json").read_text()))
    assert tokenizer_class(folder) is BertTokenizer  # what training loads (and saves) stays BertTokenizer
    generic_class = tokenizer_class(folder, use_only=True)
    assert issubclass(generic_class, TokenizersBackend) and not issubclass(generic_class, BertTokenizer)
    bert, generic = BertTokenizer.from_pretrained(str(folder)), generic_class.from_pretrained(str(folder))
    assert json.loads(generic.backend_tokenizer.to_str()) == json.loads(bert.backend_tokenizer.to_str())
    for pair in (None, _TEXTS[::-1]):
        kwargs = {"truncation": True, "max_length": 8, "return_offsets_mapping": True}
        assert generic(_TEXTS, pair, **kwargs) == bert(_TEXTS, pair, **kwargs)
    assert generic.pad_token_id == bert.pad_token_id == 0 and generic.cls_token == "[CLS]"


def _edit(folder, change):
    doc = json.loads((folder / "tokenizer.json").read_text())
    change(doc)
    (folder / "tokenizer.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["normalizer"].update(lowercase=False),  # disagrees with do_lower_case
        lambda doc: doc["model"].update(max_input_chars_per_word=50),
        lambda doc: doc["added_tokens"].append(
            {
                "id": 21,
                "content": "world",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": True,
                "special": False,
            }
        ),
        lambda doc: doc.update(post_processor=None),
        "vocab.txt",
    ],
    ids=["normalizer", "wordpiece", "added-token", "post-processor", "vocab-order"],
)
def test_a_tokenizer_json_unlike_bert_tokenizers_keeps_bert_tokenizer(tmp_path, change):
    from transformers import BertTokenizer

    from bertcli.tokenizer import tokenizer_class

    folder = _bert_folder(tmp_path / "tok")
    if change == "vocab.txt":
        lines = (folder / "vocab.txt").read_text().splitlines()
        (folder / "vocab.txt").write_text("\n".join([*lines[:5], *reversed(lines[5:])]) + "\n")
    else:
        _edit(folder, change)
    assert tokenizer_class(folder, use_only=True) is BertTokenizer


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"do_lower_case": False},
        {"strip_accents": True},
        {"tokenize_chinese_chars": False},
        {"truncation_side": "left"},
    ],  # fmt: skip
    ids=["defaults", "cased", "strip-accents", "no-chinese-split", "truncate-left"],
)
def test_the_light_eval_tokenizer_answers_every_call_of_classification_and_multiple_choice_as_bert_tokenizer(
    tmp_path, flags
):
    """`JsonBertTokenizer` (tokenizers alone, no transformers) against BertTokenizer, call for call: the ids,
    segments, masks and offsets of texts and pairs, with and without special tokens, under each truncation
    strategy those families use, one text or a batch; the special tokens, vocabulary and counts."""
    from transformers import BertTokenizer

    from bertcli.tokenizer import JsonBertTokenizer, tokenizer_class

    folder = _bert_folder(tmp_path / "tok", **flags)
    assert tokenizer_class(folder, use_only=True, light=True) is JsonBertTokenizer
    assert tokenizer_class(folder, light=True) is BertTokenizer  # training's tokenizer is saved: never the light one
    bert, light = BertTokenizer.from_pretrained(str(folder)), JsonBertTokenizer.from_pretrained(str(folder))
    pairs = _TEXTS[::-1]
    calls = [
        ((_TEXTS, None), {"truncation": False, "max_length": None, "return_attention_mask": False,
                          "return_token_type_ids": True, "verbose": False}),  # classification, then the long ones
        ((_TEXTS, pairs), {"truncation": "longest_first", "max_length": 7, "return_attention_mask": False,
                           "return_token_type_ids": True, "verbose": False}),
        ((_TEXTS, None), {"truncation": "longest_first", "max_length": 5}),
        ((_TEXTS, None), {"add_special_tokens": False, "return_offsets_mapping": True}),  # multiple choice's blanks
        (([_TEXTS[0], _TEXTS[5]], ["world", "the cafe"]), {"truncation": "only_first", "max_length": 7,
                                                          "return_token_type_ids": True}),  # the choices' pairs
        ((_TEXTS, pairs), {"truncation": "only_first", "max_length": 9}),  # a first text too short: both raise
        ((_TEXTS[0], _TEXTS[1]), {"truncation": True, "max_length": 6, "return_offsets_mapping": True}),
    ]  # fmt: skip
    for args, kwargs in calls:
        try:
            expected = dict(bert(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - the same call must fail alike
            with pytest.raises(type(err)):
                light(*args, **kwargs)
            continue
        assert light(*args, **kwargs) == expected, kwargs
    assert len(light) == len(bert) and light.get_vocab() == bert.get_vocab()
    for name in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        assert (getattr(light, name), getattr(light, f"{name}_id")) == (
            getattr(bert, name),
            getattr(bert, f"{name}_id"),
        )
    assert light.convert_tokens_to_ids("[MASK]") == bert.convert_tokens_to_ids("[MASK]") == 4
    assert light.convert_tokens_to_ids(["cafe", "nope"]) == bert.convert_tokens_to_ids(["cafe", "nope"])
    assert light.num_special_tokens_to_add(pair=True) == bert.num_special_tokens_to_add(pair=True) == 3
    assert light.truncation_side == bert.truncation_side == flags.get("truncation_side", "right")
