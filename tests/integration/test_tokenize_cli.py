"""`bertcli tokenize` end to end through the real CLI, on small corpora made here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_corpus
from typer.testing import CliRunner

from bertcli.cli.app import app

SMALL = ["--set", "tokenizer.vocab_size=200", "--set", "tokenizer.min_frequency=1", "--set", "run.num_proc=1"]


def run(*args: str):
    return CliRunner().invoke(app, ["tokenize", *map(str, args)])


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def same_dataset(a: Path, b: Path) -> bool:
    """Same rows in the same splits (datasets' state.json holds a random fingerprint, so bytes may differ)."""
    from datasets import load_from_disk

    da, db = load_from_disk(str(a)), load_from_disk(str(b))
    return set(da) == set(db) and all(da[s].to_dict() == db[s].to_dict() for s in da)


@pytest.fixture()
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus.txt", docs=40)


def test_tokenize_writes_tokenizer_dataset_stats_and_config(tmp_path, corpus):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    result = run(corpus, "-o", out, *SMALL, "--set", "nsp.max_seq_length=48", "--preview", "1")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"tokenizer", "dataset", "stats.json", "config.yaml"}
    ds = load_from_disk(str(out / "dataset"))
    assert set(ds) == {"train", "validation"} and len(ds["validation"]) > 0
    assert ds["train"].column_names == [
        "input_ids",
        "token_type_ids",
        "special_tokens_mask",
        "next_sentence_label",
        "word_starts",
    ]
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    for row in ds["train"]:
        ids = row["input_ids"]
        assert len(ids) <= 48 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert row["special_tokens_mask"] == [int(i in (tok.cls_token_id, tok.sep_token_id)) for i in ids]
        # English words: a token and its ## pieces; a segment (after [CLS] or [SEP]) always starts a word
        tokens, special = tok.convert_ids_to_tokens(ids), row["special_tokens_mask"]
        expected = [int(not t.startswith("##") or k == 0 or special[k - 1]) for k, t in enumerate(tokens)]
        assert row["word_starts"] == expected
    stats = json.loads((out / "stats.json").read_text())
    for key in (
        "documents",
        "sentences",
        "tokens",
        "instances",
        "random_next_ratio",
        "length_histogram",
        "unk_rate",
    ):
        assert key in stats
    assert stats["instances"] == len(ds["train"]) + len(ds["validation"])
    assert sum(stats["length_histogram"].values()) == stats["instances"]
    labels = list(ds["train"]["next_sentence_label"]) + list(ds["validation"]["next_sentence_label"])
    assert stats["random_next_ratio"] == round(sum(labels) / len(labels), 4)
    # the preview shows each token with its position and segment id, and the label
    assert "next_sentence_label=" in result.output and "← A starts" in result.output and "← B starts" in result.output
    assert " [CLS] " in result.output and "segment id 1" in result.output


