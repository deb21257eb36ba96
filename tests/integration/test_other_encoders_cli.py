"""`bertcli finetune` and `bertcli eval` on encoders other than BERT, for every task family: a tiny random
RoBERTa, DistilBERT, ELECTRA, ALBERT, DeBERTa-v2, ModernBERT and MPNet (hidden 32, one layer), each with a tokenizer of
its own kind (`encoder_fixtures`), run a few steps of a sentence-pair classification (custom, two text columns),
tagging (ner), extractive QA (squad) and multiple choice (swag); eval scores best/, which loads with the family's
Auto class. The load report says which forward runs (the model's own: the written-out encoder is BERT's alone),
and finetune says how a model without segment ids 0 and 1 reads a pair.

Every architecture x family pair is tested: transformers 5 has a sequence-classification, token-classification,
question-answering and multiple-choice head for each of the seven (none skipped).
"""

from __future__ import annotations

import json
import math

import pytest
from encoder_fixtures import (
    ARCHITECTURES,
    build_tokenizer,
    save_encoder,
    write_conll,
    write_pairs,
    write_squad,
    write_swag,
)
from typer.testing import CliRunner

from bertcli.cli.app import app

# family -> (finetune task, eval task, train/dev writer, the Auto class best/ loads with, the main metric, extra)
FAMILIES = {
    "pairs": ("custom", "custom", write_pairs, "csv", "AutoModelForSequenceClassification", "accuracy",
              ["--set", "task.text_columns=[premise,hypothesis]"]),
    "ner": ("ner", "ner", write_conll, "txt", "AutoModelForTokenClassification", "f1", []),
    "squad": ("squad", "squad", write_squad, "json", "AutoModelForQuestionAnswering", "f1",
              ["--set", "task.doc_stride=8"]),
    "swag": ("swag", "swag", write_swag, "csv", "AutoModelForMultipleChoice", "accuracy", []),
}  # fmt: skip
SEGMENT_NOTES = {"roberta": "one segment embedding (type_vocab_size 1)",
                 "distilbert": "no segment embeddings (DistilBertForSequenceClassification)",
                 "deberta-v2": "no segment embeddings (DebertaV2ForSequenceClassification)",  # type_vocab_size 0
                 "modernbert": "no segment embeddings (ModernBertForSequenceClassification)",
                 "mpnet": "no segment embeddings (MPNetForSequenceClassification)"}  # fmt: skip
STEPS = ["--set", "train.max_steps=2", "--set", "data.batch_size=8", "--set", "data.max_seq_length=32",
         "--set", "train.learning_rate=1e-3", "--set", "train.log_every=1000"]  # fmt: skip


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Train (16 examples) and dev (8) files of every family, written once."""
    root = tmp_path_factory.mktemp("data")
    out = {}
    for family, (_, _, write, ext, *_rest) in FAMILIES.items():
        out[family] = (write(root / f"{family}-train.{ext}", 16, 1), write(root / f"{family}-dev.{ext}", 8, 2))
    return out


@pytest.fixture(scope="module", params=ARCHITECTURES)
def encoder(request, tmp_path_factory):
    """One tiny random model (and its tokenizer, built once) per architecture, for every family's test."""
    arch = request.param
    return arch, save_encoder(tmp_path_factory.mktemp(arch) / "model", arch, build_tokenizer(arch))


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_and_eval_run_and_best_loads_with_the_auto_class(encoder, family, data, tmp_path):
    import transformers

    arch, model = encoder
    task, eval_task, _, _, auto_class, metric, extra = FAMILIES[family]
    train, dev = data[family]
    files = ["--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]"]
    code, output = invoke("finetune", task, "--model", model, "-o", tmp_path / "run", *files, *STEPS, *extra)
    assert code == 0, output
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    assert math.isfinite(best[metric]), best
    saved = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["architectures"]
    assert f"forward: the model's own ({saved[0]})" in output, output  # the speed paths are BERT's alone
    if family == "pairs":  # how the model tells the two texts apart, where segment ids 0 and 1 are not read
        notes = [line for line in output.splitlines() if "segment embedding" in line]
        assert len(notes) == (arch in SEGMENT_NOTES) and all(SEGMENT_NOTES[arch] in n for n in notes), output
    code, output = invoke("eval", "--task", eval_task, "--model", tmp_path / "run" / "best", "--data", dev,
                          "-o", tmp_path / "ev", *extra)  # fmt: skip
    assert code == 0, output
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert math.isfinite(scored["metrics"][metric]), scored
    loaded = getattr(transformers, auto_class).from_pretrained(str(tmp_path / "run" / "best"))
    assert loaded.config.model_type == arch and type(loaded).__name__ == saved[0]
    if family == "ner":  # best/ keeps the tokenizer that reads words given one by one as within running text
        tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "run" / "best"))
        words = ["alice", "went", "to", "paris"]
        running = build_tokenizer(arch)(" " + " ".join(words), add_special_tokens=False)["input_ids"]
        assert tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] == running


def test_max_seq_length_beyond_robertas_positions_is_one_line_before_anything_is_written(data, tmp_path):
    """RoBERTa's 66 position embeddings hold 64 pieces: its positions start after pad_token_id + 1."""
    model = save_encoder(tmp_path / "roberta", "roberta")
    train, dev = data["pairs"]
    code, output = invoke("finetune", "custom", "--model", model, "-o", tmp_path / "run", "--set",
                          f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]", *FAMILIES["pairs"][-1],
                          "--set", "data.max_seq_length=65")  # fmt: skip
    assert code == 2, output
    assert output.strip() == ("error: data.max_seq_length 65 exceeds the model's max_position_embeddings 66 (64 "
                              "pieces: its positions start after pad_token_id + 1); lower it")  # fmt: skip
    assert not (tmp_path / "run").exists()
