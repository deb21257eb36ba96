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

Runtimes compared (--compare classification|ner): one fine-tuned model, one data file, the same threads and
batch size, each way in a fresh process, timed whole as a user would (wall time, imports and loading included):

    bertcli eval torch fp32 | bertcli eval --runtime onnx (fp32) | bertcli eval --runtime onnx --precision int8
    transformers.pipeline(..., batch_size=64, truncation=True) | Trainer.predict

It prints examples/s, the ratio against pipeline, the metric of each (accuracy; NER: seqeval f1) and the share of
predictions equal to bertcli's torch fp32 ones (NER: per word, IOB2-normalised; bertcli cuts a sentence longer than
--max-length into windows, while pipeline and Trainer.predict truncate it, so their words past the cut differ).
The model is copied to a temporary folder and exported there first (`bertcli export --int8`, not timed), so the
given folder is left as it is. Commands (issue 31):

    # MiniLM fine-tuned on the movie reviews (dev.tsv: id, label, text), one thread, max length 64
    python benchmarks/bench_eval.py --compare classification --model runs/reviews/best \
        --data ../shared/data/movie_reviews/dev.tsv --text-column text --threads 1 --max-length 64 --repeats 3
    # SST-2 layout (sentence, label): --task sst2 --data glue/SST-2/dev.tsv
    # MiniLM fine-tuned on CoNLL-2002 Spanish NER
    python benchmarks/bench_eval.py --compare ner --model runs/conll2002/best \
        --data ../shared/data/conll2002/esp.testa --threads 1 --max-length 128 --repeats 3
    # smoke run: a random tiny model on a few generated examples (the figures mean nothing)
    python benchmarks/bench_eval.py --compare classification --tiny --examples 24 --repeats 1
    python benchmarks/bench_eval.py --compare ner --tiny --examples 24 --repeats 1
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
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-run":  # one baseline's own process (see compare)
        return baseline_run(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="CoLA-layout file (default: shared CoLA dev)")
    parser.add_argument("--examples", type=int, default=1043, help="generated examples when no data is found")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (OMP_NUM_THREADS) for the run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", choices=["classification", "ner"], default=None,
                        help="compare runtimes on a fine-tuned model (--model, or --tiny)")  # fmt: skip
    parser.add_argument("--model", type=Path, default=None, help="--compare: a fine-tuned model folder")
    parser.add_argument("--task", default="custom", help="--compare classification: a GLUE task name or custom")
    parser.add_argument("--text-column", default="text", help="--compare classification, custom: the text column")
    parser.add_argument("--label-column", default="label", help="--compare classification, custom: the label column")
    parser.add_argument("--max-length", type=int, default=128, help="--compare: data.max_seq_length / max_length")
    parser.add_argument("--tiny", action="store_true", help="--compare: a random tiny model and generated data")
    args = parser.parse_args()
    if args.compare:
        return compare(args)

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


