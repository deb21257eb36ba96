"""Benchmark `bertcli tokenize` against the bare `tokenizers` batch encode of the same text.

    python benchmarks/bench_tokenize.py                               # a generated 10 MB corpus
    python benchmarks/bench_tokenize.py --corpus ../shared/data/corpus_en.txt --format paragraphs
    python benchmarks/bench_tokenize.py --corpus ../shared/data/corpus_en.txt --scale 4 --skip-memory

Prints, in one run on this machine:
- the bare tokenizers batch-encode throughput (MB/s) of the corpus's lines, with the tokenizer tokenize trained,
  through `encode_batch` and `encode_batch_fast` (Rust threads on every core), 10,000 lines per call;
- the end-to-end throughput of `bertcli tokenize` reusing that tokenizer (read, split sentences, tokenize, build
  NSP pairs, write Arrow), and its ratio to the bare encode; and end to end including vocabulary training;
  with --scale K, both on the corpus repeated K times (the fixed start-up of the command weighs less);
- peak memory of the whole process tree (main process + datasets workers) at 1x and 4x the corpus, as
  proportional set size (pages shared by forked workers counted once): the processes' own (anonymous) memory, and
  all resident memory, which also counts pages of memory-mapped Arrow files that the kernel can drop at any time.
Each timing is the best of --repeats runs, interleaved, so a busy machine disturbs both sides alike; the ratio is
also given round by round (a bare encode and an end-to-end run back to back), median and range.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BERTCLI = [sys.executable, "-m", "bertcli", "tokenize"]
BARE_BATCH = 10_000  # lines per encode_batch call of the bare baseline


def generate_corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    """Paragraph-per-line text with a Zipf-like vocabulary, blank lines between documents."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "to", "sha", "vi", "nor", "el", "qua", "dis", "ter", "on", "ba", "ux"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(20000)]
    weights = [1 / (i + 1) for i in range(len(words))]
    target = int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < target:
            for _ in range(rng.randint(2, 12)):  # paragraphs of a document
                sentences = []
                for _ in range(rng.randint(1, 6)):
                    n = rng.randint(4, 30)
                    sentences.append(" ".join(rng.choices(words, weights, k=n)).capitalize() + ".")
                f.write(" ".join(sentences) + "\n")
            f.write("\n")


def peak_memory(proc: subprocess.Popen) -> dict:
    """Sample the memory of the process and all its descendants every 20 ms until it exits."""
    peak = {"anon": 0, "rss": 0}

    def tree(pid: int) -> list[int]:
        pids, stack = [], [pid]
        while stack:
            p = stack.pop()
            pids.append(p)
            try:
                children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            except OSError:
                children = []
            stack.extend(int(c) for c in children)
        return pids

    def status(pid: int) -> dict:
        # Proportional set sizes: forked workers share pages with their parent, and plain RSS would count
        # every shared page once per process.
        out = {"anon": 0, "rss": 0}
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    out["anon"] = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    out["rss"] = int(line.split()[1]) * 1024
        except OSError:
            pass
        return out

    while proc.poll() is None:
        now = [status(p) for p in tree(proc.pid)]
        for key in peak:
            peak[key] = max(peak[key], sum(s[key] for s in now))
        time.sleep(0.02)
    return peak


def run_tokenize(
    corpus: Path, fmt: str, out: Path, extra: list[str], measure_memory: bool = False
) -> tuple[float, dict]:
    cmd = [*BERTCLI, str(corpus), "-o", str(out), "--overwrite", "--set", f"input.format={fmt}", *extra]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    memory = {}
    if measure_memory:
        holder: dict = {}
        sampler = threading.Thread(target=lambda: holder.update(peak_memory(proc)))
        sampler.start()
        stdout, stderr = proc.communicate()
        sampler.join()
        memory = holder
    else:
        stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bertcli tokenize failed ({proc.returncode}):\n{stderr[-2000:]}")
    return elapsed, memory


