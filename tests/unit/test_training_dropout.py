"""CPU dropout masks drawn from numpy's SFC64: the distribution of `F.dropout`, seeded by torch, and a model swap
that leaves saved weights alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bertcli.training.dropout import FastDropout, dropout, keep_mask, use_fast_dropout

N = 1_000_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_elements_are_kept_with_probability_one_minus_p_and_scaled_as_f_dropout_scales_them(p):
    torch.manual_seed(0)
    x = torch.rand(N) + 1.0  # never 0, so a 0 in the output is a dropped element
    out = dropout(x, p)
    kept = out != 0
    sigma = math.sqrt(p * (1 - p) / N)
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    reference = F.dropout(x, p, training=True)  # torch's own scale for the kept elements
    torch.testing.assert_close(reference[reference != 0], x[reference != 0] / (1 - p))


def test_the_two_halves_of_each_64_bit_draw_are_independent():
    torch.manual_seed(1)
    p = 0.3
    kept = keep_mask((N,), p) != 0
    even, odd = kept[0::2].float(), kept[1::2].float()  # the two 32-bit numbers of one 64-bit draw
    both = (even * odd).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / (N / 2))
    neighbours = (kept[1:-1:2].float() * kept[2::2].float()).mean().item()  # across two draws
    assert abs(neighbours - (1 - p) ** 2) < 0.005


def test_masks_follow_torchs_global_generator():
    torch.manual_seed(3)
    first = keep_mask((64, 32), 0.1)
    second = keep_mask((64, 32), 0.1)
    assert not torch.equal(first, second)  # each mask is a fresh draw
    torch.manual_seed(3)
    assert torch.equal(keep_mask((64, 32), 0.1), first)  # set_seed decides them
    state = torch.get_rng_state()
    third = keep_mask((64, 32), 0.1)
    torch.set_rng_state(state)  # what a resumed run's restored RNG state does
    assert torch.equal(keep_mask((64, 32), 0.1), third)


def test_outside_training_or_at_p_zero_the_input_passes_unchanged():
    x = torch.randn(4, 8)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_gradient_flows_through_kept_elements_only_with_the_same_scale():
    torch.manual_seed(4)
    x = torch.randn(32, 16, requires_grad=True)
    out = dropout(x, 0.2)
    out.sum().backward()
    expected = (out.detach() != 0).float() / 0.8
    torch.testing.assert_close(x.grad, expected)


def test_bf16_inputs_keep_their_dtype():
    out = dropout(torch.ones(8, 8, dtype=torch.bfloat16), 0.5)
    assert out.dtype == torch.bfloat16 and set(out.unique().tolist()) <= {0.0, 2.0}


def test_swapping_the_dropouts_of_a_bert_model_keeps_p_mode_and_weights(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3)  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        logits = model(ids).logits
    probs = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}

    assert use_fast_dropout(model) == len(probs) > 0
    swapped = {name: m for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert all(type(m) is FastDropout and not m.training for m in swapped.values())
    assert {name: m.p for name, m in swapped.items()} == probs
    with torch.no_grad():
        assert torch.equal(model(ids).logits, logits)  # eval: no dropout, the same numbers
    model.save_pretrained(tmp_path)
    again = BertForSequenceClassification.from_pretrained(tmp_path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in before.items())
    assert not any(isinstance(m, FastDropout) for m in again.modules())
