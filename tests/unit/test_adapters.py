"""LoRA adapters (`model.adapter: lora`, bertcli/training/adapters.py): the adapter runs in every family's forward,
written out or not, and gets gradients while everything but it and the head is frozen; finetune saves the merged
model (plain transformers) and the adapter alone (peft), which give the same logits; resume continues exactly; bad
target names are one line, exit 2, and leave nothing behind."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from finetune_fixtures import (
    NEGATIVE,
    POSITIVE,
    finetune_values,
    save_tiny_model,
    sentiment_task,
    sigint_in_forward,
    tiny_config,
)
from multiple_choice_fixtures import swag_task

from bertcli.config import load_config
from bertcli.errors import UsageError
from bertcli.pipelines.finetune import build_finetune_optimizer, run_finetune
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.classification.training import ClassifierForward
from bertcli.tasks.multiple_choice.training import ChoiceForward
from bertcli.tasks.span.training import SpanForward
from bertcli.tasks.tagging.training import TaggerForward
from bertcli.training.adapters import add_adapter

REQUIRED = {"model.path": "m", "data.train_file": "t.csv"}


def cfg(**values) -> FinetuneConfig:
    return load_config(FinetuneConfig, values=values)


def lora_cfg(**values) -> FinetuneConfig:
    return cfg(**{**REQUIRED, "model.adapter": "lora", **values})


def tiny_task_model(class_name: str, seed: int = 0, **extra):
    import transformers

    torch.manual_seed(seed)
    return getattr(transformers, class_name)(tiny_config(**extra)).eval()


def inputs(class_name: str) -> tuple[torch.Tensor, ...]:
    """A batch of two (multiple choice: two questions of three choices), the second one padded."""
    gen = torch.Generator().manual_seed(1)
    shape = (2, 3, 9) if class_name == "BertForMultipleChoice" else (2, 9)
    ids = torch.randint(5, 25, shape, generator=gen)
    mask = torch.ones(shape, dtype=torch.long)
    mask[1, ..., 6:] = 0
    return ids, torch.zeros(shape, dtype=torch.long), mask


FORWARDS = [("BertForSequenceClassification", ClassifierForward), ("BertForTokenClassification", TaggerForward),
            ("BertForQuestionAnswering", SpanForward), ("BertForMultipleChoice", ChoiceForward)]  # fmt: skip


@pytest.mark.parametrize(("class_name", "forward"), FORWARDS, ids=[f[0] for f in FORWARDS])
def test_lora_runs_in_the_written_out_forward_gets_gradients_and_equals_the_merged_model(class_name, forward):
    model = tiny_task_model(class_name)
    base = copy.deepcopy(model)
    adapter = add_adapter(model, lora_cfg().model, new_keys=[])
    net = forward(model).eval()
    assert net.written_out  # the fast path, not the model's own forward
    batch = inputs(class_name)
    with torch.no_grad():
        before = forward(base).eval()(*batch)
        assert torch.allclose(net(*batch), before, atol=1e-6)  # B starts at zero: the checkpoint's function
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)  # as if trained
        after = net(*batch)
        merged = forward(copy.deepcopy(adapter.peft_model).merge_and_unload()).eval()(*batch)
    assert (after - before).abs().max() > 1e-3  # the adapter changes the outputs...
    assert torch.allclose(after, merged, atol=1e-5)  # ...as merging it into the weights does

    net.train()
    net(*batch).float().pow(2).sum().backward()
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all(("lora_" in n or ".modules_to_save." in n) for n in trained)
    assert {n.split(".")[0] for n in trained if ".modules_to_save." in n} == set(adapter.head)
    for name, param in model.named_parameters():
        if "lora_A" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        if not param.requires_grad:
            assert param.grad is None, name  # frozen: the word embeddings as every other base weight
    groups = build_finetune_optimizer(net, lora_cfg())
    assert sum(p.numel() for g in groups.param_groups for p in g["params"]) == adapter.trainable


def test_the_head_is_every_module_outside_the_encoder_and_a_pooler_the_checkpoint_lacked(tmp_path):
    from transformers import BertModel

    from bertcli.model_dir import load_with_head
    from bertcli.tasks.classification.data import custom_task, with_labels

    torch.manual_seed(0)
    BertModel(tiny_config(), add_pooling_layer=False).save_pretrained(str(tmp_path / "no-pooler"))
    spec = with_labels(custom_task(["text"], "label", None, False, None), ["a", "b"])
    model, report = load_with_head(tmp_path / "no-pooler", spec, "AutoModelForSequenceClassification", None)
    assert "bert.pooler.dense.weight" in report.new
    adapter = add_adapter(model, lora_cfg().model, report.new)
    assert adapter.head == ["classifier", "bert.pooler.dense"]
    assert model.bert.pooler.dense.modules_to_save["default"].weight.requires_grad  # not a frozen random layer
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad


def test_target_names_are_checked_and_peft_defaults_are_per_model_type():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    with pytest.raises(UsageError) as err:
        add_adapter(tiny_task_model("BertForSequenceClassification"),
                    lora_cfg(**{"model.lora.target_modules": ["query", "qurey"]}).model, [])  # fmt: skip
    assert str(err.value) == ("model.lora.target_modules: 'qurey' names no linear layer of the "
                              "BertForSequenceClassification encoder (bert); its linear layers: query, key, value, "
                              "dense")  # fmt: skip
    with pytest.raises(UsageError, match="'classifier' names no linear layer"):  # the head trains fully anyway
        add_adapter(tiny_task_model("BertForSequenceClassification"),
                    lora_cfg(**{"model.lora.target_modules": ["classifier"]}).model, [])  # fmt: skip
    config = DistilBertConfig(vocab_size=30, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    with pytest.raises(
        UsageError,
        match=r"^model.lora.target_modules: peft has no default for model type distilbert;"
        r" name the layers to adapt, from its linear layers: q_lin, k_lin, v_lin",
    ):
        add_adapter(DistilBertForSequenceClassification(config), lora_cfg().model, [])
    model = DistilBertForSequenceClassification(config)  # named: works on another architecture, its own head
    adapter = add_adapter(model, lora_cfg(**{"model.lora.target_modules": ["q_lin", "v_lin"]}).model, [])
    assert adapter.layers == 2 and adapter.head == ["pre_classifier", "classifier"]
    dense = tiny_task_model("BertForSequenceClassification")
    adapter = add_adapter(dense, lora_cfg(**{"model.lora.target_modules": ["attention.output.dense"]}).model, [])
    assert adapter.layers == 2 and type(dense.bert.encoder.layer[0].output.dense).__name__ == "Linear"


def test_schema_keys_and_defaults():
    lora = cfg(**REQUIRED).model.lora
    assert (cfg(**REQUIRED).model.adapter, lora.rank, lora.alpha, lora.dropout, lora.target_modules) == (
        "none", 8, 16.0, 0.1, None)  # fmt: skip
    from bertcli.errors import ConfigError

    for bad, key in (("model.adapter=lora2", "model.adapter"), ("model.lora.rank=0", "model.lora.rank"),
                     ("model.lora.target_modules=[]", "model.lora.target_modules")):  # fmt: skip
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(FinetuneConfig, None, [bad, "model.path=m", "data.train_file=t.csv"])


# --- finetune end to end --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "bare", "bare")


def lora_values(bare, data: Path, out: Path, **extra) -> dict:
    train, dev = sentiment_task(data, n_train=64, n_dev=24)
    return finetune_values(bare, out, **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "model.adapter": "lora", "train.epochs": 2, "train.eval_every": 4, "train.save_every": 4,
        "train.keep_last": 10, **extra,
    })  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(bare, tmp_path_factory):
    """A LoRA run of 8 steps (64 examples, batches of 16, two epochs), with checkpoints at steps 4 and 8."""
    root = tmp_path_factory.mktemp("lora")
    values = lora_values(bare, root / "data", root / "full")
    return root, values, run_finetune(cfg(**values))


def load_st(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_finetune_trains_the_adapter_and_head_only_and_reports_the_share(lora_run, bare, capsys):
    root, values, result = lora_run
    state = load_st(root / "full" / "checkpoints" / "step-8" / "model.safetensors")  # the training net's weights
    base = load_st(bare / "model.safetensors")  # BertModel's own keys (no bert. prefix)
    frozen = {k: v for k, v in state.items() if "lora_" not in k and ".modules_to_save." not in k}
    for key, value in frozen.items():
        name = key.removeprefix("model.bert.").replace(".base_layer.", ".")
        if key.startswith("model.bert."):
            assert torch.equal(value, base[name]), key  # bit for bit
    assert sum(1 for k in frozen if ".base_layer." in k) == 8  # query and value, weight and bias, two layers
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert len(lora_b) == 4 and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: it trained
    head, original = (
        state["model.classifier.modules_to_save.default.weight"],
        state["model.classifier.original_module.weight"],
    )
    assert not torch.equal(head, original)  # the head trained (the original is the fresh head, frozen)
    card = (root / "full" / "best" / "README.md").read_text()
    assert "LoRA adapter (peft): rank 8, alpha 16, dropout 0.1" in card and "`adapter/`" in card


def test_merged_best_loads_with_auto_and_pipeline_and_equals_base_plus_adapter(lora_run, bare):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    root, _, _ = lora_run
    best = root / "full" / "best"
    merged, info = AutoModelForSequenceClassification.from_pretrained(str(best), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys: a plain transformers model
    assert not (best / "adapter_config.json").exists()
    saved = json.loads((best / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(bare) and saved["modules_to_save"] == ["classifier"]
    assert saved["r"] == 8 and saved["lora_alpha"] == 16 and saved["lora_dropout"] == 0.1
    base = AutoModelForSequenceClassification.from_pretrained(str(bare), num_labels=2)  # a fresh, random head
    adapted = PeftModel.from_pretrained(base, str(best / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(best))
    batch = tok(["the good film was very fine", "a dull movie", "it ran on the mat"], padding=True,
                return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        a, b = merged.eval()(**batch).logits, adapted(**batch).logits
    assert torch.allclose(a, b, atol=1e-5), (a, b)
    assert (
        a - AutoModelForSequenceClassification.from_pretrained(str(bare), num_labels=2)(**batch).logits
    ).abs().max() > 1e-4
    assert pipeline("text-classification", model=str(best))("a good film")[0]["label"] in ("negative", "positive")


def test_resume_with_lora_continues_exactly(lora_run, monkeypatch, capsys):
    root, values, full = lora_run
    values = {**values, "output.dir": str(root / "cut")}
    sigint_in_forward(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    monkeypatch.undo()
    assert "stopped seed 42 at step 5" in capsys.readouterr().err
    resumed = run_finetune(cfg(**values), resume=True)
    assert "resumed from" in capsys.readouterr().out
    strip = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in full["runs"]]
    assert [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in resumed["runs"]] == strip
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):  # bit for bit on the CPU
        a, b = load_st(root / "full" / "best" / name), load_st(root / "cut" / "best" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_bad_target_module_exits_2_naming_the_key_and_leaves_nothing(bare, tmp_path):
    from typer.testing import CliRunner

    from bertcli.cli.app import app

    train, dev = sentiment_task(tmp_path / "data", n_train=16, n_dev=8)
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["finetune", "custom", "--model", str(bare), "-o", str(out), "--set",
                                    f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]", "--set",
                                    "data.max_seq_length=64", "--set", "model.adapter=lora", "--set",
                                    "model.lora.target_modules=[query,vaule]"])  # fmt: skip
    assert done.exit_code == 2, done.output
    assert [line for line in done.output.splitlines() if line.strip()] == [  # checked before anything runs
        "error: model.lora.target_modules: 'vaule' names no linear layer of the BertForSequenceClassification "
        "encoder (bert); its linear layers: query, key, value, dense"]  # fmt: skip
    assert "Traceback" not in done.output and not out.exists()


# --- other families end to end ----------------------------------------------------------------------------------


def write_conll(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Each sentiment row as a sentence whose positive words are tagged B-POS, the rest O."""
    blocks = ["\n".join(f"{w} {'B-POS' if w in POSITIVE else 'O'}" for w in text.split()) for text, _ in rows]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def write_squad(path: Path, rows: list[tuple[str, str]]) -> Path:
    """SQuAD layout: each sentiment row's text as a context, its first positive (else negative) word the answer."""
    paragraphs = []
    for i, (text, label) in enumerate(rows):
        answer = next(w for w in text.split() if w in (POSITIVE if label == "positive" else NEGATIVE))
        qa = {
            "id": f"q{i}",
            "question": "which word",
            "answers": [{"text": answer, "answer_start": text.index(answer)}],
        }
        paragraphs.append({"context": text, "qas": [qa]})
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


