"""`--overwrite` never destroys the previous run before the new one exists, in all four commands.

For each command: a complete earlier run, then a new `--overwrite` run that fails late (after its work started) and
one that is interrupted leave the earlier run byte for byte, with no temporary folder behind; one that completes
replaces the command's outputs (those the new run does not make too) and keeps the user's own files. An output
directory that contains, or lies inside, an input of the run is refused up front (exit 2, both paths named).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_corpus
from finetune_fixtures import save_tiny_model, sentiment_task
from typer.testing import CliRunner

from bertcli.cli.app import app

TINY_PRETRAIN = {
    "model": {"preset": "tiny", "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64},
    "data": {"batch_size": 8},
    "train": {"max_steps": 6, "learning_rate": 2e-3, "log_every": 2, "eval_every": 3, "save_every": 3,
              "eval_max_batches": 2, "tensorboard": True},
}  # fmt: skip
FINETUNE = ["--set", "data.max_seq_length=64", "--set", "data.batch_size=16", "--set", "train.learning_rate=1e-3",
            "--set", "train.epochs=2", "--set", "train.save_every=5"]  # fmt: skip


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, and every folder (an empty one counts too)."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def assert_kept(out: Path, before: dict[str, bytes]) -> None:
    after = snapshot(out)
    assert after.keys() == before.keys(), sorted(set(after) ^ set(before))
    assert all(after[name] == before[name] for name in before), [n for n in before if after[n] != before[n]]


def on_call(n: int, action):
    """A wrapper for a function that runs `action` on its n-th call (after the real call, so work has started)."""
    calls = {"n": 0}

    def wrap(original):
        def wrapped(*args, **kwargs):
            out = original(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == n:
                action()
            return out

        return wrapped

    return wrap


def stop_a_new_run(run, monkeypatch, owner, name: str, n: int, action, code: int, says: str, *extra: str) -> None:
    """Run the command of `run` (out, args) again with --overwrite, `action` at the n-th call of owner.name; the
    command exits with `code` saying `says`, and the earlier run is as it was."""
    out, args = run
    before = snapshot(out)
    monkeypatch.setattr(owner, name, on_call(n, action)(getattr(owner, name)))
    got, output = cli(*args, *extra, "--overwrite")
    assert got == code, output
    assert says in output and "Traceback" not in output
    assert_kept(out, before)


def crash():
    raise RuntimeError("a crash in the middle of the new run")


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)  # our handler: a checkpoint at the end of the step, then a clean stop


def keyboard_interrupt():
    raise KeyboardInterrupt  # a Ctrl-C where no handler of ours is installed


# --- pretrain ---------------------------------------------------------------------------------------------------


@pytest.fixture
def pretrain_run(tokenized_dir, tmp_path):
    """A complete pretrain run in OUT (with a note of the user's), and the args that run it again."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_PRETRAIN), encoding="utf-8")
    out = tmp_path / "out"
    args = ["pretrain", tokenized_dir, "-o", out, "--config", config]
    code, output = cli(*args)
    assert code == 0, output
    (out / "notes.txt").write_text("mine")
    return out, args


@pytest.mark.parametrize(("action", "code", "says"), [(crash, 1, "a crash"), (ctrl_c, 130, "is unchanged")],
                         ids=["fails", "interrupted"])  # fmt: skip
def test_pretrain_overwrite_that_stops_keeps_the_earlier_run(pretrain_run, monkeypatch, action, code, says):
    from bertcli.modeling import PretrainingModel

    stop_a_new_run(pretrain_run, monkeypatch, PretrainingModel, "forward", 4, action, code, says)


def test_a_fresh_pretrain_that_fails_before_a_checkpoint_leaves_nothing(tokenized_dir, tmp_path, monkeypatch):
    from bertcli.modeling import PretrainingModel

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_PRETRAIN), encoding="utf-8")
    out = tmp_path / "out"
    args = ["pretrain", tokenized_dir, "-o", out, "--config", config]
    with monkeypatch.context() as patch:  # step 2; the first checkpoint is step 3's
        patch.setattr(PretrainingModel, "forward", on_call(2, crash)(PretrainingModel.forward))
        code, output = cli(*args)
    assert code == 1 and "a crash" in output, output
    assert not out.exists()
    code, output = cli(*args)  # no --overwrite needed
    assert code == 0, output


