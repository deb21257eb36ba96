"""train.compile: the compiled forward gives the plain forward's losses over training steps (pretraining objective,
classification), one graph serves every batch length, a failure to compile falls back in one line, and a compiled
run saves, resumes and writes weights that transformers' Auto classes load.

Inductor needs tens of seconds to minutes on a CPU to compile even a 2-layer model (C++ kernels), too slow for unit
tests. These compile through dynamo with a backend that records each captured graph and runs it as captured: what
our code decides (what dynamo traces, graph breaks, dynamic lengths, dropout under `is_compiling`, the fallback, the
module and its state_dict left as they are) runs for real; the kernels inductor makes of the graphs are torch's."""

from __future__ import annotations

import copy
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from finetune_fixtures import finetune_values, save_tiny_model, sentiment_task
from finetune_fixtures import tiny_config as tiny_bert_config
from pretrain_fixtures import make_tokenized_dir, tiny_config
from safetensors.torch import load_file
from transformers import BertForPreTraining, BertForSequenceClassification

import bertcli.training.compile as compile_module
from bertcli.config import load_config
from bertcli.modeling import PretrainingModel
from bertcli.pipelines.finetune import run_finetune
from bertcli.pipelines.pretrain import run_pretrain
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.classification.training import ClassifierForward
from bertcli.training.compile import compile_forward


class Recorder:
    """A torch.compile backend that keeps each graph dynamo captured and runs it as it is."""

    def __init__(self):
        self.graphs = []

    def __call__(self, graph, example_inputs):
        self.graphs.append(graph)
        return graph.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # no graph cached by another test: each test sees its own compilations
    trace = logging.getLogger("torch.__trace")  # pytest captures DEBUG records: dynamo's trace log would slow it
    level = trace.level
    trace.setLevel(logging.WARNING)
    yield
    trace.setLevel(level)
    torch._dynamo.reset()


def _no_dropout(**extra):
    return tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)


def _mlm_batch(length: int, generator: torch.Generator, vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (4, length), generator=generator)
    labels = torch.full_like(ids, -100)
    labels[:, 1::4] = ids[:, 1::4]
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # one padded row
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask, "labels": labels,
            "next_sentence_label": torch.tensor([0, 1, 1, 0])}  # fmt: skip


def _train_losses(model: torch.nn.Module, batches, loss_of) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for batch in batches:
        loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def test_pretraining_objective_compiled_gives_the_plain_losses_and_one_graph_serves_every_length():
    torch.manual_seed(0)
    plain = PretrainingModel(BertForPreTraining(_no_dropout()))
    compiled, recorder = copy.deepcopy(plain), Recorder()
    handle = compile_forward(compiled, backend=recorder)
    generator = torch.Generator().manual_seed(1)
    batches = [_mlm_batch(length, generator, plain.model.config.vocab_size) for length in (15, 11, 13)]

    def loss_of(m, batch):
        return m(**batch)["loss"]

    expected = _train_losses(plain, batches[:1], loss_of)
    got = _train_losses(compiled, batches[:1], loss_of)
    graphs_after_first = len(recorder.graphs)
    expected += _train_losses(plain, batches[1:], loss_of)
    got += _train_losses(compiled, batches[1:], loss_of)
    assert handle.failed is None and graphs_after_first > 0  # it did compile
    assert len(recorder.graphs) == graphs_after_first  # dynamic lengths: no recompilation for 11 and 13
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert expected[0] != pytest.approx(expected[-1], abs=1e-3)  # the steps trained: a real comparison
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no _orig_mod. prefix


