"""Task registry and readers: each GLUE layout written exactly as GLUE ships it, custom formats, bad input."""

from __future__ import annotations

import json

import pytest

from bertcli.errors import UsageError
from bertcli.tasks import (
    GLUE_TASKS,
    custom_task,
    glue_task,
    infer_labels,
    read_examples,
    read_label_values,
    task_files,
    with_labels,
)


def write(path, lines, bom=False):
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def tsv(*fields):
    return "\t".join(fields)


def test_registry_has_every_glue_task_with_its_metrics():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax"}
    assert glue_task("cola").metrics == ("matthews_correlation",)
    assert set(glue_task("mrpc").metrics) == {"f1", "accuracy"} == set(glue_task("qqp").metrics)
    assert glue_task("stsb").metrics == ("pearson", "spearmanr") and glue_task("stsb").is_regression
    assert glue_task("mnli").validation_splits == ["validation_matched", "validation_mismatched"]
    assert glue_task("ax").eval_only and not glue_task("rte").eval_only
    assert glue_task("SST-2") is glue_task("sst2")
    for spec in GLUE_TASKS.values():
        assert spec.main_metric in spec.metrics
        assert spec.is_regression or len(spec.label_names) == len(spec.label_values) >= 2


def test_unknown_task_suggests_nearest():
    with pytest.raises(UsageError, match="did you mean 'mrpc'"):
        glue_task("mrcp")


def test_cola_without_header_and_quotes_are_text(tmp_path):
    f = write(
        tmp_path / "train.tsv",
        [
            tsv("gj04", "1", "", "Our friends won't buy this analysis."),
            tsv("gj04", "0", "*", 'He said "hello'),  # an unbalanced quote: csv quoting would swallow rows
            tsv("cj99", "1", "", 'She said "yes" twice.'),
        ],
    )
    ex = read_examples(glue_task("cola"), f)
    assert ex.text_a == ["Our friends won't buy this analysis.", 'He said "hello', 'She said "yes" twice.']
    assert ex.labels == [1, 0, 1] and ex.text_b is None and ex.lines == [1, 2, 3]


def test_cola_test_file_has_header_and_no_labels(tmp_path):
    f = write(tmp_path / "test.tsv", [tsv("index", "sentence"), tsv("0", "Bill whistled."), tsv("1", "A b.")])
    ex = read_examples(glue_task("cola"), f)
    assert not ex.has_labels and ex.index == ["0", "1"] and ex.text_a == ["Bill whistled.", "A b."]


def test_mrpc_with_bom_and_its_header(tmp_path):
    head = tsv("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    f = write(
        tmp_path / "dev.tsv",
        [
            head,
            tsv("1", "702876", "702977", "Amrozi accused him .", "Referring to him , Amrozi ."),
            tsv("0", "2108705", "2108831", "Yucaipa owned it .", "Yucaipa bought it ."),
        ],
        bom=True,
    )
    ex = read_examples(glue_task("mrpc"), f)
    assert ex.labels == [1, 0] and ex.text_b == ["Referring to him , Amrozi .", "Yucaipa bought it ."]
    test = write(
        tmp_path / "test.tsv",
        [tsv("index", "#1 ID", "#2 ID", "#1 String", "#2 String"), tsv("0", "1", "2", "A .", "B .")],
        bom=True,
    )
    ex = read_examples(glue_task("mrpc"), test)
    assert ex.labels is None and ex.text_a == ["A ."] and ex.index == ["0"]


MNLI_TRAIN_HEAD = [
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label",
]  # fmt: skip
MNLI_DEV_HEAD = MNLI_TRAIN_HEAD[:11] + ["label2", "label3", "label4", "label5", "gold_label"]


def test_mnli_many_columns_and_both_dev_files(tmp_path):
    def row(i, label, n_labels):
        parse = ["( ( a ) )", "( ( b ) )", "(ROOT a)", "(ROOT b)"]
        return tsv(str(i), "31193", "31193n", "government", *parse, f"Premise {i}.", f"Hypo {i}.",
                   *[label] * n_labels, label)  # fmt: skip

    write(tmp_path / "train.tsv", [tsv(*MNLI_TRAIN_HEAD), row(0, "neutral", 1), row(1, "contradiction", 1)])
    for name in ("dev_matched.tsv", "dev_mismatched.tsv"):
        write(tmp_path / name, [tsv(*MNLI_DEV_HEAD), row(7, "entailment", 5)])
    spec = glue_task("mnli")
    files = task_files(spec, tmp_path)
    assert list(files) == ["train", "validation_matched", "validation_mismatched"]
    train = read_examples(spec, files["train"])
    assert train.labels == [1, 2] and train.text_a == ["Premise 0.", "Premise 1."] and train.text_b[1] == "Hypo 1."
    assert read_examples(spec, files["validation_mismatched"]).labels == [0]


