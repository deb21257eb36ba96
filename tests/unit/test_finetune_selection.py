"""data.holdout_fraction and train.average_seeds: a split carved from train (never overlapping it, the same in
every run and for every seed, stratified, a QA context's questions on one side) picks the model, the validation
files are scored once at the end; the seed soup is the mean of the seeds' best models and is kept only when it
scores better on the selection split; --resume of such a run ends where the uninterrupted one did."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_fixtures import finetune_values, save_tiny_model, sentiment_rows, sentiment_task, write_rows
from multiple_choice_fixtures import swag_task

from bertcli.config import ConfigError, load_config
from bertcli.errors import UsageError
from bertcli.pipelines import finetune_selection
from bertcli.pipelines.finetune import run_finetune
from bertcli.pipelines.finetune_inputs import load_finetune_data
from bertcli.schema.finetune import FinetuneConfig
from bertcli.tasks.classification.data import custom_task, read_examples
from bertcli.tasks.holdout import carve, holdout_rows


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "bare", "bare")


def cfg(**values) -> FinetuneConfig:
    return load_config(FinetuneConfig, values=values)


# --- the split -------------------------------------------------------------------------------------------------


def test_holdout_rows_are_stratified_disjoint_and_do_not_follow_the_global_rngs():
    labels = [0] * 140 + [1] * 60
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    train, held, how = holdout_rows(200, 0.1, strata=labels)
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # another training seed: the same split
    again, held_again, _ = holdout_rows(200, 0.1, strata=labels)
    assert np.array_equal(held, held_again) and np.array_equal(train, again)
    assert set(train).isdisjoint(held) and sorted([*train, *held]) == list(range(200))
    assert Counter(labels[i] for i in held) == {0: 14, 1: 6} and how == "stratified by label"  # 70% / 30% kept


def test_groups_never_straddle_the_two_sides():
    groups = [i // 3 for i in range(90)]  # 30 contexts of 3 questions
    train, held, how = holdout_rows(90, 0.2, groups=groups)
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in held})
    assert len({groups[i] for i in held}) == 6 and how == "by 30 groups"


def test_carve_cuts_the_examples_and_refuses_too_few(tmp_path):
    spec = custom_task(["text"], "label", ["negative", "positive"])
    path = write_rows(tmp_path / "train.csv", sentiment_rows(40, 1))
    examples = read_examples(spec, path)
    carved = carve(examples, 0.25, path, strata=examples.labels)
    assert len(carved.holdout) == 10 and len(carved.train) == 30
    assert set(carved.holdout.lines).isdisjoint(carved.train.lines)  # file lines: no example on both sides
    assert sorted(carved.holdout.lines + carved.train.lines) == sorted(examples.lines)
    assert carved.holdout.labels == [examples.labels[examples.lines.index(n)] for n in carved.holdout.lines]
    one = write_rows(tmp_path / "one.csv", sentiment_rows(1, 1))
    with pytest.raises(UsageError, match=r"data.holdout_fraction 0.1: .*one.csv has 1 examples, too few"):
        carve(read_examples(spec, one), 0.1, one)


def conll(path: Path, n: int) -> Path:
    """n sentences, each made unique by its first word."""
    blocks = [f"w{i} O\ngood B-LOC\nthe O" for i in range(n)]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def squad(path: Path, contexts: int, per_context: int = 3) -> Path:
    paragraphs = [{"context": f"the cat {c} sat on the mat .", "qas": [
        {"id": f"q{c}-{k}", "question": f"where {k} ?", "answers": [{"text": "mat", "answer_start": 15 + len(str(c))}]}
        for k in range(per_context)]} for c in range(contexts)]  # fmt: skip
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def family_values(task: str, root: Path, bare: Path) -> dict:
    extra = {}
    if task == "custom":
        train, dev = sentiment_task(root, n_train=60, n_dev=10)
    elif task == "ner":
        train, dev = conll(root / "train.txt", 50), conll(root / "dev.txt", 5)
    elif task == "squad":
        train, dev = squad(root / "train.json", 20), squad(root / "dev.json", 2)
        extra["task.doc_stride"] = 16
    else:
        train, dev = swag_task(root, n_train=40, n_dev=8)
    return finetune_values(
        bare,
        root / "out",
        **{
            "task.name": task,
            "data.train_file": str(train),
            "data.validation_files": [str(dev)],
            "data.holdout_fraction": 0.2,
            **extra,
        },
    )


def keys_of(split) -> list:
    """What identifies an example of a family's split: the text, sentence, question or question id."""
    if hasattr(split, "sentences"):
        return [tuple(w) for w in split.sentences.words]
    if hasattr(split, "examples"):
        return list(split.examples.ids)
    return [tuple(split.ids[a:b]) for a, b in zip(split.offsets[:-1], split.offsets[1:])]


