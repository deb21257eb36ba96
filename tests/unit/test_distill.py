"""Distillation's parts (`bertcli.distill`): the soft losses against hand-computed values, the teacher's outputs
padded into batches (NaN where nothing is learnt), packed batches, unlabelled rows, and a student cut from some of
a checkpoint's layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from finetune_fixtures import make_tokenizer, tiny_config

from bertcli.distill.layers import chosen_layers, cut_layers
from bertcli.distill.losses import soft_kl, soft_loss, soft_mse
from bertcli.distill.teacher import Distillation, DistillCollator, pad_rows
from bertcli.errors import UsageError
from bertcli.tasks import TaskExamples
from bertcli.tasks.classification.features import BatchCollator, PackedCollator, encode_examples
from bertcli.tasks.classification.training import ClassifierForward
from bertcli.tasks.registry import family_for


def _kl(t: list[float], s: list[float], temperature: float) -> float:
    """KL(softmax(t / T) || softmax(s / T)) written out."""
    zt = sum(math.exp(x / temperature) for x in t)
    zs = sum(math.exp(x / temperature) for x in s)
    p = [math.exp(x / temperature) / zt for x in t]
    q = [math.exp(x / temperature) / zs for x in s]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_soft_kl_is_temperature_squared_times_the_hand_computed_kl():
    teacher, student = [1.0, 2.0, 3.0], [3.0, 1.0, 0.0]
    for temperature in (1.0, 2.0, 4.0):
        got = soft_kl(torch.tensor([student]), torch.tensor([teacher]), temperature).item()
        assert got == pytest.approx(temperature**2 * _kl(teacher, student, temperature), rel=1e-5)
    same = soft_kl(torch.tensor([teacher]), torch.tensor([teacher]), 2.0).item()
    assert same == pytest.approx(0.0, abs=1e-6)


def test_nan_teacher_rows_do_not_count_and_nan_entries_leave_the_distribution():
    t, s = [0.5, -1.0, 2.0], [1.0, 0.0, -0.5]
    nan = float("nan")
    # a piece without a label (all NaN) is not averaged in: the loss is that of the one real row
    rows = soft_kl(torch.tensor([[s, [9.0, 9.0, 9.0]]]), torch.tensor([[t, [nan, nan, nan]]]), 2.0).item()
    assert rows == pytest.approx(4 * _kl(t, s, 2.0), rel=1e-5)
    # a padded choice (NaN entry; the student's masked logit is the lowest float) leaves the softmax
    lowest = torch.finfo(torch.float32).min
    entries = soft_kl(torch.tensor([[*s[:2], lowest]]), torch.tensor([[*t[:2], nan]]), 2.0).item()
    assert entries == pytest.approx(4 * _kl(t[:2], s[:2], 2.0), rel=1e-5)
    student = torch.tensor([[*s[:2], lowest]], requires_grad=True)
    soft_kl(student, torch.tensor([[*t[:2], nan]]), 2.0).backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 2] == 0


def test_soft_mse_and_the_shape_check():
    assert soft_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]])).item() == pytest.approx(2.5)
    nan = float("nan")
    assert soft_mse(torch.tensor([[1.0, 5.0]]), torch.tensor([[2.0, nan]])).item() == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="differ"):
        soft_loss("kl", torch.zeros(2, 3), torch.zeros(2, 4), 2.0)


def test_pad_rows_pads_every_axis_with_nan():
    out = pad_rows([np.ones((2, 3), np.float32), np.zeros((4, 3), np.float32)])
    assert out.shape == (2, 4, 3)
    assert np.isnan(out[0, 2:]).all() and (out[0, :2] == 1).all() and (out[1] == 0).all()


def _split(tmp_path, n: int, labels: bool = True):
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on mat film movie was is very good bad".split()
    tok = make_tokenizer(tmp_path / "tok")
    examples = TaskExamples(path=tmp_path / "rows.tsv", index=[str(i) for i in range(n)], lines=list(range(1, n + 1)),
                            text_a=[" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(n)], text_b=None,
                            labels=rng.integers(0, 2, n).tolist() if labels else None)  # fmt: skip
    return encode_examples(tok, examples, 64, False)


def test_packed_batches_get_the_same_soft_loss_as_padded_ones(tmp_path):
    """data.pack with a teacher: a packed batch's logits come one per example in the batch's order, as the
    teacher's rows do, so the distillation loss equals the padded batch's."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    split = _split(tmp_path, 12)
    rows = [np.random.default_rng(i).normal(size=2).astype(np.float32) for i in range(12)]
    net = ClassifierForward(BertForSequenceClassification(tiny_config(num_labels=2))).eval()
    family = family_for("custom")
    spec = type("Spec", (), {"is_regression": False})()
    forward = Distillation(rows, 12, 0.7, 2.0, "kl").forward(family, spec)
    indices = [3, 0, 7, 11, 5, 2]
    padded = forward(net, DistillCollator(BatchCollator(split), rows, 12)(indices))[0]
    packed = forward(net, DistillCollator(PackedCollator(split, 64), rows, 12)(indices))[0]
    assert packed.item() == pytest.approx(padded.item(), rel=1e-5)


