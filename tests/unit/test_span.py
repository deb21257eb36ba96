"""Extractive QA: readers, windows and offsets, n-best post-processing and the official scripts' metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertcli.errors import UsageError
from bertcli.metrics.squad import (
    cmrc_exact,
    cmrc_f1,
    f1_score,
    find_best_threshold,
    mixed_segmentation,
    normalize_answer,
    squad_scores,
)
from bertcli.tasks.span import answers_from_logits, encode_qa, read_qa, span_metrics, span_task

WORDS = "the a cat sat on mat dog ran in park who what where did marker answer is blue red".split()


def tokenizer():
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ",", *WORDS, "##s"]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def squad_file(tmp_path, qas, context="The cat sat on the mat.", name="dev.json"):
    doc = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_squad_v1_reader_keeps_every_gold_answer(tmp_path):
    qas = [{"id": "q1", "question": "  Who sat?", "answers": [{"text": "The cat", "answer_start": 0},
                                                             {"text": "cat", "answer_start": 4}]}]  # fmt: skip
    ex = read_qa(span_task("squad"), squad_file(tmp_path, qas))
    assert ex.ids == ["q1"] and ex.questions == ["Who sat?"]  # leading blanks stripped, as run_qa.py does
    assert ex.answers == [[("The cat", 0), ("cat", 4)]]


def test_squad_v2_impossible_question_has_no_answer_and_needs_v2(tmp_path):
    qas = [{"id": "q2", "question": "Who ran?", "answers": [], "is_impossible": True,
            "plausible_answers": [{"text": "cat", "answer_start": 4}]}]  # fmt: skip
    path = squad_file(tmp_path, qas)
    assert read_qa(span_task("squad_v2"), path).answers == [[]]
    with pytest.raises(UsageError, match="q2 is_impossible.*squad_v2"):
        read_qa(span_task("squad"), path)


def test_cmrc2018_chinese_and_jsonl_layouts(tmp_path):
    qas = [{"id": "DEV_0_QUERY_0", "question": "谁坐着？", "answers": [{"text": "小猫", "answer_start": 0}]}]
    ex = read_qa(span_task("cmrc2018"), squad_file(tmp_path, qas, context="小猫坐在垫子上。"))
    assert ex.answers == [[("小猫", 0)]]
    lines = [
        {"id": "a", "question": "Who?", "context": "The dog ran.", "answers": [{"text": "dog", "answer_start": 4}]},
        {"question": "Where?", "context": "In the park.", "answers": {"text": ["park"], "answer_start": [7]}},
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\r\n" for r in lines), encoding="utf-8")
    ex = read_qa(span_task("squad"), path)
    assert ex.ids == ["a", "2"] and ex.answers == [[("dog", 4)], [("park", 7)]]


def test_answer_start_that_misses_its_text_names_file_and_question(tmp_path):
    qas = [{"id": "q9", "question": "Who?", "answers": [{"text": "cat", "answer_start": 3}]}]
    path = squad_file(tmp_path, qas)
    with pytest.raises(UsageError) as err:
        read_qa(span_task("squad"), path)
    assert str(path) in str(err.value) and "q9" in str(err.value) and "at 4" in str(err.value)
    assert "\n" not in str(err.value)


def examples_for(tmp_path, context, answer, question="where is the answer?"):
    start = context.index(answer)
    qas = [{"id": "q", "question": question, "answers": [{"text": answer, "answer_start": start}]}]
    return read_qa(span_task("squad"), squad_file(tmp_path, qas, context=context))


def test_windows_overlap_and_an_answer_at_a_window_edge(tmp_path):
    tok = tokenizer()
    context = " ".join(["cat"] * 10 + ["blue"] + ["dog"] * 10)
    ex = examples_for(tmp_path, context, "blue")
    spec = span_task("squad", doc_stride=4)
    feats = encode_qa(tok, ex, spec, 16)  # question: 5 pieces + 3 specials -> 8 context pieces per window
    assert len(feats) > 2 and all(len(ids) <= 16 for ids in feats.input_ids)
    holding = [f for f in range(len(feats)) if feats.starts[f] != 0]
    assert holding, "some window holds the answer"
    for f in range(len(feats)):
        ctx = [o for o in feats.offsets[f] if o is not None]
        inside = ctx[0][0] <= context.index("blue") and ctx[-1][1] >= context.index("blue") + 4
        assert (f in holding) == inside  # a window without the whole answer points at [CLS]
        if f in holding:
            s, e = feats.starts[f], feats.ends[f]
            assert s == e and context[feats.offsets[f][s][0] : feats.offsets[f][e][1]] == "blue"
    # consecutive windows share doc_stride pieces
    a = [o for o in feats.offsets[0] if o is not None]
    b = [o for o in feats.offsets[1] if o is not None]
    assert a[-4:] == b[:4]


def test_answer_as_the_last_context_piece_of_a_window(tmp_path):
    context = "cat cat cat cat cat cat blue dog dog dog"
    ex = examples_for(tmp_path, context, "blue")
    feats = encode_qa(tokenizer(), ex, span_task("squad", doc_stride=2), 15)  # 7 context pieces: "blue" the 7th
    s, e = feats.starts[0], feats.ends[0]
    assert s == e != 0 and feats.offsets[0][e + 1] is None  # [SEP] follows it
    assert context[feats.offsets[0][s][0] : feats.offsets[0][e][1]] == "blue"


def test_answer_split_by_the_window_end_points_at_cls(tmp_path):
    tok = tokenizer()
    context = "cat cat cat cat cat cat blue red dog"
    ex = examples_for(tmp_path, context, "blue red")
    feats = encode_qa(tok, ex, span_task("squad", doc_stride=2), 15)  # 7 context pieces: "blue" last of window 1
    first = [o for o in feats.offsets[0] if o is not None]
    assert context[first[-1][0] : first[-1][1]] == "blue"
    assert (feats.starts[0], feats.ends[0]) == (0, 0)
    assert any(feats.starts[f] != 0 for f in range(1, len(feats)))


def test_doc_stride_not_below_max_seq_length_is_one_line(tmp_path):
    ex = examples_for(tmp_path, "the cat sat", "cat")
    with pytest.raises(UsageError, match="doc_stride 64 must be smaller than data.max_seq_length 64"):
        encode_qa(tokenizer(), ex, span_task("squad", doc_stride=64), 64)


def logits_for(feats, f, start, end, null=0.0):
    n = len(feats.input_ids[f])
    s, e = np.full(n, -5.0), np.full(n, -5.0)
    s[0] = e[0] = null / 2
    s[start], e[end] = 3.0, 3.0
    return s, e


def test_n_best_across_windows_takes_text_from_the_context(tmp_path):
    tok = tokenizer()
    context = " ".join(["cat"] * 10 + ["Blue,", "red"] + ["dog"] * 10)
    ex = examples_for(tmp_path, context, "Blue, red")
    spec = span_task("squad", doc_stride=4)
    feats = encode_qa(tok, ex, spec, 16)
    f = next(f for f in range(len(feats)) if feats.starts[f] != 0)
    starts, ends = [], []
    for g in range(len(feats)):
        s, e = logits_for(feats, g, feats.starts[f], feats.ends[f]) if g == f else logits_for(feats, g, 1, 1)
        if g != f:
            s[:] = e[:] = -5.0
        starts.append(s)
        ends.append(e)
    answers = answers_from_logits(feats, starts, ends, ex, spec)
    assert answers.texts == {"q": "Blue, red"}  # original casing and punctuation, cut by offsets
    spec_short = span_task("squad", doc_stride=4, max_answer_length=1)
    assert answers_from_logits(feats, starts, ends, ex, spec_short).texts["q"] != "Blue, red"


def test_v2_null_answer_when_its_score_beats_the_span_by_the_threshold(tmp_path):
    tok = tokenizer()
    ex = examples_for(tmp_path, "the cat sat on the mat", "mat")
    feats = encode_qa(tok, ex, span_task("squad_v2", doc_stride=16), 64)
    s, e = logits_for(feats, 0, feats.starts[0], feats.ends[0], null=8.0)  # span 6.0, null 8.0
    assert answers_from_logits(feats, [s], [e], ex, span_task("squad_v2")).texts["q"] == ""
    assert (
        answers_from_logits(feats, [s], [e], ex, span_task("squad_v2", null_score_diff_threshold=2.5)).texts["q"]
        == "mat"
    )
    assert answers_from_logits(feats, [s], [e], ex, span_task("squad")).texts["q"] == "mat"  # v1: never null


def test_official_normalization_and_f1_by_hand():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple and a theory") == "apple and theory"  # 'the' inside 'theory' stays
    # pred "cat sat on mat" vs gold "the cat sat": common 2, p=2/4, r=2/2 -> f1=2/3
    assert f1_score("cat sat on mat", "the cat sat") == pytest.approx(2 / 3)
    assert f1_score("", "") == 0.0 and f1_score("", "", v2=True) == 1.0 and f1_score("a", "cat", v2=True) == 0.0
    refs = {"1": ["Denver Broncos", "Broncos"], "2": ["1990"], "3": ["blue sky"]}
    preds = {"1": "the Broncos", "2": "in 1990 .", "3": "red"}
    # 1: EM 1 (normalized equal to "Broncos"); 2: f1 2*(1/2)/(1.5)=2/3; 3: 0
    assert squad_scores(preds, refs) == pytest.approx({"exact_match": 1 / 3, "f1": (1 + 2 / 3) / 3, "total": 3})


def test_v2_splits_and_best_threshold_by_hand():
    refs = {"a": ["cat"], "b": [], "c": ["dog"]}
    scores = squad_scores({"a": "cat", "b": "", "c": ""}, refs, "squad_v2")
    assert scores["exact_match"] == pytest.approx(2 / 3) and scores["HasAns_exact"] == 0.5
    assert scores["NoAns_exact"] == 1.0 and scores["HasAns_total"] == 2 and scores["NoAns_total"] == 1
    # best non-null answers: a right, b wrong (unanswerable), c wrong; null diffs a -2, b 1, c 3
    spans, diffs = {"a": "cat", "b": "mat", "c": "cow"}, {"a": -2.0, "b": 1.0, "c": 3.0}
    exact = {"a": 1.0, "b": 0.0, "c": 0.0}
    best = find_best_threshold(spans, exact, exact, diffs, {"a": True, "b": False, "c": True})
    # thresholds: < -2 -> all null: 1/3; -2 -> a answered: 2/3; 1 -> b answered too: 1/3
    assert best["best_exact"] == pytest.approx(2 / 3) and best["best_exact_thresh"] == -2.0


def test_cmrc_character_f1_and_em_by_hand():
    assert mixed_segmentation("北京 is 2008年", rm_punc=False) == ["北", "京", "is", "2008", "年"]
    assert cmrc_exact("《红楼梦》", "红楼梦") == 1.0
    # gold 红楼梦 (3 chars), pred 红楼梦作者 (5): LCS 3 -> p 3/5, r 1 -> f1 0.75
    assert cmrc_f1("红楼梦作者", "红楼梦") == pytest.approx(0.75)
    # longest common substring, not subsequence: 红X梦 vs 红楼梦 -> 1
    assert cmrc_f1("红X梦", "红楼梦") == pytest.approx(2 * (1 / 3) * (1 / 3) / (2 / 3))
    assert squad_scores({"q": "红楼梦"}, {"q": ["曹雪芹", "《红楼梦》"]}, "cmrc2018")["f1"] == 1.0


def test_span_metrics_report_v2_threshold(tmp_path):
    from bertcli.tasks.span import SpanAnswers

    ex = examples_for(tmp_path, "the cat sat", "cat")
    answers = SpanAnswers({"q": ""}, {"q": "cat"}, {"q": 0.5})
    got = span_metrics(ex, answers, span_task("squad_v2"))
    assert got["f1"] == 0.0 and got["best_f1"] == 1.0 and got["best_f1_thresh"] == 0.5


def test_offline_evaluate_module_gives_the_same_scores():
    from bertcli.metrics import load_metric

    got = load_metric("squad").compute(
        predictions=[{"id": "1", "prediction_text": "the Broncos"}, {"id": "2", "prediction_text": "red"}],
        references=[{"id": "1", "answers": ["Denver Broncos", "Broncos"]}, {"id": "2", "answers": ["blue"]}],
    )
    assert got["exact_match"] == 0.5 and got["f1"] == 0.5


def test_chinese_context_offsets_give_the_answer_characters(tmp_path):
    from transformers import BertTokenizerFast

    chars = "青石镇位于两条河流的交汇处哪里？"
    tok = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *dict.fromkeys(chars)])}
    )
    context = "青石镇位于两条河流的交汇处"
    qas = [{"id": "zh", "question": "青石镇位于哪里？", "answers": [{"text": "两条河流", "answer_start": 5}]}]
    ex = read_qa(span_task("cmrc2018"), squad_file(tmp_path, qas, context=context))
    spec = span_task("cmrc2018", doc_stride=4)
    feats = encode_qa(tok, ex, spec, 20)  # 8 question pieces + 3 specials: windows of 9 characters
    assert len(feats) == 2
    hits = [(f, feats.starts[f], feats.ends[f]) for f in range(len(feats)) if feats.starts[f]]
    assert hits and all(context[feats.offsets[f][s][0] : feats.offsets[f][e][1]] == "两条河流" for f, s, e in hits)


def test_a_v1_question_without_gold_cannot_be_scored(tmp_path):
    from bertcli.tasks.span import check_scorable

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "open-1", "question": "Who?", "context": "The dog ran."}) + "\n")
    ex = read_qa(span_task("squad"), path)
    with pytest.raises(UsageError, match="q.jsonl: question open-1 has no gold answer.*squad_v2"):
        check_scorable(span_task("squad"), ex, path)
    check_scorable(span_task("squad_v2"), ex, path)  # unanswerable: scored as such


def test_a_utf16_squad_file_is_named_with_how_to_convert_it(tmp_path):
    path = tmp_path / "dev.json"
    path.write_bytes(json.dumps({"data": []}).encode("utf-16"))
    with pytest.raises(UsageError) as e:
        read_qa(span_task("squad"), path)
    assert str(e.value) == (
        f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8; convert it: "
        f"iconv -f UTF-16 -t UTF-8 {path} > {tmp_path / 'dev-utf8.json'}"
    )
