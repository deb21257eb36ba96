"""Benchmark `bertcli pretrain` against Hugging Face `Trainer` + `BertForPreTraining` +
`DataCollatorForLanguageModeling` on the same model, data, batch and sequence length.

    python benchmarks/bench_pretrain.py                                   # small preset, seq 128, batch 32, CPU
    python benchmarks/bench_pretrain.py --corpus ../shared/data/corpus_en.txt --megabytes 12 --repeats 3
    python benchmarks/bench_pretrain.py --device cuda --precision bf16 --preset base --batch 128 --warmup 10 --steps 50

On --device cuda, steps are timed in windows of --window steps (default 10), each closed by one wait for the GPU on
both sides (ours: its log line; Trainer: a callback), and the FLOPs are set against the GPU's dense peak for the
precision (a table by device name) and a matmul measured in the same run (bf16 or fp32, 8192^3).

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
import os
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
            f"train.log_every={args.window}",
            f"train.mixed_precision='{args.precision}'",  # quoted: YAML reads a bare no as false
            "train.warmup_steps=2",
            "train.eval_every=0",
            "train.eval_max_batches=1",
            "train.save_every=0",
            "train.tensorboard=false",
            f"output.dir={workdir / 'ours'}",
            f"train.compile={'true' if args.compile else 'false'}",
        ],
    )
    run_pretrain(cfg, overwrite=True)
    records = [json.loads(x) for x in (workdir / "ours" / "metrics.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in records if r["split"] == "train" and r["step"] > args.warmup]


def run_trainer(data: Path, args, workdir: Path) -> list[float]:
    """samples/s of each timed step of transformers.Trainer with BertForPreTraining and
    DataCollatorForLanguageModeling (a callback stamps the end of every step, or of every --window steps)."""
    import datasets
    import torch
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
    # word_starts feeds our whole-word masking only; transformers' collator cannot pad it (a list per token row)
    train = train.remove_columns([c for c in ("word_starts",) if c in train.column_names])
    model = BertForPreTraining(bert_config(ModelSection(preset=args.preset), len(tokenizer)))
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, _args, state, *_, **__):
            if state.global_step % args.window == 0:  # a window's end: wait for the GPU, as our log line does
                if args.device == "cuda":
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

    training = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        warmup_steps=2,
        weight_decay=0.01,
        max_grad_norm=1.0,
        use_cpu=args.device == "cpu",
        bf16=args.precision == "bf16",
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
    timed = stamps[args.warmup // args.window - 1 :]
    return [args.batch * args.window / (b - a) for a, b in zip(timed, timed[1:], strict=False)]


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


# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; matched in the device name.
# Order matters: a name containing another comes first (L40S before L4, A10G before A10).
BF16_PEAK_TFLOPS = {
    "H200": 989, "H100 SXM": 989, "H100 80GB HBM3": 989, "H100 NVL": 835, "H100 PCIe": 756, "H100": 756,
    "A100": 312, "L40S": 362, "L4": 121, "A10G": 70, "A10": 125, "RTX 4090": 165,
}  # fmt: skip


def gpu_bf16_peak(name: str) -> float | None:
    """The data-sheet dense bf16 FLOP/s of the GPU called `name` (torch.cuda.get_device_name), None if unknown."""
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def cuda_matmul_flops(dtype, size: int = 8192, repeats: int = 10) -> float:
    """Measured matmul FLOP/s of this GPU in `dtype`, best of three timed groups after a warm-up."""
    import torch

    a, b = torch.randn(size, size, device="cuda", dtype=dtype), torch.randn(size, size, device="cuda", dtype=dtype)
    torch.matmul(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * size**3 / best


def mean_tokens(data: Path) -> float:
    """Mean length in tokens (padding excluded) of the first 2000 training sequences."""
    import datasets

    lengths = datasets.load_from_disk(str(data / "dataset"))["train"]["input_ids"][:2000]
    return sum(len(x) for x in lengths) / len(lengths)


def step_flops_per_sample(data: Path, args) -> float:
    """Training FLOPs one sequence needs (forward + backward = 3x forward; matmuls only)."""
    from bertcli.schema.pretrain import PRESETS

    shape = PRESETS[args.preset]
    h, layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    stats = json.loads((data / "stats.json").read_text())
    vocab = stats["vocab_size"]
    tokens = mean_tokens(data)
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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both sides train")
    parser.add_argument("--precision", choices=["no", "bf16"], default="no", help="autocast of both sides")
    parser.add_argument("--compile", action="store_true", help="ours with train.compile=true (Trainer: plain)")
    parser.add_argument("--window", type=int, help="steps per timed window (default: 1 on cpu, 10 on cuda)")
    args = parser.parse_args()
    args.window = args.window or (10 if args.device == "cuda" else 1)
    if args.warmup < args.window or args.warmup % args.window or args.steps % args.window:
        parser.error(f"--warmup and --steps must be multiples of --window ({args.window}), warmup at least one")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here")
    if args.device == "cpu":  # ours on the CPU even where a GPU is present (Trainer: use_cpu)
        os.environ["ACCELERATE_USE_CPU"] = "true"
    data = prepare_data(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    peak, ours_steps, their_steps = measured_peak(args), [], []
    for _ in range(args.repeats):  # interleaved: a busy machine disturbs both sides alike
        ours_steps += run_ours(data, args, workdir)
        their_steps += run_trainer(data, args, workdir)
        peak = max(peak, measured_peak(args))
    report(args, data, peak, ours_steps, their_steps)
    if args.device == "cpu":
        step = args.batch / statistics.median(ours_steps)
        loader = data_seconds_per_batch(data, args)
        print(
            f"  data path (our loader alone) {loader * 1e3:.1f} ms per batch of a {step * 1e3:.0f} ms median step: "
            f"{1 - loader / step:.0%} of the step in the model and optimizer (goal >= 70% for tiny and mini)"
        )


def data_seconds_per_batch(data: Path, args, batches: int = 20) -> float:
    """Seconds our training loader takes per batch on its own (Arrow reads, per-example masking, padding): the
    part of a step spent outside the model."""
    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import _dataloaders, load_pretrain_data
    from bertcli.schema.pretrain import PretrainConfig

    overrides = [f"model.preset={args.preset}", f"data.dirs=[{data}]", f"data.batch_size={args.batch}"]
    cfg = load_config(PretrainConfig, overrides=overrides)
    loader, _ = _dataloaders(cfg, load_pretrain_data(cfg))
    batches_of = iter(loader)
    next(batches_of)  # the first opens the Arrow files
    start = time.perf_counter()
    for _ in range(batches):
        next(batches_of)
    return (time.perf_counter() - start) / batches


def measured_peak(args) -> float:
    """Matmul FLOP/s measured now: fp32 on the CPU, the benchmark's precision on the GPU."""
    import torch

    if args.device == "cpu":
        return matmul_flops()
    return cuda_matmul_flops(torch.bfloat16 if args.precision == "bf16" else torch.float32)


