"""Loading checkpoints for fine-tuning (load report, tokenizer checks), the [CLS]-only forward, and batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_fixtures import VOCAB, make_tokenizer, save_tiny_model

from bertcli.errors import UsageError
from bertcli.model_dir import check_checkpoint_dir, load_tokenizer_for
from bertcli.tasks import TaskExamples, custom_task, glue_task
from bertcli.tasks.classification.features import BatchCollator, encode_examples
from bertcli.tasks.classification.training import ClassifierForward
from bertcli.tasks.registry import load_classifier
from bertcli.training.batches import length_grouped_batches


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {kind: save_tiny_model(root / kind, kind) for kind in ("bare", "pretraining", "classifier3")}


def test_bare_bert_model_gets_a_fresh_head_and_the_report_names_it(checkpoints):
    model, report = load_classifier(checkpoints["bare"], glue_task("mrpc"))
    assert report.new == ["classifier.bias", "classifier.weight"]
    assert report.architecture == "BertModel" and report.unused == []
    assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    assert "newly initialised: classifier.bias, classifier.weight" in report.lines()


def test_pretraining_checkpoint_drops_its_heads_and_keeps_the_encoder(checkpoints):
    from transformers import BertForPreTraining

    model, report = load_classifier(checkpoints["pretraining"], glue_task("mnli"))
    assert report.new == ["classifier.bias", "classifier.weight"]
    assert any(name.startswith("cls.predictions") for name in report.unused)
    source = BertForPreTraining.from_pretrained(str(checkpoints["pretraining"]))
    assert torch.equal(
        model.bert.encoder.layer[1].output.dense.weight, source.bert.encoder.layer[1].output.dense.weight
    )
    assert model.num_labels == 3


def test_a_model_with_another_head_gets_a_new_one(checkpoints):
    model, report = load_classifier(checkpoints["classifier3"], glue_task("sst2"))
    assert "classifier.weight" in report.new and model.classifier.out_features == 2


def test_regression_head(checkpoints):
    model, _ = load_classifier(checkpoints["bare"], glue_task("stsb"))
    assert model.num_labels == 1 and model.config.problem_type == "regression"


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check_checkpoint_dir(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match=r"not a model checkpoint \(no config.json\)"):
        check_checkpoint_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UsageError, match="no weights"):
        check_checkpoint_dir(tmp_path)


def test_tokenizer_that_does_not_match_the_vocabulary(checkpoints, tmp_path):
    make_tokenizer(tmp_path / "other", VOCAB + ["extra1", "extra2"])
    with pytest.raises(UsageError, match=rf"has {len(VOCAB) + 2} tokens but the model .* vocabulary of {len(VOCAB)}"):
        load_tokenizer_for(checkpoints["bare"], tmp_path / "other", len(VOCAB))
    with pytest.raises(UsageError, match="no tokenizer"):
        load_tokenizer_for(checkpoints["bare"], tmp_path, len(VOCAB))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_cls_only_forward_equals_the_full_model(checkpoints, attn):
    model, _ = load_classifier(checkpoints["pretraining"], glue_task("rte"))
    model.config._attn_implementation = attn
    model.eval()
    tok = make_tokenizer(checkpoints["pretraining"])
    enc = tok(["the cat sat on the mat", "good"], ["a dog ran", "it was a very dull film"], padding=True,
              return_tensors="pt")  # fmt: skip
    net = ClassifierForward(model)
    assert net.cls_only
    with torch.no_grad():
        full = model(**enc).logits
        fast = net(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_cls_only_gradients_equal_the_full_model(checkpoints):
    model, _ = load_classifier(checkpoints["bare"], glue_task("sst2"))
    model.eval()  # no dropout: the two forwards must agree exactly
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    labels = torch.tensor([1, 0])
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.nn.functional.cross_entropy(ClassifierForward(model)(ids, None, mask), labels).backward()
    for name, grad in full.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_written_out_attention_with_dropout_is_sdpa_with_a_mask_applied(monkeypatch, attn):
    from bertcli import modeling

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    keep = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :].expand(2, 1, 5, 5)
    mask = keep if attn == "sdpa" else torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    monkeypatch.setattr(modeling, "dropout", lambda x, p: x)  # dropout keeping everything: plain attention
    torch.testing.assert_close(modeling.attention(q, k, v, mask, 0.5, 0.3), expected)
    monkeypatch.setattr(modeling, "dropout", lambda x, p: x * (torch.arange(5) % 2 == 0) * 2)
    dropped = modeling.attention(q, k, v, mask, 0.5, 0.3)
    weights = torch.softmax((q @ k.transpose(-1, -2) * 0.3).masked_fill(~keep, -torch.inf), -1)
    torch.testing.assert_close(dropped, (weights * (torch.arange(5) % 2 == 0) * 2) @ v)  # on the weights, not V


def test_training_forward_draws_dropout_from_the_seed_and_without_dropout_equals_the_model(checkpoints):
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    model, _ = load_classifier(checkpoints["bare"], glue_task("sst2"))
    net = ClassifierForward(model).train()
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())  # all drawn by training.dropout
    torch.manual_seed(1)
    first = net(ids, None, mask)
    second = net(ids, None, mask)
    torch.manual_seed(1)
    assert not torch.equal(first, second) and torch.equal(net(ids, None, mask), first)
    for module in model.modules():  # hidden and attention-weights dropout: both are drawn, both can be turned off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.testing.assert_close(net(ids, None, mask), model(input_ids=ids, attention_mask=mask).logits)


def test_training_only_the_rows_in_the_data_gives_the_weights_of_training_the_whole_matrix(checkpoints):
    from bertcli.training.optim import parameter_groups

    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask, labels = (ids != 0).long(), torch.tensor([1, 0])
    results = {}
    for compact in (True, False):
        torch.manual_seed(0)
        model, _ = load_classifier(checkpoints["bare"], glue_task("sst2"))
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        start = model.bert.embeddings.word_embeddings.weight.detach().clone()
        net = ClassifierForward(model, train_token_ids=ids.flatten() if compact else None)
        assert (net.rows is not None) == compact
        optimizer = torch.optim.AdamW(parameter_groups(net, 0.5), lr=0.05, fused=True)
        if compact:
            net.rows.track(optimizer)
            assert len(net.rows.weight) == 7  # [PAD] [CLS] [SEP] and four words, of 31 rows
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 10)
        net.train()
        for _ in range(4):
            torch.nn.functional.cross_entropy(net(ids, None, mask), labels).backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        results[compact] = {k: v.clone() for k, v in model.state_dict().items()}  # the hook writes the rows back
        with torch.no_grad():
            results[compact, "eval"] = net.eval()(ids, None, mask)
    for name, value in results[False].items():
        torch.testing.assert_close(results[True][name], value, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(results[True, "eval"], results[False, "eval"])
    unused = results[True]["bert.embeddings.word_embeddings.weight"][20]  # a token the data never holds: only decays
    decay = 1.0
    for step in range(4):
        decay *= 1 - 0.05 * (1 - step / 10) * 0.5
    torch.testing.assert_close(unused, start[20] * decay)
    assert not torch.allclose(unused, start[20])


def _family(kind: str):
    """(spec, forward class, the model's own logits as the forward returns them) of a token-level task family."""
    from bertcli.tasks.span import span_task
    from bertcli.tasks.span.training import SpanForward
    from bertcli.tasks.tagging import tagging_task
    from bertcli.tasks.tagging.training import TaggerForward

    if kind == "tagging":
        return tagging_task(labels=["O", "B-PER", "I-PER"]), TaggerForward, lambda out: out.logits
    return span_task("squad"), SpanForward, lambda out: torch.stack([out.start_logits, out.end_logits], -1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["tagging", "span"])
def test_tagging_and_qa_forwards_written_out_equal_the_model_in_logits_and_gradients(checkpoints, kind, attn):
    spec, forward_class, own = _family(kind)
    model, _ = load_classifier(checkpoints["pretraining"], spec)
    model.config._attn_implementation = attn
    model.eval()  # no dropout: the two forwards must agree
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask, types = (ids != 0).long(), torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    net = forward_class(model)
    assert net.written_out
    full = own(model(input_ids=ids, token_type_ids=types, attention_mask=mask))
    full.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    fast = net(ids, types, mask)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    fast.square().sum().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["tagging", "span"])
