"""The per-layer fine-tuning options (bertcli.training.layers): layer-wise learning-rate decay gives each layer
lr * decay**depth and the schedule keeps the ratios; re-initialising changes the top layers and the pooler and
nothing else, the same way for a seed; frozen weights come out of a fine-tuning run bit-identical while the others
train, for classification, tagging and multiple choice; bad values are one-line errors before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate.utils import set_seed
from finetune_fixtures import NEGATIVE, POSITIVE, finetune_values, save_tiny_model, sentiment_rows, sentiment_task
from finetune_fixtures import tiny_config as bert_config
from multiple_choice_fixtures import swag_task
from safetensors.torch import load_file

from bertcli.config import load_config
from bertcli.errors import ConfigError, UsageError
from bertcli.pipelines.finetune import build_finetune_optimizer, run_finetune
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.registry import family_for
from bertcli.training.layers import encoder_parts, freeze, layerwise_groups, reinit_top_layers
from bertcli.training.optim import build_scheduler, parameter_groups


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A bare 2-layer BERT whose every tensor (LayerNorms and biases too) is off its initial value, so a
    re-initialised tensor always differs from the checkpoint's."""
    from transformers import BertModel

    path = save_tiny_model(tmp_path_factory.mktemp("m") / "noisy", "bare")
    model = BertModel.from_pretrained(str(path))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(path))
    return path


def cfg(**values) -> FinetuneConfig:
    return load_config(FinetuneConfig, values=values)


def expected_depth(name: str, n_layers: int) -> int:
    """The depth the module docstring defines, from the parameter's name in a BERT task model."""
    if ".encoder.layer." in name:
        return n_layers - int(name.split(".encoder.layer.")[1].split(".")[0])
    if ".embeddings." in name or name == "rows.weight":
        return n_layers + 1
    return 0  # the pooler and the head


# --- layer-wise learning-rate decay ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["classification", "tagging"])
def test_each_layer_gets_lr_times_decay_to_its_depth_and_the_schedule_keeps_the_ratios(family):
    from transformers import BertForSequenceClassification, BertForTokenClassification

    from bertcli.tasks.classification.training import ClassifierForward
    from bertcli.tasks.tagging.training import TaggerForward

    torch.manual_seed(0)
    if family == "classification":  # with TrainedRows: the trained embedding rows are a parameter of the forward
        net = ClassifierForward(BertForSequenceClassification(bert_config(num_labels=2)), torch.arange(12))
        assert net.rows is not None
    else:
        net = TaggerForward(BertForTokenClassification(bert_config(num_labels=5)))
    config = cfg(**{"model.path": "m", "data.train_file": "t", "task.name": "custom", "train.learning_rate": 1e-3,
                    "train.layer_lr_decay": 0.9, "train.warmup_steps": 2, "train.max_steps": 10})  # fmt: skip
    optimizer = build_finetune_optimizer(net, config)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    trained = [n for n, p in net.named_parameters() if p.requires_grad]
    assert sorted(names[i] for i in lr_of) == sorted(trained)  # every trained parameter, once
    for i, lr in lr_of.items():
        assert lr == 1e-3 * 0.9 ** expected_depth(names[i], 2), names[i]  # exactly
    depths = {expected_depth(names[i], 2) for i in lr_of}
    assert depths == {0, 1, 2, 3}
    # weight decay still spares biases and LayerNorms within each layer's groups
    for group in optimizer.param_groups:
        for p in group["params"]:
            spared = names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)]
            assert group["weight_decay"] == (0.0 if spared else 0.01), names[id(p)]
    scheduler = build_scheduler(optimizer, config.train, 10)
    for _ in range(4):  # through the warmup and into the decay
        optimizer.step()
        scheduler.step()
    top = next(g["lr"] for g in optimizer.param_groups if g["depth"] == 0)
    assert 0 < top < 1e-3
    for group in optimizer.param_groups:
        assert group["lr"] / top == pytest.approx(0.9 ** group["depth"], rel=1e-12)


