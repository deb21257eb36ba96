"""What a torch-free ONNX eval could reach on a classification file: the floor under `bertcli eval --runtime onnx`.

    python benchmarks/ort_minimal.py --model runs/cola/best --data ../shared/data/CoLA/dev.tsv --precision int8

No bertcli, torch, transformers, evaluate or datasets: `tokenizers` reads the model's tokenizer.json (truncated to
--max-length), numpy batches of --batch-size longest first (as bertcli's eval batches), ONNX Runtime runs the model's
onnx/model.onnx or model-int8.onnx (`bertcli export --int8` writes both) on --threads threads, and accuracy and
Matthews correlation come from the confusion counts. Time the whole process (`/usr/bin/time`, benchmarks/paired.py) and
compare with `bertcli eval` on the same file: the difference is bertcli's start-up. GLUE-style TSV with the text in
--text-column and the label in --label-column (CoLA: 3 and 1; a header line is skipped when its label is not a
number).
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a fine-tuned best/ with onnx/ (bertcli export)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    parser.add_argument("--text-column", type=int, default=3)
    parser.add_argument("--label-column", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    with open(args.data, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows[0][args.label_column].lstrip("-").isdigit():
        rows = rows[1:]
    texts, gold = [r[args.text_column] for r in rows], np.array([int(r[args.label_column]) for r in rows])
    tok = Tokenizer.from_file(f"{args.model}/tokenizer.json")
    tok.enable_truncation(args.max_length)
    encoded = tok.encode_batch(texts)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    name = "model-int8.onnx" if args.precision == "int8" else "model.onnx"
    session = ort.InferenceSession(f"{args.model}/onnx/{name}", options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}

    order = np.argsort([-len(e.ids) for e in encoded], kind="stable")
    predicted = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(order), args.batch_size):
        batch = order[start : start + args.batch_size]
        width = max(len(encoded[i].ids) for i in batch)
        ids, types, mask = (np.zeros((len(batch), width), np.int64) for _ in range(3))
        for row, i in enumerate(batch):
            n = len(encoded[i].ids)
            ids[row, :n], types[row, :n], mask[row, :n] = encoded[i].ids, encoded[i].type_ids, 1
        feed = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        predicted[batch] = session.run(None, {k: v for k, v in feed.items() if k in inputs})[0].argmax(-1)

    tp, tn = int(((predicted == 1) & (gold == 1)).sum()), int(((predicted == 0) & (gold == 0)).sum())
    fp, fn = int(((predicted == 1) & (gold == 0)).sum()), int(((predicted == 0) & (gold == 1)).sum())
    denominator = float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    print(f"{len(texts)} examples, {args.precision}: accuracy {(predicted == gold).mean():.4f}, MCC {mcc:.4f}")


if __name__ == "__main__":
    main()