def test_pretrain_overwrite_that_completes_replaces_the_run_and_keeps_other_files(pretrain_run):
    out, args = pretrain_run
    before = snapshot(out)
    code, output = cli(*args, "--overwrite", "--set", "train.max_steps=4", "--set", "train.save_every=0")
    assert code == 0, output
    after = snapshot(out)
    assert after["notes.txt"] == b"mine"
    assert after["final/model.safetensors"] != before["final/model.safetensors"]
    assert not any(name.startswith("checkpoints/step-3") for name in after)  # the earlier run's, not replaced
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-4"]
    assert not list(out.glob(".tmp-*"))
    assert "train:\n" in (out / "config.yaml").read_text() and "max_steps: 4" in (out / "config.yaml").read_text()


def test_pretrain_resume_with_overwrite_is_refused(pretrain_run):
    out, args = pretrain_run
    before = snapshot(out)
    code, output = cli(*args, "--overwrite", "--resume")
    assert code == 2 and "pass one" in output
    assert_kept(out, before)


def test_pretrain_refuses_an_output_directory_holding_its_data(tokenized_dir, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tokenized_dir, out / "tok")
    before = snapshot(out)
    code, output = cli("pretrain", out / "tok", "-o", out, "--overwrite")
    assert code == 2 and f"output directory {out} contains the input {out / 'tok'} (data.dirs)" in output
    assert_kept(out, before)
    code, output = cli("pretrain", out / "tok", "-o", out / "tok" / "run")
    assert code == 2 and "is inside the input" in output and not (out / "tok" / "run").exists()


# --- finetune ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "bare", "bare")


@pytest.fixture
def finetune_run(bare, tmp_path):
    """A complete finetune run of two seeds in OUT (with a note of the user's), and the args that run it again."""
    train, dev = sentiment_task(tmp_path / "data", n_train=96, n_dev=32)
    out = tmp_path / "out"
    args = ["finetune", "custom", "--model", bare, "-o", out, "--set", f"data.train_file={train}",
            "--set", f"data.validation_files=[{dev}]", *FINETUNE]  # fmt: skip
    code, output = cli(*args, "--seeds", "1,2")
    assert code == 0, output
    (out / "notes.txt").write_text("mine")
    return out, args


@pytest.mark.parametrize(("action", "code", "says"), [(crash, 1, "a crash"), (ctrl_c, 130, "is unchanged")],
                         ids=["fails", "interrupted"])  # fmt: skip
def test_finetune_overwrite_that_stops_keeps_the_earlier_run(finetune_run, monkeypatch, action, code, says):
    from bertcli.tasks.classification import training

    # in seed 1's second epoch
    stop_a_new_run(finetune_run, monkeypatch, training, "_loss_and_sums", 8, action, code, says, "--seeds", "1,2")


def test_finetune_overwrite_that_completes_replaces_the_run_and_keeps_other_files(finetune_run):
    out, args = finetune_run
    code, output = cli(*args, "--overwrite")  # one seed now: the earlier run's seed-1/, seed-2/ go
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == [
        "best",
        "checkpoints",
        "config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "notes.txt",
    ]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize(("n", "left"), [(2, None), (8, "checkpoints")], ids=["before-a-checkpoint", "after-one"])
def test_a_fresh_finetune_that_fails_leaves_a_checkpoint_or_nothing(bare, tmp_path, monkeypatch, n, left):
    """A new run that fails before its first checkpoint takes config.yaml and its logs with it (the same command runs
    again without --overwrite); one that fails after a checkpoint keeps it to resume from."""
    from bertcli.tasks.classification import training

    train, dev = sentiment_task(tmp_path / "data", n_train=96, n_dev=32)
    out = tmp_path / "new" / "out"
    args = ["finetune", "custom", "--model", bare, "-o", out, "--set", f"data.train_file={train}",
            "--set", f"data.validation_files=[{dev}]", *FINETUNE]  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(training, "_loss_and_sums", on_call(n, crash)(training._loss_and_sums))
        code, output = cli(*args)
    assert code == 1 and "a crash" in output, output
    if left is None:
        assert not out.exists()
        code, output = cli(*args)  # no --overwrite needed
        assert code == 0, output
        assert (out / "best" / "model.safetensors").is_file()
    else:
        assert (out / "checkpoints" / "step-5").is_dir() and (out / "config.yaml").is_file()
        code, output = cli(*args, "--resume")
        assert code == 0, output


