"""Tiny random encoders of other architectures than BERT, each saved with a tokenizer of its own kind built here
offline with the `tokenizers` library (no downloads), and tiny data files of every task family over one word list.

`save_encoder(folder, arch)`: a bare model (hidden 32, one layer) with vocab_size, pad and special-token ids taken
from its tokenizer, which is saved beside it in the model's own tokenizer class:
- WordPiece (BERT-like: DistilBERT, ELECTRA; MPNet's, with <s> </s> <pad> <mask> as all-mpnet-base-v2's);
- byte-level BPE (RoBERTa: <s> </s> <pad>; ModernBERT: byte-level BPE with [CLS]/[SEP] names, as its release);
- Unigram, SentencePiece-like (ALBERT, DeBERTa-v2).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

ARCHITECTURES = ("roberta", "distilbert", "electra", "albert", "deberta-v2", "modernbert", "mpnet")
WORDS = (
    "the a cat dog sat ran on mat film movie was is very quite this that it and good great fine lovely bad awful "
    "poor dull alice bob carol dave smith jones paris rome oslo london went to met in saw today with marker what "
    "follows red blue green gold pink gray park sun"
).split()
POSITIVE, NEGATIVE = WORDS[18:22], WORDS[22:26]
NAMES, PLACES = WORDS[26:30], WORDS[32:36]
COLOURS = ["red", "blue", "green", "gold", "pink", "gray"]
FILLER = WORDS[:18]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus_lines() -> list[str]:
    """Text the BPE and Unigram tokenizers are trained on: every word, in a few orders, with punctuation."""
    rng = random.Random(0)
    lines = [" ".join(WORDS), " ".join(reversed(WORDS)), "what follows the marker ? ."]
    lines += [" ".join(rng.sample(WORDS, 12)) + " ." for _ in range(60)]
    return lines


def wordpiece_backend():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate([*BERT_SPECIALS, *WORDS, "?", ".", "##s", "##ly", "##ing"])}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tk.decoder = decoders.WordPiece()
    return tk


def byte_bpe(specials: list[str]):
    """(vocab, merges) of a byte-level BPE trained on `corpus_lines`, `specials` first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tk.train_from_iterator(corpus_lines(), trainer)
    saved = json.loads(tk.to_str())["model"]
    return saved["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in saved["merges"]]


def unigram_pieces(specials: list[str]) -> list[tuple[str, float]]:
    """A Unigram vocabulary (piece, log-probability) with SentencePiece's ▁ word marker, `specials` first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)  # fmt: skip
    tk.train_from_iterator(corpus_lines(), trainer)
    return [tuple(p) for p in json.loads(tk.to_str())["model"]["vocab"]]


def build_tokenizer(arch: str):
    """The transformers tokenizer of `arch`, in its own class, over this module's words."""
    import transformers as t

    if arch in ("distilbert", "electra"):
        cls = t.DistilBertTokenizer if arch == "distilbert" else t.ElectraTokenizer
        return cls(tokenizer_object=wordpiece_backend())
    if arch == "mpnet":  # WordPiece with RoBERTa's special tokens, as all-mpnet-base-v2's
        specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
        return t.MPNetTokenizer(vocab={w: i for i, w in enumerate([*specials, *WORDS, "?", ".", "##s", "##ly"])})
    if arch == "roberta":
        vocab, merges = byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return t.RobertaTokenizer(vocab=vocab, merges=merges)
    if arch == "modernbert":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

        vocab, merges = byte_bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
        tk = Tokenizer(models.BPE(vocab, merges))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
        )
        return t.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", cls_token="[CLS]",
                                         sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]")  # fmt: skip
    pieces = unigram_pieces(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"])
    if arch == "albert":
        return t.AlbertTokenizer(vocab=pieces)
    return t.DebertaV2Tokenizer(vocab=pieces, unk_token="<unk>", pad_token="<pad>", unk_id=1)


def model_config(arch: str, tok):
    """A 1-layer, 32-wide config of `arch` for `tok`'s vocabulary and special tokens."""
    from transformers import AutoConfig

    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if arch == "distilbert":
        size = dict(dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    elif arch == "albert":
        size["embedding_size"] = 16
    elif arch == "modernbert":
        ids.update(cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                   eos_token_id=tok.sep_token_id)  # fmt: skip
    elif arch == "roberta":
        ids.update(bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, type_vocab_size=1)  # as released
    elif arch == "mpnet":
        ids.update(bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    after_pad = arch in ("roberta", "mpnet")  # they count positions from pad + 1
    positions = 64 + (tok.pad_token_id + 1 if after_pad else 0)
    return AutoConfig.for_model(arch, max_position_embeddings=positions, **size, **ids)


def save_encoder(folder: Path, arch: str, tok=None) -> Path:
    """A bare random `arch` model with its tokenizer (built unless given) in `folder`."""
    import torch
    from transformers import AutoModel

    tok = tok or build_tokenizer(arch)
    torch.manual_seed(0)
    AutoModel.from_config(model_config(arch, tok)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return Path(folder)


# --- tiny data of every family -------------------------------------------------------------------------------


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """A sentence-pair csv (premise, hypothesis, label): `same` when both halves hold a word of one sentiment."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice([POSITIVE, NEGATIVE]), rng.choice([POSITIVE, NEGATIVE])
        texts = [" ".join(rng.sample(FILLER, 3) + [rng.choice(words)]) for words in (a, b)]
        rows.append([*texts, "same" if a is b else "other"])
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["premise", "hypothesis", "label"], *rows])
    return Path(path)


def write_conll(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    blocks = []
    for _ in range(n):
        words = [(rng.choice(FILLER), "O") for _ in range(rng.randint(2, 5))]
        words.insert(rng.randint(0, len(words)), (rng.choice(PLACES), "B-LOC"))
        words.insert(rng.randint(0, len(words)), (rng.choice(NAMES), "B-PER"))
        blocks.append("\n".join(f"{w} {t}" for w, t in words))
    Path(path).write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return Path(path)


def write_squad(path: Path, n: int, seed: int) -> Path:
    """SQuAD v1.1 JSON: the answer is the colour after "marker"."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
        at, answer = rng.randint(0, len(words)), rng.choice(COLOURS)
        words[at:at] = ["marker", answer]
        start = len(" ".join(words[: at + 1])) + 1
        qas = [{"id": f"q{i}", "question": "what follows the marker ?",
                "answers": [{"text": answer, "answer_start": start}]}]  # fmt: skip
        paragraphs.append({"context": " ".join(words) + " .", "qas": qas})
    Path(path).write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return Path(path)


def write_swag(path: Path, n: int, seed: int) -> Path:
    """SWAG-layout csv, 4 endings: the right one holds a positive word."""
    rng = random.Random(seed)
    header = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
              "ending0", "ending1", "ending2", "ending3", "label"]  # fmt: skip
    rows = []
    for i in range(n):
        label = rng.randrange(4)
        endings = [" ".join([rng.choice(FILLER), rng.choice(POSITIVE if k == label else NEGATIVE)]) for k in range(4)]
        sent1, sent2 = " ".join(rng.sample(FILLER, 4)), rng.choice(FILLER)
        rows.append([i, f"v{i}", i, f"{sent1} {sent2}", sent1, sent2, "gold", *endings, label])
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return Path(path)
