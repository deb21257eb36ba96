"""Train or load a WordPiece tokenizer; always handed on as a transformers fast tokenizer.

The trained tokenizer is BERT's: the Bert normalizer (clean text, optional lower-casing and accent stripping,
spaces around CJK characters so each is one token), the Bert pre-tokenizer (whitespace and punctuation), a
WordPiece model with ``##`` continuation pieces ("playing" -> "play", "##ing"), and a post-processor that builds
``[CLS] A [SEP] B [SEP]`` with segment (token type) ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from itertools import chain
from pathlib import Path

import numpy as np

from bertcli.errors import UsageError
from bertcli.files import why_missing
from bertcli.schema.tokenize import TokenizerSection

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, in this order


WORD_START = "\u2581"  # "▁", marks the first piece of a word while training


def train_tokenizer(texts: Iterator[list[str]], cfg: TokenizerSection, max_length: int):
    """Train a WordPiece vocabulary on batches of sentences; return a transformers ``BertTokenizer`` (fast).

    The same algorithm as tokenizers' WordPieceTrainer (byte-pair merges, continuation pieces marked ``##``), made
    deterministic: that trainer numbers ``##`` pieces in hash-map order and breaks ties between merges by those
    numbers, so two runs on the same text give different vocabularies (huggingface/tokenizers#1794). Here the BPE
    trainer runs without a continuation prefix, with word starts marked by "▁" instead, so every initial symbol is
    a character of the sorted alphabet; the vocabulary is then written in WordPiece form ("▁play" -> "play",
    "ing" -> "##ing").
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=cfg.split_cjk,
        strip_accents=cfg.strip_accents,  # None: follow lowercase, as in BERT
        lowercase=cfg.lowercase,
    )
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.BertPreTokenizer(),
            pre_tokenizers.Metaspace(WORD_START, prepend_scheme="always", split=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size + cfg.limit_alphabet + 1,  # room for both forms of each character; cut below
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        limit_alphabet=cfg.limit_alphabet + 1,  # + the word-start mark
        show_progress=True,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    vocab = _wordpiece_vocab(sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]), cfg.vocab_size)
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizer
    return _as_bert_tokenizer(backend, cfg.lowercase, max_length)


def _wordpiece_vocab(bpe_vocab: list[tuple[str, int]], vocab_size: int) -> dict[str, int]:
    """Special tokens, then every character both as a word start and as a ``##`` piece (so no word is lost to
    [UNK] for want of one character), then the merged pieces in the order they were learned, up to `vocab_size`."""
    learned = [token for token, _ in bpe_vocab if token not in SPECIAL_TOKENS and token != WORD_START]
    chars = sorted({token.lstrip(WORD_START) for token in learned if len(token.lstrip(WORD_START)) == 1})
    minimum = len(SPECIAL_TOKENS) + 2 * len(chars)
    if minimum > vocab_size:
        raise UsageError(
            f"tokenizer.vocab_size {vocab_size} is smaller than the corpus alphabet plus the 5 special tokens "
            f"({len(chars)} characters, each as a word start and as a ## piece: {minimum} tokens needed); "
            "raise tokenizer.vocab_size or lower tokenizer.limit_alphabet"
        )
    pieces = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    pieces += [t[1:] if t.startswith(WORD_START) else f"##{t}" for t in learned if len(t.lstrip(WORD_START)) > 1]
    vocab: dict[str, int] = {}
    for piece in pieces:
        if len(vocab) == vocab_size:
            break
        vocab.setdefault(piece, len(vocab))
    return vocab


def _as_bert_tokenizer(backend, lowercase: bool, max_length: int):
    """Add BERT's pre-tokenizer, decoder and ``[CLS] A [SEP] B [SEP]`` template; wrap for transformers."""
    from tokenizers import decoders, pre_tokenizers, processors
    from transformers import BertTokenizer  # the tokenizers-backed class in transformers v5

    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizer(
        tokenizer_object=backend,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=lowercase,
        model_max_length=max_length,
    )


