"""The masked-positions-only pretraining forward against BertForPreTraining's full forward; model building;
optimizer parameter groups and schedule."""

from __future__ import annotations

import pytest
import torch
from pretrain_fixtures import make_tokenizer

from bertcli.masking import EpochIndexed, PretrainingCollator
from bertcli.modeling import PretrainingModel, bert_config, build_pretraining_model
from bertcli.schema.pretrain import ModelSection
from bertcli.schema.train import TrainSection
from bertcli.training.optim import build_optimizer, build_scheduler, parameter_groups

SHAPE = {"preset": "tiny", "hidden_size": 48, "num_attention_heads": 4, "intermediate_size": 96}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tokenizer = make_tokenizer(tmp_path_factory.mktemp("tok"))
    g = torch.Generator().manual_seed(0)
    rows = []
    for index in range(12):
        a, b = 3 + index % 5, 2 + index % 7
        ids = [
            2,
            *torch.randint(5, 45, (a,), generator=g).tolist(),
            3,
            *torch.randint(5, 45, (b,), generator=g).tolist(),
            3,
        ]
        rows.append(
            {
                "input_ids": ids,
                "token_type_ids": [0] * (a + 2) + [1] * (b + 1),
                "special_tokens_mask": [1] + [0] * a + [1] + [0] * b + [1],
                "next_sentence_label": index % 2,
                "mask_key": (0, index),
            }
        )
    return PretrainingCollator(tokenizer, seed=0, mlm_probability=0.3)(rows), len(tokenizer)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_masked_only_loss_equals_full_bert_for_pretraining_loss(batch, attn):
    batch, vocab = batch
    torch.manual_seed(0)
    bert = build_pretraining_model(ModelSection(**SHAPE, attn_implementation=attn), vocab).eval()
    assert bert.config._attn_implementation == attn
    ours = PretrainingModel(bert)(**batch)
    full = bert(**batch)  # BertForPreTraining: MLM over every position + NSP
    assert batch["attention_mask"].eq(0).any(), "the batch should contain padding"
    assert abs(ours["loss"].item() - full.loss.item()) < 1e-5
    masked = batch["labels"] != -100
    full_scores = full.prediction_logits[masked]
    correct = (full_scores.argmax(-1) == batch["labels"][masked]).sum().item()
    assert ours["mlm_correct"].sum().item() == correct
    assert ours["mlm_count"].sum().item() == masked.sum().item()
    nsp = torch.nn.functional.cross_entropy(full.seq_relationship_logits, batch["next_sentence_label"])
    assert abs(ours["nsp_loss_sum"].mean().item() - nsp.item()) < 1e-5
    # gradients flow into the (tied) decoder/embedding weight through the masked-only head
    ours["loss"].backward()
    assert bert.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_training_forward_draws_dropout_from_the_seed_and_without_dropout_equals_the_model(batch):
    batch, vocab = batch
    torch.manual_seed(0)
    bert = build_pretraining_model(ModelSection(**SHAPE), vocab).train()
    model = PretrainingModel(bert)
    assert model.written_out and not any(type(m) is torch.nn.Dropout for m in bert.modules())
    torch.manual_seed(1)
    first = model(**batch)["loss"]
    second = model(**batch)["loss"]
    torch.manual_seed(1)
    assert first.item() != second.item() and model(**batch)["loss"].item() == first.item()
    for module in bert.modules():  # hidden and attention-weights dropout: both are drawn, both can be turned off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ours, full = model(**batch), bert(**batch)
    torch.testing.assert_close(ours["loss"], full.loss)
    ours["loss"].backward()
    grads = {name: p.grad.clone() for name, p in bert.named_parameters() if p.grad is not None}
    bert.zero_grad()
    full.loss.backward()
    for name, p in bert.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_mlm_only_objective_and_no_masked_token_gives_zero_not_nan(batch):
    batch, vocab = batch
    bert = build_pretraining_model(ModelSection(**SHAPE), vocab).eval()
    mlm_only = {k: v for k, v in batch.items() if k != "next_sentence_label"}
    out = PretrainingModel(bert, with_nsp=False)(**mlm_only)
    assert "nsp_loss_sum" not in out
    none_masked = {**mlm_only, "labels": torch.full_like(batch["labels"], -100)}
    assert PretrainingModel(bert, with_nsp=False)(**none_masked)["loss"].item() == 0.0


def test_presets_and_overrides_build_the_bert_config():
    config = bert_config(ModelSection(preset="base"), vocab_size=30522)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (12, 768, 12)
    assert config.architectures == ["BertForPreTraining"]
    small = bert_config(ModelSection(preset="small", num_hidden_layers=3), vocab_size=100)
    assert (small.num_hidden_layers, small.hidden_size, small.vocab_size) == (3, 512, 100)


def test_no_weight_decay_on_biases_and_layernorm_and_tied_weight_listed_once():
    bert = build_pretraining_model(ModelSection(**SHAPE), 50)
    decay, no_decay = parameter_groups(bert, 0.01)
    names = {id(p): n for n, p in bert.named_parameters(remove_duplicate=False)}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert not any("LayerNorm" in names[id(p)] or names[id(p)].endswith("bias") for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    listed = decay["params"] + no_decay["params"]
    assert len(listed) == len({id(p) for p in listed}) == len(list(bert.parameters()))


@pytest.mark.parametrize(("warmup", "expected"), [({"warmup_steps": 10}, 10), ({"warmup_ratio": 0.25}, 25)])
def test_schedule_warms_up_in_steps_or_ratio_then_decays(warmup, expected):
    train = TrainSection(learning_rate=1e-3, **warmup)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[expected] == pytest.approx(1e-3) and lrs[expected - 1] < 1e-3
    assert lrs[-1] < lrs[expected]


def test_epoch_indexed_reads_rows_of_a_datasets_dataset():
    import datasets

    ds = datasets.Dataset.from_dict({"input_ids": [[2, 5, 3], [2, 6, 3]], "next_sentence_label": [0, 1]})
    rows = EpochIndexed(ds, epoch=3).__getitems__([1, 0])
    assert rows[0] == {"input_ids": [2, 6, 3], "next_sentence_label": 1, "mask_key": (3, 1)}


def test_importing_the_encoder_code_leaves_transformers_model_code_unimported():
    """`eval --runtime onnx` imports the families' forwards (and so bertcli.modeling) but never builds a torch
    model: transformers' model code (seconds of a CI eval's start-up) is imported where a model is built."""
    import subprocess
    import sys

    probe = ("import sys, bertcli.modeling, bertcli.tasks.encoder, bertcli.tasks.evaluation as e; "
             "e.import_modeling('onnx'); print('transformers.modeling_utils' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
