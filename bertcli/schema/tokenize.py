"""Config of `bertcli tokenize`, grouped by concern. Each field's description is its documentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bertcli.config import PATH, Section, Seed


class InputSection(Section):
    paths: list[str] = Field(
        default_factory=list,
        json_schema_extra=PATH,
        description="Files or globs of UTF-8 text, optionally .gz. Positional args set this.",
    )
    format: Literal["auto", "sentences", "paragraphs", "jsonl"] = Field(
        "auto",
        description="auto: per file, jsonl for .jsonl and .json (also .gz), else paragraphs when the file's lines "
        "average 300 characters or 3 sentences and more (one review or abstract per line), else sentences "
        "(stats.json input_formats says what was chosen); sentences: one sentence per line (BERT's layout); "
        "paragraphs: one paragraph per line, split into sentences; jsonl: one JSON document per line. Blank lines "
        "separate documents in the text formats.",
    )
    max_cut_share: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Stop with an error when cutting sentences longer than nsp.max_seq_length drops more than this "
        "share of the corpus's tokens (a file of paragraphs read as one sentence per line loses most of its "
        "text); nothing is written. 1: allow any cut.",
    )
    text_field: str = Field("text", description="jsonl only: the field holding the document's text.")
    language: str = Field(
        "en", description="Sentence-splitting rules (ISO 639-1, e.g. en, zh, de) for paragraphs and jsonl."
    )
    on_bad_bytes: Literal["error", "replace"] = Field(
        "error",
        description="error: stop at bytes that are not UTF-8; replace: substitute U+FFFD and count them.",
    )
    segment_words: Literal["auto", "jieba", "none"] = Field(
        "auto",
        description="Word boundaries stored with each instance (word_starts), which whole-word masking reads. "
        "English words are a token and its ## pieces. jieba: Chinese characters are grouped into words by jieba's "
        "dictionary (rjieba: pip install 'bertcli[zh]'), so 喜欢 is masked as one word; none: each Chinese "
        "character is its own word; auto: jieba when language is zh, else none.",
    )


class TokenizerSection(Section):
    path: str | None = Field(
        None,
        json_schema_extra=PATH,
        description="Reuse this tokenizer folder (AutoTokenizer layout) instead of training one.",
    )
    vocab_size: int = Field(30522, ge=16, le=1_000_000, description="Size of the trained WordPiece vocabulary.")
    min_frequency: int = Field(2, ge=1, description="A pair must appear this often to be merged into a token.")
    lowercase: bool = Field(True, description="Lower-case text (an 'uncased' model).")
    strip_accents: bool | None = Field(
        None, description="Remove accents (é -> e). null: follow `lowercase`, as BERT does."
    )
    split_cjk: bool = Field(True, description="Put spaces around CJK characters so each becomes its own token.")
    limit_alphabet: int = Field(
        1000,
        ge=1,
        description="At most this many distinct characters enter the initial alphabet (BERT: 1000).",
    )
    add_words: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="With `path`: how many of the corpus's most frequent words that the tokenizer splits into "
        "`add_words_min_pieces` or more pieces to append to its WordPiece vocabulary, one token each (stats.json "
        "lists them; `pretrain --init-from` grows the embeddings to match). Words the tokenizer maps to [UNK] are "
        "never proposed: stats.json unk_words_not_added counts them, with examples. 0: off.",
    )
    add_words_min_pieces: int = Field(
        3, ge=2, le=100, description="add_words: only words that the tokenizer splits into this many pieces or more."
    )
    add_words_min_count: int = Field(
        2, ge=1, description="add_words: only words that occur at least this many times in the corpus."
    )

    @model_validator(mode="after")
    def _add_words_need_path(self) -> TokenizerSection:
        if self.add_words and not self.path:
            raise ValueError(
                f"tokenizer.add_words={self.add_words} extends a given tokenizer: set tokenizer.path too, or "
                "leave add_words at 0 (a vocabulary trained on the corpus already holds its frequent words)"
            )
        return self


class NspSection(Section):
    max_seq_length: int = Field(128, ge=8, le=8192, description="Tokens per instance, [CLS] and two [SEP] included.")
    short_seq_prob: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Chance a document's target length is drawn shorter, to match fine-tuning.",
    )
    nsp_probability: float = Field(0.5, ge=0.0, le=1.0, description="Chance that B is a random segment.")
    dupe_factor: int = Field(
        1,
        ge=1,
        le=100,
        description="Passes over the corpus with different pairings (BERT: 10 with static masks; masks here "
        "are drawn anew each epoch, so 1 is usually enough).",
    )
    seed: Seed = Field(12345, description="Seed of the pairing; the output depends on it alone, not on num_proc.")


class SplitSection(Section):
    validation_fraction: float = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="Share of documents held out as the validation split (at least two, as in every split: NSP "
        "draws each random B from another document of the same split). 0: no validation split.",
    )
    seed: Seed = Field(0, description="Seed of the train/validation document split.")


class OutputSection(Section):
    dir: str = Field("runs/tokenize", json_schema_extra=PATH, description="Output directory (`--output` sets it).")


class RunSection(Section):
    num_proc: int = Field(2, ge=1, le=256, description="Worker processes for tokenization and pairing.")
    batch_size: int = Field(256, ge=1, description="Documents per worker batch.")


class TokenizeConfig(Section):
    input: InputSection = Field(default_factory=InputSection)
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    nsp: NspSection = Field(default_factory=NspSection)
    split: SplitSection = Field(default_factory=SplitSection)
    output: OutputSection = Field(default_factory=OutputSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _need_input(self) -> TokenizeConfig:
        if not self.input.paths:
            raise ValueError("no input: give files or globs as arguments or set input.paths")
        return self