def load_tokenizer(path: str | Path):
    """Load a tokenizer folder (AutoTokenizer layout) from local files; it must be a fast BERT-style tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"tokenizer folder {path} {why_missing(path)}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise UsageError(
            f"{path} is not a tokenizer folder (no tokenizer.json or vocab.txt); give a folder saved with "
            "save_pretrained, or leave tokenizer.path empty to train one"
        )
    try:
        tok = tokenizer_class(path).from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types here; the message is what matters
        raise UsageError(f"{path}: could not load the tokenizer ({type(e).__name__}: {e})") from None
    missing = [name for name in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tok, name) is None]
    if missing or not getattr(tok, "is_fast", False):
        raise UsageError(
            f"{path}: a BERT tokenizer needs a fast tokenizer with [CLS], [SEP], [MASK] and [PAD] "
            f"(missing: {', '.join(missing) or 'fast backend'})"
        )
    return tok


def tokenizer_class(path: Path, use_only: bool = False, light: bool = False):
    """AutoTokenizer, or the class it would pick when the folder names BERT's: that import skips torch (a second
    of start-up that tokenizing does not need). use_only: the tokenizer is used, never saved (evaluation); where
    the folder's tokenizer.json is exactly what BertTokenizer builds (`holds_bert_pipeline`), transformers' generic
    fast class, which reads tokenizer.json as it is and tokenizes the same: importing it skips transformers' scan
    of its model folders (`import transformers.models` reads every model's source, about 0.4 s). light (with
    use_only): the caller needs only `JsonBertTokenizer`'s calls, which then replaces that class, and transformers
    is not imported at all (`import transformers` alone is 0.45 s of an eval of 2.9 s)."""
    config = _tokenizer_config(path)
    named = config.get("tokenizer_class")
    if named in ("BertTokenizer", "BertTokenizerFast"):  # v5 has one BERT class; BertTokenizerFast is its old name
        if use_only and holds_bert_pipeline(path, config):
            return JsonBertTokenizer if light else _bert_json_tokenizer()
        from transformers import BertTokenizer

        return BertTokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer


@cache
def _bert_json_tokenizer():
    """transformers' generic fast tokenizer with BertTokenizer's model inputs (the generic class leaves
    token_type_ids out, and a pair's second segment with them)."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    class BertJsonTokenizer(TokenizersBackend):
        model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # BertTokenizer's

    return BertJsonTokenizer


# transformers' names of BERT's special tokens, with BertTokenizer's defaults
SPECIAL_ROLES = (("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"), ("cls_token", "[CLS]"),
                 ("mask_token", "[MASK]"))  # fmt: skip


class JsonBertTokenizer:
    """A BERT folder's tokenizer.json on `tokenizers` alone, with the part of transformers' fast-tokenizer API that
    the evaluation of classification and multiple choice calls (tagging's and QA's pad with transformers'
    collators, so transformers is imported there anyway): `__call__` over texts or pairs (truncation strategies,
    offsets), the special tokens and their ids, `len`, `get_vocab`, `convert_tokens_to_ids`,
    `num_special_tokens_to_add`. Each call sets the backend's truncation as transformers' fast tokenizers do before
    the same `encode_batch`, so the ids, segments and offsets are theirs (tests/unit/test_tokenizer.py compares
    every call those families make). Only for folders that `holds_bert_pipeline` (`tokenizer_class(light=True)`)."""

    is_fast = True

    def __init__(self, backend, config: dict):
        self.backend_tokenizer = backend
        backend.no_padding()
        backend.no_truncation()
        self.truncation_side = config.get("truncation_side") or "right"
        self._vocab = backend.get_vocab(with_added_tokens=True)
        for name, default in SPECIAL_ROLES:
            token = str(config.get(name) or default)
            setattr(self, name, token)
            setattr(self, f"{name}_id", self._vocab.get(token))

    @classmethod
    def from_pretrained(cls, path, local_files_only: bool = True, **options) -> JsonBertTokenizer:
        """The folder's tokenizer.json and tokenizer_config.json (options such as add_prefix_space: BERT's
        pre-tokenizer has none)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(Path(path) / "tokenizer.json")), _tokenizer_config(Path(path)))

    def __len__(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._vocab.get(tokens, self.unk_token_id)
        return [self._vocab.get(t, self.unk_token_id) for t in tokens]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend_tokenizer.num_special_tokens_to_add(pair)

    def __call__(self, text, text_pair=None, *, add_special_tokens: bool = True, truncation=False,
                 max_length: int | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_offsets_mapping: bool = False,
                 verbose: bool = True) -> dict[str, list]:  # fmt: skip
        """transformers' `tokenizer(text, text_pair, ...)` with padding=False: a string gives lists of ids, a list
        of strings a list of them."""
        del verbose  # lengths above the model's are the caller's to count
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        if text_pair is not None:
            texts = list(zip(texts, text_pair if batched else [text_pair]))
        strategy = "longest_first" if truncation is True else truncation
        if strategy and strategy != "do_not_truncate":
            if max_length is None:
                raise ValueError("truncation needs max_length")
            self.backend_tokenizer.enable_truncation(max_length, strategy=strategy, direction=self.truncation_side)
        else:
            self.backend_tokenizer.no_truncation()
        encodings = self.backend_tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids is not False:  # BERT's model inputs: asked for unless refused
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask is not False:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return out if batched else {k: v[0] for k, v in out.items()}


def _tokenizer_config(path: Path) -> dict:
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def holds_bert_pipeline(path: Path, config: dict) -> bool:
    """Whether `path`/tokenizer.json is what transformers' BertTokenizer builds from tokenizer_config.json's flags
    (do_lower_case, strip_accents, tokenize_chinese_chars, the special tokens) and its vocabulary: the same
    normalizer, pre-tokenizer, WordPiece model, post-processor and decoder, vocab.txt (if any) the same tokens in
    the same order, and no added tokens but the special ones. BertTokenizer rebuilds those parts from the flags and
    ignores tokenizer.json's; a folder where the two disagree (an edited tokenizer.json) keeps BertTokenizer.
    tests/unit/test_tokenizer.py checks that a folder passing this tokenizes as BertTokenizer does, part for part."""
    from tokenizers import decoders, normalizers, pre_tokenizers, processors

    try:
        doc = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        model, added = doc["model"], doc.get("added_tokens") or []
        vocab = model["vocab"]
        special = {k: str(config.get(k) or default) for k, default in SPECIAL_ROLES}
        cls, sep = special["cls_token"], special["sep_token"]
        expected = {
            "normalizer": normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=config.get("tokenize_chinese_chars", True),
                strip_accents=config.get("strip_accents"),
                lowercase=config.get("do_lower_case", True),
            ),
            "pre_tokenizer": pre_tokenizers.BertPreTokenizer(),
            "decoder": decoders.WordPiece(prefix="##"),
            "post_processor": processors.TemplateProcessing(
                single=f"{cls}:0 $A:0 {sep}:0",
                pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
            ),
        }
        if any(doc.get(key) != json.loads(part.__getstate__()) for key, part in expected.items()):
            return False
        wordpiece = {"type": "WordPiece", "unk_token": special["unk_token"], "continuing_subword_prefix": "##",
                     "max_input_chars_per_word": 100}  # fmt: skip
        if {k: v for k, v in model.items() if k != "vocab"} != wordpiece:
            return False
        if any(not a.get("special") or a.get("content") not in special.values() for a in added):
            return False
        listed = path / "vocab.txt"
        if listed.is_file():
            tokens = listed.read_text(encoding="utf-8").split("\n")
            tokens = tokens[:-1] if tokens and tokens[-1] == "" else tokens
            if len(tokens) != len(vocab) or any(vocab.get(t) != i for i, t in enumerate(tokens)):
                return False
    except Exception:  # an unreadable or unexpected part: BertTokenizer decides, as without this check
        return False
    return True


# What BertNormalizer's clean_text does to ASCII: control characters dropped, tab, newline and CR made spaces.
_ASCII_CLEAN = str.maketrans(
    {**{chr(c): None for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}, "\t": " ", "\n": " ", "\r": " "}
)


class SentenceEncoder:
    """Token ids of sentences, without special tokens, exactly as the tokenizer gives them; twice as fast on ASCII.

    tokenizers' BertNormalizer keeps the alignment of every character with the original text through each of its
    steps, and that bookkeeping is about half of the encode time; tokenize never reads offsets. On ASCII text the
    normaliser only drops control characters, turns tab, newline and CR into spaces and lower-cases, which Python's
    string methods do in a fraction of the time. So ASCII sentences are normalised here and encoded by a copy of
    the tokenizer without its normaliser. Every other sentence, any that could hold an added token such as [MASK],
    and every sentence of a tokenizer without a BertNormalizer go through the tokenizer as it is. The ids are the
    same either way: tests/unit/test_tokenizer.py compares them for every ASCII character.

    Built once and handed to the worker processes (it pickles as the tokenizers' JSON).
    """

    def __init__(self, backend):
        """`backend`: a `tokenizers.Tokenizer` (a transformers fast tokenizer's ``backend_tokenizer``)."""
        from tokenizers import Tokenizer, normalizers

        self.full = Tokenizer.from_str(backend.to_str())
        self.full.no_padding()  # lengths must be the sentences' own: no padding, and long ones are cut by the caller
        self.full.no_truncation()
        self.plain = self.added = None
        norm = backend.normalizer
        added = [token.content for token in backend.get_added_tokens_decoder().values()]
        if isinstance(norm, normalizers.BertNormalizer) and all(t.isascii() and t.isprintable() for t in added):
            self.plain = Tokenizer.from_str(self.full.to_str())
            self.plain.normalizer = None
            self.clean_text, self.lowercase = norm.clean_text, norm.lowercase
            if added:  # matched without regard to case: a sentence holding one, in any case, takes the full path
                self.added = re.compile("|".join(map(re.escape, added)), re.IGNORECASE)

    def _bert_normalized(self, sentence: str) -> str:
        """BertNormalizer's output for an ASCII sentence (CJK spacing and accent stripping do nothing to ASCII)."""
        if self.clean_text and not sentence.isprintable():  # in ASCII: a control character (below 0x20, or 0x7f)
            sentence = sentence.translate(_ASCII_CLEAN)
        return sentence.lower() if self.lowercase else sentence

    def ids(self, sentences: list[str], offsets: dict[int, list] | None = None) -> list[list[int]]:
        """The ids of each sentence, in order: at most two batch calls into the Rust backend. Given a dict,
        `offsets` receives the (start, end) characters of the tokens of every sentence that is not plain ASCII,
        by its index (what word segmentation needs; ASCII sentences hold no CJK character)."""
        if self.plain is None:
            return self._full_ids(list(range(len(sentences))), sentences, [[]] * len(sentences), offsets)
        short, short_text, full, full_text = [], [], [], []
        for i, sentence in enumerate(sentences):
            if sentence.isascii():
                normalized = self._bert_normalized(sentence)
                if self.added is None or not self.added.search(normalized):
                    short.append(i)
                    short_text.append(normalized)
                    continue
            full.append(i)
            full_text.append(sentence)
        out: list[list[int]] = [[]] * len(sentences)
        for i, e in zip(short, self.plain.encode_batch_fast(short_text, add_special_tokens=False)):
            out[i] = e.ids
        return self._full_ids(full, full_text, out, offsets)

    def _full_ids(self, where: list[int], texts: list[str], out: list[list[int]], offsets: dict | None):
        """Encode `texts` with the whole tokenizer into out[where]; with offsets only when they are asked for
        (tracking them costs time)."""
        encode = self.full.encode_batch_fast if offsets is None else self.full.encode_batch
        for i, e in zip(where, encode(texts, add_special_tokens=False)):
            out[i] = e.ids
            if offsets is not None:
                offsets[i] = e.offsets
        return out


def encode_documents(
    encoder: SentenceEncoder, documents: list[list[str]], offsets: dict[int, list] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """WordPiece ids of every sentence of every document, without special tokens: the ids of all sentences end to
    end (int32) and the length of each sentence (int64; 0 for a sentence that normalisation empties). `offsets`:
    as `SentenceEncoder.ids`, by the sentence's index among all of them."""
    ids = encoder.ids([s for doc in documents for s in doc], offsets)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    values = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    return values, lengths
