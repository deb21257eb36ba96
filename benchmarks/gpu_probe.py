"""Two GPU probes that `gpu_check.sh` runs after the benchmarks (issue 15, section 3):

- which attention kernel SDPA runs for BERT's attention in bf16 with dropout, without a mask (every row full length:
  transformers then passes none) and with a padding mask: the CUDA kernels the profiler sees;
- which lines make the host wait for the GPU during a short `bertcli pretrain` run in bf16
  (`torch.cuda.set_sync_debug_mode("warn")`): the loop should wait only at log steps, the rest is named by line.

    python benchmarks/gpu_probe.py --cache DIR   # DIR holds a tokenized dataset (tok-*/stats.json) of bench_pretrain

On a machine without a GPU it runs the short pretraining on the CPU, uncounted, and says so.
"""

from __future__ import annotations

import argparse
import collections
import warnings
from pathlib import Path


def attention_kernels() -> None:
    import torch
    import torch.nn.functional as F

    q = torch.randn(32, 12, 128, 64, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(32, 1, 1, 128, dtype=torch.bool, device="cuda")
    mask[::2, ..., 100:] = False  # half the rows padded after 100 tokens
    for label, attn_mask in (("no mask", None), ("padding mask", mask)):
        F.scaled_dot_product_attention(q, q, q, attn_mask=attn_mask, dropout_p=0.1)  # warm-up, outside the profile
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            F.scaled_dot_product_attention(q, q, q, attn_mask=attn_mask, dropout_p=0.1)
            torch.cuda.synchronize()
        names = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
        print(f"  SDPA bf16, dropout 0.1, {label}: {'; '.join(n[:90] for n in names) or 'no CUDA kernel seen'}")


def host_waits(cache: Path, steps: int) -> None:
    import torch

    from bertcli.config import load_config
    from bertcli.pipelines.pretrain import run_pretrain
    from bertcli.schema.pretrain import PretrainConfig

    data = next(p.parent for p in sorted(cache.glob("tok-*/stats.json")))
    gpu = torch.cuda.is_available()
    out = cache / "gpu-probe-run"  # inside the caller's scratch folder, removed with it
    overrides = [f"data.dirs=[{data}]", "model.preset=tiny", "data.batch_size=32", f"train.max_steps={steps}",
                 "train.log_every=10", "train.eval_every=0", "train.eval_max_batches=1", "train.save_every=0",
                 "train.tensorboard=false", f"output.dir={out}"]  # fmt: skip
    cfg = load_config(PretrainConfig, overrides=overrides)  # mixed_precision auto: bf16 on the GPU
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if gpu:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            run_pretrain(cfg, overwrite=True)
        finally:
            if gpu:
                torch.cuda.set_sync_debug_mode(0)
    if not gpu:
        print(f"  host waits: no GPU here; {steps} steps ran on the CPU, not counted")
        return
    waits = collections.Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    print(f"  host waits for the GPU in a {steps}-step tiny bf16 pretraining run (log every 10), by line:")
    for where, count in waits.most_common(15):
        print(f"    {count:5d}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="bench_pretrain's --cache, after it ran")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    import torch

    if torch.cuda.is_available():
        attention_kernels()
    else:
        print("  attention kernels: no GPU here, not probed")
    host_waits(args.cache, args.steps)


if __name__ == "__main__":
    main()