# --- runtimes compared: bertcli eval torch / onnx / int8 against pipeline and Trainer.predict --------------------

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def tiny_case(tmp: Path, kind: str, n: int) -> tuple[Path, Path]:
    """A random 2-layer model of the kind and a generated file of n examples (smoke runs: timing the plumbing)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertTokenizerFast

    rng = random.Random(0)
    words = [f"w{i}" for i in range(50)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    labels = ["neg", "pos"] if kind == "classification" else TAGS
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, id2label=dict(enumerate(labels)),
                        label2id={x: i for i, x in enumerate(labels)})  # fmt: skip
    torch.manual_seed(0)
    cls = BertForSequenceClassification if kind == "classification" else BertForTokenClassification
    cls(config).save_pretrained(str(tmp / "model"))
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(str(tmp / "model"))
    if kind == "classification":
        rows = [f"x{i}\t{rng.choice(labels)}\t{' '.join(rng.choices(words, k=rng.randint(3, 20)))}" for i in range(n)]
        (tmp / "dev.tsv").write_text("id\tlabel\ttext\n" + "\n".join(rows) + "\n", encoding="utf-8")
        return tmp / "model", tmp / "dev.tsv"
    blocks = ["\n".join(f"{w} {rng.choice(TAGS[:2] + TAGS[3:4])}" for w in rng.choices(words, k=rng.randint(3, 12)))
              for _ in range(n)]  # fmt: skip
    (tmp / "dev.conll").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return tmp / "model", tmp / "dev.conll"


def read_case(kind: str, model: Path, data: Path, task: str, text_column: str, label_column: str):
    """(inputs, references) read as bertcli eval reads them: texts and class ids, or word lists and tag lists."""
    sys.path.insert(0, str(ROOT))
    config = json.loads((model / "config.json").read_text())
    labels = [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    if kind == "ner":
        from bertcli.tasks.tagging.data import read_tagged, tagging_task

        sentences = read_tagged(tagging_task("iob2", labels), data, "conll")
        return sentences.words, sentences.tags
    from bertcli.tasks.classification.data import custom_task, glue_task, read_examples, with_labels

    spec = glue_task(task) if task != "custom" else with_labels(
        custom_task([text_column], label_column, None, False, None), labels)  # fmt: skip
    examples = read_examples(spec, data, "auto")
    return examples.text_a, examples.labels


def baseline_run(job: dict) -> None:
    """pipeline or Trainer.predict over the file (in this fresh process): predictions as bertcli writes them."""
    import torch

    torch.set_num_threads(job["threads"])
    kind, model = job["kind"], Path(job["model"])
    inputs, _ = read_case(kind, model, Path(job["data"]), job["task"], job["text_column"], job["label_column"])
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    auto = AutoModelForSequenceClassification if kind == "classification" else AutoModelForTokenClassification
    net = auto.from_pretrained(str(model)).eval()
    # a tokenizer saved without a length (1e30) would let the token-classification pipeline overrun the positions
    tok.model_max_length = min(tok.model_max_length, net.config.max_position_embeddings)
    start = time.perf_counter()
    if job["way"] == "pipeline":
        from transformers import pipeline

        if kind == "classification":
            pipe = pipeline("text-classification", model=net, tokenizer=tok, device=-1)
            out = pipe(inputs, batch_size=job["batch"], truncation=True, max_length=job["max_length"])
            predictions = [net.config.label2id[o["label"]] for o in out]
        else:
            pipe = pipeline("token-classification", model=net, tokenizer=tok, device=-1, aggregation_strategy="first",
                            ignore_labels=[])  # fmt: skip
            out = pipe(inputs, batch_size=job["batch"], is_split_into_words=True)
            predictions = [word_tags(words, groups) for words, groups in zip(inputs, out)]
    else:
        predictions = trainer_predict(kind, net, tok, inputs, job)
    job["predict_s"] = time.perf_counter() - start
    job["predictions"] = [p if isinstance(p, list) else int(p) for p in predictions]
    Path(job["out"]).write_text(json.dumps(job))


def word_tags(words: list[str], groups: list[dict]) -> list[str]:
    """IOB2 tags per word from the pipeline's word groups (character spans in the words joined by spaces)."""
    starts, at = [], 0
    for w in words:
        starts.append(at)
        at += len(w) + 1
    tags = ["O"] * len(words)
    for group in groups:
        inside = [i for i, s in enumerate(starts) if group["start"] <= s < group["end"]]
        if group["entity_group"] != "O":
            for k, i in enumerate(inside):
                tags[i] = ("B-" if k == 0 else "I-") + group["entity_group"]
    return tags


def trainer_predict(kind: str, net, tok, inputs, job: dict) -> list:
    import numpy as np
    from datasets import Dataset
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    args = TrainingArguments(output_dir=job["out"] + ".trainer", per_device_eval_batch_size=job["batch"],
                             report_to=[], use_cpu=True, disable_tqdm=True)  # fmt: skip
    if kind == "classification":
        encoded = Dataset.from_dict(dict(tok(inputs, truncation=True, max_length=job["max_length"])))
        logits = Trainer(model=net, args=args, data_collator=DataCollatorWithPadding(tok)).predict(encoded).predictions
        return np.asarray(logits).argmax(-1).tolist()
    enc = tok(inputs, is_split_into_words=True, truncation=True, max_length=job["max_length"])
    encoded = Dataset.from_dict(dict(enc))
    collator = DataCollatorForTokenClassification(tok)
    logits = Trainer(model=net, args=args, data_collator=collator).predict(encoded).predictions
    id2label = net.config.id2label
    out = []
    for i, words in enumerate(inputs):
        tags, seen = ["O"] * len(words), set()
        for piece, word in enumerate(enc.word_ids(i)):
            if word is not None and word not in seen:  # the first piece of each word, as bertcli reads it
                seen.add(word)
                tags[word] = id2label[int(np.argmax(logits[i][piece]))]
        out.append(tags)
    return out


