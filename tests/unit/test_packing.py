"""Padding-free (packed) classification batches (`data.pack`): the collator packs each batch's examples into rows
without padding between them; the classifier sees the same examples (positions from 0, own token types, attention
within the example), so loss and gradients equal the padded batch's, and training reaches the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_fixtures import VOCAB, finetune_values, make_tokenizer, sentiment_task, tiny_config

from bertcli.config import load_config
from bertcli.pipelines.finetune import run_finetune
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks import TaskExamples
from bertcli.tasks.classification.features import BatchCollator, PackedCollator, encode_examples
from bertcli.tasks.classification.training import ClassifierForward, _loss_and_sums
from bertcli.tasks.packing import pack_rows

WORDS = "the a cat dog sat ran on mat film movie was is very good bad".split()


def test_pack_rows_places_every_example_once_within_the_width():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, 32)
    rows = pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(32))
    assert max(lengths[row].sum() for row in rows) <= 128
    assert len(rows) == -(-lengths.sum() // 128)  # as few rows as the tokens need (evenly filled)
    assert pack_rows(np.array([128, 5]), 128) == [[0], [1]]  # a full-width example keeps a row of its own


def _split(tmp_path, n: int, pairs: bool, seed: int = 0, regression: bool = False):
    rng = np.random.default_rng(seed)
    tok = make_tokenizer(tmp_path / f"tok{seed}")

    def text() -> str:
        return " ".join(rng.choice(WORDS, rng.integers(1, 12)))

    examples = TaskExamples(
        path=tmp_path / "rows.tsv",
        index=[str(i) for i in range(n)],
        lines=list(range(1, n + 1)),
        text_a=[text() for _ in range(n)],
        text_b=[text() for _ in range(n)] if pairs else None,
        labels=rng.random(n).astype(float).tolist() if regression else rng.integers(0, 2, n).tolist(),
    )
    return encode_examples(tok, examples, 64, regression)


def test_packed_batch_holds_the_same_tokens_with_fewer_padded_positions(tmp_path):
    split = _split(tmp_path, 16, pairs=True)
    indices = list(range(16))
    padded, packed = BatchCollator(split)(indices), PackedCollator(split, 64)(indices)
    assert packed["attention_mask"].sum() == padded["attention_mask"].sum() == split.lengths.sum()
    pad_before = (padded["attention_mask"] == 0).sum().item()
    pad_after = (packed["attention_mask"] == 0).sum().item()
    print(f"padded positions: {pad_before} of {padded['input_ids'].numel()} -> {pad_after} of "
          f"{packed['input_ids'].numel()}")  # fmt: skip
    assert pad_after < pad_before and len(packed["input_ids"]) < len(padded["input_ids"])
    flat = {k: packed[k].flatten() for k in ("input_ids", "token_type_ids", "position_ids", "seq_idx")}
    for i in indices:  # each example: its ids and token types, positions 0.., its [CLS] where cls_positions says
        at = (flat["seq_idx"] == i).nonzero().flatten()
        n = int(split.lengths[i])
        assert torch.equal(flat["input_ids"][at], padded["input_ids"][i, :n])
        assert torch.equal(flat["token_type_ids"][at], padded["token_type_ids"][i, :n])
        assert torch.equal(flat["position_ids"][at], torch.arange(n))
        assert at[0] == packed["cls_positions"][i] and at[-1] - at[0] == n - 1  # contiguous
    assert torch.equal(packed["labels"], padded["labels"])


def _classifier(num_labels: int, train_ids=None) -> ClassifierForward:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "sdpa"
    net = ClassifierForward(BertForSequenceClassification(config), train_token_ids=train_ids)
    assert net.cls_only
    return net.train()


def _loss_and_grads(net, batch, regression: bool):
    net.zero_grad()
    loss, sums = _loss_and_sums(net, batch, regression)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), sums, grads


@pytest.mark.parametrize("pairs,regression,trained_rows", [
    (True, False, False), (False, False, True), (True, True, True), (False, True, False),
])  # fmt: skip
def test_packed_batch_gives_the_padded_loss_and_gradients(tmp_path, pairs, regression, trained_rows):
    split = _split(tmp_path, 24, pairs, seed=1, regression=regression)
    net = _classifier(1 if regression else 2, torch.from_numpy(split.ids) if trained_rows else None)
    assert (net.rows is not None) == trained_rows
    indices = list(range(24))
    loss_a, sums_a, grads_a = _loss_and_grads(net, BatchCollator(split)(indices), regression)
    loss_b, sums_b, grads_b = _loss_and_grads(net, PackedCollator(split, 64)(indices), regression)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for name in sums_a:  # per-example sums, in the same example order
        torch.testing.assert_close(sums_b[name], sums_a[name], rtol=1e-4, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == sum(1 for _ in net.parameters() if _.requires_grad)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for n, g in grads_a.items() if "position_embeddings" in n)


def _tiny_model_without_dropout(path):
    from transformers import BertModel

    torch.manual_seed(0)
    BertModel(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(str(path))
    make_tokenizer(path)
    return path


def test_training_with_pack_reaches_the_weights_of_padded_batches(tmp_path):
    from safetensors.torch import load_file

    model = _tiny_model_without_dropout(tmp_path / "bare")
    train, dev = sentiment_task(tmp_path / "data", n_train=64, n_dev=16)
    weights, logged = {}, {}
    for pack in (False, True):
        out = tmp_path / f"out-{pack}"
        values = finetune_values(model, out, **{
            "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
            "data.group_by_length": False, "data.pack": pack, "train.epochs": 2, "train.log_every": 2,
            "train.seed": 3,
        })  # fmt: skip
        run_finetune(load_config(FinetuneConfig, values=values))
        weights[pack] = load_file(str(out / "best" / "model.safetensors"))
        logged[pack] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert weights[False].keys() == weights[True].keys()
    for name, tensor in weights[False].items():
        torch.testing.assert_close(weights[True][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    start = load_file(str(model / "model.safetensors"))["encoder.layer.0.attention.self.query.weight"]
    trained = weights[True]["bert.encoder.layer.0.attention.self.query.weight"]
    assert (trained - start).abs().max() > 1e-3  # the encoder did train
    train_logs = [[(r["step"], r["accuracy"]) for r in logged[pack] if r.get("split") == "train"] for pack in (0, 1)]
    assert [s for s, _ in train_logs[0]] == [s for s, _ in train_logs[1]] == [2, 4, 6, 8]
    # the logged accuracy counts examples, not packed rows
    assert [a for _, a in train_logs[0]] == pytest.approx([a for _, a in train_logs[1]])


def test_pack_is_refused_for_qa_before_anything_runs_and_left_to_the_task_when_unset(tmp_path):
    from bertcli.errors import ConfigError
    from bertcli.tasks.registry import family_for

    values = {"model.path": "m", "data.train_file": "t", "data.pack": True}
    with pytest.raises(ConfigError, match="data.pack packs classification, regression and ner batches only"):
        load_config(FinetuneConfig, values={**values, "task.name": "squad", "data.max_seq_length": 384})
    assert load_config(FinetuneConfig, values={**values, "task.name": "ner"}).data.pack is True
    assert load_config(FinetuneConfig, values={"model.path": "m", "data.train_file": "t"}).data.pack is None
    assert family_for("custom").pack is False  # null: classification pads


def test_pack_on_a_model_that_cannot_be_packed_trains_padded_with_a_notice(tmp_path, capsys):
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    shape = dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    DistilBertModel(DistilBertConfig(vocab_size=len(VOCAB), **shape)).save_pretrained(str(tmp_path / "m"))
    make_tokenizer(tmp_path / "m")
    train, dev = sentiment_task(tmp_path / "data", n_train=32, n_dev=8)
    values = finetune_values(tmp_path / "m", tmp_path / "out", **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "data.pack": True, "train.epochs": 1,
    })  # fmt: skip
    result = run_finetune(load_config(FinetuneConfig, values=values))
    assert result["runs"][0]["steps"] == 2
    assert "DistilBertForSequenceClassification with sdpa attention cannot be packed" in capsys.readouterr().out
