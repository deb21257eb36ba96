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
