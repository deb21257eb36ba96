"""`bertcli finetune squad` (and squad_v2) and `bertcli eval --task squad` through the real CLI on a synthetic,
learnable QA task (the answer is the word after "marker"): the tiny model learns it across windows, best/ loads in
AutoModelForQuestionAnswering (transformers 5 has no question-answering pipeline), predictions.json holds
id -> answer, eval gates on f1; bad input is one line, exit 2, before anything is written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertcli.cli.app import app

ANSWERS = ["red", "blue", "green", "gold", "pink", "gray"]
FILLER = "the cat sat on a mat and dog ran in park today with sun".split()
QUESTION = "what follows the marker ?"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "marker", "what", "follows", "?", ".", *ANSWERS, *FILLER]


def paragraph(rng: random.Random) -> tuple[str, str, int]:
    """(context, answer, answer_start): filler words with "marker ANSWER" somewhere; the other colour words are
    distractors (only the one after the marker is the answer)."""
    words = [rng.choice(FILLER + ANSWERS[:2]) for _ in range(rng.randint(6, 22))]
    at = rng.randint(0, len(words))
    answer = rng.choice(ANSWERS)
    words[at:at] = ["marker", answer]
    context = " ".join(words) + " ."
    return context, answer, len(" ".join(words[: at + 1])) + 1


def write_squad(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        context, answer, start = paragraph(rng)
        qas = [{"id": f"q{seed}-{i}", "question": QUESTION, "answers": [{"text": answer, "answer_start": start}]}]
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}))
    return path


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def bare_model(root: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(str(root / "bare"))
    BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}).save_pretrained(str(root / "bare"))
    return root / "bare"


QA_SETTINGS = ["--set", "train.learning_rate=3e-3", "--set", "data.batch_size=16", "--set", "train.epochs=4",
               "--set", "data.max_seq_length=24", "--set", "task.doc_stride=8"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finetune run of a random 2-layer, 32-wide BERT: contexts up to 26 words in windows of 24 pieces."""
    root = tmp_path_factory.mktemp("qa")
    model = bare_model(root)
    train, dev = write_squad(root / "train.json", 200, 1), write_squad(root / "dev.json", 60, 2)
    files = ["--set", f"data.train_file={train}", "--set", f"data.validation_files=[{dev}]"]
    code, output = invoke("finetune", "squad", "--model", model, "-o", root / "run", *files, *QA_SETTINGS)
    assert code == 0, output
    return root, output


def test_tiny_model_learns_the_task_across_windows(trained):
    root, output = trained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    best = metrics["best"]["metrics"]["validation"]
    # chance: one of ~20 context words (and spans of them) -> exact match far below 0.2
    assert best["exact_match"] > 0.6 and best["f1"] > 0.6, best
    assert metrics["main_metric"] == "f1" and metrics["data"]["validation"]["windows"] > 60  # some contexts windowed
    saved = json.loads((root / "run" / "best" / "config.json").read_text())
    assert saved["architectures"] == ["BertForQuestionAnswering"]
    predictions = json.loads((root / "run" / "predictions.json").read_text())
    dev = json.loads((root / "dev.json").read_text())["data"][0]["paragraphs"]
    assert set(predictions) == {p["qas"][0]["id"] for p in dev}
    right = sum(predictions[p["qas"][0]["id"]] == p["qas"][0]["answers"][0]["text"] for p in dev)
    assert right / len(dev) == pytest.approx(best["exact_match"])
    assert "loads in AutoModelForQuestionAnswering" in output


