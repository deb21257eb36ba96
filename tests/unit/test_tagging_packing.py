"""Padding-free (packed) tagging batches (`data.pack` with ner): a training batch's windows are packed into rows of
at most max_seq_length pieces, each with its own positions and its labels (-100 where ignored); the tagger's loss
(a mean over the labelled pieces) and gradients equal those of the padded batch of the same windows. A model the
written-out encoder cannot run trains padded with a notice; QA still refuses data.pack."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from encoder_fixtures import BERT_SPECIALS, save_encoder, write_conll, write_squad
from encoder_fixtures import WORDS as FIXTURE_WORDS
from finetune_fixtures import tiny_config
from typer.testing import CliRunner

from bertcli.cli.app import app
from bertcli.tasks.tagging import IGNORED, encode_sentences, read_tagged, tagging_task, with_tag_labels
from bertcli.tasks.tagging.features import TaggingCollator, TaggingSplit
from bertcli.tasks.tagging.training import PackedTaggingCollator, TaggerForward, tagging_loss_and_sums

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alice", "bob", "went", "to", "paris", "lon", "##don",
         "the", "a", "and", "."]  # fmt: skip
WORDS = ["alice", "bob", "went", "to", "paris", "london", "the", "a", "and", "."]  # london: two pieces
LABELS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
TAGS = {"alice": "B-PER", "bob": "B-PER", "paris": "B-LOC", "london": "B-LOC"}


def _split(tmp_path, n: int, seed: int, width: int):
    """(split, tokenizer): `n` random sentences of 1 to 14 words, cut into windows of at most `width` pieces."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)
    rng = random.Random(seed)
    blocks = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 14))]
        blocks.append("\n".join(f"{w} {TAGS.get(w, 'O')}" for w in words))
    path = tmp_path / f"s{seed}.txt"
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    spec = with_tag_labels(tagging_task(), LABELS)
    sentences = read_tagged(spec, path, "conll")
    return TaggingSplit(sentences, encode_sentences(tok, sentences, spec, width)), tok


@pytest.mark.parametrize("count", [1, 5, 16, 40])
def test_packed_rows_keep_every_window_and_labelled_piece_once_within_max_seq_length(tmp_path, count):
    split, tok = _split(tmp_path, 60, seed=count, width=16)
    assert split.features.windowed > 0 and split.lengths.max() == 16  # full windows among short ones
    indices = np.random.default_rng(count).permutation(len(split))[:count].tolist()
    padded = TaggingCollator(split, tok)(indices)
    packed = PackedTaggingCollator(split, 16, tok.pad_token_id)(indices)
    assert packed["input_ids"].shape[1] <= 16 and len(packed["input_ids"]) <= len(padded["input_ids"])
    assert packed["input_ids"].shape == packed["labels"].shape == packed["seq_idx"].shape
    assert torch.equal(packed["example_index"], padded["example_index"])
    flat = {key: packed[key].flatten() for key in ("input_ids", "labels", "position_ids", "seq_idx")}
    lengths = split.lengths[indices]
    for j, n in enumerate(lengths):  # each window: its pieces and labels, positions from 0, in one run
        at = (flat["seq_idx"] == j).nonzero().flatten()
        assert len(at) == n and at[-1] - at[0] == n - 1
        assert torch.equal(flat["input_ids"][at], padded["input_ids"][j, :n])
        assert torch.equal(flat["labels"][at], padded["labels"][j, :n])
        assert torch.equal(flat["position_ids"][at], torch.arange(n))
    assert (flat["labels"][flat["seq_idx"] < 0] == IGNORED).all()  # padding carries no label
    # every labelled piece once: the padded batch's labels without its -100 padding, window after window
    unpadded = torch.cat([padded["labels"][j, :n] for j, n in enumerate(lengths)])
    in_rows = torch.cat([flat["labels"][flat["seq_idx"] == j] for j in range(len(lengths))])
    assert torch.equal(in_rows, unpadded)
    assert (packed["labels"] != IGNORED).sum() == (padded["labels"] != IGNORED).sum() > 0
    assert packed["attention_mask"].sum() == padded["attention_mask"].sum() == lengths.sum()


def _tagger(attention: str, train_ids=None) -> TaggerForward:
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(VOCAB), num_labels=len(LABELS), hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)  # fmt: skip
    config._attn_implementation = attention
    net = TaggerForward(BertForTokenClassification(config), train_token_ids=train_ids)
    assert net.written_out
    return net.train()


def _loss_and_grads(net, batch):
    net.zero_grad()
    loss, sums = tagging_loss_and_sums(net, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), {name: value.sum() for name, value in sums.items()}, grads


@pytest.mark.parametrize("attention, trained_rows", [("sdpa", False), ("sdpa", True), ("eager", False)])
def test_packed_batch_gives_the_padded_loss_and_gradients(tmp_path, attention, trained_rows):
    split, tok = _split(tmp_path, 24, seed=7, width=20)
    net = _tagger(attention, torch.from_numpy(split.ids) if trained_rows else None)
    assert (net.rows is not None) == trained_rows
    indices = np.random.default_rng(1).permutation(len(split))[:16].tolist()
    loss_a, sums_a, grads_a = _loss_and_grads(net, TaggingCollator(split, tok)(indices))
    loss_b, sums_b, grads_b = _loss_and_grads(net, PackedTaggingCollator(split, 20, tok.pad_token_id)(indices))
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    assert sums_a.keys() == sums_b.keys() and sums_a["labelled_pieces"] > 0
    for name in sums_a:  # counts of labelled and correct pieces: whole numbers, equal
        assert sums_b[name].item() == sums_a[name].item(), name
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == sum(1 for p in net.parameters() if p.requires_grad)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for name, g in grads_a.items() if "position_embeddings" in name)