@pytest.mark.parametrize("task", ["custom", "ner", "squad", "swag"])
def test_every_family_holds_out_the_same_examples_whatever_the_training_seed(task, bare, tmp_path):
    values = family_values(task, tmp_path, bare)
    first = load_finetune_data(cfg(**values), tmp_path)
    other = load_finetune_data(cfg(**values, **{"train.seed": 7, "train.seeds": [3, 4]}), tmp_path)
    held, train = keys_of(first.holdout), keys_of(first.train)
    assert held == keys_of(other.holdout) and train == keys_of(other.train)
    assert held and train and first.counts["holdout"]["examples"] == len(first.holdout.examples if task in (
        "squad", "swag") else keys_of(first.holdout))  # fmt: skip
    if task != "custom":  # custom's keys are token ids: two sentences may read alike; its rows are tested above
        assert set(held).isdisjoint(train) and len(held) + len(train) == {"ner": 50, "squad": 60, "swag": 40}[task]
    if task == "squad":  # a context's three questions are all on one side
        assert len(held) % 3 == 0 and {q.split("-")[0] for q in held}.isdisjoint({q.split("-")[0] for q in train})
    assert list(first.selection) == ["holdout"] and list(first.evals) == ["validation"]


def test_average_seeds_needs_several_seeds(bare, tmp_path):
    with pytest.raises(ConfigError, match=r"train.average_seeds averages several seeds"):
        cfg(**finetune_values(bare, tmp_path, **{"task.name": "custom", "data.train_file": "t.csv",
                                                  "train.average_seeds": True}))  # fmt: skip


# --- selection on the holdout, the soup ------------------------------------------------------------------------


def two_seeds(bare, root: Path, **extra) -> dict:
    train, dev = sentiment_task(root / "data", n_train=96, n_dev=32)
    return finetune_values(bare, root / "out", **{
        "task.name": "custom", "data.train_file": str(train), "data.validation_files": [str(dev)],
        "train.seeds": [1, 2], "train.epochs": 2, "train.eval_every": 3, "train.average_seeds": True, **extra,
    })  # fmt: skip


def force_soup_score(monkeypatch, value: float) -> None:
    """The soup's main metric on the selection split set to `value` (its other scores as computed)."""
    scores = finetune_selection.soup_scores

    def forced(acc, data, cfg, model):
        found, predictions = scores(acc, data, cfg, model)
        for name in data.selection:
            found[name] = {**found[name], data.spec.main_metric: value}
        return found, predictions

    monkeypatch.setattr(finetune_selection, "soup_scores", forced)


def count_dev_scores(monkeypatch, n_dev: int) -> list[int]:
    """Every family.score call on a split of `n_dev` rows (the validation file; the holdout has fewer)."""
    from bertcli.tasks.classification.family import ClassificationFamily

    calls, score = [], ClassificationFamily.score

    def counted(self, acc, m, loader, split, spec):
        calls.append(len(split))
        return score(self, acc, m, loader, split, spec)

    monkeypatch.setattr(ClassificationFamily, "score", counted)
    return calls


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def soup_run(bare, tmp_path_factory):
    """Two seeds picked on a 25% holdout, their soup forced to score best there (so it is kept)."""
    root = tmp_path_factory.mktemp("soup")
    with pytest.MonkeyPatch.context() as monkeypatch:
        force_soup_score(monkeypatch, 2.0)  # above any accuracy
        calls = count_dev_scores(monkeypatch, 32)
        values = two_seeds(bare, root, **{"data.holdout_fraction": 0.25})
        result = run_finetune(cfg(**values))
    return root, values, result, calls


