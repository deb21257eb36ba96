"""Benchmark `bertcli pretrain` against Hugging Face `Trainer` + `BertForPreTraining` +
`DataCollatorForLanguageModeling` on the same model, data, batch and sequence length.

    python benchmarks/bench_pretrain.py                                   # small preset, seq 128, batch 32, CPU
    python benchmarks/bench_pretrain.py --corpus ../shared/data/corpus_en.txt --megabytes 12 --repeats 3

Data: the first --megabytes of --corpus (default: the shared 30 MB English corpus when present, else a generated
one) tokenized once by `bertcli tokenize` (WordPiece vocabulary 30522, NSP pairs of at most --seq tokens) into
--cache. Both sides then train the same model (--preset, fp32, SDPA attention, AdamW, same learning rate and
warmup) on that data with the same per-step batch, masking 15% of tokens with transformers' collator.

Prints, in one run on this machine: samples/s of each side per optimizer step over --repeats interleaved runs of
--steps timed steps after --warmup, as the best step (the least disturbed when other work shares the machine) and
the median step, their ratios, the achieved model FLOP/s of each (the FLOPs a BERT pretraining step needs:
encoder forward and backward on every token, MLM head on the masked tokens, NSP head) next to the fp32 matmul
FLOP/s of this machine measured in the same run, and their quotient (model FLOPs utilisation).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus_en.txt"


def prepare_data(args) -> Path:
    """Tokenize the corpus slice once; later runs reuse the cached output."""
    out = Path(args.cache) / f"tok-{Path(args.corpus).stem if args.corpus else 'generated'}-{args.megabytes}mb"
    if (out / "stats.json").is_file():
        return out
    from bertcli.config import load_config
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    text = out.parent / f"{out.name}.txt"
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as src:
            text.write_text(src.read(int(args.megabytes * 1e6)), encoding="utf-8")
    else:
        _generate(text, args.megabytes)
    overrides = [
        f"input.paths=[{text}]",
        "input.format=paragraphs",
        f"output.dir={out}",
        "tokenizer.vocab_size=30522",
        f"nsp.max_seq_length={args.seq}",
        "split.validation_fraction=0.02",
    ]
    run_tokenize(load_config(TokenizeConfig, overrides=overrides), overwrite=True)
    return out


def _generate(path: Path, megabytes: float) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice("aeioustrnlkmpd") for _ in range(rng.randint(2, 9))) for _ in range(40000)]
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < megabytes * 1e6:
            for _ in range(rng.randint(3, 10)):
                f.write(". ".join(" ".join(rng.choices(words, k=rng.randint(5, 20))) for _ in range(4)) + ".\n")
            f.write("\n")


def run_ours(data: Path, args, workdir: Path) -> list[float]:
    """samples/s of each timed optimizer step of `run_pretrain`, from its own log records (one per step)."""
    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.schema.pretrain import PretrainConfig

    cfg = load_config(
        PretrainConfig,
        overrides=[
            f"model.preset={args.preset}",
            f"data.dirs=[{data}]",
            f"data.batch_size={args.batch}",
            f"train.max_steps={args.warmup + args.steps}",
            "train.log_every=1",
            "train.warmup_steps=2",
            "train.eval_every=0",
            "train.eval_max_batches=1",
            "train.save_every=0",
            "train.tensorboard=false",
            f"output.dir={workdir / 'ours'}",
        ],
    )
    run_pretrain(cfg, overwrite=True)
    records = [json.loads(x) for x in (workdir / "ours" / "metrics.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in records if r["split"] == "train" and r["step"] > args.warmup]


def run_trainer(data: Path, args, workdir: Path) -> list[float]:
    """samples/s of each timed step of transformers.Trainer with BertForPreTraining and
    DataCollatorForLanguageModeling (a callback stamps the end of every step)."""
    import datasets
    from transformers import (
        AutoTokenizer,
        BertForPreTraining,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from bertcli.modeling import bert_config
    from bertcli.schema.pretrain import ModelSection

    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    train = datasets.load_from_disk(str(data / "dataset"))["train"]
    model = BertForPreTraining(bert_config(ModelSection(preset=args.preset), len(tokenizer)))
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    training = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        warmup_steps=2,
        weight_decay=0.01,
        max_grad_norm=1.0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,  # keep special_tokens_mask for the collator, as our side has it
        dataloader_num_workers=0,
        seed=42,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=42)
    trainer = Trainer(model=model, args=training, train_dataset=train, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    timed = stamps[args.warmup - 1 :]
    return [args.batch / (b - a) for a, b in zip(timed, timed[1:], strict=False)]


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """fp32 matmul FLOP/s of this machine (all threads torch uses), best of a few timed runs."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * size**3 / best


def step_flops_per_sample(data: Path, args) -> float:
    """Training FLOPs one sequence needs (forward + backward = 3x forward; matmuls only)."""
    import datasets

    from bertcli.schema.pretrain import PRESETS

    shape = PRESETS[args.preset]
    h, layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    stats = json.loads((data / "stats.json").read_text())
    vocab = stats["vocab_size"]
    lengths = datasets.load_from_disk(str(data / "dataset"))["train"]["input_ids"][:2000]
    tokens = sum(len(x) for x in lengths) / len(lengths)
    per_token_layer = 2 * (4 * h * h + 2 * h * inter) + 2 * 2 * tokens * h  # projections + QK^T and AV
    encoder = tokens * layers * per_token_layer
    mlm = 0.15 * (tokens - 3) * 2 * (h * h + h * vocab)
    nsp = 2 * (h * h + 2 * h)
    return 3 * (encoder + mlm + nsp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SHARED) if SHARED.is_file() else None)
    parser.add_argument("--megabytes", type=float, default=12.0, help="12 MB of English give the full 30522")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per run")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bertcli-bench"))
    args = parser.parse_args()

    import torch

    data = prepare_data(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    peak, ours_steps, their_steps = matmul_flops(), [], []
    for _ in range(args.repeats):  # interleaved: a busy machine disturbs both sides alike
        ours_steps += run_ours(data, args, workdir)
        their_steps += run_trainer(data, args, workdir)
        peak = max(peak, matmul_flops())
    ours, theirs = max(ours_steps), max(their_steps)
    ours_med, theirs_med = statistics.median(ours_steps), statistics.median(their_steps)
    per_sample = step_flops_per_sample(data, args)
    threads = torch.get_num_threads()
    print(
        f"\nbertcli pretrain benchmark: preset {args.preset}, seq {args.seq}, batch {args.batch}, fp32, {threads} "
        f"threads; {args.repeats} x {args.steps} timed steps per side after {args.warmup}; data {data}"
    )
    print("  samples/s                 best step   median step   model GFLOP/s (best)")
    for name, best, median in (("bertcli pretrain", ours, ours_med), ("HF Trainer (baseline)", theirs, theirs_med)):
        print(f"  {name:24s}  {best:9.2f}   {median:11.2f}   {best * per_sample / 1e9:10.1f}")
    print(f"  ratio                     {ours / theirs:9.2f}x  {ours_med / theirs_med:11.2f}x   (goal >= 1.8x)")
    print(f"  fp32 matmul peak          {peak / 1e9:9.1f} GFLOP/s (torch.matmul 2048^2, {threads} threads, this run)")
    print(
        f"  model FLOPs utilisation   ours {ours * per_sample / peak:.1%}, baseline {theirs * per_sample / peak:.1%}"
        f" (best steps; {per_sample / 1e9:.2f} GFLOP per sample)"
    )


if __name__ == "__main__":
    main()