def bertcli_predictions(out: Path, kind: str) -> list:
    if kind == "classification":
        lines = (out / "predictions.tsv").read_text(encoding="utf-8").splitlines()
        return [int(line.split("\t")[1]) for line in lines[1:]]
    blocks = (out / "predictions.conll").read_text(encoding="utf-8").strip("\n").split("\n\n")
    return [[line.split(" ")[-1] for line in block.splitlines()] for block in blocks]


def metric(kind: str, predictions: list, references: list) -> float:
    if kind == "classification":
        return sum(p == r for p, r in zip(predictions, references)) / len(references)
    from seqeval.metrics import f1_score

    return f1_score(references, predictions)


def agreement(kind: str, predictions: list, reference: list) -> float:
    if kind == "classification":
        return sum(p == r for p, r in zip(predictions, reference)) / len(reference)
    pairs = [(p, r) for ps, rs in zip(predictions, reference) for p, r in zip(iob2(ps), iob2(rs))]
    return sum(p == r for p, r in pairs) / len(pairs)


def iob2(tags: list[str]) -> list[str]:
    """An I- tag that opens an entity written B- (as seqeval reads it): the pipeline's word groups say B- there."""
    out = []
    for i, tag in enumerate(tags):
        opens = tag.startswith("I-") and (i == 0 or tags[i - 1] == "O" or tags[i - 1][2:] != tag[2:])
        out.append("B-" + tag[2:] if opens else tag)
    return out


def compare(args) -> None:
    import shutil

    kind = args.compare
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-eval-compare-") as tmp:
        tmp = Path(tmp)
        if args.tiny:
            source, data = tiny_case(tmp, kind, args.examples)
        else:
            if args.model is None or args.data is None:
                sys.exit("--compare needs --model and --data (or --tiny)")
            source, data = args.model, args.data
        model = Path(shutil.copytree(source, tmp / "exported", ignore=shutil.ignore_patterns("onnx")))
        cli = [sys.executable, "-m", "bertcli"]
        subprocess.run([*cli, "export", str(model), "--int8"], check=True, env=env, capture_output=True)
        _, references = read_case(kind, model, data, args.task, args.text_column, args.label_column)
        task = ["-t", "ner", "--set", "data.format=conll"] if kind == "ner" else ["-t", args.task]
        if kind == "classification" and args.task == "custom":
            columns = [f"task.text_columns=[{args.text_column}]", f"task.label_column={args.label_column}"]
            task += [word for key in columns for word in ("--set", key)]
        ways = {"bertcli torch fp32": [], "bertcli onnx fp32": ["--runtime", "onnx"],
                "bertcli onnx int8": ["--runtime", "onnx", "--precision", "int8"], "pipeline": None,
                "Trainer.predict": None}  # fmt: skip
        results: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for name, extra in ways.items():
                out = tmp / f"{name.replace(' ', '-').replace('.', '-')}-{repeat}"
                if extra is not None:
                    cmd = [*cli, "eval", "-m", str(model), "-d", str(data), *task, *extra, "-o", str(out),
                           "--predictions", "--format", "json", "--set", f"data.batch_size={args.batch}",
                           "--set", f"data.max_seq_length={args.max_length}"]  # fmt: skip
                else:
                    job = {"way": "pipeline" if name == "pipeline" else "trainer", "kind": kind, "model": str(model),
                           "data": str(data), "task": args.task, "text_column": args.text_column,
                           "label_column": args.label_column, "threads": args.threads, "batch": args.batch,
                           "max_length": args.max_length, "out": str(out)}  # fmt: skip
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-run", json.dumps(job)]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
                preds = (bertcli_predictions(out, kind) if extra is not None
                         else json.loads(Path(out).read_text())["predictions"])  # fmt: skip
                best = results.get(name)
                if best is None or wall < best["wall"]:
                    results[name] = {"wall": wall, "predictions": preds}
        n = len(references)
        base = results["pipeline"]["wall"]
        torch_preds = results["bertcli torch fp32"]["predictions"]
        what = "accuracy" if kind == "classification" else "seqeval f1"
        print(f"{kind}: {n} examples of {data.name}, model {source}, {args.threads} thread(s), batch {args.batch}, "
              f"max length {args.max_length}; whole process, best of {args.repeats}")  # fmt: skip
        print(f"  {'way':22s} {'wall s':>8s} {'examples/s':>11s} {'x pipeline':>11s} {what:>11s} {'= torch fp32':>13s}")
        for name, r in results.items():
            print(f"  {name:22s} {r['wall']:8.2f} {n / r['wall']:11.1f} {base / r['wall']:11.2f} "
                  f"{metric(kind, r['predictions'], references):11.4f} "
                  f"{agreement(kind, r['predictions'], torch_preds):13.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
