"""What lets encoders other than BERT through the task families: the load report names the forward that runs
(bertcli's written-out BERT encoder, or the model's own), the stock forward passes segment ids only to models
that take them, position limits count RoBERTa's offset, and words given pre-split read as in running text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from encoder_fixtures import build_tokenizer, save_encoder
from finetune_fixtures import save_tiny_model

from bertcli.errors import UsageError
from bertcli.model_dir import check_max_seq_length, fitting_length, load_tokenizer_for, max_positions
from bertcli.tasks import glue_task
from bertcli.tasks.classification.training import ClassifierForward
from bertcli.tasks.registry import family_for, load_classifier
from bertcli.tasks.tagging.training import TaggerForward


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    out = {"bert": save_tiny_model(root / "bert", "bare")}
    for arch in ("roberta", "distilbert", "modernbert"):
        out[arch] = save_encoder(root / arch, arch)
    return out


def test_the_load_report_says_bert_runs_written_out_and_roberta_its_own_forward(models):
    model, report = load_classifier(models["bert"], glue_task("mrpc"))
    report.forward = ClassifierForward(model, train_token_ids=torch.tensor([0, 5, 6])).path()
    assert report.lines()[-1] == "forward: bertcli's written-out BERT encoder with trained rows"
    assert report.as_dict()["forward"] == report.forward
    ner = family_for("ner")
    spec = ner.finetune_spec(_ner_config(models["roberta"]))[0]
    spec = type(spec)(**{**spec.__dict__, "label_names": ("O", "B-PER", "I-PER")})
    model, report = ner.build_model(models["roberta"], spec)
    report.forward = ner.forward_module(model, train_token_ids=torch.tensor([0, 5])).path()
    assert report.lines()[-1] == "forward: the model's own (RobertaForTokenClassification)"


def _ner_config(model):
    from bertcli.config import load_config
    from bertcli.schema.finetune import FinetuneConfig

    return load_config(FinetuneConfig, overrides=["task.name=ner", f"model.path={model}", "data.train_file=x.txt"])


@pytest.mark.parametrize("arch, takes", [("distilbert", False), ("modernbert", False), ("roberta", True)])
def test_the_stock_forward_passes_segment_ids_only_to_models_that_take_them(models, arch, takes):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(str(models[arch]), num_labels=3).eval()
    net = TaggerForward(model)
    assert net.takes_segments is takes and not net.written_out
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert torch.equal(net(ids, torch.zeros_like(ids), None), expected)


def test_position_limits_count_robertas_offset_after_the_padding_id():
    roberta = {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert max_positions(roberta) == 512 and fitting_length(roberta, 600) == 512
    assert max_positions({"model_type": "bert", "max_position_embeddings": 512}) == 512
    assert fitting_length({"model_type": "modernbert"}, 600) == 600  # no limit named: data.max_seq_length
    check_max_seq_length(roberta, 512)
    with pytest.raises(UsageError, match=r"^data.max_seq_length 513 exceeds the model's max_position_embeddings 514 "
                       r"\(512 pieces: its positions start after pad_token_id \+ 1\); lower it$"):  # fmt: skip
        check_max_seq_length(roberta, 513)


@pytest.mark.parametrize("arch", ["roberta", "modernbert"])
def test_words_given_pre_split_read_as_in_running_text(models, arch):
    """Byte-level BPE without add_prefix_space reads "went" alone as w+ent; within text it is Ġwent."""
    words = ["alice", "went", "to", "paris"]
    own = build_tokenizer(arch)
    alone = own(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    running = own(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    assert alone != running  # the trap
    tok = load_tokenizer_for(models[arch], None, len(own), words_pre_split=True)
    assert tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] == running


def test_tagging_windows_take_the_special_tokens_the_tokenizer_adds_whatever_their_names():
    """A fast tokenizer whose post-processor adds [CLS]/[SEP] without naming them cls_token/sep_token (and one that
    adds none): windows are wrapped as the tokenizer wraps a text, within data.max_seq_length."""
    from encoder_fixtures import wordpiece_backend
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from bertcli.tasks.tagging.data import TaggedSentences, encode_sentences, special_ends, tagging_task

    unnamed = PreTrainedTokenizerFast(tokenizer_object=wordpiece_backend(), unk_token="[UNK]", pad_token="[PAD]")
    bare = wordpiece_backend()
    bare.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    plain = PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="[UNK]", pad_token="[PAD]")
    assert unnamed.cls_token_id is None and special_ends(unnamed) == ([2], [3]) and special_ends(plain) == ([], [])
    spec = tagging_task("iob2", ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    words = [["alice", "went", "to", "paris", "today"]]
    sentences = TaggedSentences(Path("x.txt"), words, [["B-PER", "O", "O", "B-LOC", "O"]], [[1, 2, 3, 4, 5]])
    for tok, first, last in ((unnamed, [2], [3]), (plain, [], [])):
        feats = encode_sentences(tok, sentences, spec, max_seq_length=len(first) + len(last) + 3)
        assert [len(ids) for ids in feats.input_ids] == [len(first) + len(last) + 3, len(first) + len(last) + 2]
        assert all(ids[: len(first)] == first and ids[len(ids) - len(last) :] == last for ids in feats.input_ids)
        assert feats.word_ids[0] == [None] * len(first) + [0, 1, 2] + [None] * len(last)
