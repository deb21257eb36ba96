"""Benchmark `bertcli eval` the way CI runs it: a fresh process, a small model, about a thousand examples.

    python benchmarks/bench_eval.py                                   # CoLA dev from ../shared/data if present
    python benchmarks/bench_eval.py --data glue/CoLA/dev.tsv --layers 4 --hidden 256 --threads 2

Builds a small BertForSequenceClassification (default: the `mini` shape, 4 layers x 256, random weights: the
numbers do not matter, the time does) with a WordPiece vocabulary trained on the data, then runs the real command
line `bertcli eval --task cola --data dev.tsv --fail-under matthews_correlation=-1 --format json` --repeats
times and prints, for the best run:

- wall time of the whole process, and its split: start-up (interpreter, imports, config, plan, report) versus the
  model's own work (load model + tokenizer and encode the data; forward passes; metrics), from metrics.json's
  runtime fields;
- the import cost of the libraries alone (`python -c "import ..."`), for reference;
- the bare forward: the same model over the same batches in this process (torch only, no CLI), so the
  compute figure of the CLI can be compared with the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_COLA = ROOT.parent / "shared" / "data" / "CoLA" / "dev.tsv"


def make_data(path: Path, n: int, seed: int = 0) -> Path:
    """A CoLA-layout file (no header: source, label, mark, sentence) of generated sentences."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            sentence = " ".join(rng.choices(words, k=rng.randint(4, 30)))
            label = rng.randint(0, 1)
            f.write(f"gen\t{label}\t{'' if label else '*'}\t{sentence}\n")
    return path


def make_model(out: Path, data: Path, layers: int, hidden: int, vocab: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    texts = [line.rstrip("\n").split("\t")[-1] for line in data.open(encoding="utf-8")]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    labels = ["unacceptable", "acceptable"]
    config = BertConfig(
        vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden, max_position_embeddings=512, id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(out))
    fast.save_pretrained(str(out))
    return out


def run_cli(model: Path, data: Path, batch: int, env: dict) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "bertcli", "eval", "--model", str(model), "--task", "cola", "--data", str(data)]
    cmd += ["--fail-under", "matthews_correlation=-1", "--format", "json", "--set", f"data.batch_size={batch}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bertcli eval failed ({proc.returncode}):\n{proc.stderr}")
    return wall, json.loads(proc.stdout)


def import_cost(env: dict, modules: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], check=True, env=env)
    return time.perf_counter() - start


def bare_forward(model_dir: Path, data: Path, batch: int, threads: int) -> float:
    """torch only: the model over the same length-sorted batches, nothing else."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    texts = [line.rstrip("\n").split("\t")[-1] for line in data.open(encoding="utf-8")]
    ids = tok(texts, truncation=True, max_length=128)["input_ids"]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            rows = [ids[j] for j in order[i : i + batch]]
            width = max(map(len, rows))
            x = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            model(input_ids=x, attention_mask=(x != 0).long())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="CoLA-layout file (default: shared CoLA dev)")
    parser.add_argument("--examples", type=int, default=1043, help="generated examples when no data is found")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (OMP_NUM_THREADS) for the run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        tmp = Path(tmp)
        data = args.data or (SHARED_COLA if SHARED_COLA.is_file() else make_data(tmp / "dev.tsv", args.examples))
        model = make_model(tmp / "model", data, args.layers, args.hidden, args.vocab)
        runs = [run_cli(model, data, args.batch, env) for _ in range(args.repeats)]
        wall, doc = min(runs, key=lambda r: r[0])
        rt = doc["runtime_s"]
        imports = min(
            import_cost(env, "torch, transformers.models.bert.modeling_bert, accelerate, evaluate, sklearn.metrics")
            for _ in range(2)
        )
        bare = min(bare_forward(model, data, args.batch, args.threads) for _ in range(2))

    work = rt["load_s"] + rt["compute_s"] + rt["metrics_s"]
    startup = wall - work
    print(f"bertcli eval: {doc['examples']} examples of {data.name}, model {args.layers}x{args.hidden} "
          f"(vocab {args.vocab}), batch {args.batch}, {args.threads} threads; best of {args.repeats}")  # fmt: skip
    print(f"  wall time, whole process        {wall:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w, _ in runs)})")
    print(f"  start-up                        {startup:7.2f} s   {100 * startup / wall:4.0f}%")
    print(f"    of which {rt['import_s']:5.2f} s importing transformers' model code and waiting for the metric")
    print("    libraries (imported on a thread during the forward passes); the rest: interpreter, torch, typer,")
    print("    accelerate, config, plan (reading the data), report")
    print(f"  load model + encode data        {rt['load_s']:7.2f} s   {100 * rt['load_s'] / wall:4.0f}%")
    print(f"  compute (forward passes)        {rt['compute_s']:7.2f} s   {100 * rt['compute_s'] / wall:4.0f}%")
    print(f"  metrics (evaluate modules)      {rt['metrics_s']:7.2f} s   {100 * rt['metrics_s'] / wall:4.0f}%")
    print(f"  examples/s of compute           {doc['examples'] / rt['compute_s']:7.0f}")
    print(f"reference: importing torch+transformers+accelerate+evaluate+sklearn alone takes {imports:.2f} s")
    print(f"reference: bare torch forward over the same batches takes {bare:.2f} s "
          f"(CLI compute / bare = {rt['compute_s'] / bare:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