def test_best_loads_as_a_qa_model_and_answers_from_a_context(trained, tmp_path):
    """transformers 5 removed pipeline("question-answering"); best/ loads in AutoModelForQuestionAnswering and, with
    run_qa's post-processing (tasks.span), answers a question from a context it never saw."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from bertcli.tasks.span import answers_from_logits, encode_qa, read_qa, span_task

    root, _ = trained
    with pytest.raises(KeyError, match="question-answering has been removed"):
        from transformers import pipeline

        pipeline("question-answering", model=str(root / "run" / "best"))
    model = AutoModelForQuestionAnswering.from_pretrained(str(root / "run" / "best")).eval()
    tok = AutoTokenizer.from_pretrained(str(root / "run" / "best"))
    line = {"id": "x", "question": QUESTION, "context": "the dog sat on a mat marker green and cat ran ."}
    (tmp_path / "one.jsonl").write_text(json.dumps(line) + "\n")
    spec = span_task("squad", doc_stride=8)
    examples = read_qa(spec, tmp_path / "one.jsonl")
    feats = encode_qa(tok, examples, spec, 24)
    with torch.no_grad():
        out = [model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
               for ids, types in zip(feats.input_ids, feats.token_type_ids)]  # fmt: skip
    starts, ends = [o.start_logits[0].numpy() for o in out], [o.end_logits[0].numpy() for o in out]
    assert answers_from_logits(feats, starts, ends, examples, spec).texts == {"x": "green"}


def test_an_empty_context_is_one_line_exit_2_before_any_output(tmp_path):
    model = bare_model(tmp_path)
    doc = {"data": [{"paragraphs": [{"context": "", "qas": [
        {"id": "bad-1", "question": "who ?", "answers": [{"text": "cat", "answer_start": 0}]}]}]}]}  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    files = ["--set", f"data.train_file={bad}", "--set", f"data.validation_files=[{bad}]"]
    code, output = invoke("finetune", "squad", "--model", model, "-o", tmp_path / "run", *files, *QA_SETTINGS)
    assert code == 2 and "bad.json: question bad-1: the context is empty (data.empty_text=skip" in output, output
    assert "answer_start" not in output and "Traceback" not in output and not (tmp_path / "run").exists()
    sizes = ["--set", "data.max_seq_length=24", "--set", "task.doc_stride=24"]
    good = write_squad(tmp_path / "good.json", 4, 7)
    files = ["--set", f"data.train_file={good}", "--set", f"data.validation_files=[{good}]"]
    code, output = invoke("finetune", "squad", "--model", model, "-o", tmp_path / "run", *files, *sizes)
    assert code == 2 and "doc_stride 24 must be smaller than data.max_seq_length 24" in output, output
    assert not (tmp_path / "run").exists()


def write_messy(path: Path) -> Path:
    """The marker task with each kind of answer the official CMRC 2018 files hold: as given, an answer_start of -1
    whose text is not in the context (alone, and beside a good answer), one counted in UTF-16 code units (after
    𫚭, outside the BMP), one two characters off, an empty question, an empty context with an answer."""
    items = [
        ("exact", QUESTION, "the cat sat marker red on a mat .", [("red", 19)]),
        ("missing", QUESTION, "a dog ran marker pink in park .", [("purple", -1)]),
        ("mixed", QUESTION, "sun and cat marker green today .", [("grey", -1), ("green", 19)]),
        ("utf16", QUESTION, "𫚭 the dog marker blue ran .", [("blue", 18)]),  # 𫚭 counts two: blue is at 17
        ("search", QUESTION, "with sun marker gold and cat .", [("gold", 18)]),  # gold is at 16
        ("empty-question", "", "the dog marker red .", [("red", 15)]),
        ("empty-context", QUESTION, "", [("red", 0)]),
    ]
    paragraphs = [{"context": c, "qas": [{"id": i, "question": q,
                                          "answers": [{"text": t, "answer_start": s} for t, s in a]}]}
                  for i, q, c, a in items]  # fmt: skip
    path.write_text(json.dumps({"version": "cmrc", "data": [{"paragraphs": paragraphs}]}, ensure_ascii=False))
    return path


MESSY_COUNTS = {"answers_as_given": 2, "answers_fixed_utf16": 1, "answers_fixed_search": 1,
                "answers_unlocatable": 2, "skipped_empty_question": 1, "skipped_empty_context": 1}  # fmt: skip


def test_a_file_with_wrong_offsets_evaluates_from_the_answer_texts(trained, tmp_path):
    from bertcli.metrics.squad import squad_scores

    root, _ = trained
    messy = write_messy(tmp_path / "messy.json")
    sizes = ["--set", "data.max_seq_length=24", "--set", "task.doc_stride=8"]
    args = ["eval", "--task", "squad", "--model", root / "run" / "best", "--data", messy, *sizes]
    code, output = invoke(*args, "-o", tmp_path / "refused")
    assert code == 2 and "question empty-question: the question is empty (data.empty_text=skip" in output, output
    assert not (tmp_path / "refused").exists()
    code, output = invoke(*args, "-o", tmp_path / "ev", "--predictions", "--set", "data.empty_text=skip")
    assert code == 0, output
    assert (f"{messy}: 5 questions; answers: 2 located as given, 1 fixed from UTF-16 offsets, 1 found near a wrong "
            "answer_start, 2 unlocatable (scored by their text, not trained on); questions skipped: 1 with an empty "
            "question, 1 with an empty context") in output  # fmt: skip
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {k: written["data"][k] for k in MESSY_COUNTS} == MESSY_COUNTS
    predictions = json.loads((tmp_path / "ev" / "predictions.json").read_text())
    assert set(predictions) == {"exact", "missing", "mixed", "utf16", "search"}
    refs = {q["id"]: [a["text"] for a in q["answers"]] for p in json.loads(messy.read_text())["data"][0]["paragraphs"]
            for q in p["qas"] if q["id"] in predictions}  # fmt: skip
    assert written["metrics"] == pytest.approx(squad_scores(predictions, refs))  # the texts alone, -1 ones too
    assert written["metrics"]["total"] == 5 and written["metrics"]["exact_match"] <= 4 / 5  # purple is not there


def test_finetune_trains_on_what_it_located_and_says_what_it_skipped(trained, tmp_path):
    root, _ = trained
    messy = write_messy(tmp_path / "messy.json")
    files = ["--set", f"data.train_file={messy}", "--set", f"data.validation_files=[{messy}]"]
    code, output = invoke("finetune", "squad", "--model", root / "bare", "-o", tmp_path / "run", *files,
                          *QA_SETTINGS, "--set", "train.max_steps=1", "--set", "data.empty_text=skip")  # fmt: skip
    assert code == 0, output
    assert (f"train: 4 questions in 4 windows from {messy}; answers: 2 located as given, 1 fixed from UTF-16 "
            "offsets, 1 found near a wrong answer_start, 2 unlocatable (scored by their text, not trained on); "
            "questions skipped: 1 with no locatable answer (not trained on), 1 with an empty question, 1 with an "
            "empty context") in output  # fmt: skip
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["train"] == {"examples": 4, "windows": 4, "unanswerable": 0, **MESSY_COUNTS,
                                        "skipped_unlocatable": 1}  # fmt: skip
    assert metrics["data"]["validation"]["examples"] == 5 and "skipped_unlocatable" not in metrics["data"]["validation"]
    assert metrics["best"]["metrics"]["validation"]["total"] == 5  # the unlocatable question is scored
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert f"- train: `{messy}`, 4 questions in 4 windows; answers: 2 located as given" in card


def test_eval_scores_writes_predictions_json_and_gates_on_f1(trained, tmp_path):
    root, _ = trained
    best, dev = root / "run" / "best", root / "dev.json"
    sizes = ["--set", "data.max_seq_length=24", "--set", "task.doc_stride=8"]
    code, output = invoke("eval", "--task", "squad", "--model", best, "--data", dev, "-o", tmp_path / "ev",
                          "--predictions", *sizes)  # fmt: skip
    assert code == 0, output
    scores = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    trained_best = json.loads((root / "run" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    assert scores["f1"] == pytest.approx(trained_best["f1"], abs=1e-9)  # eval agrees with finetune's evaluation
    assert scores["exact_match"] == pytest.approx(trained_best["exact_match"], abs=1e-9)
    predictions = json.loads((tmp_path / "ev" / "predictions.json").read_text())
    assert predictions == json.loads((root / "run" / "predictions.json").read_text())
    f1 = scores["f1"]
    gate = ["eval", "--task", "squad", "--model", best, "--data", dev, *sizes, "--fail-under"]
    code, output = invoke(*gate, f"f1={f1 - 0.01}")
    assert code == 0, output
    code, output = invoke(*gate, f"f1={f1 + 0.01}")
    assert code == 3, output
    # finetune's metrics.json as the baseline: the scores are gated, not the counts
    code, output = invoke("eval", "--task", "squad", "--model", best, "--data", dev, *sizes, "--baseline",
                          root / "run" / "metrics.json")  # fmt: skip
    assert code == 0 and "f1 >= " in output and "exact_match >= " in output and "total >=" not in output, output


def test_eval_of_two_qa_models_gives_one_table(trained, tmp_path):
    import shutil

    root, _ = trained
    best = root / "run" / "best"
    other = shutil.copytree(best, tmp_path / "other")
    code, output = invoke("eval", "--task", "squad", "--model", best, "--model", other, "--data", root / "dev.json",
                          "-o", tmp_path / "ev", "--predictions", "--set", "data.max_seq_length=24", "--set",
                          "task.doc_stride=8")  # fmt: skip
    assert code == 0, output
    header = next(line for line in output.splitlines() if line.startswith("model"))
    assert header.split()[1:3] == ["exact_match", "f1"], header
    rows = [line for line in output.splitlines() if line.startswith((str(best), str(other)))]
    assert len(rows) == 2, output
    results = json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"]
    assert len(results) == 2 and results[0]["metrics"] == results[1]["metrics"]
    assert len(list((tmp_path / "ev").glob("predictions-*.json"))) == 2


def test_squad_v2_reports_no_answer_scores_and_the_best_threshold(tmp_path):
    model = bare_model(tmp_path)
    doc = json.loads(write_squad(tmp_path / "v1.json", 40, 3).read_text())
    for i, p in enumerate(doc["data"][0]["paragraphs"]):
        if i % 4 == 0:  # a quarter of the questions have no answer
            p["qas"][0].update(answers=[], is_impossible=True)
    dev = tmp_path / "v2.json"
    dev.write_text(json.dumps(doc))
    files = ["--set", f"data.train_file={dev}", "--set", f"data.validation_files=[{dev}]"]
    code, output = invoke("finetune", "squad_v2", "--model", model, "-o", tmp_path / "run", *files, *QA_SETTINGS,
                          "--set", "train.max_steps=2")  # fmt: skip
    assert code == 0, output
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    assert best["HasAns_total"] == 30 and best["NoAns_total"] == 10
    assert best["best_f1"] >= best["f1"] and "best_f1_thresh" in best  # the threshold search never does worse
    assert best["f1"] == pytest.approx(0.75 * best["HasAns_f1"] + 0.25 * best["NoAns_f1"])


def test_eval_predictions_only_answers_questions_without_gold(trained, tmp_path):
    root, _ = trained
    lines = [{"id": "new-1", "question": QUESTION, "context": "sun and cat marker pink ran today ."},
             {"id": "new-2", "question": QUESTION, "context": "a dog sat marker gold in the park ."}]  # fmt: skip
    data = tmp_path / "new.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, output = invoke("eval", "--task", "squad", "--model", root / "run" / "best", "--data", data, "-o",
                          tmp_path / "ev", "--predictions-only", "--set", "data.max_seq_length=24", "--set",
                          "task.doc_stride=8")  # fmt: skip
    assert code == 0, output
    assert json.loads((tmp_path / "ev" / "predictions.json").read_text()) == {"new-1": "pink", "new-2": "gold"}


def test_eval_of_a_qa_model_names_the_qa_tasks_and_checks_doc_stride(trained, tmp_path):
    root, _ = trained
    best, dev = root / "run" / "best", root / "dev.json"
    code, output = invoke("eval", "--model", best, "--data", dev)
    assert code == 2 and "squad, squad_v2 or cmrc2018" in output, output
    code, output = invoke("eval", "--task", "squad", "--model", best, "--data", dev, "--set", "data.max_seq_length=64",
                          "--set", "task.doc_stride=64", "-o", tmp_path / "ev")  # fmt: skip
    assert code == 2 and "task.doc_stride 64 must be smaller than data.max_seq_length 64" in output, output
    assert not (tmp_path / "ev").exists()
    code, output = invoke("eval", "--task", "ner", "--model", best, "--data", dev)
    assert code == 2 and "not a token classifier" in output, output


def test_a_qa_run_stopped_by_ctrl_c_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    import os
    import signal

    from bertcli.config import load_config
    from bertcli.pipelines import finetune
    from bertcli.schema.finetune import FinetuneConfig
    from bertcli.tasks.span import training as span

    model = bare_model(tmp_path)
    train, dev = write_squad(tmp_path / "train.json", 48, 4), write_squad(tmp_path / "dev.json", 16, 5)
    values = {
        "task.name": "squad",
        "task.doc_stride": 8,
        "model.path": str(model),
        "data.train_file": str(train),
        "data.validation_files": [str(dev)],
        "data.max_seq_length": 24,
        "data.batch_size": 16,
        "train.epochs": 2,
        "train.eval_every": 2,
        "train.learning_rate": 3e-3,
        "output.dir": str(tmp_path / "a"),
    }  # 3 steps an epoch: the stop ends the first
    full = finetune.run_finetune(load_config(FinetuneConfig, values=values))
    calls, forward = [0], span.span_loss_and_sums

    def forward_then_stop(m, batch):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return forward(m, batch)

    values["output.dir"] = str(tmp_path / "b")
    monkeypatch.setattr(span, "span_loss_and_sums", forward_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune.run_finetune(load_config(FinetuneConfig, values=values))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-3"]
    resumed = finetune.run_finetune(load_config(FinetuneConfig, values=values), resume=True)
    strip = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in full["runs"]]
    assert [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in resumed["runs"]] == strip
    assert (tmp_path / "a" / "predictions.json").read_text() == (tmp_path / "b" / "predictions.json").read_text()


def test_two_gloo_processes_answer_every_dev_question_once(trained, tmp_path):
    """torchrun, 2 CPU processes: windows padded to different widths per process are gathered once each, so the
    scores and predictions.json finetune writes equal a one-process eval of its best/."""
    import os
    import socket
    import subprocess
    import sys

    root, _ = trained
    dev = write_squad(tmp_path / "dev.json", 37, 6)  # odd: the processes' shares are unequal
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
              "-m", "bertcli", "finetune", "squad", "--model", str(root / "bare"), "-o", str(tmp_path / "two"),
              "--set", f"data.train_file={root / 'train.json'}", "--set", f"data.validation_files=[{dev}]",
              "--set", "train.max_steps=3", *QA_SETTINGS[:4], *QA_SETTINGS[6:]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(launch, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reported = json.loads((tmp_path / "two" / "metrics.json").read_text())["best"]["metrics"]["validation"]
    code, output = invoke("eval", "--task", "squad", "--model", tmp_path / "two" / "best", "--data", dev, "-o",
                          tmp_path / "ev", "--predictions", "--set", "data.max_seq_length=24", "--set",
                          "task.doc_stride=8")  # fmt: skip
    assert code == 0, output
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert scored["f1"] == pytest.approx(reported["f1"], abs=1e-12) and reported["total"] == 37
    predictions = json.loads((tmp_path / "ev" / "predictions.json").read_text())
    assert predictions == json.loads((tmp_path / "two" / "predictions.json").read_text())
