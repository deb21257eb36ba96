"""`run_export`: a fine-tuned model folder's forward -> MODEL/onnx/model.onnx (+ model-int8.onnx), atomically.

`bertcli export` and finetune's output.export_onnx call it; eval's model.runtime onnx reads what it writes
(`bertcli.export` holds the export itself and the ONNX Runtime forward). The task family is the one whose head
the model's config.json names; its `forward_module` is what is exported (`TaskFamily.export_inputs`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.export import FILES, ONNX_DIR, export_model, require_onnx
from bertcli.outputs import atomic_dir
from bertcli.tasks.registry import family_of_model

PRECISIONS = {"fp32": ("fp32",), "int8": ("fp32", "int8")}  # what each choice writes


def run_export(model_dir: Path, precision: str = "fp32", overwrite: bool = False,
               say: Callable[[str], None] = print) -> Path:  # fmt: skip
    """Export the fine-tuned model in `model_dir` to `model_dir/onnx/` (fp32; int8: the quantized copy too) and
    return that folder. An existing onnx/ is replaced only with `overwrite`, and only once the new export is
    complete; a failed export leaves the folder as it was."""
    from bertcli.model_dir import check_checkpoint_dir

    require_onnx("bertcli export")
    model_dir = Path(model_dir)
    raw = check_checkpoint_dir(model_dir)
    family = family_of_model(raw)
    if family is None:
        archs = ", ".join(raw.get("architectures") or [raw.get("model_type", "?")])
        raise UsageError(f"{model_dir} is a {archs}: export takes a fine-tuned model (a sequence classifier, token "
                         "classifier, QA or multiple-choice model, e.g. a finetune run's best/)")  # fmt: skip
    target = model_dir / ONNX_DIR
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass --overwrite to replace it")
    model = _load_trained(model_dir, family)
    with atomic_dir(target) as tmp:
        info = export_model(family, model, model_dir, tmp, PRECISIONS[precision])
    sizes = ", ".join(f"{FILES[p]} ({(target / FILES[p]).stat().st_size / 2**20:.1f} MiB)" for p in info["files"])
    fused = info["optimization"]["fp32"]["operators"]  # ONNX Runtime's fused operators (bertcli.ort_fusion)
    how = f"fused {', '.join(fused)}" if fused else "unfused: " + info["optimization"]["fp32"]["kept_as_exported"]
    say(f"exported {model_dir} ({family.name}) to {target}: {sizes}; fp32 logits within "
        f"{info['max_abs_diff_fp32']:.1g} of PyTorch's ({how})")  # fmt: skip
    return target


def export_best(best: Path, precision: str, say: Callable[[str], None], shown: Path | None = None) -> bool:
    """finetune's output.export_onnx: `run_export` of the run's best/, where a failed export is a note, not a
    failed run (the trained model is the product; `bertcli export` can try again). `shown`: where best/ will be
    once the run is committed (the messages name it). Returns whether it exported."""
    from bertcli.errors import BertcliError

    shown = shown or best
    tell = lambda line: say(line.replace(str(best), str(shown)))  # noqa: E731
    try:
        run_export(best, precision, say=tell)
    except BertcliError as err:
        tell(f"output.export_onnx: best/ is saved, but its ONNX export failed ({err}); `bertcli export {best}` "
             "tries again")  # fmt: skip
        return False
    return True


def _load_trained(model_dir: Path, family):
    """The model through its family's auto class, with a one-line error when a part of it would be initialised
    afresh (an export of random weights would score at random)."""
    import transformers

    from bertcli.tasks.evaluation import quiet_loading

    auto = getattr(transformers, family.auto_class)
    try:
        with quiet_loading():
            model, info = auto.from_pretrained(str(model_dir), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UsageError(f"{model_dir}: cannot load a {family.model_kind} ({str(err).splitlines()[0]})") from None
    if info.get("missing_keys"):
        raise UsageError(f"{model_dir} has no trained {family.model_kind} head (missing "
                         f"{', '.join(sorted(info['missing_keys']))})")  # fmt: skip
    return model.eval()