def test_finetune_refuses_to_write_over_the_model_it_loads(finetune_run):
    out, args = finetune_run
    before = snapshot(out)
    swapped = [str(out / "best") if a == args[args.index("--model") + 1] else a for a in args]
    code, output = cli(*swapped, "--overwrite")
    assert code == 2 and f"output directory {out} contains the input {out / 'best'} (model.path)" in output
    assert_kept(out, before)


def test_finetune_resume_with_overwrite_is_refused(finetune_run):
    out, args = finetune_run
    before = snapshot(out)
    code, output = cli(*args, "--seeds", "1,2", "--resume", "--overwrite")
    assert code == 2 and "pass one" in output
    assert_kept(out, before)


# --- tokenize ---------------------------------------------------------------------------------------------------


@pytest.fixture
def tokenize_run(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt", docs=30)
    out = tmp_path / "out"
    args = ["tokenize", corpus, "-o", out, "--set", "tokenizer.vocab_size=120", "--set", "tokenizer.min_frequency=1",
            "--set", "nsp.max_seq_length=32", "--set", "run.num_proc=1", "--set", "input.max_cut_share=1"]  # fmt: skip
    code, output = cli(*args)
    assert code == 0, output
    (out / "notes.txt").write_text("mine")
    return out, args


@pytest.mark.parametrize(("action", "code", "says"), [(crash, 1, "a crash"), (keyboard_interrupt, 130, "interrupted")],
                         ids=["fails", "interrupted"])  # fmt: skip
def test_tokenize_overwrite_that_stops_keeps_the_earlier_run(tokenize_run, monkeypatch, action, code, says):
    from bertcli.pipelines import tokenize

    # after the corpus is tokenized and the train split's pairs are built
    stop_a_new_run(
        tokenize_run, monkeypatch, tokenize, "_build_instances", 1, action, code, says, "--set", "nsp.seed=7"
    )


def test_tokenize_overwrite_that_completes_replaces_the_run(tokenize_run):
    out, args = tokenize_run
    before = snapshot(out)
    code, output = cli(*args, "--set", "nsp.seed=7", "--overwrite")
    assert code == 0, output
    after = snapshot(out)
    assert after["notes.txt"] == b"mine" and after.keys() == before.keys()
    assert after["stats.json"] != before["stats.json"] and b"seed: 7" in after["config.yaml"]


def test_tokenize_refuses_an_output_directory_holding_its_corpus(tokenize_run):
    out, args = tokenize_run
    before = snapshot(out)
    corpus = out / "corpus.txt"
    make_corpus(corpus, docs=30)
    before = snapshot(out)
    code, output = cli("tokenize", corpus, "-o", out, "--overwrite")
    assert code == 2 and f"output directory {out} contains the input {corpus} (input.paths)" in output
    assert_kept(out, before)


# --- eval -------------------------------------------------------------------------------------------------------


@pytest.fixture
def eval_run(bare, tmp_path):
    """A fine-tuned model, its dev file, and a complete eval of it in OUT with predictions."""
    train, dev = sentiment_task(tmp_path / "data", n_train=64, n_dev=32)
    model = tmp_path / "ft"
    code, output = cli("finetune", "custom", "--model", bare, "-o", model, "--set", f"data.train_file={train}",
                       "--set", f"data.validation_files=[{dev}]", *FINETUNE)  # fmt: skip
    assert code == 0, output
    out = tmp_path / "eval"
    args = ["eval", "--model", model / "best", "--task", "custom", "--data", dev, "-o", out]
    code, output = cli(*args, "--predictions")
    assert code == 0, output
    (out / "notes.txt").write_text("mine")
    return out, args


@pytest.mark.parametrize(("action", "code", "says"), [(crash, 1, "a crash"), (keyboard_interrupt, 130, "interrupted")],
                         ids=["fails", "interrupted"])  # fmt: skip
def test_eval_overwrite_that_stops_keeps_the_earlier_run(eval_run, monkeypatch, action, code, says):
    from bertcli.tasks.classification import family

    # while the new files are written: metrics.json and the report are already there
    extra = ("--predictions", "--format", "json")
    stop_a_new_run(eval_run, monkeypatch, family, "write_predictions", 1, action, code, says, *extra)


def test_eval_overwrite_that_completes_replaces_the_earlier_files(eval_run):
    out, args = eval_run
    code, output = cli(*args, "--format", "json", "--overwrite")  # no predictions this time
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "notes.txt", "report.json"]