def test_tagging_and_qa_forwards_train_only_the_rows_in_the_data_to_the_same_weights(checkpoints, kind):
    from bertcli.training.optim import parameter_groups

    spec, forward_class, _ = _family(kind)
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    results = {}
    for compact in (True, False):
        torch.manual_seed(0)
        model, _ = load_classifier(checkpoints["bare"], spec)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        net = forward_class(model, train_token_ids=ids.flatten() if compact else None)
        assert (net.rows is not None) == compact
        optimizer = torch.optim.AdamW(parameter_groups(net, 0.5), lr=0.05)
        if compact:
            net.rows.track(optimizer)
        net.train()
        for _ in range(3):
            net(ids, None, mask).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        results[compact] = {k: v.clone() for k, v in model.state_dict().items()}
    for name, value in results[False].items():
        torch.testing.assert_close(results[True][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_encoding_truncates_and_counts(checkpoints):
    tok = make_tokenizer(checkpoints["bare"])
    long = " ".join(["cat"] * 40)
    ex = TaskExamples(None, ["good film", long], ["bad", long], [1, 0], ["0", "1"], [1, 2])
    enc = encode_examples(tok, ex, max_seq_length=16, regression=False)
    assert enc.truncated == 1 and enc.lengths.tolist() == [6, 16]
    first = enc.ids[enc.offsets[0] : enc.offsets[1]].tolist()
    assert first == tok("good film", "bad")["input_ids"]
    assert enc.segments[enc.offsets[1] : enc.offsets[2]].tolist().count(1) == 8  # longest first: 6 + 6 + [SEP]s


def test_batches_pad_dynamically_and_drop_the_mask_when_not_needed(checkpoints):
    tok = make_tokenizer(checkpoints["bare"])
    ex = TaskExamples(None, ["good", "the cat sat", "bad"], None, [1, 0, 0], ["0", "1", "2"], [1, 2, 3])
    split = encode_examples(tok, ex, 64, regression=False)
    collate = BatchCollator(split)
    batch = collate([0, 1])
    assert batch["input_ids"].shape == (2, 5) and batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["input_ids"][0, 3:].tolist() == [tok.pad_token_id] * 2 and batch["labels"].tolist() == [1, 0]
    same = collate([0, 2])
    assert "attention_mask" not in same and same["input_ids"].shape == (2, 3)


def test_length_grouped_batches_cover_everything_once_and_are_seeded():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    batches = length_grouped_batches(lengths, 32, seed=5)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert batches == length_grouped_batches(lengths, 32, seed=5)
    assert batches != length_grouped_batches(lengths, 32, seed=6)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    plain = np.mean([lengths[b].max() - lengths[b].min() for b in length_grouped_batches(lengths, 32, 5, 0)])
    assert spread < plain / 4  # grouping removes most of the padding


def test_custom_task_label_order_saved_with_the_model(checkpoints):
    spec = custom_task(["text"], labels=["neg", "neutral", "pos"])
    model, _ = load_classifier(checkpoints["bare"], spec)
    assert model.config.label2id == {"neg": 0, "neutral": 1, "pos": 2}


def test_pretrain_step_checkpoint_is_made_loadable(tmp_path):
    """A `bertcli pretrain` checkpoints/step-N folder: Accelerate's model.safetensors of the wrapped model, the
    pretrain config.yaml, trainer_state.json; the tokenizer lives in the tokenize run named by data.dirs."""
    import yaml
    from safetensors.torch import save_file
    from transformers import BertForPreTraining

    from bertcli.model_dir import is_pretrain_checkpoint, materialize_pretrain_checkpoint

    make_tokenizer(tmp_path / "tok" / "tokenizer")
    config = {"model": {"preset": "tiny", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                        "intermediate_size": 64, "max_position_embeddings": 64},
              "data": {"dirs": [str(tmp_path / "tok")]}}  # fmt: skip
    step = tmp_path / "checkpoints" / "step-10"
    step.mkdir(parents=True)
    (step / "config.yaml").write_text(yaml.safe_dump(config))
    (step / "trainer_state.json").write_text("{}")
    from bertcli.modeling import bert_config
    from bertcli.schema.pretrain import PretrainConfig

    source = BertForPreTraining(bert_config(PretrainConfig.model_validate(config).model, len(VOCAB)))
    state = {f"model.{k}": v.contiguous() for k, v in source.state_dict().items() if "decoder" not in k}
    save_file(state, str(step / "model.safetensors"))
    assert is_pretrain_checkpoint(step)
    folder = materialize_pretrain_checkpoint(step, tmp_path / "work")
    model, report = load_classifier(folder, glue_task("sst2"))
    assert report.new == ["classifier.bias", "classifier.weight"]
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, source.bert.embeddings.word_embeddings.weight)
