"""Train or load a WordPiece tokenizer; always handed on as a transformers fast tokenizer.

The trained tokenizer is BERT's: the Bert normalizer (clean text, optional lower-casing and accent stripping,
spaces around CJK characters so each is one token), the Bert pre-tokenizer (whitespace and punctuation), a
WordPiece model with ``##`` continuation pieces ("playing" -> "play", "##ing"), and a post-processor that builds
``[CLS] A [SEP] B [SEP]`` with segment (token type) ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.schema.tokenize import TokenizerSection

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, in this order


def train_tokenizer(texts: Iterator[list[str]], cfg: TokenizerSection, max_length: int):
    """Train a WordPiece vocabulary on batches of sentences; return a transformers ``BertTokenizer`` (fast)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=cfg.split_cjk,
        strip_accents=cfg.strip_accents,  # None: follow lowercase, as in BERT
        lowercase=cfg.lowercase,
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        limit_alphabet=cfg.limit_alphabet,
        continuing_subword_prefix="##",
        show_progress=True,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    if backend.get_vocab_size() > cfg.vocab_size:
        raise UsageError(
            f"tokenizer.vocab_size {cfg.vocab_size} is smaller than the corpus alphabet plus the 5 special tokens "
            f"({backend.get_vocab_size()} tokens needed); raise tokenizer.vocab_size or lower tokenizer.limit_alphabet"
        )
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    from transformers import BertTokenizer  # the tokenizers-backed class in transformers v5

    return BertTokenizer(
        tokenizer_object=backend,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=cfg.lowercase,
        model_max_length=max_length,
    )


def load_tokenizer(path: str | Path):
    """Load a tokenizer folder (AutoTokenizer layout) from local files; it must be a fast BERT-style tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"tokenizer folder {path} does not exist")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise UsageError(
            f"{path} is not a tokenizer folder (no tokenizer.json or vocab.txt); give a folder saved with "
            "save_pretrained, or leave tokenizer.path empty to train one"
        )
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types here; the message is what matters
        raise UsageError(f"{path}: could not load the tokenizer ({type(e).__name__}: {e})") from None
    missing = [name for name in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tok, name) is None]
    if missing or not getattr(tok, "is_fast", False):
        raise UsageError(
            f"{path}: a BERT tokenizer needs a fast tokenizer with [CLS], [SEP], [MASK] and [PAD] "
            f"(missing: {', '.join(missing) or 'fast backend'})"
        )
    return tok


def encode_sentences(tok, sentences: list[str]) -> list[list[int]]:
    """WordPiece ids of each sentence, without special tokens, through the Rust backend in one batch call."""
    backend = tok.backend_tokenizer
    encodings = backend.encode_batch_fast(sentences, add_special_tokens=False)
    return [e.ids for e in encodings]
