"""ONNX export of a fine-tuned model's forward, its int8 copy, and the ONNX Runtime forward that eval runs.

What is exported is exactly the module evaluation calls per batch: the family's `forward_module(model)` (the
`bertcli.tasks.encoder.EncoderForward` subclass), `m(input_ids, token_type_ids, attention_mask[, choice_mask])`
-> logits. The ONNX graph takes the batches the family's collator makes and returns the same logits, so every
family's post-processing (argmax, windows -> words, n-best spans, chosen indices) runs unchanged on its output.

The exporter is `torch.onnx.export(..., dynamo=True)` (torch.export, with onnxscript's optimizer), not Optimum's:
Optimum's ONNX exporter moved to `optimum-onnx`, whose only release (0.1.0) requires transformers < 4.58 and
optimum 2.1, so it cannot run beside transformers 5. Of torch's two exporters, both gave every head (sequence
classification and regression, token classification, QA, multiple choice with its choices axis) dynamic batch,
sequence and choice axes with logits within 1e-7 of PyTorch's; the dynamo one is torch's default since 2.9 and
the one transformers 5 keeps its models exportable with, while the TorchScript one warns that it will be removed
(transformers 5 also dropped its TorchScript tracing support). Its cost is a few seconds more per export.

Layout, beside the model: `MODEL/onnx/model.onnx` (fp32), `MODEL/onnx/model-int8.onnx` (ONNX Runtime's dynamic
quantization: int8 weights, activations quantized per batch) and `MODEL/onnx/export.json` (what was exported from
which weights; eval refuses an export whose weights are no longer the model's).

Both files then get ONNX Runtime's fused transformer operators (Attention / MultiHeadAttention,
SkipLayerNormalization, BiasGelu: `bertcli.ort_fusion`), each only where the fused graph still gives the logits the
unfused one is held to (fp32: PyTorch's within TOLERANCE, on two batch shapes); export.json's `optimization` says
which operators each file holds, or why it was kept as exported. On MiniLM, one CPU thread: fp32 1.12x PyTorch
instead of 1.00x, int8 2.39x instead of 2.25x (`bertcli.ort_fusion`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # type names only: torch is imported where it runs
    import torch

from bertcli.errors import RunFailure, UsageError
from bertcli.outputs import write_json

ONNX_DIR = "onnx"
FILES = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
INFO = "export.json"
INSTALL_HINT = "pip install 'bertcli[onnx]'"
TOLERANCE = 1e-4  # largest |ONNX - PyTorch| of an fp32 export's logits on the example batch
EXAMPLE_SIZES = {"batch": 2, "choices": 3, "sequence": 8}  # distinct, and not 0 or 1, which torch.export fixes


RUNTIME = ("onnxruntime",)  # what running an export needs
EXPORTER = ("onnxruntime", "onnx", "onnxscript")  # what making one needs (torch's dynamo exporter: onnxscript)


def require_onnx(what: str = "model.runtime onnx", modules: tuple[str, ...] = EXPORTER) -> None:
    """A one-line error with the install hint when one of `modules` is missing (imported here: an eval that only
    runs an export does not pay for the exporter's imports, seconds of start-up)."""
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise UsageError(f"{what} needs {module}, which is not installed: {INSTALL_HINT}") from None


# --- the example batch and the export ---------------------------------------------------------------------------


def example_batch(config, axes: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, ...]]]:
    """(inputs, axes) for `TaskFamily.export_inputs`: input_ids, token_type_ids and attention_mask of shape `axes`
    (names of EXAMPLE_SIZES), with padding in all but the first row and both segments where the model has two."""
    import torch

    shape = tuple(EXAMPLE_SIZES[a] for a in axes)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, config.vocab_size - 1), config.vocab_size, shape, generator=generator)
    types = torch.zeros(shape, dtype=torch.long)
    types[..., shape[-1] // 2 :] = min(1, getattr(config, "type_vocab_size", 2) - 1)
    mask = torch.ones(shape, dtype=torch.long)
    mask[1:, ..., -2:] = 0  # padded rows: the mask's path is traced with real zeros in it
    names = ("input_ids", "token_type_ids", "attention_mask")
    return dict(zip(names, (ids, types, mask))), {n: axes for n in names}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No exporter or quantizer chatter: torch.onnx prints its steps on stdout (eval's report) and logs warnings,
    the quantizer logs advice on the root logger."""
    loggers = [logging.getLogger(n) for n in ("", "torch", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_forward(forward: torch.nn.Module, inputs: dict[str, torch.Tensor], axes: dict[str, tuple[str, ...]],
                   target: Path) -> float:  # fmt: skip
    """Export `forward` (in eval mode, on the CPU) to the ONNX file `target` with every axis of `axes` dynamic;
    return the largest |ONNX - PyTorch| of the logits on `inputs`. RunFailure when the export fails or the
    logits differ by more than TOLERANCE."""
    import torch

    forward = forward.cpu().eval()
    dims = {name: torch.export.Dim(name, min=1) for name in {a for ax in axes.values() for a in ax}}
    shapes = {key: {i: dims[a] for i, a in enumerate(ax)} for key, ax in axes.items()}
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(forward, (), str(target), kwargs=inputs, input_names=list(inputs),
                              output_names=["logits"], dynamic_shapes=shapes, dynamo=True, external_data=False,
                              optimize=True, verbose=False)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the exporter's errors are many and long: one line
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise RunFailure(f"ONNX export of {type(forward).__name__} failed: {first}") from err
    with torch.no_grad():
        expected = forward(**inputs).float().numpy()
    got = OnnxForward(target, threads=1)(**inputs).numpy()
    diff = float(np.abs(expected - got).max()) if expected.shape == got.shape else float("inf")
    if not diff <= TOLERANCE:
        raise RunFailure(f"the ONNX export's logits differ from PyTorch's by {diff:.2g} (more than {TOLERANCE}); "
                         "evaluate with model.runtime torch")  # fmt: skip
    return diff


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantization of `source`: int8 weights (QInt8), one scale per output channel,
    activations quantized per batch. Per channel, not per tensor: MiniLM fine-tuned on movie reviews kept its dev
    accuracy (0.8175, as fp32) where one scale per matrix lost 5 points (0.765; benchmarks/README.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def export_model(family, model, model_dir: Path, target: Path, precisions: tuple[str, ...]) -> dict:
    """Write `family`'s forward of `model` (loaded from `model_dir`) into the folder `target`: FILES of each
    precision, fused where that keeps their logits (`fuse_checked`), and export.json, whose content is returned."""
    import torch

    inputs, axes = family.export_inputs(model.config)
    forward = family.forward_module(model)
    plain = {p: target / f"unfused-{FILES[p]}" for p in FILES}  # as exported / quantized; gone at the end
    export_forward(forward, inputs, axes, plain["fp32"])
    if "int8" in precisions:
        quantize_int8(plain["fp32"], plain["int8"])
    checks = _check_batches(forward, inputs, axes)
    optimization = {"fp32": fuse_checked(plain["fp32"], target / FILES["fp32"], checks, lambda _: TOLERANCE)}
    if "int8" in precisions:
        # the int8 graph has the fp32 one's structure: fused only where that fusion held; its bound is its own
        # distance from PyTorch as quantized (twice it, at least 1e-3): the fusion must not add error of its own
        fp32_fused = bool(optimization["fp32"]["operators"])
        optimization["int8"] = fuse_checked(plain["int8"], target / FILES["int8"], checks,
                                            lambda diff: max(2 * diff, 1e-3) if fp32_fused else -1.0)  # fmt: skip
    info = {
        "exporter": "torch.onnx.export (dynamo)",
        "torch": torch.__version__,
        "family": family.name,
        "inputs": {k: list(v) for k, v in axes.items()},
        "files": {p: FILES[p] for p in ("fp32", *(["int8"] if "int8" in precisions else []))},
        "max_abs_diff_fp32": optimization["fp32"]["max_abs_diff"],
        "optimization": optimization,
        "weights": weights_fingerprint(model_dir),
    }
    write_json(target / INFO, info)
    return info


def _check_batches(forward, inputs: dict[str, torch.Tensor], axes: dict[str, tuple[str, ...]]) -> list:
    """[(inputs, PyTorch's logits)] for the example batch and one of other sizes (batch doubled, one position
    fewer, the padding now one position): a fused graph is checked on both, as a rewrite may fix a size."""
    import torch

    other = {}
    for name, tensor in inputs.items():
        for dim, axis in enumerate(axes[name]):
            if axis == "batch":
                tensor = torch.cat([tensor, tensor.flip(dim)], dim)
            elif axis == "sequence":
                tensor = tensor.narrow(dim, 0, tensor.shape[dim] - 1)
        other[name] = tensor
    with torch.no_grad():
        return [(batch, forward(**batch).float().numpy()) for batch in (inputs, other)]


def _max_diff(path: Path, checks: list) -> float:
    """The largest |logits of the graph at `path| - PyTorch's| over `checks` (inf: another shape)."""
    session = OnnxForward(path, threads=1)
    worst = 0.0
    for batch, expected in checks:
        got = session(**batch).numpy()
        worst = max(worst, float(np.abs(expected - got).max()) if got.shape == expected.shape else float("inf"))
    return worst


def fuse_checked(plain: Path, target: Path, checks: list, bound: Callable[[float], float]) -> dict:
    """`target`: the graph `plain` with ONNX Runtime's fused operators (`bertcli.ort_fusion`) when its logits on
    `checks` are within `bound(plain's own distance)` of PyTorch's, else `plain` as it is (`plain` is moved).
    Returns export.json's record: the fused operators ({}: none), the file's max |logit diff| and, when it was
    kept as exported, why."""
    from bertcli.ort_fusion import fuse_for_ort

    diff = _max_diff(plain, checks)
    limit = bound(diff)
    record: dict = {"operators": {}, "max_abs_diff": diff}
    if limit < 0:
        record["kept_as_exported"] = "the fp32 graph's fusion did not hold"
    else:
        try:
            with _quiet():
                operators = fuse_for_ort(plain, target)
            fused_diff = _max_diff(target, checks) if operators else None
        except Exception as err:  # noqa: BLE001 - a graph the rewriter cannot take stays as exported
            operators, fused_diff = {}, None
            record["kept_as_exported"] = "onnxscript's ORT fusions failed: " + _first_line(err)
        if fused_diff is not None and fused_diff <= limit:
            plain.unlink()
            return {"operators": operators, "max_abs_diff": fused_diff}
        if fused_diff is not None:
            record["kept_as_exported"] = f"the fused graph's logits differ by {fused_diff:.2g} (more than {limit:.2g})"
        elif "kept_as_exported" not in record:
            record["kept_as_exported"] = "nothing to fuse"
    plain.replace(target)
    return record


def _first_line(err: BaseException) -> str:
    return next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)


def weights_fingerprint(model_dir: Path) -> dict:
    """The model's weights file and its sha256: eval checks an export against the weights beside it."""
    from bertcli.model_dir import weights_file

    path = weights_file(Path(model_dir))
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "sha256": digest.hexdigest()}


# --- the forward eval runs ---------------------------------------------------------------------------------------


def onnx_forward(family, model_dir: Path, precision: str, load_model: Callable[[], torch.nn.Module],
                 say: Callable[[str], None]) -> OnnxForward:  # fmt: skip
    """An ONNX Runtime forward of the model in `model_dir` at `precision` (fp32 or int8): its onnx/ export, checked
    against its weights, or, when there is none, an export made now into a temporary folder (from the fp32 export
    when that is there and unfused, else from `load_model()`: a fused graph quantizes slower, `bertcli.ort_fusion`),
    never into the model's folder; `say` notes that in one line."""
    folder = Path(model_dir) / ONNX_DIR
    wanted = folder / FILES[precision]
    if wanted.is_file():
        _check_weights(folder, model_dir)
        return OnnxForward(wanted)
    require_onnx(f"exporting {model_dir} (it has no {ONNX_DIR}/{FILES[precision]})")
    with tempfile.TemporaryDirectory(prefix="bertcli-onnx-") as tmp:
        tmp = Path(tmp)
        fp32 = folder / FILES["fp32"]
        if precision == "int8" and fp32.is_file() and not _is_fused(folder):
            _check_weights(folder, model_dir)
            say(f"{model_dir}: no {ONNX_DIR}/{FILES['int8']}; quantized {fp32} for this run "
                f"(`bertcli export {model_dir} --int8 --overwrite` saves it)")  # fmt: skip
            quantize_int8(fp32, tmp / FILES["int8"])
        else:
            say(f"{model_dir}: no {ONNX_DIR}/{FILES[precision]}; exported to a temporary folder for this run "
                f"(`bertcli export {model_dir}{' --int8' if precision == 'int8' else ''}` saves it)")  # fmt: skip
            export_model(family, load_model(), Path(model_dir), tmp, (precision,))
        return OnnxForward(tmp / FILES[precision])  # the session holds the graph: the file may go


def _is_fused(folder: Path) -> bool:
    """Whether export.json says the fp32 graph holds fused operators (an export without one: as exported)."""
    try:
        return bool(json.loads((folder / INFO).read_text(encoding="utf-8"))["optimization"]["fp32"]["operators"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_weights(folder: Path, model_dir: Path) -> None:
    try:
        recorded = json.loads((folder / INFO).read_text(encoding="utf-8"))["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # an export made elsewhere (no export.json): taken as it is
    if recorded != weights_fingerprint(model_dir):
        raise UsageError(f"{folder} was exported from other weights than {model_dir}'s; export again: "
                         f"bertcli export {model_dir} --overwrite")  # fmt: skip


# An input the caller leaves out (None), as the family forwards read it: no padding, one segment, every choice real.
UNGIVEN = {
    "attention_mask": np.ones_like,
    "token_type_ids": np.zeros_like,
    "choice_mask": lambda ids: np.ones(ids.shape[:2], dtype=np.bool_),
}


class OnnxForward:
    """An ONNX Runtime session called as the family's forward module is: positional or keyword arrays named as
    the graph's inputs (None: not given) -> the logits, a numpy array for numpy inputs (`--runtime onnx` in one
    process imports no torch), a float tensor on the inputs' device for tensors. CPU execution, every graph
    optimization, as many intra-op threads as torch uses (`torch.get_num_threads()`; without torch imported,
    OMP_NUM_THREADS, which sets torch's, or else ONNX Runtime's default, one per physical core, as torch's)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: stderr keeps the user's lines
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - a damaged or foreign file: one line
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            message = f"{path} cannot be loaded by ONNX Runtime ({first}); export again with --overwrite"
            raise UsageError(message) from None
        self.inputs = [(i.name, np.bool_ if i.type == "tensor(bool)" else np.int64) for i in self.session.get_inputs()]
        self.path = Path(path)

    def eval(self) -> OnnxForward:  # called as a module is before predicting
        return self

    def __call__(self, *args, **kwargs) -> np.ndarray | torch.Tensor:
        given = dict(zip([name for name, _ in self.inputs], args), **kwargs)
        unknown = [k for k, v in given.items() if v is not None and k not in dict(self.inputs)]
        if unknown:
            raise TypeError(f"{self.path} takes {[n for n, _ in self.inputs]}, not {unknown}")
        ids = given["input_ids"]
        tensors = not isinstance(ids, np.ndarray)
        feed = {}
        for name, dtype in self.inputs:
            value = given.get(name)
            if value is None:  # what the forward reads for None (a batch without padding has no attention mask)
                value = UNGIVEN[name](feed["input_ids"])
            elif tensors:
                value = value.detach().cpu().numpy()
            feed[name] = value.astype(dtype, copy=False)
        (logits,) = self.session.run(["logits"], feed)
        if not tensors:
            return logits
        import torch

        return torch.from_numpy(logits).to(ids.device)


def _threads() -> int:
    """torch's intra-op thread count where torch is imported; else OMP_NUM_THREADS (which sets torch's), or 0:
    ONNX Runtime's default, one thread per physical core, as torch's default is."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0