def test_eval_refuses_a_baseline_or_model_inside_its_output_directory(eval_run):
    out, args = eval_run
    before = snapshot(out)
    code, output = cli(*args, "--baseline", out / "metrics.json", "--overwrite")
    assert code == 2 and f"contains the input {out / 'metrics.json'} (gates.baseline)" in output
    assert_kept(out, before)
    model = Path(args[args.index("--model") + 1])
    code, output = cli(*args[:-1], model / "eval")
    assert code == 2 and f"is inside the input {model} (model.paths)" in output and not (model / "eval").exists()


# --- one run at a time in a folder (issue 28) --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys; from pathlib import Path; from bertcli.run_lock import RunLock; RunLock.take(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"  # noqa: E501


@pytest.fixture
def holding():
    """hold(out): another process takes the lock of `out` as a run does, and holds it until the test ends."""
    procs = []

    def hold(out: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(proc)
        assert proc.stdout.readline() == "held\n"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait()


@pytest.mark.parametrize(("command", "extra"), [("tokenize", ()), ("pretrain", ()), ("pretrain", ("--resume",)),
                                                ("finetune", ()), ("eval", ())])  # fmt: skip
def test_a_run_into_a_folder_another_run_holds_exits_2_and_changes_nothing(request, holding, command, extra):
    out, args = request.getfixturevalue(f"{command}_run")
    proc = holding(out)
    before = snapshot(out)
    code, output = cli(*args, *(extra or ("--overwrite",)))
    assert code == 2, output
    assert f"error: output directory {out} is in use by another run (pid {proc.pid} on host " in output
    assert "Traceback" not in output
    assert_kept(out, before)  # the holder's lock included


def test_two_tokenize_runs_started_at_once_into_one_folder_give_one_result_and_one_refusal(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt", docs=30)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bertcli", "tokenize", str(corpus), "-o", str(out), "--set",
               "tokenizer.vocab_size=120", "--set", "tokenizer.min_frequency=1", "--set", "run.num_proc=1"]  # fmt: skip
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [proc.communicate(timeout=300) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 2], outputs
    won, lost = outputs[codes.index(0)], outputs[codes.index(2)]
    assert f"saved: {out}/tokenizer" in won[0]
    # refused while the other runs, or, if it started after the other ended, by that run's output
    assert f"error: output directory {out} is in use by another run" in lost[1] or "is not empty" in lost[1], lost
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "dataset", "stats.json", "tokenizer"]


def no_space():
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("command", ["tokenize", "eval"])
def test_a_full_disk_in_an_overwrite_run_says_the_previous_run_is_unchanged(request, monkeypatch, command):
    out, args = request.getfixturevalue(f"{command}_run")
    before = snapshot(out)
    monkeypatch.setattr(os, "fsync", on_call(1, no_space)(os.fsync))  # the first file the new run writes
    code, output = cli(*args, "--overwrite")
    assert code == 1, output
    line = next(line for line in output.splitlines() if line.startswith("error: "))
    assert line.startswith(f"error: no space left on device while writing {out}/"), line
    assert line.endswith(f"the previous run in {out} is unchanged: --overwrite replaces it only when the new run "
                         "completes, and this one was discarded"), line  # fmt: skip
    assert_kept(out, before)
