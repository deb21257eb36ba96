"""Word boundaries of tokenized text, for whole-word masking and the preview: which tokens start a word.

Whole-word masking chooses all the tokens of a word together. WordPiece marks the tokens that continue a word
with ``##`` ("playing" -> play ##ing), which is all that English needs. Chinese is written without spaces and
BERT makes every character its own token, so ``##`` says nothing there: a word segmenter decides which
characters make one word (喜欢 = 喜 + 欢), as Chinese-BERT-wwm does (Cui et al. 2019, with LTP).

The segmenter is jieba's dictionary and HMM through rjieba, the Python binding of jieba-rs. On
data/demo/corpus_zh.txt it gave the same words as jieba 0.42 at about 28 times the speed (6.0 against 0.21
million characters a second on one core), and its 4.6 MB wheel carries the dictionary, so it works offline. It is
optional (``pip install 'bertcli[zh]'``): English-only users do not need it.

A token starts a word unless it is a ``##`` piece, or a CJK character that the segmenter put inside a word.
Tokenize stores the result with every instance as ``word_starts`` (int8, aligned with input_ids).
"""

from __future__ import annotations

import re

import numpy as np

from bertcli.errors import UsageError

SEGMENTERS = ("jieba",)  # the values of input.segment_words besides auto and none
INSTALL = "pip install 'bertcli[zh]' (it installs rjieba)"

# The CJK ideographs that BertNormalizer puts spaces around (its _is_chinese_char), so each is one token.
_CJK_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2CEAF),
    (0x2F800, 0x2FA1F),
)
_CJK = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES) + "]")


def segmenter_for(choice: str, language: str) -> str | None:
    """The segmenter input.segment_words asks for: auto means jieba for Chinese (language zh, zh-TW, ...)."""
    if choice == "auto":
        return "jieba" if re.split(r"[-_]", language.lower())[0] == "zh" else None
    return None if choice == "none" else choice


def check_segmenter(name: str | None, choice: str) -> None:
    """A one-line error, before any work, when the segmenter asked for is not installed."""
    if name is None:
        return
    try:
        import rjieba  # noqa: F401
    except ImportError:
        how = "language zh" if choice == "auto" else f"input.segment_words={choice}"
        raise UsageError(
            f"Chinese word segmentation ({how}) needs the rjieba package, which is not installed: {INSTALL}; "
            "or set input.segment_words=none (each Chinese character is then its own word for whole-word masking)"
        ) from None


def continuation_table(backend) -> np.ndarray:
    """True for the vocabulary ids of tokens that continue a word (WordPiece's ``##`` pieces); `backend` is a
    `tokenizers.Tokenizer`."""
    prefix = getattr(backend.model, "continuing_subword_prefix", None) or "##"
    vocab = backend.get_vocab()
    table = np.zeros(max(vocab.values(), default=-1) + 1, dtype=bool)
    for token, index in vocab.items():
        table[index] = token.startswith(prefix)
    return table


class WordBoundaries:
    """Token ids (and, for text with CJK characters, the tokens' character offsets) -> word-start flags.

    Built once and handed to the worker processes: it pickles as a numpy table and the segmenter's name."""

    def __init__(self, backend, segmenter: str | None):
        self.continues = continuation_table(backend)
        self.segmenter = segmenter

    def needs_offsets(self) -> bool:
        return self.segmenter is not None

    def __call__(
        self, sentences: list[str], values: np.ndarray, lengths: np.ndarray, offsets: dict[int, list]
    ) -> np.ndarray:
        """int8 flags aligned with `values` (the ids of all `sentences` end to end, `lengths` tokens each);
        `offsets` holds the (start, end) characters of each token of the sentences that may contain CJK."""
        starts = ~self.continues[values]
        if self.segmenter is not None:
            firsts = np.cumsum(lengths) - lengths
            for i, spans in offsets.items():
                if spans and _CJK.search(sentences[i]):
                    begin = np.fromiter((s for s, _ in spans), dtype=np.int64, count=len(spans))
                    starts[firsts[i] : firsts[i] + len(spans)] &= segmented_starts(sentences[i])[begin]
        return starts.astype(np.int8)


def segmented_starts(text: str) -> np.ndarray:
    """Per character of `text` (and one past its end): False for a CJK character inside a segmenter word, True
    elsewhere. Other characters keep the tokenizer's own boundaries (spaces, punctuation and ##)."""
    import rjieba

    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    cjk = np.zeros(len(codes), dtype=bool)
    for lo, hi in _CJK_RANGES:
        cjk |= (codes >= lo) & (codes <= hi)
    starts = np.append(~cjk, True)
    starts[[begin for _, begin, _ in rjieba.tokenize(text)]] = True  # offsets in characters, as Python counts
    return starts


def group_words(tokens: list[str], word_starts) -> list[list[str]]:
    """Tokens grouped into words by their start flags (for the preview)."""
    words: list[list[str]] = []
    for token, start in zip(tokens, word_starts):
        if start or not words:
            words.append([token])
        else:
            words[-1].append(token)
    return words