def test_classifier_forward_compiled_gives_the_plain_losses_with_trained_rows():
    torch.manual_seed(0)
    model = BertForSequenceClassification(_no_dropout(num_labels=2))
    train_ids = torch.arange(5, 20)  # the rows the training data holds: TrainedRows in use
    twin = copy.deepcopy(model)  # before the wrap: TrainedRows stops the embedding's own gradient, and a frozen
    plain = ClassifierForward(model, train_token_ids=train_ids)  # embedding (model.freeze) gets no rows
    compiled = ClassifierForward(twin, train_token_ids=train_ids)
    assert plain.rows is not None and compiled.rows is not None
    recorder = Recorder()
    handle = compile_forward(compiled, backend=recorder)
    generator = torch.Generator().manual_seed(2)
    batches = []
    for length in (9, 13, 7):
        ids = torch.randint(5, 20, (4, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, -2:] = 0
        batches.append((ids, mask, torch.tensor([0, 1, 1, 0])))

    def loss_of(m, batch):
        ids, mask, labels = batch
        return F.cross_entropy(m(ids, torch.zeros_like(ids), mask), labels)

    assert _train_losses(compiled, batches, loss_of) == pytest.approx(
        _train_losses(plain, batches, loss_of), rel=1e-5, abs=1e-6
    )
    assert handle.failed is None and recorder.graphs
    plain.eval(), compiled.eval()  # evaluation: the full embedding matrix, another graph
    with torch.no_grad():
        ids, mask, _ = batches[0]
        torch.testing.assert_close(compiled(ids, torch.zeros_like(ids), mask), plain(ids, torch.zeros_like(ids), mask))


def test_without_a_cpp_compiler_inductor_falls_back_in_one_line_and_runs_uncompiled(monkeypatch):
    import torch._inductor.config as inductor_config

    # The real inductor, failing where a machine without g++ fails: before any kernel is built, so this is quick.
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++-compiler",))
    torch.manual_seed(0)
    net = ClassifierForward(BertForSequenceClassification(_no_dropout(num_labels=2)))
    net.eval()
    ids = torch.randint(5, 20, (2, 7))
    with torch.no_grad():
        expected = net(ids, torch.zeros_like(ids), torch.ones_like(ids))
    notices = []
    handle = compile_forward(net, notify=notices.append)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(net(ids, torch.zeros_like(ids), torch.ones_like(ids)), expected)
    assert len(notices) == 1, notices  # once, not per call
    assert notices[0].startswith("train.compile: could not compile (") and "\n" not in notices[0]
    assert "no-such-c++-compiler" in notices[0] and notices[0].endswith("); running uncompiled")
    assert handle.failed is not None


def test_an_error_of_the_model_itself_is_raised_as_it_is_without_a_notice():
    net = ClassifierForward(BertForSequenceClassification(_no_dropout(num_labels=2)))
    notices = []
    compile_forward(net, notify=notices.append, backend=Recorder())
    ids = torch.randint(5, 20, (2, 7))
    with pytest.raises(IndexError):  # a token id beyond the vocabulary fails the plain forward too
        net(ids + 1000, torch.zeros_like(ids), torch.ones_like(ids))
    assert notices == []


# --- the pipelines with train.compile=true ---------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(compile_module, "BACKEND", recorder)
    return recorder


def test_compiled_pretrain_saves_loadable_weights_and_resumes_to_the_unbroken_run(tmp_path, recorded):
    from transformers import AutoModelForPreTraining

    data = make_tokenized_dir(tmp_path / "data", n_train=48, n_validation=8, seed=3)
    settings = {"max_steps": 4, "save_every": 2, "keep_last": 5, "eval_every": 0, "compile": True}
    run_pretrain(tiny_config(data, tmp_path / "a", data={"batch_size": 8}, **settings))
    compiled = len(recorded.graphs)
    assert compiled  # the pipeline's forward went through torch.compile
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-4")
    run_pretrain(tiny_config(data, tmp_path / "b", data={"batch_size": 8}, **settings), resume=True)
    assert len(recorded.graphs) == compiled  # the new model in the same process reused the graphs
    final_a, final_b = (load_file(str(tmp_path / r / "final" / "model.safetensors")) for r in "ab")
    assert final_a.keys() == final_b.keys() and all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    checkpoint = load_file(str(tmp_path / "a" / "checkpoints" / "step-2" / "model.safetensors"))
    assert not [k for k in [*checkpoint, *final_a] if "_orig_mod" in k]
    loaded = AutoModelForPreTraining.from_pretrained(str(tmp_path / "a" / "final"))
    torch.testing.assert_close(loaded.bert.pooler.dense.weight, final_a["bert.pooler.dense.weight"])


def test_compiled_finetune_best_loads_with_the_auto_class(tmp_path, recorded):
    from transformers import AutoModelForSequenceClassification

    bare = save_tiny_model(tmp_path / "bare", "bare")
    train, dev = sentiment_task(tmp_path / "data", n_train=64, n_dev=16)
    values = finetune_values(bare, tmp_path / "out", **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "train.epochs": 1, "train.compile": True,
    })  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, values=values))
    assert recorded.graphs
    best = tmp_path / "out" / "best"
    assert not [k for k in load_file(str(best / "model.safetensors")) if "_orig_mod" in k]
    model = AutoModelForSequenceClassification.from_pretrained(str(best))
    assert model.config.id2label == {0: "negative", 1: "positive"} and result["best"]["main"] >= 0.0
