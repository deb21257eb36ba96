"""Whole-word masking as BERT defines it: whole words chosen, then 80/10/10 per token; Chinese words from a
segmenter (rjieba), English words from WordPiece's ## pieces; word boundaries carried from tokenize to pretrain."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from bertcli.errors import UsageError
from bertcli.masking import IGNORE_INDEX, WORD_STARTS, PretrainingCollator, masking_columns

# A fixed segmentation: the test decides what a word is, the collator must follow it.
WORDS = ["我", "喜欢", "自然", "语言", "处理", "北京大学", "天气", "很", "好", "今天", "学习", "中文", "的", "们", "在"]
WORDS += ["北京"]
CHARS = sorted({c for w in WORDS for c in w})


@pytest.fixture(scope="module")
def zh_tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS, "play", "##ing", "##s", "word"]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(tmp_path_factory.mktemp("zh-tok")))
    return tok


def _rows(tok, n: int, seed: int = 0) -> list[tuple[dict, list[list[int]]]]:
    """Rows [CLS] A [SEP] B [SEP] of random words, with word_starts from the fixed segmentation; each with the
    positions of its words."""
    vocab, rng = tok.get_vocab(), random.Random(seed)
    out = []
    for index in range(n):
        ids, starts, special, segment, words = [vocab["[CLS]"]], [1], [1], [0], []
        for seg in (0, 1):
            for _ in range(rng.randint(8, 20)):
                word = rng.choice(WORDS)
                words.append(list(range(len(ids), len(ids) + len(word))))
                ids += [vocab[c] for c in word]
                starts += [1] + [0] * (len(word) - 1)
                special += [0] * len(word)
                segment += [seg] * len(word)
            ids, starts, special, segment = ids + [vocab["[SEP]"]], starts + [1], special + [1], segment + [seg]
        row = {"input_ids": ids, "token_type_ids": segment, "special_tokens_mask": special, WORD_STARTS: starts}
        out.append(({**row, "next_sentence_label": 0, "mask_key": (0, index)}, words))
    return out


def _masked(collator, rows):
    return [collator([row]) for row in rows]


def test_every_character_of_a_chosen_chinese_word_is_chosen_with_it(zh_tokenizer):
    collator = PretrainingCollator(zh_tokenizer, seed=5, whole_word_mask=True)
    partial = chosen_words = 0
    for row, words in _rows(zh_tokenizer, 300):
        picked = (collator([row])["labels"][0] != IGNORE_INDEX).tolist()
        for word in words:
            flags = {picked[k] for k in word}
            partial += len(flags) > 1
            chosen_words += flags == {True}
        assert not any(picked[k] for k, s in enumerate(row["special_tokens_mask"]) if s)
    assert chosen_words > 1000
    assert partial == 0, f"{partial} words were chosen in part"


def test_share_chosen_and_80_10_10_split_per_token(zh_tokenizer):
    collator = PretrainingCollator(zh_tokenizer, seed=11, whole_word_mask=True, mlm_probability=0.15)
    eligible = chosen = as_mask = kept = as_random = 0
    mask_id = zh_tokenizer.mask_token_id
    for row, _ in _rows(zh_tokenizer, 2000, seed=1):
        batch = collator([row])
        source = torch.tensor(row["input_ids"])
        ids, picked = batch["input_ids"][0], batch["labels"][0] != IGNORE_INDEX
        assert torch.equal(batch["labels"][0][picked], source[picked])
        assert torch.equal(ids[~picked], source[~picked]), "a token that was not chosen changed"
        eligible += len(source) - sum(row["special_tokens_mask"])
        chosen += int(picked.sum())
        as_mask += int((ids[picked] == mask_id).sum())
        kept += int((ids[picked] == source[picked]).sum())
        as_random += int(((ids[picked] != mask_id) & (ids[picked] != source[picked])).sum())
    assert eligible > 50000
    assert abs(chosen / eligible - 0.15) < 0.02
    assert abs(as_mask / chosen - 0.8) < 0.02
    # a random draw can give the original token back (1 in len(vocab), here ~3%): counted as kept
    assert abs(as_random / chosen - 0.1) < 0.03
    assert abs(kept / chosen - 0.1) < 0.03


def test_whole_word_masks_depend_on_the_key_only(zh_tokenizer):
    collator = PretrainingCollator(zh_tokenizer, seed=2, whole_word_mask=True)
    rows = [row for row, _ in _rows(zh_tokenizer, 6)]
    alone, together = collator([rows[3]]), collator(rows)
    n = len(rows[3]["input_ids"])
    assert torch.equal(alone["input_ids"][0], together["input_ids"][3][:n])
    assert torch.equal(alone["labels"][0], together["labels"][3][:n])
    again = PretrainingCollator(zh_tokenizer, seed=2, whole_word_mask=True)([rows[3]])
    assert torch.equal(alone["input_ids"], again["input_ids"])
    assert not torch.equal(alone["labels"], collator([{**rows[3], "mask_key": (1, 3)}])["labels"])


def test_english_pieces_go_with_their_word_with_or_without_a_word_starts_column(zh_tokenizer):
    vocab = zh_tokenizer.get_vocab()
    body = [vocab["play"], vocab["##ing"], vocab["word"], vocab["##s"]] * 10
    row = {
        "input_ids": [2, *body, 3],
        "token_type_ids": [0] * (len(body) + 2),
        "special_tokens_mask": [1] + [0] * len(body) + [1],
        "next_sentence_label": 0,
    }
    collator = PretrainingCollator(zh_tokenizer, seed=0, whole_word_mask=True, mlm_probability=0.3)
    for index in range(100):
        old = collator([{**row, "mask_key": (0, index)}])  # data tokenized before word_starts: from ## pieces
        starts = [1] + [int(k % 2 == 0) for k in range(len(body))] + [1]
        new = collator([{**row, WORD_STARTS: starts, "mask_key": (0, index)}])
        assert torch.equal(old["labels"], new["labels"])
        picked = old["labels"][0] != IGNORE_INDEX
        assert picked.any() and torch.equal(picked[1:-1:2], picked[2:-1:2])


def test_segmenter_groups_chinese_characters_and_keeps_english_pieces(zh_tokenizer):
    from bertcli.tokenizer import SentenceEncoder, encode_documents
    from bertcli.words import WordBoundaries, group_words

    sentences = ["我喜欢playing自然语言", "我们在北京学习中文", "plays word"]
    encoder = SentenceEncoder(zh_tokenizer.backend_tokenizer)
    words = {}
    for segmenter in ("jieba", None):
        offsets: dict = {}
        values, lengths = encode_documents(encoder, [sentences], offsets)
        flags = WordBoundaries(zh_tokenizer.backend_tokenizer, segmenter)(sentences, values, lengths, offsets)
        tokens = zh_tokenizer.convert_ids_to_tokens(values.tolist())
        words[segmenter] = ["".join(w) for w in group_words(tokens, flags.tolist())]
    assert {"我", "喜欢", "play##ing", "我们", "北京", "学习", "中文", "play##s", "word"} <= set(words["jieba"])
    assert words[None] == ["我", "喜", "欢", "play##ing", *"自然语言我们在北京学习中文", "play##s", "word"]


def test_segment_words_auto_means_jieba_for_chinese_only():
    from bertcli.words import segmenter_for

    assert segmenter_for("auto", "zh") == segmenter_for("auto", "zh-TW") == "jieba"
    assert segmenter_for("auto", "en") is None and segmenter_for("none", "zh") is None
    assert segmenter_for("jieba", "en") == "jieba"


def test_missing_segmenter_is_a_one_line_error(monkeypatch):
    from bertcli.words import check_segmenter

    monkeypatch.setitem(sys.modules, "rjieba", None)  # import rjieba now raises ImportError
    with pytest.raises(UsageError) as err:
        check_segmenter("jieba", "auto")
    message = str(err.value)
    assert "\n" not in message and "bertcli[zh]" in message and "input.segment_words=none" in message
    check_segmenter(None, "auto")  # English needs nothing


def test_nsp_instances_carry_the_documents_word_starts():
    import pyarrow as pa
    from datasets import Dataset, Features, Sequence, Value

    from bertcli.nsp import build_nsp_batch

    rng = random.Random(0)
    docs, flags = [], []
    for d in range(12):  # token t of document d is d*1000+t, so every instance token names its place
        lengths = [rng.randint(3, 12) for _ in range(rng.randint(2, 6))]
        ids = [[d * 1000 + t for t in range(sum(lengths[:i]), sum(lengths[: i + 1]))] for i in range(len(lengths))]
        docs.append(ids)
        flags.append([[rng.randint(0, 1) for _ in s] for s in ids])
    features = Features({"ids": Sequence(Sequence(Value("int32"))), WORD_STARTS: Sequence(Sequence(Value("int8")))})
    stored = Dataset.from_dict({"ids": docs, WORD_STARTS: flags}, features=features)
    table = build_nsp_batch(
        pa.table({"row": pa.array(range(12))}), list(range(12)), documents=stored, split_rows=np.arange(12),
        seed=3, dupe_factor=2, max_seq_length=24, short_seq_prob=0.1, nsp_probability=0.5, cls_id=-1, sep_id=-2,
    )  # fmt: skip
    flat = {d * 1000 + t: f for d, doc in enumerate(flags) for t, f in enumerate(x for s in doc for x in s)}
    rows = table.to_pylist()
    assert len(rows) > 10
    for row in rows:
        ids, starts = row["input_ids"], row[WORD_STARTS]
        assert len(starts) == len(ids)
        for k, token in enumerate(ids):
            if token < 0 or ids[k - 1] < 0:  # special tokens and the first token of a segment start a word
                assert starts[k] == 1
            else:
                assert starts[k] == flat[token]


def test_pretrain_reads_word_starts_only_for_whole_word_masking_and_refuses_a_mix():
    from datasets import Dataset

    base = {"input_ids": [[2, 5, 3]], "token_type_ids": [[0, 0, 0]], "special_tokens_mask": [[1, 0, 1]]}
    base["next_sentence_label"] = [0]
    new, old = Dataset.from_dict({**base, WORD_STARTS: [[1, 1, 1]]}), Dataset.from_dict(base)
    assert WORD_STARTS in masking_columns([new, new], True, ["a", "b"])[0].column_names
    assert WORD_STARTS not in masking_columns([new, old], False, ["a", "b"])[0].column_names
    assert WORD_STARTS not in masking_columns([old], True, ["b"])[0].column_names  # words from ## pieces
    with pytest.raises(UsageError, match="^b: tokenized without word boundaries"):
        masking_columns([new, old], True, ["a", "b"])


def test_resume_with_chinese_whole_word_masking_ends_with_the_unbroken_runs_weights(tmp_path):
    import shutil

    from pretrain_fixtures import tiny_config
    from safetensors.torch import load_file

    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    rng = random.Random(0)
    text = "\n\n".join("。".join("".join(rng.choices(WORDS, k=rng.randint(4, 9))) for _ in range(5)) for _ in range(12))
    (tmp_path / "zh.txt").write_text(text + "\n", encoding="utf-8")
    run_tokenize(
        TokenizeConfig(
            input={"paths": [str(tmp_path / "zh.txt")], "format": "paragraphs", "language": "zh"},
            tokenizer={"vocab_size": 200, "min_frequency": 1},
            nsp={"max_seq_length": 48},
            split={"validation_fraction": 0.2},
            output={"dir": str(tmp_path / "tok")},
            run={"num_proc": 1},
        )
    )

    def config(out: str):
        cfg = tiny_config(tmp_path / "tok", tmp_path / out, data={"batch_size": 8}, max_steps=12, save_every=6,
                          eval_every=6, keep_last=5, eval_max_batches=None)  # fmt: skip
        return cfg.model_copy(update={"masking": cfg.masking.model_copy(update={"whole_word_mask": True})})

    run_pretrain(config("a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-12")
    run_pretrain(config("b"), resume=True)
    left, right = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("a", "b"))
    assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)
    evals = [[line for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
             for run in ("a", "b")]  # fmt: skip
    assert len(evals[0]) == 2 and evals[0] == evals[1]


def test_asking_for_offsets_changes_no_id(zh_tokenizer):
    from bertcli.tokenizer import SentenceEncoder

    sentences = ["我喜欢 playing", "plain ascii words", "", "北京大学的 WORDS", "Ünïcode wörd"]
    encoder = SentenceEncoder(zh_tokenizer.backend_tokenizer)
    offsets: dict = {}
    assert encoder.ids(sentences, offsets) == encoder.ids(sentences)
    assert sorted(offsets) == [0, 3, 4]  # the sentences that are not plain ASCII, which alone may hold CJK
    assert [sentences[0][s:e] for s, e in offsets[0]] == ["我", "喜", "欢", "play", "ing"]