def test_decay_1_keeps_the_two_weight_decay_groups_and_other_architectures_have_their_layers_found():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=40, dim=32, n_layers=3, n_heads=2,
                                                                 hidden_dim=64))  # fmt: skip
    plain = layerwise_groups(model, 0.01, 1e-3, 1.0)
    assert [[id(p) for p in g["params"]] for g in plain] == [
        [id(p) for p in g["params"]] for g in parameter_groups(model, 0.01)
    ] and all("lr" not in g for g in plain)  # the optimizer's own lr, as before the option existed
    parts = encoder_parts(model)
    assert parts.layers is model.distilbert.transformer.layer and parts.pooler is None
    lr_of = {id(p): g["lr"] for g in layerwise_groups(model, 0.01, 1e-3, 0.5) for p in g["params"]}
    assert lr_of[id(model.distilbert.embeddings.word_embeddings.weight)] == 1e-3 * 0.5**4
    assert lr_of[id(model.distilbert.transformer.layer[0].ffn.lin1.weight)] == 1e-3 * 0.5**3
    assert lr_of[id(model.distilbert.transformer.layer[2].ffn.lin1.weight)] == 1e-3 * 0.5
    assert lr_of[id(model.classifier.weight)] == lr_of[id(model.pre_classifier.weight)] == 1e-3


# --- re-initialising the top layers ------------------------------------------------------------------------------


def load_classifier(path, seed: int, reinit: int = 0):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)  # the new head's weights, then the re-initialised ones
    model = BertForSequenceClassification.from_pretrained(str(path), num_labels=2)
    done = reinit_top_layers(model, reinit)
    return model, done


def test_reinit_changes_the_top_layers_and_the_pooler_only_and_is_the_same_for_a_seed(noisy):
    checkpoint = {f"bert.{k}": v for k, v in load_file(str(noisy / "model.safetensors")).items()}
    kept, _ = load_classifier(noisy, seed=3)
    fresh, done = load_classifier(noisy, seed=3, reinit=1)
    assert done == ["layer 1", "the pooler"]
    again, _ = load_classifier(noisy, seed=3, reinit=1)
    other, _ = load_classifier(noisy, seed=4, reinit=1)
    redrawn = ("bert.encoder.layer.1.", "bert.pooler.")
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name  # deterministic for a seed
        if name.startswith(redrawn):
            assert not torch.equal(value, checkpoint[name]), name
        else:
            assert torch.equal(value, kept.state_dict()[name]), name  # the head too: same seed, drawn first
            if name in checkpoint:
                assert torch.equal(value, checkpoint[name]), name
    query = fresh.bert.encoder.layer[1].attention.self.query
    assert 0.01 < query.weight.std().item() < 0.04  # the model's own init: normal(0, initializer_range 0.02)
    assert torch.count_nonzero(query.bias) == 0 and torch.all(fresh.bert.pooler.dense.bias == 0)
    assert not torch.equal(query.weight, other.bert.encoder.layer[1].attention.self.query.weight)  # another seed


# --- freezing, through whole fine-tuning runs --------------------------------------------------------------------


def weights(folder) -> dict[str, torch.Tensor]:
    return {k.removeprefix("bert."): v for k, v in load_file(str(folder / "model.safetensors")).items()}


def assert_frozen(checkpoint, best, frozen_prefixes: tuple[str, ...]) -> None:
    """Every checkpoint tensor under `frozen_prefixes` bit-identical in best/, every other one changed."""
    before = weights(checkpoint)
    after = weights(best)
    assert any(k.startswith(frozen_prefixes) for k in before)
    for name, value in before.items():
        if name not in after:  # the pooler, for a head that does not read it
            continue
        if name.startswith(frozen_prefixes):
            assert torch.equal(after[name], value), name
        else:
            assert not torch.equal(after[name], value), name


def test_classification_frozen_bottom_trains_the_rest_with_reinit_and_llrd(noisy, tmp_path):
    train, dev = sentiment_task(tmp_path / "data", n_train=64, n_dev=16)
    values = finetune_values(noisy, tmp_path / "out", **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "train.epochs": 1, "model.freeze": 1, "model.reinit_top_layers": 1, "train.layer_lr_decay": 0.9,
    })  # fmt: skip
    result = run_finetune(cfg(**values))
    assert_frozen(noisy, tmp_path / "out" / "best", ("embeddings.", "encoder.layer.0."))
    share = result["load_report"]["layers"]
    assert share[0] == "re-initialised: layer 1, the pooler"
    assert share[1].startswith("frozen: embeddings + layer 0: ") and share[1].endswith("% of parameters")
    percent = int(share[1].split(": ")[2].split("%")[0])
    assert 30 < percent < 90  # the embeddings and one of two layers of a 32-wide model; not the head


