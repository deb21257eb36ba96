"""A model folder that cannot be used as given (damaged weights, a pickle that would run code, another tokenizer)
is a one-line error (exit 2) naming the file, found before any output directory is created; finetune and eval
alike. Tiny models (2 layers, width 32) made here."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
from finetune_fixtures import (
    NEGATIVE,
    POSITIVE,
    VOCAB,
    make_tokenizer,
    save_tiny_model,
    sentiment_rows,
    sentiment_task,
    write_rows,
)
from typer.testing import CliRunner

from bertcli.cli.app import app
from bertcli.errors import UsageError

FAST = ["--set", "data.max_seq_length=64", "--set", "train.learning_rate=1e-3", "--set", "data.batch_size=16"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny_model(root / kind, kind) for kind in ("pretraining", "classifier3")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    train, dev = sentiment_task(root, 32, 8)
    sst2 = write_rows(root / "sst2-dev.tsv", [("the cat was good", "1"), ("a bad film", "0")], ("sentence", "label"))
    return {"train": train, "dev": dev, "sst2": sst2}


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def finetune(model: Path, data: dict[str, Path], out: Path, *extra):
    args = ["finetune", "custom", "--model", model, "-o", out, "--set", f"data.train_file={data['train']}",
            "--set", f"data.validation_files=[{data['dev']}]", "--set", "train.epochs=1", *FAST, *extra]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def evaluate(model: Path, task: str, data_path: Path, out: Path):
    args = ["eval", "--model", model, "--task", task, "--data", data_path, "-o", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def expect_one_line_usage_error(code: int, output: str, out: Path, *needles: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in output, output
    assert not out.exists()  # checked before any output was prepared


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def garble_header(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[:16] = b"\xff" * 16  # the header length becomes absurd
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, garble_header], ids=["truncated", "garbage-header"])
def test_damaged_safetensors_is_named_before_any_output(models, data, tmp_path, damage):
    model = copy_model(models["pretraining"], tmp_path / "model")
    weights = model / "model.safetensors"
    damage(weights)
    code, output = finetune(model, data, tmp_path / "ft")
    expect_one_line_usage_error(code, output, tmp_path / "ft", f"{weights} is corrupt or truncated", "re-download")
    code, output = evaluate(model, "pretraining", data["dev"], tmp_path / "ev")
    expect_one_line_usage_error(code, output, tmp_path / "ev", f"{weights} is corrupt or truncated")
    # the re-run is not blocked by a half-made output folder: with the file restored it runs
    shutil.copy(models["pretraining"] / "model.safetensors", weights)
    code, output = finetune(model, data, tmp_path / "ft")
    assert code == 0, output


def test_damaged_classifier_is_named_by_eval_and_an_earlier_output_is_kept(models, data, tmp_path):
    model = copy_model(models["classifier3"], tmp_path / "model")
    truncate(model / "model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    result = CliRunner().invoke(app, ["eval", "--model", str(model), "--task", "mnli", "--data", str(data["sst2"]),
                                      "-o", str(out), "--overwrite"])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{model / 'model.safetensors'} is corrupt or truncated" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == '{"earlier": true}'


def test_sharded_checkpoint_with_a_missing_or_damaged_shard(models, data, tmp_path):
    from transformers import BertForPreTraining

    model = tmp_path / "model"
    BertForPreTraining.from_pretrained(str(models["pretraining"])).save_pretrained(str(model), max_shard_size="60KB")
    shutil.copy(models["pretraining"] / "tokenizer.json", model)
    shutil.copy(models["pretraining"] / "tokenizer_config.json", model)
    shards = sorted(model.glob("model-*.safetensors"))
    assert len(shards) > 1 and (model / "model.safetensors.index.json").is_file()
    truncate(shards[-1])
    code, output = finetune(model, data, tmp_path / "ft")
    expect_one_line_usage_error(code, output, tmp_path / "ft", f"{shards[-1]} is corrupt or truncated")
    shards[-1].unlink()
    code, output = finetune(model, data, tmp_path / "ft")
    expect_one_line_usage_error(code, output, tmp_path / "ft", "model.safetensors.index.json names shards",
                                shards[-1].name)  # fmt: skip


class RunsCode:
    """Pickled, it becomes a call of os.system: what a hostile pytorch_model.bin holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def bin_model(source: Path, target: Path, extra: dict | None = None) -> Path:
    """The model in `source` with its weights as a pytorch_model.bin (plus `extra` entries) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target)
    torch.save({**load_file(str(source / "model.safetensors")), **(extra or {})}, target / "pytorch_model.bin")
    return target


def test_pickle_that_would_run_code_is_refused_and_nothing_in_it_runs(models, data, tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    model = bin_model(models["pretraining"], tmp_path / "model", {"extra": RunsCode(marker)})
    weights = model / "pytorch_model.bin"
    for code, output, out in (
        (*finetune(model, data, tmp_path / "ft"), tmp_path / "ft"),
        (*evaluate(model, "pretraining", data["dev"], tmp_path / "ev"), tmp_path / "ev"),
    ):
        expect_one_line_usage_error(code, output, out, f"{weights} holds objects other than tensors (posix.system)",
                                    "not loaded", "model.safetensors", "only if you trust")  # fmt: skip
        for torch_advice in ("Re-running `torch.load`", "WeightsUnpickler", "add_safe_globals", "two options"):
            assert torch_advice not in output, output
        assert not marker.exists()
    # the payload is real: the full unpickler would have run it
    torch.load(weights, weights_only=False)
    assert marker.exists()


def test_damaged_pytorch_model_bin_is_named(models, data, tmp_path):
    model = bin_model(models["pretraining"], tmp_path / "model")
    truncate(model / "pytorch_model.bin")
    code, output = finetune(model, data, tmp_path / "ft")
    expect_one_line_usage_error(code, output, tmp_path / "ft", f"{model / 'pytorch_model.bin'} is corrupt or truncated")


def test_plain_tensor_bin_fine_tunes_and_the_report_says_how_it_was_read(models, data, tmp_path):
    model = bin_model(models["pretraining"], tmp_path / "model")
    code, output = finetune(model, data, tmp_path / "ft")
    assert code == 0, output
    assert "weights: pytorch_model.bin, read by torch's weights_only loader" in output
    assert "loaded 39 tensors" in output and "newly initialised: classifier.bias, classifier.weight" in output
    report = json.loads((tmp_path / "ft" / "metrics.json").read_text())["load_report"]
    assert report["weights"] == "pytorch_model.bin"


# the same size and the same special tokens, but "good" has the id "bad" has in VOCAB: another training text
OTHER_VOCAB = [VOCAB[0:5], NEGATIVE, POSITIVE, VOCAB[13:]]
OTHER_VOCAB = [token for part in OTHER_VOCAB for token in part]


def test_a_tokenizer_of_the_same_size_with_other_tokens_is_refused(models, data, tmp_path):
    assert len(OTHER_VOCAB) == len(VOCAB) and OTHER_VOCAB != VOCAB and VOCAB[5:13] == POSITIVE + NEGATIVE
    other = tmp_path / "other-tokenizer"
    make_tokenizer(other, OTHER_VOCAB)
    model = models["pretraining"]
    code, output = finetune(model, data, tmp_path / "ft", "--set", f"model.tokenizer_path={other}")
    needles = [f"the tokenizer in {other} (model.tokenizer_path)", f"than the one in the model folder {model}",
               "id 5 is 'bad' there, 'good' in the model's"]  # fmt: skip
    expect_one_line_usage_error(code, output, tmp_path / "ft", *needles)
    result = CliRunner().invoke(app, ["eval", "--model", str(models["classifier3"]), "--task", "mnli", "--data",
                                      str(data["sst2"]), "-o", str(tmp_path / "ev"),
                                      "--set", f"model.tokenizer_path={other}"])  # fmt: skip
    expect_one_line_usage_error(
        result.exit_code, result.output, tmp_path / "ev", str(other), str(models["classifier3"])
    )


def test_a_copy_of_the_models_own_tokenizer_elsewhere_is_accepted(models, tmp_path):
    from bertcli.model_dir import load_tokenizer_for

    copy = tmp_path / "copy"
    make_tokenizer(copy, VOCAB)
    tok = load_tokenizer_for(models["pretraining"], copy, len(VOCAB))
    assert tok.get_vocab() == {token: i for i, token in enumerate(VOCAB)}


def pretrain_step(root: Path) -> Path:
    """A `bertcli pretrain` checkpoints/step-N folder whose run tokenized with VOCAB (in root/tok/tokenizer)."""
    import yaml
    from safetensors.torch import save_file
    from transformers import BertForPreTraining

    from bertcli.modeling import bert_config
    from bertcli.schema.pretrain import PretrainConfig

    make_tokenizer(root / "tok" / "tokenizer")
    config = {"model": {"preset": "tiny", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                        "intermediate_size": 64, "max_position_embeddings": 64},
              "data": {"dirs": [str(root / "tok")]}}  # fmt: skip
    step = root / "checkpoints" / "step-10"
    step.mkdir(parents=True)
    (step / "config.yaml").write_text(yaml.safe_dump(config))
    (step / "trainer_state.json").write_text("{}")
    source = BertForPreTraining(bert_config(PretrainConfig.model_validate(config).model, len(VOCAB)))
    state = {f"model.{k}": v.contiguous() for k, v in source.state_dict().items() if "decoder" not in k}
    save_file(state, str(step / "model.safetensors"))
    return step


def test_pretrain_step_checkpoint_with_another_tokenizer_or_damaged_weights(tmp_path):
    from bertcli.model_dir import materialize_pretrain_checkpoint

    step = pretrain_step(tmp_path)
    make_tokenizer(tmp_path / "other", OTHER_VOCAB)
    with pytest.raises(UsageError, match="id 5 is 'bad' there, 'good' in the model's") as refused:
        materialize_pretrain_checkpoint(step, tmp_path / "work", tmp_path / "other")
    assert f"{tmp_path / 'other'}" in str(refused.value)
    assert f"{step} was trained with ({tmp_path / 'tok' / 'tokenizer'})" in str(refused.value)
    assert not (tmp_path / "work").exists()
    make_tokenizer(tmp_path / "same", VOCAB)
    assert materialize_pretrain_checkpoint(step, tmp_path / "work", tmp_path / "same").is_dir()
    truncate(step / "model.safetensors")
    with pytest.raises(UsageError, match="is corrupt or truncated"):
        materialize_pretrain_checkpoint(step, tmp_path / "work2")


@pytest.mark.parametrize("content", [b"\xff" + os.urandom(255), b'["not", "a", "config"]', b"{model_type: bert"],
                         ids=["random-bytes", "json-list", "broken-json"])  # fmt: skip
def test_config_json_that_is_not_a_json_config_is_named_by_finetune_and_eval(models, data, tmp_path, content):
    model = copy_model(models["pretraining"], tmp_path / "model")
    (model / "config.json").write_bytes(content)
    config = model / "config.json"
    code, output = finetune(model, data, tmp_path / "ft")
    needle = "is not JSON" if content[:1] != b"[" else "has no model_type"
    expect_one_line_usage_error(code, output, tmp_path / "ft", f"{config} ", needle)
    code, output = evaluate(model, "custom", data["dev"], tmp_path / "ev")
    expect_one_line_usage_error(code, output, tmp_path / "ev", f"{config} ", needle)
    assert "UnicodeDecodeError" not in output


def shard_bin(source: Path, target: Path, extra: dict | None = None) -> list[Path]:
    """The model in `source` as transformers' sharded torch checkpoint: pytorch_model-0000i-of-00003.bin files (the
    last one with `extra` entries) and pytorch_model.bin.index.json. Returns the shards."""
    import torch
    from safetensors.torch import load_file

    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target)
    state = load_file(str(source / "model.safetensors"))
    names = sorted(state)
    parts = [names[i::3] for i in range(3)]
    weight_map, shards = {}, []
    for i, part in enumerate(parts, start=1):
        shard = target / f"pytorch_model-{i:05d}-of-00003.bin"
        torch.save({**{k: state[k] for k in part}, **(extra if i == 3 and extra else {})}, shard)
        weight_map.update({k: shard.name for k in part})
        shards.append(shard)
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}  # fmt: skip
    (target / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return shards


def test_sharded_pytorch_model_bin_fine_tunes_through_the_weights_only_loader(models, data, tmp_path):
    model = tmp_path / "model"
    shard_bin(models["pretraining"], model)
    code, output = finetune(model, data, tmp_path / "ft")
    assert code == 0, output
    assert "weights: pytorch_model.bin.index.json and its shards, read by torch's weights_only loader" in output
    assert "loaded 39 tensors" in output and "newly initialised: classifier.bias, classifier.weight" in output
    report = json.loads((tmp_path / "ft" / "metrics.json").read_text())["load_report"]
    assert report["weights"] == "pytorch_model.bin.index.json"


def test_sharded_pytorch_model_bin_with_a_pickle_or_a_missing_shard_is_refused(models, data, tmp_path):
    marker = tmp_path / "code-ran"
    model = tmp_path / "model"
    shards = shard_bin(models["pretraining"], model, {"extra": RunsCode(marker)})
    code, output = finetune(model, data, tmp_path / "ft")
    expect_one_line_usage_error(code, output, tmp_path / "ft", f"{shards[-1]} holds objects other than tensors")
    assert not marker.exists()
    shards[-1].unlink()
    code, output = evaluate(model, "custom", data["dev"], tmp_path / "ev")
    expect_one_line_usage_error(code, output, tmp_path / "ev", "pytorch_model.bin.index.json names shards",
                                shards[-1].name)  # fmt: skip


def test_one_segment_model_fine_tunes_and_evaluates_sentence_pairs_with_segment_ids_0(data, tmp_path):
    # RoBERTa-style: type_vocab_size 1. A pair's second text carries segment id 1, which this model has no row for.
    import torch
    from finetune_fixtures import tiny_config
    from transformers import AutoModelForSequenceClassification, BertModel

    from bertcli.tasks.classification.training import ClassifierForward

    model = tmp_path / "model"
    torch.manual_seed(0)
    BertModel(tiny_config(type_vocab_size=1)).save_pretrained(str(model))
    make_tokenizer(model)
    pairs = write_rows(tmp_path / "pairs.csv", [(text, "the cat sat", label) for text, label in sentiment_rows(32, 1)],
                       ("premise", "hypothesis", "label"))  # fmt: skip
    columns = "task.text_columns=[premise,hypothesis]"
    code, output = finetune(model, {"train": pairs, "dev": pairs}, tmp_path / "ft", "--set", columns)
    assert code == 0, output
    assert output.count("one segment embedding (type_vocab_size 1): the second text of a pair is read with") == 1
    args = ["eval", "--model", tmp_path / "ft" / "best", "--task", "custom", "--data", pairs, "-o", tmp_path / "ev",
            "--set", columns]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    trained = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert evaluated["metrics"] == trained["best"]["metrics"]["validation"]  # eval reads the pairs as finetune did
    # segment ids 1 score as 0: the forward of a pair equals that of the same ids with segment 0 throughout
    classifier = ClassifierForward(AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "ft" / "best")))
    classifier.eval()
    ids = torch.tensor([[2, 5, 3, 20, 3]])
    with torch.no_grad():
        assert torch.equal(classifier(ids, torch.tensor([[0, 0, 0, 1, 1]])), classifier(ids, torch.zeros_like(ids)))