def _collator(net, split, tok, **settings):
    """The training collate_fn `finetune ner` builds for `net` under the data.* / distill.* `settings`, and what it
    said."""
    from bertcli.config import load_config
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.registry import family_for

    values = {"task.name": "ner", "model.path": "m", "data.train_file": "t", "data.max_seq_length": 20, **settings}
    said = []
    collate = family_for("ner").train_collator(split, tok, net, load_config(FinetuneConfig, values=values), said.append)
    return type(collate), said


def test_ner_packs_unless_told_not_to_or_when_it_cannot(tmp_path):
    from transformers import AutoModelForTokenClassification

    split, tok = _split(tmp_path, 8, seed=3, width=20)
    bert = _tagger("sdpa")
    assert _collator(bert, split, tok) == (PackedTaggingCollator, [])  # data.pack null: the family packs ner
    assert _collator(bert, split, tok, **{"data.pack": True}) == (PackedTaggingCollator, [])
    assert _collator(bert, split, tok, **{"data.pack": False}) == (TaggingCollator, [])
    roberta = AutoModelForTokenClassification.from_pretrained(str(save_encoder(tmp_path / "r", "roberta")),
                                                              num_labels=len(LABELS))  # fmt: skip
    stock = TaggerForward(roberta)
    assert _collator(stock, split, tok) == (TaggingCollator, [])  # not asked for: nothing to say
    kind, said = _collator(stock, split, tok, **{"data.pack": True})
    assert kind is TaggingCollator and len(said) == 1 and "cannot be packed" in said[0]
    assert _collator(bert, split, tok, **{"distill.teacher": "teacher"}) == (TaggingCollator, [])
    kind, said = _collator(bert, split, tok, **{"distill.teacher": "teacher", "data.pack": True})
    assert kind is TaggingCollator and said == [
        "data.pack: ner batches with distill.teacher are padded (the teacher's outputs are kept per window)"
    ]


def _tiny_tagger_model(path):
    """A bare 2-layer BERT without dropout (packed and padded runs then reach the same weights) and its tokenizer."""
    from transformers import BertModel, BertTokenizerFast

    vocab = [*BERT_SPECIALS, *FIXTURE_WORDS, "?", ".", "##s", "##ly", "##ing"]
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(vocab), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(path))
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(path))
    return path


def _finetune_ner(model, out, train, dev, *settings: str):
    args = [
        "finetune",
        "ner",
        "--model",
        str(model),
        "-o",
        str(out),
        "--set",
        f"data.train_file={train}",
        "--set",
        f"data.validation_files=[{dev}]",
        "--set",
        "data.batch_size=8",
        "--set",
        "train.epochs=2",
        "--set",
        "data.max_seq_length=32",
        "--set",
        "train.learning_rate=1e-3",
        "--set",
        "train.log_every=2",
    ]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_finetune_ner_with_pack_trains_packed_to_the_weights_of_padded_batches(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForTokenClassification

    import bertcli.tasks.tagging.training as training

    packed_batches = []
    collate = training.PackedTaggingCollator.__call__
    monkeypatch.setattr(training.PackedTaggingCollator, "__call__",
                        lambda self, indices: packed_batches.append(indices) or collate(self, indices))  # fmt: skip
    model = _tiny_tagger_model(tmp_path / "bare")
    train, dev = write_conll(tmp_path / "train.txt", 40, 1), write_conll(tmp_path / "dev.txt", 12, 2)
    weights = {}
    for pack in ("false", "true"):
        code, output = _finetune_ner(model, tmp_path / pack, train, dev, f"data.pack={pack}")
        assert code == 0, output
        assert "cannot be packed" not in output
        assert bool(packed_batches) == (pack == "true")  # 5 batches an epoch, 2 epochs: all packed
        weights[pack] = load_file(str(tmp_path / pack / "best" / "model.safetensors"))
    assert len(packed_batches) == 10 and sorted(i for b in packed_batches[:5] for i in b) == list(range(40))
    for name, tensor in weights["false"].items():
        torch.testing.assert_close(weights["true"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    start = load_file(str(model / "model.safetensors"))["encoder.layer.0.attention.self.query.weight"]
    assert (weights["true"]["bert.encoder.layer.0.attention.self.query.weight"] - start).abs().max() > 1e-3
    best = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "true" / "best"))
    assert best.config.id2label == {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-PER", 4: "I-PER"}


def test_pack_on_a_roberta_tagger_trains_padded_with_a_notice(tmp_path):
    model = save_encoder(tmp_path / "roberta", "roberta")
    train, dev = write_conll(tmp_path / "train.txt", 16, 1), write_conll(tmp_path / "dev.txt", 8, 2)
    code, output = _finetune_ner(model, tmp_path / "run", train, dev, "data.pack=true", "train.epochs=1")
    assert code == 0, output
    assert "data.pack: RobertaForTokenClassification with sdpa attention cannot be packed" in output
    assert "training batches are padded" in output and (tmp_path / "run" / "best" / "config.json").is_file()


def test_qa_refuses_pack_in_one_line_before_anything_is_written(tmp_path):
    model = _tiny_tagger_model(tmp_path / "bare")
    squad = write_squad(tmp_path / "train.json", 4, 1)
    result = CliRunner().invoke(app, ["finetune", "squad", "--model", str(model), "-o", str(tmp_path / "run"),
                                      "--set", f"data.train_file={squad}", "--set", "data.max_seq_length=64",
                                      "--set", "task.doc_stride=16", "--set", "data.pack=true"])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("config error: ")
    assert "data.pack packs classification, regression and ner batches only, not squad's" in lines[0]
    assert not (tmp_path / "run").exists()
