"""Token classification (bertcli.tasks.tagging): each reader in its exact layout, schemes, windows and word
pieces, predictions back to words, and the metric against seqeval itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertcli.errors import UsageError
from bertcli.tasks.tagging import (
    IGNORED,
    encode_sentences,
    infer_tags,
    read_tagged,
    reading_notes,
    tagging_format,
    tagging_metrics,
    tagging_task,
    tags_from_logits,
    with_tag_labels,
)

CONLL_2003 = (  # the original release's layout: token POS chunk NER (IOB1), -DOCSTART-, CRLF line ends
    "-DOCSTART- -X- -X- O\r\n\r\n"
    "EU NNP B-NP I-ORG\r\nrejects VBZ B-VP O\r\nGerman JJ B-NP I-MISC\r\ncall NN I-NP O\r\n. . O O\r\n\r\n"
    "Peter NNP B-NP I-PER\r\nBlackburn NNP I-NP I-PER\r\n\r\n\r\n"
)


def write(path, text, newline=""):
    path.write_bytes(text.replace("\n", newline or "\n").encode("utf-8") if newline else text.encode("utf-8"))
    return path


def tokenizer(tmp_path, extra=()):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alice", "bob", "went", "to", "paris", "lon", "##don",
             "the", "a", "and", ".", *extra]  # fmt: skip
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def test_conll2003_reader_crlf_docstart_and_tag_column(tmp_path):
    spec = tagging_task("iob1")
    s = read_tagged(spec, write(tmp_path / "eng.train", CONLL_2003))
    assert s.words == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert s.tags == [["I-ORG", "O", "I-MISC", "O", "O"], ["I-PER", "I-PER"]]
    assert s.lines == [[3, 4, 5, 6, 7], [9, 10]]
    assert s.columns[0][0] == ["NNP", "B-NP"]  # the other columns, kept for the predictions file
    chunks = read_tagged(tagging_task("iob2", tag_column=2), tmp_path / "eng.train")  # the chunk column
    assert chunks.tags[0] == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]


def test_tab_separated_and_last_line_without_newline(tmp_path):
    s = read_tagged(tagging_task(), write(tmp_path / "t.tsv", "Alice\tB-PER\nwent\tO\n\nParis\tB-LOC"))
    assert s.words == [["Alice", "went"], ["Paris"]] and s.tags == [["B-PER", "O"], ["B-LOC"]]


def test_chinese_character_per_line_bio(tmp_path):
    text = "我 O\n在 O\n北 B-LOC\n京 I-LOC\n\n张 B-PER\n三 I-PER\n\u3000 O\n"  # a full-width space is a token
    s = read_tagged(tagging_task(), write(tmp_path / "msra.txt", text, "\r\n"))
    assert s.words == [["我", "在", "北", "京"], ["张", "三", "\u3000"]]
    assert s.tags == [["O", "O", "B-LOC", "I-LOC"], ["B-PER", "I-PER", "O"]]
    tokens_only = write(tmp_path / "one.txt", "我\n在\n\n北\n")  # no tag column: a file to tag
    assert read_tagged(tagging_task(), tokens_only).words == [["我", "在"], ["北"]]
    assert read_tagged(tagging_task(), tokens_only).tags is None
    with pytest.raises(UsageError, match=r"one\.txt: no tags \(one column only: tokens without tags\)"):
        read_tagged(tagging_task(), tokens_only, require_labels=True)


def test_jsonl_with_configured_field_names_and_tag_ids(tmp_path):
    lines = [json.dumps({"words": ["Alice", "went"], "ner": ["B-PER", "O"]}), "",
             json.dumps({"words": ["to", "Paris"], "ner": ["O", "B-LOC"]})]  # fmt: skip
    path = write(tmp_path / "t.jsonl", "\r\n".join(lines) + "\r\n")
    assert tagging_format(path) == "jsonl"
    s = read_tagged(tagging_task(tokens_field="words", tags_field="ner"), path)
    assert s.tags == [["B-PER", "O"], ["O", "B-LOC"]] and s.lines == [[1, 1], [3, 3]]
    ids = write(tmp_path / "ids.jsonl", json.dumps({"tokens": ["Alice", "went"], "tags": [1, 0]}) + "\n")
    assert read_tagged(tagging_task(labels=["O", "B-PER", "I-PER"]), ids).tags == [["B-PER", "O"]]


def test_cluener_spans_become_character_tags(tmp_path):
    record = {
        "text": "浙商银行企业信贷部叶老桂",
        "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}},
    }
    path = write(tmp_path / "train.json", json.dumps(record, ensure_ascii=False) + "\n")
    assert tagging_format(path) == "cluener"
    iob2 = read_tagged(tagging_task("iob2"), path)
    assert iob2.words[0] == list(record["text"])
    assert iob2.tags[0] == ["B-company", "I-company", "I-company", "I-company", *["O"] * 5,
                            "B-name", "I-name", "I-name"]  # fmt: skip
    bioes = read_tagged(tagging_task("bioes"), path)
    assert bioes.tags[0][:4] == ["B-company", "I-company", "I-company", "E-company"]
    assert bioes.tags[0][9:] == ["B-name", "I-name", "E-name"]


def test_cluener_span_that_misses_its_text_names_the_line(tmp_path):
    bad = {"text": "浙商银行", "label": {"company": {"浙商银行": [[1, 3]]}}}
    path = write(tmp_path / "dev.json", json.dumps({"text": "好", "label": {}}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UsageError, match=r"dev\.json:2: span \[1, 3\] of company '浙商银行' does not point"):
        read_tagged(tagging_task(), path)


def test_wrong_number_of_columns_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.conll", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(UsageError, match=r"bad\.conll:2: 3 columns, the file's first token line has 4"):
        read_tagged(tagging_task(), path)


def test_empty_sentence_is_an_error(tmp_path):
    path = write(tmp_path / "e.jsonl", json.dumps({"tokens": ["a"], "tags": ["O"]}) + '\n{"tokens": [], "tags": []}\n')
    with pytest.raises(UsageError, match=r"e\.jsonl:2: an empty sentence"):
        read_tagged(tagging_task(), path)


def test_tags_outside_the_scheme_and_strict_mode(tmp_path):
    path = write(tmp_path / "t.txt", "Alice O\nSmith I-PER\n")  # I- after O
    assert read_tagged(tagging_task("iob2"), path).tags == [["O", "I-PER"]]  # default: seqeval's reading
    with pytest.raises(UsageError, match=r"t\.txt:2: tag 'I-PER' after 'O' does not continue an entity"):
        read_tagged(tagging_task("iob2", strict=True), path)
    with pytest.raises(UsageError, match=r"s\.txt:1: tag 'S-PER' is not O or B/I-TYPE"):
        read_tagged(tagging_task("iob2"), write(tmp_path / "s.txt", "Alice S-PER\n"))
    with pytest.raises(UsageError, match="ends inside an entity"):
        read_tagged(tagging_task("bioes", strict=True), write(tmp_path / "b.txt", "Alice B-PER\nSmith I-PER\n"))
    known = tagging_task(labels=["O", "B-PER", "I-PER"])
    with pytest.raises(UsageError, match=r"l\.txt:1: tag 'B-LOC' is not one of the labels"):
        read_tagged(known, write(tmp_path / "l.txt", "Paris B-LOC\n"))


def test_labels_inferred_in_a_stable_order_with_every_prefix(tmp_path):
    a = read_tagged(tagging_task(), write(tmp_path / "a.txt", "x B-PER\n\ny B-LOC\nz I-LOC\n"))
    b = read_tagged(tagging_task(), write(tmp_path / "b.txt", "y B-LOC\n\nx B-PER\n"))
    assert infer_tags(a, "iob2") == infer_tags(b, "iob2") == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert infer_tags(b, "bioes")[:5] == ("O", "B-LOC", "I-LOC", "E-LOC", "S-LOC")


def sentences(tmp_path, words, tags, name="s.txt"):
    text = "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(ws, ts)) for ws, ts in zip(words, tags))
    return read_tagged(tagging_task(), write(tmp_path / name, text + "\n"))


def test_first_piece_carries_the_label_and_later_pieces_are_ignored(tmp_path):
    tok = tokenizer(tmp_path)
    s = sentences(tmp_path, [["bob", "went", "to", "london"]], [["B-PER", "O", "O", "B-LOC"]])
    spec = with_tag_labels(tagging_task(), ("O", "B-LOC", "I-LOC", "B-PER", "I-PER"))
    f = encode_sentences(tok, s, spec, 32)
    assert tok.convert_ids_to_tokens(f.input_ids[0]) == ["[CLS]", "bob", "went", "to", "lon", "##don", "[SEP]"]
    assert f.word_ids[0] == [None, 0, 1, 2, 3, 3, None]
    assert f.labels[0] == [IGNORED, 3, 0, 0, 1, IGNORED, IGNORED]
    every = encode_sentences(tok, s, with_tag_labels(tagging_task(label_all_pieces=True), spec.label_names), 32)
    assert every.labels[0] == [IGNORED, 3, 0, 0, 1, 2, IGNORED]  # london's second piece: I-LOC


def test_long_sentence_is_cut_into_windows_and_every_word_gets_one_tag(tmp_path):
    tok = tokenizer(tmp_path)
    words = ["alice", "went", "to", "london", "and", "bob", "went", "to", "paris", "."] * 3
    tags = ["B-PER", "O", "O", "B-LOC", "O", "B-PER", "O", "O", "B-LOC", "O"] * 3
    s = sentences(tmp_path, [words, ["bob"]], [tags, ["B-PER"]])
    spec = with_tag_labels(tagging_task(), ("O", "B-LOC", "I-LOC", "B-PER", "I-PER"))
    f = encode_sentences(tok, s, spec, 8)  # 6 pieces per window: london is two of them
    assert len(f) > 6 and f.windowed == 1 and f.cut_words == 0
    assert all(len(ids) <= 8 for ids in f.input_ids)
    assert all(f.word_ids[k][1] == 0 for k in range(len(f)))  # windows start at a word, never inside one
    assert [int(x) for x in f.sentence].count(0) == len(f) - 1
    # a perfect model (logits one-hot on the gold piece labels) gives back exactly the gold tags, word for word
    logits = [np.eye(5)[[max(label, 0) for label in labels]] for labels in f.labels]
    assert tags_from_logits(f, logits, s, spec.id2label) == s.tags


def test_a_word_without_pieces_is_encoded_as_unk(tmp_path):
    tok = tokenizer(tmp_path)
    s = sentences(tmp_path, [["bob", "\u200b", "went"]], [["B-PER", "O", "O"]])
    spec = with_tag_labels(tagging_task(), ("O", "B-PER", "I-PER"))
    f = encode_sentences(tok, s, spec, 16)
    assert f.empty_words == 1 and f.input_ids[0][2] == tok.unk_token_id and f.word_ids[0] == [None, 0, 1, 2, None]


CASES = [  # (gold, predicted): an exact hit, a wrong type, a wrong boundary, an I- after O, BIOES
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]]),
    ([["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O"]], [["B-PER", "O", "O", "B-ORG", "O"], ["B-ORG", "O"]]),
    ([["O", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER"]], [["O", "B-MISC", "I-MISC", "O"], ["I-PER", "I-PER"]]),
    ([["S-PER", "O", "B-LOC", "E-LOC"]], [["S-PER", "O", "B-LOC", "I-LOC"]]),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("gold,pred", CASES)
def test_metric_equals_seqeval(gold, pred, strict):
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2, IOBES

    scheme = "bioes" if any(t[:2] in ("S-", "E-") for s in gold for t in s) else "iob2"
    kw = {"mode": "strict", "scheme": IOBES if scheme == "bioes" else IOB2} if strict else {}
    ours = tagging_metrics(gold, pred, tagging_task(scheme, strict=strict))
    assert ours["f1"] == pytest.approx(f1_score(gold, pred, zero_division=0, **kw), abs=1e-12)
    assert ours["precision"] == pytest.approx(precision_score(gold, pred, zero_division=0, **kw), abs=1e-12)
    assert ours["recall"] == pytest.approx(recall_score(gold, pred, zero_division=0, **kw), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kw)
    for kind in {t.split("-", 1)[1] for s in gold for t in s if t != "O"}:
        assert ours[f"{kind}/f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)


def test_metric_known_values():
    gold, pred = CASES[1]  # gold PER, LOC, ORG; predicted PER (one word short), ORG (typed wrong), ORG (right)
    scores = tagging_metrics(gold, pred, tagging_task())
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(1 / 3) and scores["accuracy"] == pytest.approx(5 / 7)
    assert scores["ORG/precision"] == pytest.approx(0.5) and scores["PER/recall"] == 0.0
    # an I- after O: an entity in the default (conlleval) mode, none in strict mode
    lenient = tagging_metrics([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], tagging_task())
    strict = tagging_metrics([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], tagging_task(strict=True))
    assert lenient["f1"] == 1.0 and strict["f1"] == 0.0


def test_cluener_in_iob1_writes_b_only_between_touching_entities(tmp_path):
    record = {"text": "张三李四在", "label": {"name": {"张三": [[0, 1]], "李四": [[2, 3]]}}}
    path = write(tmp_path / "t.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    assert read_tagged(tagging_task("iob1"), path, "cluener").tags == [["I-name", "I-name", "B-name", "I-name", "O"]]


def test_a_tagging_format_on_a_classification_task_says_so(tmp_path):
    from bertcli.tasks import custom_task, read_examples

    path = write(tmp_path / "t.txt", "text,label\nhello,1\n")
    with pytest.raises(UsageError, match="data.format conll is for task ner"):
        read_examples(custom_task(["text"], labels=["0", "1"]), path, "conll")


# --- files as distributed: Weibo NER's word positions, CLUENER's nested spans and names, IOB1 read as IOB2 ---------


WEIBO = (  # weiboNER_2nd_conll's layout: each character and its position in its segmented word, a tab, the tag
    "口0\tO\n腔1\tO\np10\tB-PER.NAM\n310\tI-PER.NAM\n31\tI-PER.NAM\n\U0001f6020\tO\n\n张0\tB-PER.NAM\n三1\tI-PER.NAM\n"
)


def test_weibo_position_digits_are_stripped_whole_not_just_the_last_character(tmp_path):
    path = write(tmp_path / "weiboNER_2nd_conll.train", WEIBO)
    s = read_tagged(tagging_task(strip_position_digits=True), path)
    # p10: p at position 10 of its word; 310: the digit 3 at 10; 31: the digit 3 at 1; an emoji keeps its code point
    assert s.words == [["口", "腔", "p", "3", "3", "\U0001f602"], ["张", "三"]]
    assert s.tags == [["O", "O", "B-PER.NAM", "I-PER.NAM", "I-PER.NAM", "O"], ["B-PER.NAM", "I-PER.NAM"]]
    assert not s.positional_tokens and reading_notes(tagging_task(), s) == []
    as_is = read_tagged(tagging_task(), path)  # off (the default): tokens as written, and one line says why
    assert as_is.words[0][:3] == ["口0", "腔1", "p10"]
    assert reading_notes(tagging_task(), as_is) == [
        f"{path}: every token ends in digits, as Weibo NER's word positions do (口0, p10); "
        "task.strip_position_digits true reads the characters alone"
    ]
    plain = read_tagged(tagging_task(), write(tmp_path / "msra.txt", "北 B-LOC\n京 I-LOC\n2008 O\n"))
    assert not plain.positional_tokens  # a year among characters is no position digit


def test_weibo_token_without_position_digits_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path / "w.txt", "口0\tO\n腔\tO\n")
    with pytest.raises(UsageError, match=r"w\.txt:2: token '腔' has no word-position digits after it, and task\."
                       r"strip_position_digits is true"):  # fmt: skip
        read_tagged(tagging_task(strip_position_digits=True), path)
    with pytest.raises(UsageError, match=r"d\.txt:1: token '7' has no word-position digits"):
        read_tagged(tagging_task(strip_position_digits=True), write(tmp_path / "d.txt", "7\tO\n"))


BOOK = "我读了《浙商银行与叶老桂》"  # CLUENER's train.json: a book title holding a company name (and here a name)
NESTED = {"text": BOOK, "label": {"book": {"《浙商银行与叶老桂》": [[3, 12]]}, "company": {"浙商银行": [[4, 7]]},
                                  "name": {"叶老桂": [[9, 11]]}}}  # fmt: skip
FLAT = {"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}, "address": {"北京": [[3, 4]]}}}


def cluener_file(path, *records):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def test_cluener_nested_spans_keep_the_outer_span_by_default_and_count_the_dropped(tmp_path):
    path = cluener_file(tmp_path / "train.json", NESTED, FLAT, NESTED)
    s = read_tagged(tagging_task(), path)
    assert s.tags[0] == ["O"] * 3 + ["B-book"] + ["I-book"] * 9
    assert s.tags[1] == ["B-name", "I-name", "O", "B-address", "I-address"]
    assert s.dropped_spans == 4  # two inner spans in each of the two nested records
    assert reading_notes(tagging_task(), s) == [
        f"{path}: CLUENER spans inside (or crossing) another, dropped: 4 (task.nested outer keeps the outer span; "
        "error refuses the file)"
    ]


def test_cluener_nested_spans_inner_policy_keeps_the_inner_ones(tmp_path):
    spec = tagging_task(nested="inner")
    s = read_tagged(spec, cluener_file(tmp_path / "train.json", NESTED))
    assert s.tags[0] == ["O"] * 4 + ["B-company", *["I-company"] * 3, "O", "B-name", "I-name", "I-name", "O"]
    assert s.dropped_spans == 1 and "task.nested inner keeps the inner spans" in reading_notes(spec, s)[0]
    assert read_tagged(tagging_task("bioes", nested="inner"), cluener_file(tmp_path / "b.json", NESTED)).tags[0][
        4:8] == ["B-company", "I-company", "I-company", "E-company"]  # fmt: skip


def test_cluener_crossing_spans_outer_keeps_the_first_inner_the_shorter(tmp_path):
    crossing = {"text": "abcdefg", "label": {"x": {"abcd": [[0, 3]]}, "y": {"cdefg": [[2, 6]]}}}
    path = cluener_file(tmp_path / "c.json", crossing)
    assert read_tagged(tagging_task(nested="outer"), path).tags == [["B-x", "I-x", "I-x", "I-x", "O", "O", "O"]]
    assert read_tagged(tagging_task(nested="inner"), path).tags == [["B-x", "I-x", "I-x", "I-x", "O", "O", "O"]]
    longer_first = {"text": "abcdefg", "label": {"y": {"abcde": [[0, 4]]}, "x": {"efg": [[4, 6]]}}}
    path = cluener_file(tmp_path / "d.json", longer_first)
    assert read_tagged(tagging_task(nested="outer"), path).tags == [["B-y", "I-y", "I-y", "I-y", "I-y", "O", "O"]]
    assert read_tagged(tagging_task(nested="inner"), path).tags == [["O", "O", "O", "O", "B-x", "I-x", "I-x"]]


def test_cluener_nested_error_policy_refuses_the_file_naming_both_spans(tmp_path):
    path = cluener_file(tmp_path / "train.json", FLAT, NESTED)
    with pytest.raises(UsageError) as err:
        read_tagged(tagging_task(nested="error"), path)
    assert str(err.value) == (
        f"{path}:2: span [4, 7] of company '浙商银行' overlaps [3, 12] of book '《浙商银行与叶老桂》'; set task.nested "
        "outer (keep the outer span) or inner (keep the inner ones)"
    )
    with pytest.raises(UsageError, match="unknown task.nested 'widest'"):
        tagging_task(nested="widest")


def test_cluener_json_named_txt_is_recognised_by_content_with_msra_ner_settings(tmp_path):
    """configs/finetune/msra_ner.yaml reads a CLUENER file whatever its name: data.format auto looks inside."""
    from pathlib import Path

    from bertcli.config import load_config
    from bertcli.pipelines.finetune_inputs import resolve_task
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.tagging.training import read_tagging_files

    train = cluener_file(tmp_path / "cluener_train.txt", FLAT, NESTED)
    dev = write(tmp_path / "msra_dev.txt", "张 B-name\n三 I-name\n在 O\n\n北 B-address\n")  # a CoNLL file beside it
    msra = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "msra_ner.yaml"
    cfg = load_config(FinetuneConfig, msra, [f"data.train_file={train}", f"data.validation_files=[{dev}]"])
    assert cfg.data.format == "auto"
    assert tagging_format(train, cfg.data.format) == "cluener" and tagging_format(dev, cfg.data.format) == "conll"
    spec, train_path, evals = resolve_task(cfg)
    spec, s, by_split = read_tagging_files(spec, train_path, evals, cfg.data.format)
    assert s.words[0] == list("张三在北京") and s.tags[0] == ["B-name", "I-name", "O", "B-address", "I-address"]
    assert by_split["validation"].tags == [["B-name", "I-name", "O"], ["B-address"]]
    assert spec.label_names == ("O", "B-address", "I-address", "B-book", "I-book", "B-name", "I-name")
    jsonl = write(tmp_path / "sents.txt", json.dumps({"tokens": ["Alice"], "tags": ["B-PER"]}) + "\n")
    assert tagging_format(jsonl) == "jsonl"  # token/tag JSON lines by content too
    assert tagging_format(write(tmp_path / "brace.txt", "{ O\n} O\n")) == "conll"  # a brace token is no JSON


def test_json_lines_read_as_conll_say_so_instead_of_counting_columns(tmp_path):
    path = cluener_file(tmp_path / "cluener.txt", FLAT)
    with pytest.raises(UsageError) as err:
        read_tagged(tagging_task(), path, "conll")
    assert str(err.value) == (f"{path}:1: a JSON record, not a token line: the file is JSON lines (jsonl or "
                              "CLUENER); set data.format auto (or jsonl, cluener)")  # fmt: skip


def test_cluener_touching_spans_of_a_type_listed_right_to_left_stay_two_entities_in_iob1(tmp_path):
    right_to_left = {"text": "张三李四在", "label": {"name": {"李四": [[2, 3]], "张三": [[0, 1]]}}}
    path = cluener_file(tmp_path / "t.json", right_to_left)
    assert read_tagged(tagging_task("iob1"), path).tags == [["I-name", "I-name", "B-name", "I-name", "O"]]
    other_type = {"text": "张三李四在", "label": {"name": {"李四": [[2, 3]]}, "nick-name": {"张三": [[0, 1]]}}}
    other = read_tagged(tagging_task("iob1"), cluener_file(tmp_path / "o.json", other_type))
    assert other.tags == [["I-nick-name", "I-nick-name", "I-name", "I-name", "O"]]  # touching, but another type
    gold = [["I-name", "I-name", "B-name", "I-name", "O"]]
    assert tagging_metrics(gold, gold, tagging_task("iob1"))["f1"] == 1.0
    from seqeval.metrics.sequence_labeling import get_entities

    assert get_entities(gold[0]) == [("name", 0, 1), ("name", 2, 3)]  # two entities, as the file has


IOB1 = "EU I-ORG\nrejects O\nGerman I-MISC\ncall O\n\nPeter I-PER\nBlackburn I-PER\nSmith B-PER\n"


def test_iob1_file_read_as_iob2_gets_one_line_saying_so(tmp_path):
    path = write(tmp_path / "eng.train", IOB1)
    spec = tagging_task("iob2")
    s = read_tagged(spec, path)
    assert s.tags[0] == ["I-ORG", "O", "I-MISC", "O"] and s.iob1_starts == 3
    assert reading_notes(spec, s) == [
        f"{path}: the tags look like IOB1 (3 entities start with I-, B- only between touching entities of a type); "
        "task.scheme iob1 (--set task.scheme=iob1) reads them exactly"
    ]
    exact = tagging_task("iob1", strict=True)
    assert read_tagged(exact, path).tags == s.tags and reading_notes(exact, read_tagged(exact, path)) == []
    # IOB2 with one slip (an I- after O) is not IOB1: B- opens the other entities, so no such line
    slip = read_tagged(spec, write(tmp_path / "slip.txt", "Alice B-PER\nwent O\nSmith I-PER\n"))
    assert slip.iob1_starts == 0 and reading_notes(spec, slip) == []


def test_iob1_file_under_strict_iob2_error_suggests_iob1(tmp_path):
    path = write(tmp_path / "eng.train", IOB1)
    with pytest.raises(UsageError) as err:
        read_tagged(tagging_task("iob2", strict=True), path)
    assert str(err.value) == (
        f"{path}:1: tag 'I-ORG' after 'O' does not continue an entity in iob2, and task.strict is true (false reads "
        "it as seqeval's default mode does); the tags look like IOB1: --set task.scheme=iob1 reads them"
    )
    slip = write(tmp_path / "slip.txt", "Alice B-PER\nwent O\nSmith I-PER\n")
    with pytest.raises(UsageError, match=r"slip\.txt:3: .*default mode does\)$"):  # no IOB1 hint for a slip
        read_tagged(tagging_task("iob2", strict=True), slip)