def bare_encode(tokenizer_dir: Path, lines: list[str], fast: bool) -> float:
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(tokenizer_dir)).backend_tokenizer
    encode = backend.encode_batch_fast if fast else backend.encode_batch
    start = time.perf_counter()
    for i in range(0, len(lines), BARE_BATCH):  # batches: holding every encoding at once slows a big corpus down
        encode(lines[i : i + BARE_BATCH], add_special_tokens=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="text corpus (default: generate one)")
    parser.add_argument("--format", default="paragraphs", choices=["sentences", "paragraphs", "jsonl"])
    parser.add_argument("--generate-mb", type=float, default=10.0, help="size of the generated corpus")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1, help="measure speed on the corpus repeated K times")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-memory", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    corpus = args.corpus
    if corpus is None:
        corpus = work / "generated.txt"
        generate_corpus(corpus, args.generate_mb)
    megabytes = corpus.stat().st_size / 1e6
    common = ["--set", f"run.num_proc={args.num_proc}"]
    print(f"corpus: {corpus} ({megabytes:.1f} MB), {os.cpu_count()} cores, num_proc={args.num_proc}")

    train_time, _ = run_tokenize(corpus, args.format, work / "trained", common)
    tokenizer = work / "trained" / "tokenizer"
    reuse = [*common, "--set", f"tokenizer.path={tokenizer}"]
    if not args.only_memory:
        scaled = repeat_corpus(corpus, args.scale, work / f"corpus{args.scale}x.txt") if args.scale > 1 else corpus
        measure_speed(args, scaled, scaled.stat().st_size / 1e6, tokenizer, reuse, train_time, work)
    if not args.skip_memory:
        measure_memory(args, corpus, reuse, work)


def measure_speed(args, corpus: Path, megabytes: float, tokenizer: Path, reuse: list[str], train_time: float, work):
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(f"speed measured on {corpus.name} ({megabytes:.1f} MB, {len(lines):,} non-empty lines)")
    bare, bare_fast, e2e = [], [], []
    for _ in range(args.repeats):
        bare.append(bare_encode(tokenizer, lines, fast=False))
        bare_fast.append(bare_encode(tokenizer, lines, fast=True))
        e2e.append(run_tokenize(corpus, args.format, work / "reuse", reuse)[0])
    mbps = {name: megabytes / min(times) for name, times in [("bare", bare), ("fast", bare_fast), ("e2e", e2e)]}
    print(f"bare tokenizers encode_batch       : {mbps['bare']:7.2f} MB/s  (best of {args.repeats})")
    print(f"bare tokenizers encode_batch_fast  : {mbps['fast']:7.2f} MB/s")
    print(f"bertcli tokenize, given tokenizer  : {mbps['e2e']:7.2f} MB/s  end to end, NSP pairs written")
    print(f"  ratio to encode_batch            : {mbps['e2e'] / mbps['bare']:7.2f}   (goal >= 0.70)")
    print(f"  ratio to encode_batch_fast       : {mbps['e2e'] / mbps['fast']:7.2f}")
    rounds = sorted(b / e for b, e in zip(bare, e2e))  # each round's two runs were back to back
    print(
        f"  ratio to encode_batch by round   : {statistics.median(rounds):7.2f}   median of {len(rounds)}, "
        f"{rounds[0]:.2f} to {rounds[-1]:.2f} (the machine's drift shows here)"
    )
    if args.scale == 1:
        print(f"bertcli tokenize, training vocab   : {megabytes / train_time:7.2f} MB/s  end to end (one run)")


def repeat_corpus(corpus: Path, times: int, path: Path) -> Path:
    """The corpus `times` times over, a blank line between the copies (so no document spans two)."""
    if not path.exists():
        text = corpus.read_text(encoding="utf-8").rstrip("\n") + "\n\n"
        with open(path, "w", encoding="utf-8") as f:
            for _ in range(times):
                f.write(text)
    return path


def measure_memory(args, corpus: Path, reuse: list[str], work: Path) -> None:
    big = repeat_corpus(corpus, 4, work / "corpus4x.txt")
    mem = {}
    for name, path in [("1x", corpus), ("4x", big)]:
        seconds, mem[name] = run_tokenize(path, args.format, work / f"mem{name}", reuse, measure_memory=True)
        print(
            f"peak memory at {name} ({path.stat().st_size / 1e6:6.1f} MB): own (anonymous) "
            f"{mem[name]['anon'] / 2**20:7.1f} MiB, all resident {mem[name]['rss'] / 2**20:7.1f} MiB  "
            f"({seconds:.1f} s)"
        )
    print(f"  4x / 1x, own memory              : {mem['4x']['anon'] / mem['1x']['anon']:7.2f}   (goal <= 1.30)")
    print(f"  4x / 1x, all resident            : {mem['4x']['rss'] / mem['1x']['rss']:7.2f}")


if __name__ == "__main__":
    main()