def report(args, data: Path, peak: float, ours_steps: list[float], their_steps: list[float]) -> None:
    import torch

    ours, theirs = max(ours_steps), max(their_steps)
    ours_med, theirs_med = statistics.median(ours_steps), statistics.median(their_steps)
    per_sample, tokens = step_flops_per_sample(data, args), mean_tokens(data)
    gpu = args.device == "cuda"
    where = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    scale, unit = (1e12, "TFLOP/s") if gpu else (1e9, "GFLOP/s")
    timed = "step" if args.window == 1 else f"window of {args.window} steps"
    print(
        f"\nbertcli pretrain benchmark: preset {args.preset}{' (ours compiled)' if args.compile else ''}, "
        f"seq {args.seq}, batch {args.batch}, "
        f"{'bf16' if args.precision == 'bf16' else 'fp32'}, {where}; {args.repeats} x {args.steps} timed steps per "
        f"side after {args.warmup}, timed per {timed}; {tokens:.1f} tokens per sample; data {data}"
    )
    print(f"  samples/s                 best {timed:6s}  median   tokens/s (best)   model {unit} (best)")
    for name, best, median in (("bertcli pretrain", ours, ours_med), ("HF Trainer (baseline)", theirs, theirs_med)):
        print(f"  {name:24s}  {best:9.2f}   {median:9.2f}   {best * tokens:13.0f}   {best * per_sample / scale:10.1f}")
    goal = "1.5x on one H100/H200-class GPU" if gpu else "2.0x at the base preset"
    print(f"  ratio                     {ours / theirs:9.2f}x  {ours_med / theirs_med:9.2f}x   (goal >= {goal})")
    what = f"torch.matmul {'8192' if gpu else '2048'}^2, {'bf16' if gpu and args.precision == 'bf16' else 'fp32'}"
    print(f"  measured matmul peak      {peak / scale:9.1f} {unit} ({what}, this run)")
    peaks = [("measured", peak)]
    sheet = gpu_bf16_peak(torch.cuda.get_device_name()) if gpu and args.precision == "bf16" else None
    if sheet:
        print(f"  data-sheet bf16 peak      {sheet / scale:9.1f} {unit} (dense, {torch.cuda.get_device_name()})")
        peaks.append(("data-sheet", sheet))
    for label, value in peaks:
        print(
            f"  model FLOPs utilisation   ours {ours * per_sample / value:.1%}, baseline "
            f"{theirs * per_sample / value:.1%} of the {label} peak (best; {per_sample / 1e9:.2f} GFLOP per sample)"
        )


if __name__ == "__main__":
    main()
