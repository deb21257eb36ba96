"""Failure paths of issue 12 through the real CLI: each is exit 2, one message naming the file, line or key and
what to do, no traceback, and nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from finetune_fixtures import make_tokenizer, sst2_folder, tiny_config
from typer.testing import CliRunner

from bertcli.cli.app import app

SMALL = ["--set", "tokenizer.vocab_size=200", "--set", "tokenizer.min_frequency=1", "--set", "run.num_proc=1"]


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_refused(code: int, output: str, out: Path, *fragments: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in output, output
    assert not out.exists(), "a refused run must not leave an output directory"


def documents(path: Path, n: int) -> Path:
    path.write_text("\n".join(f"Document {d} begins here.\nIt ends here.\n" for d in range(n)), encoding="utf-8")
    return path


def must_not_run(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran")

    return fail


# --- NSP on a split of a single document ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_docs,fraction,fragment",
    [
        (1, "0", "the train split would hold 1 document(s) of the corpus's 1"),
        (2, "0.5", "the validation split would hold 0 document(s) of the corpus's 2"),
        (3, "0.01", "the validation split would hold 1 document(s) of the corpus's 3"),
    ],
)
def test_a_split_too_small_for_nsp_is_refused_before_any_work(tmp_path, monkeypatch, n_docs, fraction, fragment):
    """Counted while reading the corpus: the tokenizer is never trained, no pair is labelled."""
    monkeypatch.setattr("bertcli.pipelines.tokenize.train_tokenizer", must_not_run("train_tokenizer"))
    corpus, out = documents(tmp_path / "corpus.txt", n_docs), tmp_path / "out"
    code, output = run("tokenize", corpus, "-o", out, *SMALL, "--set", f"split.validation_fraction={fraction}")
    assert_refused(code, output, out, fragment, "at least 2 in every split", "add documents")
    if fraction != "0":
        assert "split.validation_fraction=0" in output


def test_a_document_lost_in_tokenizing_is_counted_before_pairs_are_built(tmp_path, monkeypatch):
    """Two documents in the file, but one holds only control characters, which the normaliser removes: the train
    split would hold one document, found after tokenizing and before any NSP pair is built."""
    monkeypatch.setattr("bertcli.pipelines.tokenize.build_nsp_batch", must_not_run("build_nsp_batch"))
    corpus, out = tmp_path / "corpus.txt", tmp_path / "out"
    corpus.write_text("A real sentence.\nAnd another one.\n\n\x01\x02\x03\n", encoding="utf-8")
    code, output = run("tokenize", corpus, "-o", out, *SMALL, "--set", "split.validation_fraction=0")
    assert_refused(code, output, out, "the train split would hold 1 document(s) of the corpus's 1")


# --- negative seeds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command,key",
    [
        ("tokenize", "nsp.seed"),
        ("tokenize", "split.seed"),
        ("pretrain", "train.seed"),
        ("pretrain", "masking.eval_seed"),
        ("finetune", "train.seed"),
        ("eval", "masking.seed"),
    ],
)
def test_a_negative_seed_is_a_config_error_naming_key_and_range(tmp_path, command, key):
    corpus, out = documents(tmp_path / "corpus.txt", 4), tmp_path / "out"
    inputs = {
        "tokenize": [corpus],
        "pretrain": [tmp_path],
        "finetune": ["custom", "--model", tmp_path, "--set", f"data.train_file={corpus}"],
        "eval": ["--model", tmp_path, "--data", corpus],
    }[command]
    code, output = run(command, *inputs, "-o", out, "--set", f"{key}=-5")
    assert_refused(code, output, out, f"config error: '{key}' (--set)", "got -5", "valid: 0 <= ", "<= 4294967295")


def test_finetune_seeds_option_names_the_option_the_key_and_the_range(tmp_path):
    out = tmp_path / "out"
    code, output = run("finetune", "custom", "--model", tmp_path, "--seeds", "1,-1", "-o", out)
    assert_refused(code, output, out, "--seeds '1,-1': seed -1 is out of range", "train.seeds", "0 to 4294967295")
    code, output = run("finetune", "custom", "--model", tmp_path, "--seeds", "-1", "-o", out)
    assert_refused(code, output, out, "--seeds '-1'", "train.seeds")


# --- file names that are not UTF-8 ----------------------------------------------------------------------------

LATIN1_NAME = os.fsdecode(b"caf\xe9.txt")  # as Python sees the bytes of a Latin-1 name (PEP 383)


def test_a_latin1_file_name_given_directly_is_a_config_error(tmp_path):
    corpus, out = documents(tmp_path / LATIN1_NAME, 4), tmp_path / "out"
    code, output = run("tokenize", corpus, "-o", out, *SMALL)
    assert_refused(
        code, output, out, "config error: 'input.paths.0' (command line): ", "caf\\xe9.txt' is not valid UTF-8",
        "convmv -f latin1 -t utf-8",
    )  # fmt: skip
    assert len(output.strip().splitlines()) == 1


def test_a_latin1_file_name_matched_by_a_glob_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr("bertcli.pipelines.tokenize.train_tokenizer", must_not_run("train_tokenizer"))
    (tmp_path / "in").mkdir()
    documents(tmp_path / "in" / "a.txt", 4)
    documents(tmp_path / "in" / LATIN1_NAME, 4)
    pattern, out = f"{tmp_path}/in/*.txt", tmp_path / "out"
    code, output = run("tokenize", pattern, "-o", out, *SMALL)
    assert_refused(
        code, output, out, f"input file name '{tmp_path}/in/caf\\xe9.txt' (matched by '{pattern}') is not valid UTF-8",
        f"convmv -f latin1 -t utf-8 --notest {pattern}",
    )  # fmt: skip
    assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize("how", ["-o", "--set"])
def test_an_output_dir_that_is_not_utf8_names_the_key(tmp_path, how):
    corpus, out = documents(tmp_path / "corpus.txt", 4), tmp_path / LATIN1_NAME
    where = ["-o", out] if how == "-o" else ["--set", f"output.dir={out}"]
    code, output = run("tokenize", corpus, *where, *SMALL)
    origin = "command line" if how == "-o" else "--set"
    assert_refused(code, output, out, f"config error: 'output.dir' ({origin}): ", "caf\\xe9.txt' is not valid UTF-8")


# --- GLUE files in Windows-1252 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification folder with SST-2's labels, and its tokenizer."""
    from transformers import BertForSequenceClassification

    path = tmp_path_factory.mktemp("models") / "classifier"
    labels = {0: "negative", 1: "positive"}
    config = tiny_config(id2label=labels, label2id={name: i for i, name in labels.items()})
    BertForSequenceClassification(config).save_pretrained(str(path))
    make_tokenizer(path)
    return path