def test_saved_config_reproduces_the_run(tmp_path, corpus, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.chdir(tmp_path)
    assert run(corpus.name, "-o", "first", *SMALL).exit_code == 0
    saved = first / "config.yaml"
    stored = yaml.safe_load(saved.read_text())
    assert stored["input"]["paths"] == [str(corpus)] and stored["output"]["dir"] == str(first)  # absolute
    monkeypatch.chdir(first)  # config.yaml works from any directory
    result = run("--config", "config.yaml", "-o", second)
    assert result.exit_code == 0, result.output
    assert same_dataset(first / "dataset", second / "dataset")
    assert (first / "tokenizer" / "tokenizer.json").read_text() == (second / "tokenizer" / "tokenizer.json").read_text()


def test_output_does_not_depend_on_num_proc(tmp_path, corpus):
    from datasets import load_from_disk

    outs = []
    for n in (1, 2):
        out = tmp_path / f"np{n}"
        result = run(corpus, "-o", out, *SMALL, "--set", f"run.num_proc={n}", "--set", "run.batch_size=7",
                     "--set", "nsp.dupe_factor=2")  # fmt: skip
        assert result.exit_code == 0, result.output
        outs.append(load_from_disk(str(out / "dataset")))
    for split in ("train", "validation"):
        assert outs[0][split].to_dict() == outs[1][split].to_dict()


def test_no_validation_split(tmp_path, corpus):
    from datasets import load_from_disk

    out = tmp_path / "out"
    result = run(corpus, "-o", out, *SMALL, "--set", "split.validation_fraction=0")
    assert result.exit_code == 0, result.output
    ds = load_from_disk(str(out / "dataset"))
    assert len(ds["validation"]) == 0 and len(ds["train"]) > 0
    assert ds["validation"].features == ds["train"].features


def test_print_config_prints_resolved_yaml_and_writes_nothing(tmp_path, corpus):
    result = run(corpus, "-o", tmp_path / "o", "--set", "nsp.max_seq_length=256", "--print-config")
    assert result.exit_code == 0 and "max_seq_length: 256" in result.output
    assert not (tmp_path / "o").exists()


def test_one_sentence_documents_and_long_sentences_are_counted(tmp_path):
    text = "Only one sentence here.\n\n" + ("word " * 300).strip() + ".\nShort one.\nAnother.\n\nA.\nB.\nC.\n"
    (tmp_path / "c.txt").write_text(text)
    out = tmp_path / "out"
    sets = ["--set", "nsp.max_seq_length=32", "--set", "split.validation_fraction=0", "--set", "input.max_cut_share=1"]
    result = run(tmp_path / "c.txt", "-o", out, *SMALL, *sets)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["single_sentence_documents"] == 1 and stats["truncated_sentences"] == 1
    assert stats["input_formats"] == {str(tmp_path / "c.txt"): "sentences"}
    # the 300-word sentence keeps 29 tokens (32 less [CLS] and two [SEP]): 300 words and its "." less 29 are cut
    assert stats["cut_tokens"] == 301 - 29
    assert stats["cut_token_share"] == round(272 / (stats["tokens"] + 272), 6)
    assert "1 long sentences cut" in result.output


def _reviews(path: Path, n: int = 30) -> Path:
    """One review per line, each a paragraph of eight sentences and a document of its own."""
    sentences = [f"The film number {k} was a long story about a quiet town and its people." for k in range(8)]
    path.write_text("\n\n".join(" ".join(sentences) for _ in range(n)) + "\n", encoding="utf-8")
    return path


def test_auto_reads_a_review_per_line_as_paragraphs(tmp_path):
    reviews = _reviews(tmp_path / "reviews.txt")
    out = tmp_path / "out"
    result = run(reviews, "-o", out, *SMALL, "--set", "nsp.max_seq_length=32", "--set", "split.validation_fraction=0")
    assert result.exit_code == 0, result.output
    assert "1 as paragraphs" in result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_formats"] == {str(reviews): "paragraphs"}
    assert stats["cut_tokens"] == 0 and stats["documents"] == 30 and stats["sentences"] == 30 * 8


def test_a_large_cut_share_stops_before_anything_is_written_and_says_the_fix(tmp_path, corpus):
    reviews = _reviews(tmp_path / "reviews.txt")
    out = tmp_path / "out"
    assert run(corpus, "-o", out, *SMALL).exit_code == 0
    before = tree(out)
    sets = ["--set", "input.format=sentences", "--set", "nsp.max_seq_length=32", "--set", "split.validation_fraction=0"]
    result = run(reviews, "-o", out, *SMALL, *sets, "--overwrite")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # progress bars aside
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    stats = json.loads(allowed_stats(tmp_path, reviews, sets))
    share = f"would drop {stats['cut_token_share']:.1%} of the corpus's tokens ({stats['cut_tokens']:,} of "
    assert share in lines[0] and "more than input.max_cut_share 0.05" in lines[0] and stats["cut_token_share"] > 0.5
    assert "set input.format: paragraphs" in lines[0] and "input.max_cut_share=1" in lines[0]
    assert tree(out) == before  # the earlier run is untouched, and nothing of this one is left


def allowed_stats(tmp_path: Path, corpus: Path, sets: list[str]) -> str:
    """stats.json of the same run with the cut allowed (input.max_cut_share=1)."""
    allowed = run(corpus, "-o", tmp_path / "allowed", *SMALL, *sets, "--set", "input.max_cut_share=1")
    assert allowed.exit_code == 0, allowed.output
    return (tmp_path / "allowed" / "stats.json").read_text()


# --- bad input: exit 2, one clear line, nothing left behind --------------------------------------------------


def assert_clean_failure(result, out: Path, *fragments: str):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert not out.exists(), "a failed run must not leave an output directory behind"


def test_missing_file_and_empty_glob(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run(tmp_path / "nope.txt", "-o", out), out, "input file", "nope.txt does not exist")
    assert_clean_failure(run(str(tmp_path / "*.gz"), "-o", out), out, "matches no files")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    out = tmp_path / "out"
    assert_clean_failure(run(tmp_path / "empty.txt", "-o", out, *SMALL), out, "empty corpus", "empty.txt")


def test_non_utf8_file_names_file_and_offset(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"Good line.\nAnother good one.\n\nCaf\xe9.\n")
    out = tmp_path / "out"
    result = run(tmp_path / "bad.txt", "-o", out, *SMALL)
    assert_clean_failure(result, out, "bad.txt: line 4, byte offset 33: not UTF-8", "on_bad_bytes=replace")


def test_max_seq_length_too_small_names_the_key(tmp_path, corpus):
    out = tmp_path / "out"
    result = run(corpus, "-o", out, "--set", "nsp.max_seq_length=4")
    assert_clean_failure(result, out, "nsp.max_seq_length", "greater than or equal to 8")


def test_vocab_smaller_than_alphabet(tmp_path, corpus):
    out = tmp_path / "out"
    result = run(corpus, "-o", out, "--set", "tokenizer.vocab_size=20", "--set", "run.num_proc=1")
    assert_clean_failure(result, out, "tokenizer.vocab_size 20 is smaller than the corpus alphabet")


def test_tokenizer_folder_that_is_not_one(tmp_path, corpus):
    (tmp_path / "notatok").mkdir()
    out = tmp_path / "out"
    result = run(corpus, "-o", out, "--set", f"tokenizer.path={tmp_path / 'notatok'}")
    assert_clean_failure(result, out, "is not a tokenizer folder")


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("nsp.max_seq_lenght=64", "did you mean 'nsp.max_seq_length'"),
        ("nsp.dupe_factor=many", "'nsp.dupe_factor' (--set): Input should be a valid integer"),
        ("nsp.nsp_probability=1.5", "'nsp.nsp_probability' (--set): Input should be less than or equal to 1"),
        ("input.format=pdf", "'input.format' (--set)"),
    ],
)
def test_config_errors_exit_2_naming_the_key(tmp_path, corpus, override, fragment):
    out = tmp_path / "out"
    assert_clean_failure(run(corpus, "-o", out, "--set", override), out, "config error", fragment)


