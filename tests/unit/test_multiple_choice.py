"""Multiple choice: readers (SWAG csv, JSON lines, ChID blanks), encoding, the [batch, choices, pieces] collator
with padded choices, the model head, accuracy and the predictions file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_fixtures import make_tokenizer, save_tiny_model
from multiple_choice_fixtures import choice_rows, write_jsonl, write_swag_csv

from bertcli.errors import UsageError
from bertcli.tasks.multiple_choice import (
    choice_metrics,
    choice_task,
    describe_counts,
    encode_choices,
    predicted_choices,
    read_choices,
    write_choice_predictions,
)
from bertcli.tasks.multiple_choice.features import ChoiceCollator
from bertcli.tasks.multiple_choice.training import ChoiceForward, choice_loss_and_sums, masked_logits
from bertcli.tasks.registry import family_for


def load_choice_model(model_dir):
    return family_for("swag").build_model(model_dir, choice_task("swag"))


def choice_logits(model, batch):
    return ChoiceForward(model)(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                batch["choice_mask"])  # fmt: skip


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


# --- readers ----------------------------------------------------------------------------------------------------


def test_swag_csv_pairs_sent1_with_sent2_and_each_ending(tmp_path):
    rows = choice_rows(3, seed=0)
    ex = read_choices(write_swag_csv(tmp_path / "val.csv", rows))
    assert len(ex) == 3 and ex.labels == [r["label"] for r in rows]
    assert ex.ids == ["0", "1", "2"]  # SWAG's unnamed first column
    first = rows[0]
    assert ex.pairs(0) == [(first["sent1"], f"{first['sent2']} {e}") for e in first["endings"]]
    assert ex.counts() == {"examples": 3, "min_choices": 4, "max_choices": 4, "blanks": 0, "skipped_empty": 0}


def test_swag_startphrase_form_pairs_it_with_each_ending(tmp_path):
    path = tmp_path / "sp.csv"
    path.write_text("startphrase,ending0,ending1,ending2,label\nhe opens the door,and walks,and sits,and runs,2\n")
    ex = read_choices(path)
    assert ex.pairs(0) == [("he opens the door", "and walks"), ("he opens the door", "and sits"),
                           ("he opens the door", "and runs")]  # fmt: skip
    assert ex.labels == [2]


def test_swag_test_file_without_label_reads_unlabelled_and_training_refuses_it(tmp_path):
    path = write_swag_csv(tmp_path / "test.csv", choice_rows(2, seed=0), labels=False)
    assert read_choices(path).labels is None
    with pytest.raises(UsageError, match=r"test.csv: no labels"):
        read_choices(path, require_labels=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sent1,sent2,ending0,ending1,label\nctx,x,a,b,2\n", r"bad.csv:2: label 2 is out of range: 2 choices"),
        ("sent1,sent2,ending0,ending1,label\nctx,x,a,b,one\n", r"bad.csv:2: label 'one' is not the index of an ending"),
        ("sent1,sent2,ending0,ending1,label\nctx,x,a,,0\n", r"bad.csv:2: choice 1 is empty"),
        ("sent1,sent2,ending0,ending2,label\nctx,x,a,b,0\n", r"bad.csv: the ending columns must be numbered"),
        ("sent1,ending0,ending1,label\nctx,a,b,0\n", r"bad.csv: a SWAG csv needs sent1 and sent2 columns"),
        ("sent1,sent2,label\nctx,x,0\n", r"bad.csv: a SWAG csv needs ending0, ending1"),
        ("sent1,sent2,ending0,ending1,label\nctx,x,a,b\n", r"bad.csv:2: 4 fields, the header has 5"),
    ],
)
def test_bad_swag_rows_are_one_line_errors_naming_file_and_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(UsageError, match=message) as err:
        read_choices(path)
    assert "\n" not in str(err.value)


def test_jsonl_label_as_index_or_text_question_and_context_varying_choices(tmp_path):
    path = write_jsonl(tmp_path / "dev.jsonl", [
        {"id": "a", "question": "what sits?", "choices": ["the cat", "the mat"], "label": 0},
        {"id": "b", "context": "a cat sat", "question": "on what?", "choices": ["mat", "dog", "film"],
         "label": "film"},
    ])  # fmt: skip
    ex = read_choices(path)
    assert ex.labels == [0, 2] and ex.ids == ["a", "b"]
    assert ex.pairs(0) == [("what sits?", "the cat"), ("what sits?", "the mat")]
    assert ex.pairs(1)[2] == ("a cat sat", "on what? film")  # the question goes before each choice, as sent2
    assert describe_counts(ex.counts()) == "2 questions, 2 to 3 choices"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"question": "q", "choices": ["a", "b"], "label": 5}], r"dev.jsonl:1: label 5 is out of range"),
        ([{"question": "q", "choices": ["a", "b"], "label": "c"}], r"dev.jsonl:1: label 'c' is not one of the choi"),
        ([{"question": "q", "choices": ["a", "b"], "label": "1"}], r"an index is written as a number: 1"),
        ([{"question": "q", "choices": ["a", "a"], "label": "a"}], r"dev.jsonl:1: label 'a' is the text of choices"),
        ([{"question": "q", "choices": ["a", "b"], "label": True}], r"dev.jsonl:1: label True is neither"),
        ([{"question": "q", "choices": "a b", "label": 0}], r"dev.jsonl:1: `choices` must be a list of texts"),
        ([{"question": "q", "choices": ["a"], "label": 0}], r"dev.jsonl:1: 1 choice\(s\); a multiple-choice"),
        ([{"text": "q", "choices": ["a", "b"], "label": 0}], r"dev.jsonl:1: no `context` or `question` field"),
        ([{"question": "q", "choices": ["a", "b"], "label": 0}, {"question": "q", "choices": ["a", "b"]}],
         r"dev.jsonl:2: this line has no `label` and earlier lines do not"),
        ([{"context": "#idiom# and #idiom#", "choices": ["a", "b"], "label": 0}], r"dev.jsonl:1: 2 #idiom# blanks"),
    ],
)  # fmt: skip
def test_bad_jsonl_lines_are_one_line_errors_naming_file_and_line(tmp_path, records, message):
    with pytest.raises(UsageError, match=message):
        read_choices(write_jsonl(tmp_path / "dev.jsonl", records))


def test_empty_texts_are_an_error_naming_the_line_or_skipped_and_counted(tmp_path):
    csv_path = tmp_path / "e.csv"
    csv_path.write_text("sent1,sent2,ending0,ending1,label\nctx,x,a,b,0\n ,x,a,b,1\nctx,x,a, ,1\n")
    with pytest.raises(UsageError, match=r"e.csv:3: the context \(sent1\) is empty \(data.empty_text=skip skips"):
        read_choices(csv_path)
    ex = read_choices(csv_path, empty_text="skip")
    assert len(ex) == 1 and ex.labels == [0] and ex.skipped_empty == 2
    assert describe_counts(ex.counts()) == "1 question, 2 choices each; 2 skipped (empty text)"
    jsonl = write_jsonl(tmp_path / "e.jsonl", [
        {"question": "q", "choices": ["a", "b"], "label": 0},
        {"question": "", "choices": ["a", "b"], "label": 1},
        {"question": "q", "choices": ["a", ""], "label": 1},
        {"question": 3, "choices": ["a", "b"], "label": 1},
    ])  # fmt: skip
    with pytest.raises(UsageError, match=r"e.jsonl:2: the question is empty"):
        read_choices(jsonl)
    with pytest.raises(UsageError, match=r"e.jsonl:4: `question` must be a text, not 3"):
        read_choices(jsonl, empty_text="skip")  # a number is no empty text: never skipped
    jsonl.write_text("\n".join(jsonl.read_text().splitlines()[:3]) + "\n")
    ex = read_choices(jsonl, empty_text="skip")
    assert ex.ids == ["0"] and ex.skipped_empty == 2


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "x.tsv").write_text("a\tb\n")
    with pytest.raises(UsageError, match=r"x.tsv: unknown extension for a multiple-choice file"):
        read_choices(tmp_path / "x.tsv")
    with pytest.raises(UsageError, match=r"does not exist"):
        read_choices(tmp_path / "none.csv")


def ids(feats, i, k) -> list[int]:
    return feats.choice(i, k)[0].tolist()


# --- encoding -----------------------------------------------------------------------------------------------------


def test_each_choice_is_a_context_choice_pair_and_the_context_gives_way_first(tmp_path, tok):
    long_context = " ".join(["the cat sat on the mat"] * 10)
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"context": long_context, "choices": ["good film", "bad dog"], "label": 0},
        {"context": "a cat", "choices": ["good", "bad"], "label": 1},
        {"context": "the cat sat on the mat", "choices": ["good film was very good and the dog", "bad"], "label": 0},
    ])  # fmt: skip
    feats = encode_choices(tok, read_choices(path), max_seq_length=16)
    assert feats.n_choices(0) == 2 and all(len(feats.choice(0, k)[0]) == 16 for k in range(2))
    sep = tok.sep_token_id
    for row, choice in zip([ids(feats, 0, k) for k in range(2)], ["good film", "bad dog"]):
        first_sep = row.index(sep)
        assert tok.decode(row[first_sep + 1 : -1]) == choice  # the choice is whole: only the context was cut
    assert tok.decode(ids(feats, 1, 0)) == "[CLS] a cat [SEP] good [SEP]"
    assert feats.choice(1, 0)[1].tolist() == [0, 0, 0, 0, 1, 1]
    # the choice is longer than the context: longest_first (run_swag's truncation) would cut the choice
    whole = "[CLS] the cat sat on the [SEP] good film was very good and the dog [SEP]"
    assert tok.decode(ids(feats, 2, 0)) == whole
    assert feats.truncated == 2 and feats.choices_cut == 0
    assert feats.labels.tolist() == [0, 1, 0]
    assert feats.lengths.tolist() == [16, 6, 16]


def test_a_choice_too_long_for_the_length_is_cut_and_counted(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", [{"context": "a cat", "choices": ["the dog " * 10, "bad"], "label": 1}])
    feats = encode_choices(tok, read_choices(path), max_seq_length=12)
    assert [len(ids(feats, 0, k)) for k in range(2)] == [12, 6]
    assert feats.choices_cut == 1


def test_chid_blank_becomes_mask_and_a_long_passage_is_cut_around_it(tmp_path, tok):
    before, after = " ".join(["the cat sat"] * 8), " ".join(["on the mat"] * 8)
    path = write_jsonl(tmp_path / "chid.jsonl", [
        {"context": f"{before} #idiom# {after}", "choices": ["good", "bad", "dull"], "label": "good"},
        {"context": "a #idiom000123# cat", "choices": ["good", "bad"], "label": 1},
    ])  # fmt: skip
    ex = read_choices(path)
    assert ex.counts()["blanks"] == 2
    feats = encode_choices(tok, ex, max_seq_length=16)
    assert tok.decode(ids(feats, 1, 1)) == "[CLS] a [MASK] cat [SEP] bad [SEP]"
    row = ids(feats, 0, 0)
    assert len(row) <= 16 and tok.mask_token_id in row
    context = row[1 : row.index(tok.sep_token_id)]
    middle = context.index(tok.mask_token_id)
    assert abs(middle - (len(context) - 1 - middle)) <= 1  # as many pieces before the blank as after it
    assert feats.truncated == 1


# --- batches, model, loss -----------------------------------------------------------------------------------------


def varying_features(tmp_path, tok):
    path = write_jsonl(tmp_path / "v.jsonl", [
        {"question": "a cat", "choices": ["good", "bad"], "label": 1},
        {"question": "the dog sat on the mat", "choices": ["good film", "bad", "dull", "fine"], "label": 3},
    ])  # fmt: skip
    ex = read_choices(path)
    return ex, encode_choices(tok, ex, max_seq_length=32)


def test_collator_pads_choices_and_pieces_into_batch_choices_pieces(tmp_path, tok):
    _, feats = varying_features(tmp_path, tok)
    batch = ChoiceCollator(feats)([0, 1])
    width = max(feats.lengths)
    assert batch["input_ids"].shape == (2, 4, width) == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["choice_mask"].tolist() == [[True, True, False, False], [True, True, True, True]]
    assert batch["labels"].tolist() == [1, 3] and batch["example_index"].tolist() == [0, 1]
    first = ids(feats, 0, 0)
    assert batch["input_ids"][0, 0, : len(first)].tolist() == first
    assert batch["input_ids"][0, 2, : len(first)].tolist() == first  # a padded choice: a copy of the first
    assert batch["attention_mask"][0, 0].tolist() == [1] * len(first) + [0] * (width - len(first))
    assert batch["input_ids"][0, 1, len(ids(feats, 0, 1)) :].eq(tok.pad_token_id).all()
    assert batch["input_ids"][1, 3, : len(ids(feats, 1, 3))].tolist() == ids(feats, 1, 3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "pretraining", kind="pretraining")


def test_pretraining_checkpoint_loads_under_a_multiple_choice_head_and_best_reloads(tmp_path, tok, model_dir):
    from transformers import AutoModelForMultipleChoice

    torch.manual_seed(0)
    model, report = load_choice_model(model_dir)
    assert type(model).__name__ == "BertForMultipleChoice"
    assert set(report.new) == {"classifier.weight", "classifier.bias"}
    assert any(name.startswith("cls.") for name in report.unused)  # the MLM and NSP heads
    model.save_pretrained(tmp_path / "best")
    again = AutoModelForMultipleChoice.from_pretrained(tmp_path / "best", local_files_only=True)
    _, feats = varying_features(tmp_path, tok)
    batch = ChoiceCollator(feats)([0, 1])
    model.eval()
    again.eval()
    with torch.no_grad():
        assert torch.equal(choice_logits(model, batch), choice_logits(again, batch))


def test_padded_choices_are_never_picked_and_do_not_change_the_loss(tmp_path, tok, model_dir):
    torch.manual_seed(0)
    model, _ = load_choice_model(model_dir)
    model.eval()
    _, feats = varying_features(tmp_path, tok)
    collate = ChoiceCollator(feats)
    with torch.no_grad():
        both = choice_logits(model, collate([0, 1]))
        alone = choice_logits(model, collate([0]))
        net = ChoiceForward(model)
        loss_both, sums = choice_loss_and_sums(net, collate([0, 1]))
        loss_alone, _ = choice_loss_and_sums(net, collate([0]))
        loss_other, _ = choice_loss_and_sums(net, collate([1]))
    assert both.shape == (2, 4) and alone.shape == (1, 2)
    assert torch.allclose(both[0, :2], alone[0], atol=1e-5)
    assert (both[0, 2:] < both[0, :2].min()).all()
    assert torch.allclose(loss_both, (loss_alone + loss_other) / 2, atol=1e-5)
    assert sums["correct"].shape == (2,)


def test_written_out_forward_equals_the_models_own_and_the_family_is_registered(tmp_path, tok, model_dir):
    torch.manual_seed(0)
    model, _ = load_choice_model(model_dir)
    model.eval()
    net = ChoiceForward(model)
    assert net.written_out  # BertForMultipleChoice with SDPA: the encoder runs as modeling.encode writes it
    _, feats = varying_features(tmp_path, tok)
    batch = ChoiceCollator(feats)([0, 1])
    with torch.no_grad():
        own = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                    attention_mask=batch["attention_mask"]).logits  # fmt: skip
        ours = net(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["choice_mask"])
    assert torch.allclose(ours[batch["choice_mask"]], own[batch["choice_mask"]], atol=1e-5)
    assert torch.equal(masked_logits(own, batch["choice_mask"]) < -1e30, ~batch["choice_mask"])
    assert family_for("multiple_choice") is family_for("swag")
    assert family_for("swag").name == "multiple_choice"


def test_accuracy_and_predictions_file_name_the_chosen_index_and_text(tmp_path, tok):
    ex, _ = varying_features(tmp_path, tok)
    logits = [np.array([0.2, 0.1]), np.array([0.0, 0.1, 0.5, 0.4])]
    predicted = predicted_choices(logits)
    assert predicted == [0, 2]
    assert choice_metrics(predicted, ex) == {"accuracy": 0.0}
    assert choice_metrics([1, 3], ex) == {"accuracy": 1.0}
    write_choice_predictions(tmp_path / "predictions.jsonl", ex, predicted)
    lines = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert lines == [{"id": "0", "prediction": 0, "text": "good", "label": 1},
                     {"id": "1", "prediction": 2, "text": "dull", "label": 3}]  # fmt: skip


def test_chinese_idiom_cloze_keeps_each_idiom_whole_beside_the_passage_around_its_blank(tmp_path):
    from transformers import BertTokenizerFast

    chars = sorted(set("他们一起高兴地走了回家今天天气很好我画蛇添足半途而废一心一意"))
    zh = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])})
    passage = "今天天气很好" * 4 + "他们#idiom#地走了" + "回家" * 8
    path = write_jsonl(tmp_path / "chid.jsonl", [
        {"id": "b1", "context": passage, "choices": ["画蛇添足", "半途而废", "一心一意"], "label": "一心一意"},
    ])  # fmt: skip
    ex = read_choices(path)
    assert ex.labels == [2] and ex.counts()["blanks"] == 1
    feats = encode_choices(zh, ex, max_seq_length=24)
    for k, idiom in enumerate(["画蛇添足", "半途而废", "一心一意"]):
        row = ids(feats, 0, k)
        assert len(row) == 24 and zh.decode(row[row.index(zh.sep_token_id) + 1 : -1]).replace(" ", "") == idiom
        context = row[1 : row.index(zh.sep_token_id)]
        middle = context.index(zh.mask_token_id)
        assert abs(middle - (len(context) - 1 - middle)) <= 1
    assert feats.truncated == 1 and feats.choices_cut == 0