def test_a_windows_1252_glue_file_names_the_line_and_the_byte_and_how_to_convert(tmp_path, classifier):
    folder, out = sst2_folder(tmp_path / "SST-2", n_train=20, n_dev=10), tmp_path / "out"
    train = folder / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines()
    lines[2] = "a caf\u00e9 film\t1"
    train.write_bytes("\n".join(lines).encode("cp1252") + b"\n")
    code, output = run("finetune", "sst2", "--model", classifier, "--data", folder, "-o", out)
    assert_refused(
        code, output, out, f"{train}:3: byte 6 of the line (0xE9) is not UTF-8",
        f"iconv -f cp1252 -t utf-8 {train} > {train}.utf8",
    )  # fmt: skip
    assert len(output.strip().splitlines()) == 1


# --- a directory where a file is expected ---------------------------------------------------------------------


def test_config_given_a_directory_says_it_is_one(tmp_path):
    corpus, out = documents(tmp_path / "corpus.txt", 4), tmp_path / "out"
    code, output = run("tokenize", corpus, "--config", tmp_path, "-o", out)
    assert_refused(code, output, out, f"config error: config file {tmp_path} is a directory; --config takes a YAML")
    assert "does not exist" not in output


def test_eval_data_given_a_directory_names_a_data_file_in_it(tmp_path, classifier):
    folder, out = sst2_folder(tmp_path / "SST-2", n_train=20, n_dev=10), tmp_path / "out"
    code, output = run("eval", "--model", classifier, "--task", "sst2", "--data", folder, "-o", out)
    expected = f"error: data file {folder} is a directory; give one of its data files, such as {folder}/dev.tsv"
    assert_refused(code, output, out, expected)
    assert len(output.strip().splitlines()) == 1


# --- a .jsonl corpus without input.format -------------------------------------------------------------------


def test_a_jsonl_corpus_is_read_as_jsonl_by_default_and_the_format_is_reported(tmp_path):
    corpus, out = tmp_path / "docs.jsonl", tmp_path / "out"
    texts = [f"Document {d} starts here. It has a middle part. It ends with number {d}." for d in range(8)]
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    code, output = run("tokenize", corpus, "-o", out, *SMALL)
    assert code == 0, output
    assert "input.format=auto: 1 file(s), 1 as jsonl" in output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents"] == 8 and stats["sentences"] == 24
    assert stats["input_formats"] == {str(corpus): "jsonl"}


# --- a UTF-16 file, a symlink loop (issue 28) ---------------------------------------------------------------------


def test_a_utf16_corpus_is_refused_with_how_to_convert_it_even_when_bad_bytes_are_replaced(tmp_path):
    corpus, out = tmp_path / "corpus.txt", tmp_path / "out"
    corpus.write_bytes("".join(f"Document {d} begins here.\nIt ends here.\n\n" for d in range(8)).encode("utf-16"))
    code, output = run("tokenize", corpus, "-o", out, *SMALL, "--set", "input.on_bad_bytes=replace")
    expected = (
        f"error: {corpus} is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8; "
        f"convert it: iconv -f UTF-16 -t UTF-8 {corpus} > {tmp_path / 'corpus-utf8.txt'}"
    )
    assert_refused(code, output, out, expected)


def test_a_symlink_loop_is_called_one(tmp_path):
    loop, out = tmp_path / "corpus.txt", tmp_path / "out"
    loop.symlink_to(loop)
    code, output = run("tokenize", loop, "-o", out, *SMALL)
    assert_refused(code, output, out, f"error: input file {loop} is a symlink loop")
    code, output = run("tokenize", documents(tmp_path / "real.txt", 8), "-o", out, "--config", loop)
    assert_refused(code, output, out, f"config error: config file {loop} is a symlink loop")
    assert "does not exist" not in output
