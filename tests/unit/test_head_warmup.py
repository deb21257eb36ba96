"""The head warm-up of `pretrain --init-from` a checkpoint without an MLM head (`train.head_warmup_steps`): the
encoder stays bit-identical while the new head trains alone, then everything trains with the configured schedule;
a resume in the middle of the warm-up ends where the unbroken run does; a checkpoint with a head gets none."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from pretrain_fixtures import make_tokenized_dir, tiny_config
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel, BertTokenizer, get_scheduler

from bertcli.errors import UsageError
from bertcli.pipelines.pretrain import run_pretrain
from bertcli.pretraining.head_warmup import HeadWarmup, warmup_schedule

SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 64}  # fmt: skip
HEAD = "cls.predictions.transform.dense.weight"
WARMUP = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tokenized_dir(tmp_path_factory.mktemp("tok"), n_train=96, n_validation=32, seed=3)


def checkpoint(kind, folder: Path, data_dir: Path) -> Path:
    tokenizer = BertTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    torch.manual_seed(7)
    kind(BertConfig(vocab_size=len(tokenizer), **SHAPE)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def config(data_dir, out: Path, init: Path, **train):
    settings = {"max_steps": 3, "eval_every": 0, "save_every": 1, "keep_last": 20, "eval_max_batches": 1,
                "log_every": 1, "head_warmup_steps": WARMUP, "head_warmup_learning_rate": 1e-2, **train}  # fmt: skip
    cfg = tiny_config(data_dir, out, model={"init_from": str(init)}, **settings)
    return cfg.model_copy(update={"objective": "mlm"})


def encoder_at(run: Path, step: int) -> dict[str, torch.Tensor]:
    """The BertModel's tensors (checkpoint names, "bert." dropped) saved at `step` of a run."""
    saved = load_file(str(run / "checkpoints" / f"step-{step}" / "model.safetensors"))
    return {k.removeprefix("model.bert."): v for k, v in saved.items() if k.startswith("model.bert.")}


def test_the_encoder_stays_bit_identical_through_the_warmup_and_trains_after_it(data, tmp_path, capsys):
    ckpt = checkpoint(BertModel, tmp_path / "ckpt", data)
    result = run_pretrain(config(data, tmp_path / "run", ckpt, warmup_steps=0))  # lr > 0 from the main phase's step 1
    assert result["status"] == "completed" and result["step"] == WARMUP + 3  # the warm-up, then max_steps
    original = load_file(str(ckpt / "model.safetensors"))
    heads = []
    for step in range(1, WARMUP + 4):
        encoder = encoder_at(tmp_path / "run", step)
        same = all(torch.equal(encoder[name], tensor) for name, tensor in original.items())
        assert same == (step <= WARMUP), step  # frozen for the warm-up's steps, trained from the next one
        heads.append(load_file(str(tmp_path / "run" / "checkpoints" / f"step-{step}" / "model.safetensors")))
    assert all(not torch.equal(a[f"model.{HEAD}"], b[f"model.{HEAD}"]) for a, b in zip(heads, heads[1:]))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["split"] == "train"]
    assert lrs[: WARMUP - 1] == [pytest.approx(1e-2)] * (WARMUP - 1)  # the warm-up's constant rate
    assert lrs[WARMUP - 1 :] == [pytest.approx(2e-3 * f) for f in (1, 2 / 3, 1 / 3, 0)]  # linear, from its step 0
    before = [r for r in records if r["split"] == "eval" and r.get("after_head_warmup")]
    assert [r["step"] for r in before] == [WARMUP] and not any(r["step"] == 0 for r in records if r["split"] == "eval")
    assert result["held_out_perplexity_before"] == before[0]["mlm_perplexity"]
    out = capsys.readouterr().out
    assert f"the first {WARMUP} steps train it alone" in out
    assert f"'before' is measured after the {WARMUP}-step head warm-up" in out
    assert f"{WARMUP} of head warm-up, then 3" in out


def test_resume_in_the_middle_of_the_warmup_ends_with_the_unbroken_runs_weights(data, tmp_path):
    ckpt = checkpoint(BertModel, tmp_path / "ckpt", data)
    run_pretrain(config(data, tmp_path / "a", ckpt, save_every=2, eval_every=3))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    for step in (4, 6, 7):  # resume from step 2 of the 4-step warm-up
        shutil.rmtree(tmp_path / "b" / "checkpoints" / f"step-{step}")
    result = run_pretrain(config(data, tmp_path / "b", ckpt, save_every=2, eval_every=3), resume=True)
    assert result["step"] == WARMUP + 3
    a = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UsageError, match="head warm-up of 4 steps"):  # the warm-up must stay as it ran
        run_pretrain(config(data, tmp_path / "b", ckpt, head_warmup_steps=2), resume=True)


@pytest.mark.parametrize("kind", [BertForMaskedLM, BertForPreTraining], ids=lambda k: k.__name__)
def test_a_checkpoint_with_an_mlm_head_gets_no_warmup(kind, data, tmp_path, capsys):
    ckpt = checkpoint(kind, tmp_path / "ckpt", data)
    result = run_pretrain(config(data, tmp_path / "run", ckpt, save_every=0))
    assert result["step"] == 3 and result["load_report"]["head_warmup_steps"] == 0
    out = capsys.readouterr().out
    assert "MLM head loaded from the checkpoint: no head warm-up" in out
    line = next(x for x in out.splitlines() if x.startswith("held-out perplexity"))
    assert "MLM head" not in line  # "before" is the model's own
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["split"] == "eval" and records[1]["step"] == 0


def test_head_warmup_steps_0_starts_with_the_fresh_head(data, tmp_path, capsys):
    ckpt = checkpoint(BertModel, tmp_path / "ckpt", data)
    result = run_pretrain(config(data, tmp_path / "run", ckpt, save_every=0, head_warmup_steps=0))
    assert result["step"] == 3
    out = capsys.readouterr().out
    assert "no head warm-up: head_warmup_steps 0" in out and "scores a freshly initialised head" in out


def test_without_autograd_freezing_dropped_gradients_keep_the_encoder_still():
    """Several processes (DDP) keep autograd as is: the dropped gradients alone must hold the encoder."""
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=50, **SHAPE))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    warmup = HeadWarmup(model.bert, steps=2, use_autograd=False)
    warmup.start(0)
    before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    head = model.cls.predictions.transform.dense.weight.clone()
    ids = torch.randint(5, 50, (4, 12))
    for step in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        warmup.before_update(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        warmup.after_step(step + 1)
        still = all(torch.equal(before[k], v) for k, v in model.bert.state_dict().items())
        assert still == (step + 1 <= 2)
    assert not torch.equal(head, model.cls.predictions.transform.dense.weight)


def test_schedule_is_the_constant_head_rate_then_the_configured_one_from_its_step_0():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-4)
    main = get_scheduler("linear", optimizer, num_warmup_steps=2, num_training_steps=6)
    expected_main = [optimizer.param_groups[0]["lr"]]
    for _ in range(5):
        optimizer.step()
        main.step()
        expected_main.append(optimizer.param_groups[0]["lr"])
    optimizer = torch.optim.AdamW([param], lr=1e-4)
    scheduler = warmup_schedule(optimizer, get_scheduler("linear", optimizer, 2, 6), 3, 1e-4, 1e-3)
    used = []
    for _ in range(9):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert used[:3] == [pytest.approx(1e-3)] * 3
    assert used[3:] == [pytest.approx(x) for x in expected_main]
