"""ONNX export (`bertcli.export`, `bertcli.pipelines.export`): the exported graph of every family's forward gives
PyTorch's logits within 1e-4 on batches of other sizes than the export's (dynamic batch, sequence and choice axes,
padding, both segments), through the same `OnnxForward` call eval makes, with ONNX Runtime's fused operators in it
(`bertcli.ort_fusion`) unless fusing would change the logits; export.json records the weights and the fusions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_fixtures import make_tokenizer, tiny_config

from bertcli.export import FILES, INFO, OnnxForward, example_batch
from bertcli.ort_fusion import fused_operators
from bertcli.pipelines.export import run_export
from bertcli.tasks.registry import family_of_model

HEADS = {
    "classification": ("BertForSequenceClassification", {"num_labels": 3}),
    "regression": ("BertForSequenceClassification", {"num_labels": 1, "problem_type": "regression"}),
    "tagging": ("BertForTokenClassification", {"num_labels": 5}),
    "one_segment": ("BertForTokenClassification", {"num_labels": 3, "type_vocab_size": 1}),  # segment 1 read as 0
    "qa": ("BertForQuestionAnswering", {}),
    "multiple_choice": ("BertForMultipleChoice", {}),
}


def _save(path, head: str, seed: int = 0):
    import transformers

    cls, extra = HEADS[head]
    torch.manual_seed(seed)
    getattr(transformers, cls)(tiny_config(**extra)).save_pretrained(str(path))
    make_tokenizer(path)
    return path


def _batch(config, shape: tuple[int, ...], choices: bool):
    """Inputs shaped `shape` (batch, [choices,] sequence) with rows of different lengths and both segments."""
    axes = ("batch", "choices", "sequence") if choices else ("batch", "sequence")
    inputs, _ = example_batch(config, axes)
    generator = torch.Generator().manual_seed(sum(shape))
    ids = torch.randint(5, config.vocab_size, shape, generator=generator)
    mask = torch.ones(shape, dtype=torch.long)
    for row in range(1, shape[0]):
        mask[row, ..., shape[-1] - row % shape[-1] :] = 0  # each row its own length
    ids = ids * mask  # [PAD] is id 0
    types = torch.zeros(shape, dtype=torch.long)
    types[..., shape[-1] // 2 :] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if choices:
        batch["choice_mask"] = torch.ones(shape[:2], dtype=torch.bool)
        batch["choice_mask"][0, -1] = False
    return batch


@pytest.mark.parametrize("head", list(HEADS))
def test_fp32_onnx_is_fused_and_its_logits_equal_pytorchs_within_1e_4_on_other_shapes(tmp_path, head):
    model_dir = _save(tmp_path / "model", head)
    said = []
    target = run_export(model_dir, "fp32", say=said.append)
    assert sorted(p.name for p in target.iterdir()) == ["export.json", FILES["fp32"]]
    raw = json.loads((model_dir / "config.json").read_text())
    family = family_of_model(raw)
    import transformers

    model = getattr(transformers, family.auto_class).from_pretrained(str(model_dir)).eval()
    forward = family.forward_module(model).eval()
    session = OnnxForward(target / FILES["fp32"])
    choices = head == "multiple_choice"
    shapes = [(5, 3, 13), (1, 2, 4), (3, 4, 30)] if choices else [(5, 13), (1, 4), (7, 40)]
    for shape in shapes:
        batch = _batch(model.config, shape, choices)
        with torch.no_grad():
            expected = forward(**batch).float().numpy()
        got = session(**batch).numpy()  # as eval calls it: keyword tensors
        assert got.shape == expected.shape, (shape, got.shape, expected.shape)
        assert np.abs(got - expected).max() <= 1e-4, (head, shape, np.abs(got - expected).max())
        positional = session(*batch.values()).numpy()  # and positional, as predict_features and score do
        assert np.array_equal(positional, got)
        if not choices:  # a batch without padding comes without its mask (classification's collator)
            full = {"input_ids": batch["input_ids"], "token_type_ids": batch["token_type_ids"], "attention_mask": None}
            with torch.no_grad():
                expected = forward(**full).float().numpy()
            assert np.abs(session(**full).numpy() - expected).max() <= 1e-4
    info = json.loads((target / "export.json").read_text())
    assert info["family"] == family.name and info["weights"]["file"] == "model.safetensors"
    assert info["max_abs_diff_fp32"] <= 1e-4
    fused = info["optimization"]["fp32"]["operators"]  # what the graph holds, as export.json says
    assert fused == fused_operators(target / FILES["fp32"]) and "kept_as_exported" not in info["optimization"]["fp32"]
    assert said[-1].endswith(f"of PyTorch's (fused {', '.join(fused)})")  # and bertcli export says so
    assert fused["SkipLayerNormalization"] == 2 * model.config.num_hidden_layers
    assert fused.get("Attention", 0) + fused.get("MultiHeadAttention", 0) == model.config.num_hidden_layers


def test_int8_copy_is_smaller_and_close(tmp_path):
    model_dir = _save(tmp_path / "model", "classification")
    target = run_export(model_dir, "int8", say=lambda line: None)
    assert {p.name for p in target.iterdir()} == {"export.json", FILES["fp32"], FILES["int8"]}
    assert (target / FILES["int8"]).stat().st_size < (target / FILES["fp32"]).stat().st_size
    config = tiny_config(num_labels=3)
    batch = _batch(config, (6, 12), choices=False)
    fp32 = OnnxForward(target / FILES["fp32"])(**batch).numpy()
    int8 = OnnxForward(target / FILES["int8"])(**batch).numpy()
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    assert not np.array_equal(int8, fp32)  # quantized: the weights are int8
    record = json.loads((target / INFO).read_text())["optimization"]["int8"]
    assert record["operators"] == fused_operators(target / FILES["int8"]) and np.isfinite(record["max_abs_diff"])
    assert bool(record["operators"]) != ("kept_as_exported" in record)  # fused, or says why not
    assert "MatMulInteger" in _op_types(target / FILES["int8"])  # fused after quantizing: the projections stay int8


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("fusion", ["changes the logits", "fails"])
def test_a_fusion_that_would_change_the_logits_or_fails_leaves_the_graph_as_exported(tmp_path, monkeypatch, fusion):
    from bertcli import ort_fusion

    other = run_export(_save(tmp_path / "other", "classification", seed=1), "fp32", say=lambda line: None)

    def fuse(source, target):  # another model's fused graph: other logits
        if fusion == "fails":
            raise RuntimeError("no pattern matched\nand a long trace")
        target.write_bytes((other / FILES["fp32"]).read_bytes())
        return fused_operators(target)

    monkeypatch.setattr(ort_fusion, "fuse_for_ort", fuse)
    model_dir = _save(tmp_path / "model", "classification")
    said = []
    target = run_export(model_dir, "int8", say=said.append)
    assert {p.name for p in target.iterdir()} == {INFO, FILES["fp32"], FILES["int8"]}  # no unfused- copy left
    info = json.loads((target / INFO).read_text())["optimization"]
    why = "onnxscript's ORT fusions failed: no pattern matched" if fusion == "fails" else "the fused graph's logits"
    assert info["fp32"]["operators"] == {} and info["fp32"]["kept_as_exported"].startswith(why)
    assert said[-1].endswith(f"of PyTorch's (unfused: {info['fp32']['kept_as_exported']})")
    assert info["int8"] == {"operators": {}, "max_abs_diff": info["int8"]["max_abs_diff"],
                            "kept_as_exported": "the fp32 graph's fusion did not hold"}  # fmt: skip
    assert fused_operators(target / FILES["fp32"]) == {} == fused_operators(target / FILES["int8"])
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(str(model_dir))
    batch = _batch(model.config, (4, 9), choices=False)
    forward = family_of_model(json.loads((model_dir / "config.json").read_text())).forward_module(model.eval())
    with torch.no_grad():
        expected = forward(**batch).numpy()
    assert np.abs(OnnxForward(target / FILES["fp32"])(**batch).numpy() - expected).max() <= 1e-4


@pytest.mark.parametrize("fp32_export", ["fused", "unfused (an older export)"])
def test_eval_int8_without_an_int8_file_quantizes_an_unfused_export_and_exports_afresh_for_a_fused_one(
    tmp_path, fp32_export
):
    import transformers

    from bertcli.export import onnx_forward

    model_dir = _save(tmp_path / "model", "classification")
    target = run_export(model_dir, "fp32", say=lambda line: None)
    if fp32_export != "fused":  # what an export made before the fusions looks like: no optimization record
        info = json.loads((target / INFO).read_text())
        del info["optimization"]
        (target / INFO).write_text(json.dumps(info))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    family = family_of_model(json.loads((model_dir / "config.json").read_text()))
    load = lambda: transformers.BertForSequenceClassification.from_pretrained(str(model_dir)).eval()  # noqa: E731
    said = []
    session = onnx_forward(family, model_dir, "int8", load, said.append)
    how = "exported to a temporary folder" if fp32_export == "fused" else f"quantized {target / FILES['fp32']}"
    assert len(said) == 1 and how in said[0], said
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the export is left as it was
    batch = _batch(load().config, (3, 10), choices=False)
    assert np.isfinite(session(**batch).numpy()).all()


def test_a_model_without_a_task_head_is_refused(tmp_path):
    from finetune_fixtures import save_tiny_model

    from bertcli.errors import UsageError

    model_dir = save_tiny_model(tmp_path / "model", kind="pretraining")
    with pytest.raises(UsageError, match="export takes a fine-tuned model"):
        run_export(model_dir)
    assert not (model_dir / "onnx").exists()


def test_a_failed_export_at_the_end_of_finetune_is_a_note_and_best_stays(tmp_path, monkeypatch):
    from bertcli.errors import RunFailure
    from bertcli.pipelines import export

    model_dir = _save(tmp_path / "work" / "best", "classification")
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}

    def fails(*args, **kwargs):
        raise RunFailure("the exporter gave up")

    monkeypatch.setattr(export, "export_model", fails)
    said = []
    assert export.export_best(model_dir, "int8", said.append, shown=tmp_path / "run" / "best") is False
    assert said == [f"output.export_onnx: best/ is saved, but its ONNX export failed (the exporter gave up); "
                    f"`bertcli export {tmp_path / 'run' / 'best'}` tries again"]  # fmt: skip
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before  # no onnx/, nothing half-written
