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


def messy_file(tmp_path, name="cmrc.json", version="cmrc2018"):
    """One paragraph per kind of answer the official CMRC 2018 files hold, in SQuAD's layout: an exact answer, an
    answer_start of -1 whose text is not in the context (alone, and beside a good answer), one counted in UTF-16
    code units (after 𫚭, outside the BMP: one unit more per such character), one a few characters off, an empty
    question and an empty context with an answer."""
    astral = "𫚭鱼和𫚭虾生活在河里。"  # 河里 is character 8, UTF-16 unit 10
    paragraphs = [
        ("小猫坐在垫子上。", [("exact", "谁坐着？", [("小猫", 0)])]),
        (
            "小猫坐在垫子上。",
            [("missing", "谁跑了？", [("大狗", -1)]), ("mixed", "在哪？", [("大床", -1), ("垫子", 4)])],
        ),
        (astral, [("utf16", "生活在哪？", [("河里", 10)])]),
        ("今天天气很好，我们去公园散步。", [("search", "去哪里？", [("公园", 12)])]),  # 公园 is at 10
        ("小猫坐在垫子上。", [("empty-question", "  ", [("小猫", 0)])]),
        ("", [("empty-context", "谁坐着？", [("小猫", 0)])]),
    ]
    doc = {"version": version, "data": [{"title": "t", "paragraphs": [
        {"context": c, "qas": [{"id": i, "question": q, "answers": [{"text": t, "answer_start": s} for t, s in a]}
                               for i, q, a in qas]} for c, qas in paragraphs]}]}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_answers_are_located_as_given_from_utf16_offsets_or_nearby_and_the_rest_counted(tmp_path):
    ex = read_qa(span_task("cmrc2018"), messy_file(tmp_path), empty_text="skip")
    assert ex.ids == ["exact", "missing", "mixed", "utf16", "search"]
    got = dict(zip(ex.ids, ex.answers))
    assert got["exact"] == [("小猫", 0)] and got["utf16"] == [("河里", 8)] and got["search"] == [("公园", 10)]
    assert got["missing"] == [("大狗", None)] and got["mixed"] == [("大床", None), ("垫子", 4)]
    for qid, answers in got.items():  # every located start points at its text
        context = ex.contexts[ex.ids.index(qid)]
        assert all(context[s : s + len(t)] == t for t, s in answers if s is not None)
    assert ex.counts == {"answers_as_given": 2, "answers_fixed_utf16": 1, "answers_fixed_search": 1,
                         "answers_unlocatable": 2, "skipped_empty_question": 1, "skipped_empty_context": 1}  # fmt: skip


def test_empty_question_or_context_is_an_error_that_names_it_unless_skipped(tmp_path):
    path = messy_file(tmp_path)
    with pytest.raises(UsageError) as err:
        read_qa(span_task("cmrc2018"), path)
    message = str(err.value)
    assert message == f"{path}: question empty-question: the question is empty (data.empty_text=skip skips such " \
        "questions and counts them)"  # fmt: skip
    qas = [{"id": "e1", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]}]
    with pytest.raises(UsageError, match=r"question e1: the context is empty \(data.empty_text=skip") as err:
        read_qa(span_task("squad"), squad_file(tmp_path, qas, context=""))
    assert "answer_start" not in str(err.value)
    only_empty = squad_file(tmp_path, qas, context=" ", name="only.json")
    with pytest.raises(UsageError, match=r"only.json holds no question \(1 skipped: empty\)"):
        read_qa(span_task("squad"), only_empty, empty_text="skip")


def test_a_squad_v2_question_with_an_empty_context_is_counted_not_trained_on(tmp_path):
    qas = [{"id": "v2-empty", "question": "Who ran?", "answers": [], "is_impossible": True}]
    doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "", "qas": qas},
        {"context": "The cat sat.", "qas": [{"id": "ok", "question": "Who?", "answers": [], "is_impossible": True}]},
    ]}]}  # fmt: skip
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="question v2-empty: the context is empty"):
        read_qa(span_task("squad_v2"), path)
    ex = read_qa(span_task("squad_v2"), path, empty_text="skip")
    assert ex.ids == ["ok"] and ex.counts["skipped_empty_context"] == 1