def test_the_holdout_picks_and_the_validation_file_is_scored_once_at_the_end(soup_run):
    root, _, result, calls = soup_run
    assert calls.count(32) == 3 and calls.count(24) > 3  # dev: once per seed and once for the soup
    records = [json.loads(line) for line in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "eval"]
    assert evals and all("holdout/accuracy" in r and not any("validation" in k for k in r) for r in evals)
    for run in result["runs"]:
        assert {tuple(e["metrics"]) for e in run["evaluations"]} == {("holdout",)}
        assert set(run["final"]) == {"validation"} and set(run["final"]["validation"]) == {"accuracy", "f1"}
    assert result["selection"]["splits"] == ["holdout"] and not result["selection"]["looked_at_reported_data"]
    assert result["selection"]["holdout"]["examples"] == 24 and result["data"]["train"]["examples"] == 72
    best = next(r for r in result["runs"] if r["seed"] == result["best"]["seed"])
    assert result["best"]["final"] == best["final"]
    assert {"holdout/accuracy", "validation/accuracy"} <= set(result["summary"])
    assert json.loads((root / "out" / "metrics.json").read_text())["soup"] == result["soup"]


def test_the_soup_is_the_mean_of_the_seeds_best_models_and_loads_with_transformers(soup_run):
    from transformers import AutoModelForSequenceClassification

    root, _, result, _ = soup_run
    soup = result["soup"]
    assert soup["kept"] and soup["seeds"] == [1, 2] and soup["main"] == 2.0
    assert set(soup["metrics"]) == {"holdout"} and set(soup["final"]) == {"validation"}
    a, b, mean = weights(root / "out" / "seed-1" / "best"), weights(root / "out" / "seed-2" / "best"), weights(
        root / "out" / "best")  # fmt: skip
    assert a.keys() == b.keys() == mean.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the seeds differ: the mean is not either of them
    for key in a:
        torch.testing.assert_close(mean[key], (a[key].double() + b[key].double()).div(2).float(), rtol=1e-6, atol=0)
    model = AutoModelForSequenceClassification.from_pretrained(str(root / "out" / "best"))
    assert model.config.id2label == {0: "negative", 1: "positive"}
    card = (root / "out" / "best" / "README.md").read_text()
    assert "uniform soup" in card and "## Metrics (the soup)" in card and "| holdout | accuracy | 2.0000 |" in card


def test_a_soup_no_better_than_the_best_seed_is_dropped_and_the_choice_is_said(bare, tmp_path, monkeypatch, capsys):
    force_soup_score(monkeypatch, -1.0)
    result = run_finetune(cfg(**two_seeds(bare, tmp_path)))  # no holdout: the validation file picks
    soup, best = result["soup"], result["best"]["seed"]
    assert not soup["kept"] and soup["main"] == -1.0 and soup["best_seed"] == best and "final" not in soup
    assert result["selection"] == {"splits": ["validation"], "looked_at_reported_data": True}
    kept = (tmp_path / "out" / "best" / "model.safetensors").read_bytes()
    assert kept == (tmp_path / "out" / f"seed-{best}" / "best" / "model.safetensors").read_bytes()
    printed = capsys.readouterr().out
    assert f"soup of seeds [1, 2]: validation -1.0000, not better than seed {best}" in printed
    assert "picked on validation: the scores above are those the choice looked at" in printed


def test_resume_of_a_soup_run_ends_with_the_uninterrupted_soup(soup_run, bare, monkeypatch, capsys):
    import os
    import signal

    from bertcli.tasks.classification import training as classification

    root, values, full, _ = soup_run
    force_soup_score(monkeypatch, 2.0)
    calls, forward = [0], classification._loss_and_sums

    def stop_in_seed_two(m, batch, regression):
        calls[0] += 1
        if calls[0] == 10 + 3:  # 5 steps an epoch (72 examples, batches of 16): step 3 of seed 2
            os.kill(os.getpid(), signal.SIGINT)
        return forward(m, batch, regression)

    monkeypatch.setattr(classification, "_loss_and_sums", stop_in_seed_two)
    values = {**values, "output.dir": str(root / "cut")}  # the stop saves a checkpoint of seed 2
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg(**values))
    assert "stopped seed 2 at step 3" in capsys.readouterr().err
    resumed = run_finetune(cfg(**values), resume=True)
    assert "[seed 1] finished earlier" in capsys.readouterr().out
    assert resumed["soup"] == full["soup"] and resumed["best"] == full["best"]
    assert [r["final"] for r in resumed["runs"]] == [r["final"] for r in full["runs"]]
    a, b = weights(root / "out" / "best"), weights(root / "cut" / "best")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("soup", [True, False])