STSB_HEAD = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
]


def test_stsb_ten_columns_float_score_and_test_without(tmp_path):
    meta = ["main-captions", "MSRvid", "2012test", "0001", "none", "none"]
    f = write(
        tmp_path / "train.tsv",
        [
            tsv(*STSB_HEAD, "score"),
            tsv("0", *meta, "A plane takes off.", "An air plane is taking off.", "5.000"),
        ],
    )
    ex = read_examples(glue_task("stsb"), f)
    assert ex.labels == [5.0] and isinstance(ex.labels[0], float)
    test = write(tmp_path / "test.tsv", [tsv(*STSB_HEAD), tsv("0", *meta, "A girl.", "A boy.")])
    assert read_examples(glue_task("stsb"), test).labels is None


def test_qqp_header(tmp_path):
    head = tsv("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    f = write(tmp_path / "dev.tsv", [head, tsv("40", "81", "82", 'How do "I" learn?', "How to learn?", "1")])
    ex = read_examples(glue_task("qqp"), f)
    assert ex.labels == [1] and ex.index == ["40"] and ex.text_a == ['How do "I" learn?']


@pytest.mark.parametrize(
    ("task", "columns", "label", "expected"),
    [
        ("qnli", ("question", "sentence"), "not_entailment", 1),
        ("rte", ("sentence1", "sentence2"), "entailment", 0),
        ("wnli", ("sentence1", "sentence2"), "1", 1),
        ("sst2", ("sentence",), "0", 0),
    ],
)
def test_index_sentence_label_layouts_with_string_labels(tmp_path, task, columns, label, expected):
    head = ["index", *columns, "label"] if task != "sst2" else [*columns, "label"]
    texts = [f"text {c}" for c in columns]
    row = ["0", *texts, label] if task != "sst2" else [*texts, label]
    ex = read_examples(glue_task(task), write(tmp_path / "dev.tsv", [tsv(*head), tsv(*row)]))
    assert ex.labels == [expected] and ex.text_a == ["text " + columns[0]]


def test_ax_diagnostic_unlabelled(tmp_path):
    f = write(tmp_path / "AX.tsv", [tsv("index", "sentence1", "sentence2"), tsv("0", "The cat sat.", "A cat.")])
    assert read_examples(glue_task("ax"), f).labels is None


# --- custom tasks -----------------------------------------------------------------------------------------


def test_custom_csv_is_quoted_and_infers_labels(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text('text,label\n"Hello, world",pos\nbad day,neg\n"He said ""hi""",pos\n', encoding="utf-8")
    spec = custom_task(text_columns=["text"])
    spec = with_labels(spec, infer_labels(read_label_values(spec, f)))
    assert spec.label_names == ("neg", "pos")
    ex = read_examples(spec, f)
    assert ex.text_a == ["Hello, world", "bad day", 'He said "hi"'] and ex.labels == [1, 0, 1]


def test_infer_labels_is_stable_and_numeric_when_integers():
    assert infer_labels(["10", "2", "1", "2"]) == ("1", "2", "10")
    assert infer_labels(["b", "a", "B"]) == infer_labels(["B", "a", "b"]) == ("B", "a", "b")


def test_custom_jsonl_and_json_with_number_labels(tmp_path):
    rows = [{"a": "x y", "b": "z", "y": 1}, {"a": "u", "b": "v", "y": 0}]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    js = tmp_path / "d.json"
    js.write_text(json.dumps(rows), encoding="utf-8")
    spec = custom_task(text_columns=["a", "b"], label_column="y", labels=["0", "1"])
    for f in (jl, js):
        ex = read_examples(spec, f)
        assert ex.labels == [1, 0] and ex.text_b == ["z", "v"]


def test_custom_regression(tmp_path):
    f = write(tmp_path / "r.tsv", [tsv("text", "score"), tsv("a", "0.5"), tsv("b", "3")])
    ex = read_examples(custom_task(["text"], "score", regression=True), f)
    assert ex.labels == [0.5, 3.0]


# --- bad input: one line naming file, line and value ------------------------------------------------------


def test_label_not_in_list_names_file_line_value(tmp_path):
    f = write(tmp_path / "dev.tsv", [tsv("index", "sentence1", "sentence2", "label"), tsv("0", "a", "b", "maybe")])
    with pytest.raises(UsageError) as e:
        read_examples(glue_task("rte"), f)
    assert f"{f}:2" in str(e.value) and "'maybe'" in str(e.value) and "\n" not in str(e.value)


def test_missing_column_lists_found_columns(tmp_path):
    f = write(tmp_path / "dev.tsv", [tsv("index", "premise", "hypothesis", "label"), tsv("0", "a", "b", "0")])
    with pytest.raises(UsageError, match=r"no column 'sentence1'.*columns found: 'index', 'premise'"):
        read_examples(glue_task("rte"), f)


def test_empty_split_and_empty_text(tmp_path):
    with pytest.raises(UsageError, match="empty"):
        read_examples(glue_task("sst2"), write(tmp_path / "a.tsv", [tsv("sentence", "label")]))
    (tmp_path / "b.tsv").write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="empty"):
        read_examples(glue_task("sst2"), tmp_path / "b.tsv")
    f = write(tmp_path / "c.tsv", [tsv("sentence", "label"), tsv("fine", "1"), tsv("  ", "0")])
    with pytest.raises(UsageError, match=rf"{f}:3: empty text in column 'sentence'"):
        read_examples(glue_task("sst2"), f)
    assert read_examples(glue_task("sst2"), f, empty_text="skip").skipped_empty == 1


def test_non_numeric_regression_label(tmp_path):
    meta = ["g", "f", "y", "0", "s", "s"]
    f = write(tmp_path / "dev.tsv", [tsv(*STSB_HEAD, "score"), tsv("0", *meta, "a", "b", "high")])
    with pytest.raises(UsageError, match=rf"{f}:2: label 'high'.*not a number"):
        read_examples(glue_task("stsb"), f)


def test_wrong_field_count_is_an_error_not_a_shift(tmp_path):
    f = write(tmp_path / "dev.tsv", [tsv("sentence", "label"), tsv("a\tb", "1")])
    with pytest.raises(UsageError, match=rf"{f}:2: 3 fields, the header has 2"):
        read_examples(glue_task("sst2"), f)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_examples(glue_task("sst2"), tmp_path / "nope.tsv")
    f = write(tmp_path / "x.txt", ["a"])
    with pytest.raises(UsageError, match="data.format"):
        read_examples(custom_task(["text"]), f)


def test_label_not_in_list_of_a_custom_task_points_to_task_labels(tmp_path):
    f = write(tmp_path / "dev.csv", ["text,label", "fine,good", "meh,neutral"])
    with pytest.raises(UsageError) as e:
        read_examples(custom_task(["text"], labels=["bad", "good"]), f)
    assert f"{f}:3" in str(e.value) and "'neutral'" in str(e.value) and "task.labels" in str(e.value)


@pytest.mark.parametrize("ext", ["tsv", "csv", "jsonl", "json"])
def test_a_windows_1252_file_names_the_line_and_the_byte_in_it(tmp_path, ext):
    """cp1252 'é' (0xE9) on line 3 and, far into the file (past the decoder's first buffers), on line 2003."""
    rows = {
        "tsv": ["sentence\tlabel", "fine\t1", "caf\u00e9 au lait\t0"],
        "csv": ["sentence,label", "fine,1", "caf\u00e9 au lait,0"],
        "jsonl": ['{"sentence": "fine", "label": "1"}', '{"sentence": "caf\u00e9 au lait", "label": "0"}'],
        "json": ["[", '{"sentence": "fine", "label": "1"},', '{"sentence": "caf\u00e9 au lait", "label": "0"}', "]"],
    }[ext]
    if ext == "jsonl":
        rows.insert(0, '{"sentence": "good", "label": "1"}')
    f = tmp_path / f"dev.{ext}"
    f.write_bytes("\n".join(rows).encode("cp1252") + b"\n")
    byte = rows[2].encode("cp1252").index(b"\xe9") + 1
    with pytest.raises(UsageError) as e:
        read_examples(custom_task(["sentence"], labels=["0", "1"]), f)
    message = str(e.value)
    assert message.startswith(f"{f}:3: byte {byte} of the line (0xE9) is not UTF-8"), message
    assert f"iconv -f cp1252 -t utf-8 {f} > {f}.utf8" in message and "\n" not in message
    if ext in ("tsv", "csv"):
        filler = ["plain text\t1" if ext == "tsv" else "plain text,1"] * 2000
        f.write_bytes(("\n".join(rows[:2] + filler + rows[2:]) + "\n").encode("cp1252"))
        with pytest.raises(UsageError, match=rf"{f}:2003: byte {byte} of the line \(0xE9\)"):
            read_examples(custom_task(["sentence"], labels=["0", "1"]), f)


def test_a_directory_given_as_a_data_file_says_so_and_names_a_file_in_it(tmp_path):
    write(tmp_path / "train.tsv", [tsv("sentence", "label"), tsv("fine", "1")])
    write(tmp_path / "dev.tsv", [tsv("sentence", "label"), tsv("fine", "1")])
    for read in (read_examples, read_label_values):
        with pytest.raises(UsageError) as e:
            read(glue_task("sst2"), tmp_path)
        assert (
            str(e.value)
            == f"data file {tmp_path} is a directory; give one of its data files, such as {tmp_path}/dev.tsv"
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="is a directory, with no data file in it; give a tsv, csv or json"):
        read_examples(glue_task("sst2"), tmp_path / "empty")


@pytest.mark.parametrize("ext", ["tsv", "csv", "jsonl", "json"])
@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_a_utf16_or_utf32_data_file_is_named_with_how_to_convert_it(tmp_path, ext, encoding, name):
    rows = {
        "tsv": ["sentence\tlabel", "fine\t1"],
        "csv": ["sentence,label", "fine,1"],
        "jsonl": ['{"sentence": "fine", "label": "1"}'],
        "json": ['[{"sentence": "fine", "label": "1"}]'],
    }[ext]
    f = tmp_path / f"dev.{ext}"
    f.write_bytes(("\n".join(rows) + "\n").encode(encoding))
    with pytest.raises(UsageError) as e:
        read_examples(custom_task(["sentence"], labels=["0", "1"]), f)
    assert str(e.value) == (
        f"{f} is {name} text (it starts with a {name} byte-order mark), not UTF-8; convert it: "
        f"iconv -f {name} -t UTF-8 {f} > {tmp_path / f'dev-utf8.{ext}'}"
    )


def test_a_data_file_that_is_a_symlink_loop_says_so(tmp_path):
    (tmp_path / "dev.tsv").symlink_to(tmp_path / "dev.tsv")
    with pytest.raises(UsageError, match=f"^data file {tmp_path / 'dev.tsv'} is a symlink loop"):
        read_examples(glue_task("sst2"), tmp_path / "dev.tsv")


def test_eval_batches_are_numpy_in_one_onnx_process_and_tensors_otherwise():
    import numpy as np
    import torch
    from accelerate import Accelerator

    from bertcli.tasks.base import Collator
    from bertcli.tasks.evaluation import OneProcess, eval_batches

    class Rows(Collator):
        def arrays(self, indices):
            idx = np.asarray(indices, dtype=np.int64)
            return {"input_ids": np.stack([idx, idx + 1], axis=1), "example_index": idx}

    order = np.array([4, 2, 0, 3, 1])
    one = list(eval_batches(OneProcess(), order, 2, Rows()))
    assert [b["example_index"].tolist() for b in one] == [[4, 2], [0, 3], [1]]  # in order, the last batch short
    assert all(isinstance(v, np.ndarray) for b in one for v in b.values())
    loaded = list(eval_batches(Accelerator(cpu=True), order, 2, Rows()))
    assert all(isinstance(v, torch.Tensor) for b in loaded for v in b.values())
    assert [b["input_ids"].tolist() for b in loaded] == [b["input_ids"].tolist() for b in one]
    # a collate_fn that is no Collator (a family from elsewhere) gives its own batches in the ONNX process too
    plain = list(eval_batches(OneProcess(), order, 4, lambda idx: {"example_index": torch.tensor(list(idx))}))
    assert [b["example_index"].tolist() for b in plain] == [[4, 2, 0, 3], [1]]