def test_reuses_a_given_tokenizer(tmp_path, corpus):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(corpus, "-o", first, *SMALL).exit_code == 0
    result = run(corpus, "-o", second, *SMALL, "--set", f"tokenizer.path={first / 'tokenizer'}")
    assert result.exit_code == 0, result.output
    assert same_dataset(first / "dataset", second / "dataset")


def test_refuses_a_non_empty_output_dir_and_a_failed_overwrite_keeps_the_old_run(tmp_path, corpus):
    out = tmp_path / "out"
    assert run(corpus, "-o", out, *SMALL).exit_code == 0
    before = tree(out)
    result = run(corpus, "-o", out, *SMALL)
    assert result.exit_code == 2 and "is not empty" in result.output and "--overwrite" in result.output
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe broken\n")
    result = run(tmp_path / "bad.txt", "-o", out, *SMALL, "--overwrite")
    assert result.exit_code == 2
    assert tree(out) == before  # the good run's files are untouched, and no temporary files are left
    assert run(corpus, "-o", out, *SMALL, "--set", "nsp.seed=9", "--overwrite").exit_code == 0
    assert tree(out) != before and not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_debug_shows_the_traceback(tmp_path):
    result = run(tmp_path / "nope.txt", "-o", tmp_path / "o", "--debug")
    assert result.exit_code != 0 and result.exception is not None


# --- the command itself ------------------------------------------------------------------------------------


def test_help_is_light_and_lists_working_commands():
    code = (
        "import sys; from typer.testing import CliRunner; from bertcli.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; print(r.output); "
        "print('HEAVY:', sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY: []" in out and "tokenize" in out


def test_version_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "bertcli", "--version"], capture_output=True, text=True, check=True)
    from bertcli import __version__

    assert out.stdout.strip() == f"bertcli {__version__}"


def test_bad_bytes_found_by_a_worker_name_the_line_of_the_file(tmp_path, corpus):
    """With a given tokenizer, worker processes read the corpus in units: an error deep in the file still names
    its line and byte offset in the whole file, exits 2 and leaves nothing behind."""
    first, out = tmp_path / "first", tmp_path / "out"
    assert run(corpus, "-o", first, *SMALL).exit_code == 0
    good = corpus.read_bytes()
    (tmp_path / "bad.txt").write_bytes(good + b"\nCaf\xe9.\n")
    line = good.count(b"\n") + 2
    result = run(
        tmp_path / "bad.txt", "-o", out, *SMALL, "--set", "run.num_proc=2",
        "--set", f"tokenizer.path={first / 'tokenizer'}",
    )  # fmt: skip
    assert_clean_failure(result, out, f"bad.txt: line {line}, byte offset {len(good) + 4}: not UTF-8")