def test_a_soups_seeds_start_from_one_head_and_other_runs_from_their_own(soup, bare, tmp_path, monkeypatch):
    from bertcli.pipelines import finetune as pipeline

    starts, add_adapter = [], pipeline.add_adapter

    def record(model, *args):  # called right after the head is built and the layer options applied
        starts.append({k: v.detach().clone() for k, v in model.named_parameters() if k.startswith("classifier.")})
        return add_adapter(model, *args)

    monkeypatch.setattr(pipeline, "add_adapter", record)
    result = run_finetune(cfg(**two_seeds(bare, tmp_path, **{"train.average_seeds": soup, "train.epochs": 1})))
    first, second = starts
    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[k], second[k]) for k in first) == soup
    a, b = weights(tmp_path / "out" / "seed-1" / "best"), weights(tmp_path / "out" / "seed-2" / "best")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # data order and dropout stay the seed's own
    assert ("soup" in result) == soup


# --- train.soup_head refit ---------------------------------------------------------------------------------------


def test_refit_head_trains_the_head_alone_and_lowers_its_loss(bare):
    from transformers import AutoModelForSequenceClassification

    from bertcli.training.soup import refit_head

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(bare), num_labels=2)
    model.classifier.weight.data.zero_(), model.classifier.bias.data.copy_(torch.tensor([3.0, -3.0]))  # says 0
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = torch.randint(5, model.config.vocab_size, (32, 8))
    labels = (ids[:, 1] % 2).long()  # half of each label: the head must move its bias at least
    batches = [{"input_ids": ids[i : i + 8], "labels": labels[i : i + 8]} for i in range(0, 32, 8)]
    losses = refit_head(model, [batches] * 3, lambda b: model(**b).loss, total_steps=12, learning_rate=0.05)
    after = model.state_dict()
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # the encoder and the pooler are the soup's
    assert all(p.requires_grad for p in model.parameters())  # trains again afterwards


def test_soup_head_needs_a_soup_and_no_teacher(bare, tmp_path):
    base = finetune_values(bare, tmp_path, **{"task.name": "custom", "data.train_file": "t.csv"})
    with pytest.raises(ConfigError, match=r"train.soup_head refit fits the head of the seeds' soup"):
        cfg(**base, **{"train.soup_head": "refit", "train.seeds": [1, 2]})
    with pytest.raises(ConfigError, match=r"with distill.teacher the training rows include rows only the teacher"):
        cfg(**base, **{"train.soup_head": "refit", "train.seeds": [1, 2], "train.average_seeds": True,
                       "distill.teacher": str(bare)})  # fmt: skip


@pytest.mark.parametrize("task", ["custom", "ner", "squad", "swag"])
def test_a_refit_soup_keeps_the_mean_encoder_with_a_new_head_for_every_family(task, bare, tmp_path, monkeypatch):
    import transformers

    from bertcli.tasks.registry import family_of

    force_soup_score(monkeypatch, 2.0)  # kept, so best/ is the refit soup
    values = family_values(task, tmp_path, bare)
    values.update({"train.seeds": [1, 2], "train.epochs": 1, "train.average_seeds": True, "train.soup_head": "refit"})
    result = run_finetune(cfg(**values))
    out = tmp_path / "out"
    head = result["soup"]["head"]
    assert result["soup"]["kept"] and head["refit"] and head["epochs"] == 3 and len(head["loss"]) == 3
    assert all(math.isfinite(x) for x in head["loss"])
    a, b, soup = weights(out / "seed-1" / "best"), weights(out / "seed-2" / "best"), weights(out / "best")
    heads = {k for k in soup if not k.startswith(("bert.", "base_model."))}
    assert heads and heads != set(soup)
    for key in soup:
        mean = (a[key].double() + b[key].double()).div(2).float()
        if key in heads:
            assert not torch.equal(soup[key], mean), key  # fitted anew
        else:
            torch.testing.assert_close(soup[key], mean, rtol=1e-6, atol=0)  # the encoder is the seeds' mean
    assert "its head fitted anew on the training rows" in (out / "best" / "README.md").read_text()
    spec = load_finetune_data(cfg(**values), tmp_path / "again").spec
    getattr(transformers, family_of(spec).auto_class).from_pretrained(str(out / "best"))  # loads as saved