def write_tagged(path, n: int, seed: int):
    """CoNLL lines over the fixtures' vocabulary: the positive and negative words are entities."""
    lines = []
    for text, _ in sentiment_rows(n, seed):
        for word in text.split():
            tag = "B-POS" if word in POSITIVE else "B-NEG" if word in NEGATIVE else "O"
            lines.append(f"{word} {tag}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_tagging_with_frozen_embeddings_trains_no_embedding_row(noisy, tmp_path):
    train, dev = write_tagged(tmp_path / "train.txt", 48, 1), write_tagged(tmp_path / "dev.txt", 16, 2)
    values = finetune_values(noisy, tmp_path / "out", **{
        "task.name": "ner", "data.train_file": str(train), "data.validation_files": [str(dev)], "train.epochs": 1,
        "model.freeze": "embeddings",
    })  # fmt: skip
    result = run_finetune(cfg(**values))
    assert result["load_report"]["layers"][0].startswith("frozen: embeddings: ")
    assert_frozen(noisy, tmp_path / "out" / "best", ("embeddings.",))


def test_multiple_choice_linear_probe_trains_the_head_alone(noisy, tmp_path):
    train, dev = swag_task(tmp_path, n_train=32, n_dev=8)
    values = finetune_values(noisy, tmp_path / "out", **{
        "task.name": "swag", "data.train_file": str(train), "data.validation_files": [str(dev)], "train.epochs": 1,
        "data.max_seq_length": 32, "model.freeze": "encoder", "train.layer_lr_decay": 0.9,
    })  # fmt: skip
    result = run_finetune(cfg(**values))
    layers = result["load_report"]["layers"]
    assert layers[0].startswith("frozen: the encoder (everything but the task head): 9")  # 99.x%
    assert_frozen(noisy, tmp_path / "out" / "best", ("embeddings.", "encoder.", "pooler."))  # all of it
    # the head trained: near its initial weights (drawn as the run drew them, from seed 42), not equal to them
    family = family_for("swag")
    spec, _ = family.finetune_spec(cfg(**values))
    set_seed(42)
    initial = family.build_model(noisy, spec, None)[0].classifier.weight.detach()
    head = load_file(str(tmp_path / "out" / "best" / "model.safetensors"))["classifier.weight"]
    assert not torch.equal(head, initial) and torch.allclose(head, initial, atol=0.01)  # init: std 0.02


def test_out_of_range_layer_options_are_one_line_errors_before_anything_is_written(noisy, tmp_path):
    train, dev = sentiment_task(tmp_path / "data", n_train=16, n_dev=8)
    base = finetune_values(noisy, tmp_path / "out", **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)]})  # fmt: skip
    for key, value, message in [
        ("model.reinit_top_layers", 3, "model.reinit_top_layers 3: the model in"),
        ("model.freeze", 5, "model.freeze 5: the model in"),
    ]:
        with pytest.raises(UsageError, match=message):
            run_finetune(cfg(**base, **{key: value}))
    with pytest.raises(UsageError, match="model.freeze 2 and model.reinit_top_layers 1 overlap"):
        run_finetune(cfg(**base, **{"model.freeze": 2, "model.reinit_top_layers": 1}))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="model.freeze encoder trains the head alone"):
        cfg(**base, **{"model.freeze": "encoder", "model.reinit_top_layers": 1})
    with pytest.raises(ConfigError, match="model.freeze"):
        cfg(**base, **{"model.freeze": "layers"})
    assert cfg(**base, **{"model.freeze": 1}).model.freeze == 1  # an integer stays one
    assert json.loads(cfg(**base).model_dump_json())["model"]["freeze"] == "none"


def test_freeze_returns_the_share_of_parameters():
    from transformers import BertForTokenClassification

    model = BertForTokenClassification(bert_config(num_labels=3))
    assert freeze(model, "none") is None
    line = freeze(model, 2)
    assert line.startswith("embeddings + layers 0-1: ")
    assert all(not p.requires_grad for p in model.bert.parameters()) and model.classifier.weight.requires_grad
