"""The forward alone: PyTorch against ONNX Runtime, as exported, fused and int8, on one fixed batch (issue 31).

    OMP_NUM_THREADS=1 python benchmarks/bench_onnx_fusion.py --model runs/reviews/best \
        --data ../shared/data/movie_reviews/dev.tsv --text-column text --batch 64 --length 128 --repeats 10

One process, one thread (torch.set_num_threads(1), ONNX Runtime intra_op_num_threads=1, ORT_ENABLE_ALL), the ways
alternating, best of --repeats. The model (a sequence classifier) is exported into a temporary folder (the given one
is left as it is); the ways:

    torch fp32                the family's forward module, as `bertcli eval` runs it (the baseline of "x torch")
    onnx fp32 as exported     torch.onnx.export(dynamo=True): bertcli's export before the fusions
    onnx fp32, ORT optimizer  onnxruntime.transformers.optimizer.optimize_model(model_type="bert", opt_level=1)
    onnx fp32, fused          bertcli's export: onnxscript's optimize_for_ort (`bertcli.ort_fusion`)
    onnx int8 as quantized    quantize_dynamic(per_channel=True) of the export as it was
    onnx int8, fused          bertcli's export --int8: quantized, then fused

It prints ms per batch (wall and this thread's CPU time: on a shared machine the CPU time is the steadier figure),
the ratio against torch fp32, the largest |logit difference| from torch's and the share of equal argmax predictions
over every example of --data, each cut at a random length (8 to --length pieces) so that padding is exercised.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def encode(model_dir: Path, data: Path, column: str, length: int) -> dict[str, torch.Tensor]:
    """Every row of the TSV `data`, its `column` encoded to `length` pieces, each then cut at a random length."""
    import transformers

    rows = list(csv.DictReader(data.open(encoding="utf-8"), delimiter="\t"))
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    enc = tok([r[column] for r in rows], padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    batch = {k: enc[k].clone() for k in ("input_ids", "token_type_ids", "attention_mask")}
    cuts = torch.randint(8, length + 1, (len(rows),), generator=torch.Generator().manual_seed(0)).tolist()
    cut = {k: v.clone() for k, v in batch.items()}
    for i, n in enumerate(cuts):
        cut["input_ids"][i, n - 1], cut["input_ids"][i, n:] = tok.sep_token_id, tok.pad_token_id
        cut["attention_mask"][i, n:], cut["token_type_ids"][i, n:] = 0, 0
    return batch, cut


def make_ways(model_dir: Path, folder: Path):
    """{way: callable(batch dict) -> logits array}: torch's forward and a session of each ONNX file."""
    import transformers

    from bertcli.export import OnnxForward, _quiet, export_forward, quantize_int8
    from bertcli.ort_fusion import fuse_for_ort, fused_operators
    from bertcli.tasks.registry import family_of_model

    family = family_of_model(json.loads((model_dir / "config.json").read_text()))
    model = getattr(transformers, family.auto_class).from_pretrained(str(model_dir)).eval()
    forward = family.forward_module(model).eval()
    inputs, axes = family.export_inputs(model.config)
    files = {"onnx fp32 as exported": folder / "plain.onnx", "onnx int8 as quantized": folder / "plain-int8.onnx"}
    export_forward(forward, inputs, axes, files["onnx fp32 as exported"])
    quantize_int8(files["onnx fp32 as exported"], files["onnx int8 as quantized"])
    files["onnx fp32, ORT optimizer"] = folder / "ort-optimizer.onnx"
    with _quiet():
        from onnxruntime.transformers.optimizer import optimize_model

        c = model.config
        optimized = optimize_model(str(files["onnx fp32 as exported"]), model_type="bert", opt_level=1,
                                   num_heads=c.num_attention_heads, hidden_size=c.hidden_size)  # fmt: skip
        optimized.save_model_to_file(str(files["onnx fp32, ORT optimizer"]))
        files["onnx fp32, fused"] = folder / "fused.onnx"
        files["onnx int8, fused"] = folder / "fused-int8.onnx"
        fuse_for_ort(files["onnx fp32 as exported"], files["onnx fp32, fused"])
        fuse_for_ort(files["onnx int8 as quantized"], files["onnx int8, fused"])
    for way, path in files.items():
        print(f"{way}: ONNX Runtime operators {fused_operators(path)}")

    def run_torch(batch):
        with torch.inference_mode():
            return forward(**batch).float().numpy()

    ways = {"torch fp32": run_torch}
    order = ["onnx fp32 as exported", "onnx fp32, ORT optimizer", "onnx fp32, fused", "onnx int8 as quantized",
             "onnx int8, fused"]  # fmt: skip
    for way in order:
        session = OnnxForward(files[way], threads=1)
        ways[way] = lambda batch, s=session: s(**batch).numpy()
    return ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned sequence classifier folder")
    parser.add_argument("--data", type=Path, required=True, help="a TSV with a header")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    batch, cut = encode(args.model, args.data, args.text_column, args.length)
    timed = {k: v[: args.batch] for k, v in batch.items()}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        ways = make_ways(args.model, Path(tmp))
        logits = {}
        for way, run in ways.items():  # every example, cut, in batches
            parts = [
                run({k: v[i : i + args.batch] for k, v in cut.items()})
                for i in range(0, len(cut["input_ids"]), args.batch)
            ]
            logits[way] = np.concatenate(parts)
        wall = {way: float("inf") for way in ways}
        cpu = dict(wall)
        for run in ways.values():
            run(timed)  # warm-up
        for _ in range(args.repeats):
            for way, run in ways.items():
                w, c = time.perf_counter(), time.thread_time()
                run(timed)
                wall[way], cpu[way] = min(wall[way], time.perf_counter() - w), min(cpu[way], time.thread_time() - c)
    ref = logits["torch fp32"]
    print(f"\n{args.batch} x {args.length}, best of {args.repeats}, one thread")
    print("| way | ms/batch (wall) | ms/batch (CPU) | x torch fp32 (CPU) | max abs logit diff | argmax = torch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for way in ways:
        diff = float(np.abs(logits[way] - ref).max())
        agree = float((logits[way].argmax(-1) == ref.argmax(-1)).mean())
        print(f"| {way} | {wall[way] * 1000:.0f} | {cpu[way] * 1000:.0f} | {cpu['torch fp32'] / cpu[way]:.2f} | "
              f"{diff:.2g} | {agree:.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