def best_equals_base_plus_adapter(best: Path, base_dir: Path, auto_class: str, batch: dict) -> None:
    import transformers
    from peft import PeftModel

    auto = getattr(transformers, auto_class)
    merged = auto.from_pretrained(str(best)).eval()
    labels = merged.config.num_labels
    adapted = PeftModel.from_pretrained(auto.from_pretrained(str(base_dir), num_labels=labels), str(best / "adapter"))
    with torch.no_grad():
        a, b = merged(**batch), adapted.eval()(**batch)
    keys = [k for k in ("logits", "start_logits", "end_logits") if getattr(a, k, None) is not None]
    assert keys and all(torch.allclose(a[k], b[k], atol=1e-5) for k in keys), (a, b)


def test_tagging_qa_and_multiple_choice_with_lora(bare, tmp_path, capsys):
    from finetune_fixtures import sentiment_rows
    from transformers import AutoTokenizer

    train = write_conll(tmp_path / "train.txt", sentiment_rows(48, 1))
    dev = write_conll(tmp_path / "dev.txt", sentiment_rows(16, 2))
    ner = finetune_values(bare, tmp_path / "ner", **{"task.name": "ner", "data.train_file": str(train),
                          "data.validation_files": [str(dev)], "model.adapter": "lora", "train.epochs": 1,
                          "model.lora.target_modules": ["query", "key", "value", "dense"]})  # fmt: skip
    run_finetune(cfg(**ner))
    assert "on query,key,value,dense (12 layers), head classifier trained fully" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(str(bare))
    batch = tok(["the good cat sat", "a dull dog"], padding=True, return_tensors="pt")
    best_equals_base_plus_adapter(tmp_path / "ner" / "best", bare, "AutoModelForTokenClassification", dict(batch))

    train, dev = (
        write_squad(tmp_path / "train.json", sentiment_rows(32, 1)),
        write_squad(tmp_path / "dev.json", sentiment_rows(8, 2)),
    )
    qa = finetune_values(bare, tmp_path / "qa", **{"task.name": "squad", "data.train_file": str(train),
                         "data.validation_files": [str(dev)], "model.adapter": "lora", "train.epochs": 1,
                         "task.doc_stride": 16})  # fmt: skip
    run_finetune(cfg(**qa))
    assert "on query,value (4 layers), head qa_outputs trained fully" in capsys.readouterr().out
    questions = tok(["which word"] * 2, ["the good cat sat", "a dull dog"], padding=True, return_tensors="pt")
    best_equals_base_plus_adapter(tmp_path / "qa" / "best", bare, "AutoModelForQuestionAnswering", dict(questions))

    train, dev = swag_task(tmp_path / "swag", n_train=32, n_dev=8)
    swag = finetune_values(bare, tmp_path / "mc", **{"task.name": "swag", "data.train_file": str(train),
                           "data.validation_files": [str(dev)], "model.adapter": "lora",
                           "train.epochs": 1})  # fmt: skip
    run_finetune(cfg(**swag))
    pairs = tok(["the cat sat"] * 3 + ["a dog ran"] * 3, ["good", "bad", "dull", "poor", "fine", "a"], padding=True,
                return_tensors="pt")  # fmt: skip
    choices = {k: v.view(2, 3, -1) for k, v in pairs.items()}
    best_equals_base_plus_adapter(tmp_path / "mc" / "best", bare, "AutoModelForMultipleChoice", choices)