def test_unlabelled_rows_get_ignored_labels_and_learn_from_the_soft_loss_alone(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    split = _split(tmp_path, 8)
    rows = [np.array([2.0, -1.0], np.float32)] * 8
    collate = DistillCollator(BatchCollator(split), rows, gold_rows=5)  # rows 5, 6, 7 came without labels
    batch = collate([6, 1, 7])
    assert batch["labels"].tolist()[0] == -100 and batch["labels"].tolist()[2] == -100
    assert batch["labels"][1] == int(split.labels[1])
    net = ClassifierForward(BertForSequenceClassification(tiny_config(num_labels=2)))
    spec = type("Spec", (), {"is_regression": False})()
    forward = Distillation(rows, 5, 0.5, 2.0, "kl").forward(family_for("custom"), spec)
    loss, sums = forward(net, collate([5, 6, 7]))  # no gold label at all: no NaN from an empty mean
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and "soft_loss" in sums
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_chosen_layers_spread_evenly_or_as_listed():
    assert chosen_layers(3, 6, "m") == [0, 2, 4]
    assert chosen_layers(6, 12, "m") == [0, 2, 4, 6, 8, 10]
    assert chosen_layers([1, 5], 6, "m") == [1, 5]
    with pytest.raises(UsageError, match="has 6 encoder layers .0 to 5., no layer 6"):
        chosen_layers([0, 6], 6, "m")
    with pytest.raises(UsageError, match="distinct layers in increasing order"):
        chosen_layers([2, 0], 6, "m")
    with pytest.raises(UsageError, match="keep at most 6"):
        chosen_layers(7, 6, "m")


def test_cut_layers_copies_exactly_the_chosen_layers_embeddings_and_head(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(num_labels=2)
    config.num_hidden_layers = 3
    teacher = BertForSequenceClassification(config)
    teacher.save_pretrained(str(tmp_path / "teacher"))
    make_tokenizer(tmp_path / "teacher")
    cut = cut_layers(tmp_path / "teacher", [0, 2], tmp_path / "work")
    student = AutoModelForSequenceClassification.from_pretrained(str(cut))
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    theirs, ours = teacher.state_dict(), student.state_dict()
    for key, value in ours.items():
        source = key.replace("encoder.layer.1.", "encoder.layer.2.")  # student layer 1 is teacher layer 2
        assert torch.equal(value, theirs[source]), key
    query = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(ours[query], theirs[query])  # not the teacher's layer 1
    assert (cut / "tokenizer.json").is_file() or (cut / "vocab.txt").is_file()


class _Settings:
    soft_loss, temperature = "kl", 2.0


def test_regression_learns_the_teachers_score_by_mean_squared_difference():
    spec = type("Spec", (), {"is_regression": True})()
    student, teacher = torch.tensor([[1.0], [2.5]]), torch.tensor([[0.0], [2.0]])
    got = family_for("custom").soft_loss(student, teacher, {}, spec, _Settings()).item()
    assert got == pytest.approx((1.0 + 0.25) / 2)


def test_qa_soft_loss_is_the_mean_of_the_start_and_end_kl_over_the_pieces():
    spec = type("Spec", (), {"is_regression": False})()
    start_t, end_t, start_s, end_s = [0.0, 2.0, 1.0], [1.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.0, 0.5, 0.5]
    teacher = torch.tensor([list(zip(start_t, end_t))])  # (batch, pieces, 2) as the QA head gives them
    student = torch.tensor([list(zip(start_s, end_s))])
    got = family_for("squad").soft_loss(student, teacher, {}, spec, _Settings()).item()
    assert got == pytest.approx(4 * (_kl(start_t, start_s, 2.0) + _kl(end_t, end_s, 2.0)) / 2, rel=1e-5)


def test_tagging_teacher_rows_keep_the_labelled_pieces_of_each_window():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    batch = {"labels": torch.tensor([[-100, 1, -100, -100], [-100, 0, 2, -100]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])}  # fmt: skip
    first, second = family_for("ner").teacher_rows(logits, batch)
    assert first.shape == (3, 3) and second.shape == (4, 3)  # padding cut off
    assert np.isnan(first[[0, 2]]).all() and (first[1] == logits[0, 1].numpy()).all()
    assert np.isnan(second[[0, 3]]).all() and (second[1:3] == logits[1, 1:3].numpy()).all()


def test_multiple_choice_teacher_rows_keep_the_real_choices():
    logits = torch.tensor([[0.1, 0.2, -3e38], [0.3, 0.4, 0.5]])
    batch = {"choice_mask": torch.tensor([[True, True, False], [True, True, True]])}
    first, second = family_for("swag").teacher_rows(logits, batch)
    assert first.tolist() == pytest.approx([0.1, 0.2]) and len(second) == 3


@pytest.mark.parametrize("layers", [{}, {"distill.hidden_weight": 1.0, "distill.attention_weight": 0.5}],
                         ids=["outputs", "with-layer-losses"])  # fmt: skip
def test_a_distilled_run_stopped_by_ctrl_c_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, layers):
    """The teacher's outputs are computed again on --resume (the same ones: evaluation mode), the unlabelled rows
    are the same rows, the teacher beside the student (layer losses) gives the same targets; a changed distill key
    is refused."""
    import os
    import signal

    from finetune_fixtures import finetune_values, save_tiny_model, sentiment_rows, sentiment_task
    from transformers import BertForSequenceClassification

    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.classification import training as classification

    torch.manual_seed(1)
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    BertForSequenceClassification(tiny_config(**labels)).save_pretrained(str(tmp_path / "teacher"))
    make_tokenizer(tmp_path / "teacher")
    bare = save_tiny_model(tmp_path / "bare")
    train, dev = sentiment_task(tmp_path / "data", n_train=24, n_dev=16)
    more = tmp_path / "more.txt"
    more.write_text("\n".join(text for text, _ in sentiment_rows(8, seed=5)), encoding="utf-8")
    values = finetune_values(bare, tmp_path / "full", **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "train.epochs": 2, "train.eval_every": 1, "distill.teacher": str(tmp_path / "teacher"),
        "distill.unlabelled_file": str(more), **layers,
    })  # fmt: skip
    full = run_finetune(load_config(FinetuneConfig, values=values))  # 32 rows: 2 steps an epoch
    values["output.dir"] = str(tmp_path / "cut")
    calls, forward = [0], classification._loss_and_sums

    def forward_then_stop(m, batch, regression):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(m, batch, regression)

    monkeypatch.setattr(classification, "_loss_and_sums", forward_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(load_config(FinetuneConfig, values=values))
    monkeypatch.undo()
    with pytest.raises(UsageError, match="cannot resume .* with a changed config: distill.alpha"):
        run_finetune(load_config(FinetuneConfig, values={**values, "distill.alpha": 0.9}), resume=True)
    resumed = run_finetune(load_config(FinetuneConfig, values=values), resume=True)

    def without_seconds(runs):
        return [{k: v for k, v in run.items() if not k.endswith("_seconds")} for run in runs]

    assert without_seconds(resumed["runs"]) == without_seconds(full["runs"])
    assert resumed["data"]["unlabelled"]["examples"] == 8


# --- hidden states (distill.hidden_weight) ----------------------------------------------------------------------


def test_layer_map_is_tinyberts_uniform_map_without_the_last_layer():
    from bertcli.distill.intermediate import layer_map

    assert layer_map(3, 6) == [(0, 1), (1, 3)]  # the last student layer learns from the outputs
    assert layer_map(4, 12) == [(0, 2), (1, 5), (2, 8)]  # TinyBERT-4 of BERT-base: g(m) = 3m
    assert layer_map(2, 2) == [(0, 0)]
    assert layer_map(6, 6) == [(j, j) for j in range(5)]


def test_hidden_mse_counts_the_real_pieces_only():
    from bertcli.distill.intermediate import hidden_mse

    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1 row, 3 pieces, 2 units)
    t = torch.tensor([[[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third piece is padding
    # (1 + 0 + 0 + 16) / (2 pieces x 2 units), one layer pair
    assert hidden_mse([s], [t], mask).item() == pytest.approx(17 / 4)
    assert hidden_mse([s, s], [t, s], mask).item() == pytest.approx(17 / 8)  # the mean over the pairs
    # a multiple-choice batch: the mask (questions, choices, pieces) against hidden states (questions x choices, ...)
    assert hidden_mse([s.repeat(2, 1, 1)], [t.repeat(2, 1, 1)], mask.repeat(2, 1).view(1, 2, 3)).item() == (
        pytest.approx(17 / 4))  # fmt: skip


def _hidden_distillation(teacher_model, student_layers: int, teacher_layers: int, weight: float = 1.0,
                         attention: float = 0.0):  # fmt: skip
    from bertcli.distill.intermediate import LayerMatch

    rows = [np.zeros(2, np.float32)] * 12
    layers = LayerMatch(ClassifierForward(teacher_model).eval(), student_layers, teacher_layers, weight, attention)
    return Distillation(rows, 12, 0.5, 2.0, "kl", layers)


def test_hidden_loss_is_zero_for_the_teachers_own_layers_and_trains_the_student_only(tmp_path):
    """A student that is the teacher (eval mode: no dropout) matches its hidden states and attention scores exactly;
    another student gets positive losses whose gradient reaches its mapped layer and leaves the teacher alone. Packed
    batches give the padded batch's losses."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    split = _split(tmp_path, 12)
    teacher = BertForSequenceClassification(tiny_config(num_labels=2))
    distill = _hidden_distillation(teacher, 2, 2, attention=1.0)
    forward = distill.forward(family_for("custom"), type("Spec", (), {"is_regression": False})())
    collate = DistillCollator(BatchCollator(split), distill.rows, 12)
    indices = [3, 0, 7, 11, 5, 2]
    same = BertForSequenceClassification(tiny_config(num_labels=2))
    same.load_state_dict(teacher.state_dict())
    _, sums = forward(ClassifierForward(same).eval(), collate(indices))
    assert sums["hidden_loss"].max().item() == pytest.approx(0.0, abs=1e-10)
    assert sums["attention_loss"].max().item() == pytest.approx(0.0, abs=1e-10)

    torch.manual_seed(1)
    other = ClassifierForward(BertForSequenceClassification(tiny_config(num_labels=2))).eval()
    loss, sums = forward(other, collate(indices))
    assert sums["hidden_loss"][0].item() > 0.01 and sums["attention_loss"][0].item() > 1e-4
    loss.backward()
    layer = other.model.bert.encoder.layer[0]
    assert layer.output.dense.weight.grad.abs().sum() > 0 and layer.attention.self.key.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    packed = forward(other, DistillCollator(PackedCollator(split, 64), distill.rows, 12)(indices))[1]
    for key in ("hidden_loss", "attention_loss"):
        assert packed[key][0].item() == pytest.approx(sums[key][0].item(), rel=1e-5)


def test_hidden_weight_zero_leaves_the_loss_as_it_was(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    split = _split(tmp_path, 12)
    teacher = BertForSequenceClassification(tiny_config(num_labels=2))
    spec = type("Spec", (), {"is_regression": False})()
    torch.manual_seed(1)
    student = ClassifierForward(BertForSequenceClassification(tiny_config(num_labels=2))).eval()
    batch = DistillCollator(BatchCollator(split), [np.zeros(2, np.float32)] * 12, 12)([1, 4, 6])
    plain = Distillation([np.zeros(2, np.float32)] * 12, 12, 0.5, 2.0, "kl").forward(family_for("custom"), spec)
    matched = _hidden_distillation(teacher, 2, 2, weight=0.25).forward(family_for("custom"), spec)
    loss, sums = matched(student, dict(batch))
    base, _ = plain(student, dict(batch))
    assert loss.item() == pytest.approx(base.item() + 0.25 * sums["hidden_loss"][0].item(), rel=1e-5)


def test_layer_weights_and_unlabelled_text_need_a_teacher():
    from pydantic import ValidationError

    from bertcli.schema.distill import DistillSection

    for key, value in (("hidden_weight", 1.0), ("attention_weight", 1.0), ("unlabelled_file", "more.txt"),
                       ("augment", 4)):  # fmt: skip
        with pytest.raises(ValidationError, match=f"distill.{key} needs distill.teacher"):
            DistillSection(**{key: value})
    assert DistillSection(teacher="t", hidden_weight=1.0).hidden_weight == 1.0
    with pytest.raises(ValidationError):
        DistillSection(teacher="t", hidden_weight=-1.0)


def test_attention_scores_are_the_models_own_before_the_softmax():
    """The scores the taps rebuild from the queries and keys, softmaxed over the real keys, are the attention
    weights transformers' eager attention returns; attention_mse counts only the pairs that attend."""
    from transformers import BertModel

    from bertcli.distill.intermediate import LayerTaps, attending_pairs, attention_mse

    torch.manual_seed(0)
    config = tiny_config()
    config._attn_implementation = "eager"
    model = BertModel(config).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    taps = LayerTaps(model, [0, 1], attention=True)
    taps.on = True
    with torch.no_grad():
        attentions = model(ids, attention_mask=mask, output_attentions=True).attentions
    out = taps.take()
    for i in (0, 1):
        scores = taps.scores(out, i).masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        assert torch.allclose(scores.softmax(-1)[1, :, :3], attentions[i][1, :, :3], atol=1e-6)
        assert torch.allclose(scores.softmax(-1)[0], attentions[i][0], atol=1e-6)
    pairs = attending_pairs({"attention_mask": mask}, 2, 5)
    assert pairs.sum().item() == 25 + 9
    packed = attending_pairs({"seq_idx": torch.tensor([[0, 0, 1, 1, -1]])}, 1, 5)
    assert packed[0, 0].tolist() == [True, True, False, False, False] and not packed[0, 4].any()
    s, t = torch.zeros(2, 2, 5, 5), torch.zeros(2, 2, 5, 5)
    t[0, :, 0, 0], t[1, :, 4, 4] = 2.0, 100.0  # the second is a padded pair: not counted
    assert attention_mse([s], [t], pairs).item() == pytest.approx(2 * 4.0 / (34 * 2))