def test_training_keeps_located_answers_and_leaves_out_questions_without_one(tmp_path):
    from bertcli.tasks.span import describe_reading, trainable

    ex = read_qa(span_task("cmrc2018"), messy_file(tmp_path), empty_text="skip")
    train = trainable(ex)
    assert train.ids == ["exact", "mixed", "utf16", "search"]
    assert train.answers[1] == [("垫子", 4)] and train.counts["skipped_unlocatable"] == 1
    assert describe_reading(train.counts) == (
        "answers: 2 located as given, 1 fixed from UTF-16 offsets, 1 found near a wrong answer_start, 2 unlocatable "
        "(scored by their text, not trained on); questions skipped: 1 with no locatable answer (not trained on), "
        "1 with an empty question, 1 with an empty context"
    )
    # a v2 unanswerable question has no answer to locate, and stays
    v2 = read_qa(span_task("squad_v2"), squad_file(tmp_path, [{"id": "n", "question": "Who?", "answers": []}]))
    assert trainable(v2).ids == ["n"]


def test_scores_need_only_the_answer_texts(tmp_path):
    from bertcli.tasks.span import SpanAnswers

    ex = read_qa(span_task("cmrc2018"), messy_file(tmp_path), empty_text="skip")
    texts = {"exact": "小猫", "missing": "大狗", "mixed": "大床", "utf16": "河", "search": "公园"}
    got = span_metrics(ex, SpanAnswers(texts, texts, dict.fromkeys(texts, 0.0)), span_task("cmrc2018"))
    # the unlocatable answers 大狗 and 大床 score as any other; 河 against 河里: p 1, r 1/2 -> f1 2/3
    assert got == pytest.approx({"exact_match": 4 / 5, "f1": (4 + 2 / 3) / 5, "total": 5})


def test_a_window_points_at_the_first_located_answer(tmp_path):
    tok = tokenizer()
    qas = [{"id": "q", "question": "who sat?", "answers": [{"text": "dog", "answer_start": -1},
                                                          {"text": "mat", "answer_start": 19}]}]  # fmt: skip
    ex = read_qa(span_task("squad"), squad_file(tmp_path, qas))
    feats = encode_qa(tok, ex, span_task("squad", doc_stride=8), 32)
    s, e = feats.starts[0], feats.ends[0]
    assert ex.contexts[0][feats.offsets[0][s][0] : feats.offsets[0][e][1]] == "mat"
    del qas[0]["answers"][1]
    unlocatable = read_qa(span_task("squad"), squad_file(tmp_path, qas, name="dog.json"))
    assert encode_qa(tok, unlocatable, span_task("squad", doc_stride=8), 32).starts == [0]  # [CLS], as no answer


@pytest.mark.parametrize(
    ("context", "text", "start", "expected"),
    [
        ("the cat sat", "cat", 4, (4, "as_given")),
        ("the cat sat", "cat", 3, (4, "fixed_search")),
        ("the cat sat", "cat", None, (4, "fixed_search")),  # no offset: the only occurrence
        ("cat and cat", "cat", None, (None, "unlocatable")),  # no offset, two occurrences: either could be meant
        ("cat and cat", "cat", 5, (8, "fixed_search")),  # the nearest
        ("cat" + " " * 40 + "x", "cat", 40, (None, "unlocatable")),  # further than the search window
        ("𫚭𫚭 cat", "cat", 5, (3, "fixed_utf16")),
        ("𫚭 cat 𫚭", "𫚭", 1, (0, "fixed_search")),  # unit 1 is inside the first 𫚭: the nearest occurrence
        ("the cat sat", "", 4, (None, "unlocatable")),
        ("the cat sat", "cat", True, (4, "fixed_search")),  # a JSON true is no offset
    ],
)
def test_locate_answer(context, text, start, expected):
    from bertcli.tasks.span import locate_answer

    assert locate_answer(context, text, start) == expected


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
