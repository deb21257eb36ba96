"""One run at a time in an output directory (issue 28): the lock `RunOutput.plan` takes, tried with real processes
holding it, one that died holding it, and one of another host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bertcli.errors import UsageError
from bertcli.outputs import WriteFailure
from bertcli.run_lock import LOCK_NAME, RunLock, _remove_stale
from bertcli.run_output import RunOutput

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys; from pathlib import Path; from bertcli.run_lock import RunLock; RunLock.take(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"  # noqa: E501


def lock_file(out: Path, pid: int, host: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T10:00:00"}))
    return path


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert proc.wait() == 0
    return proc.pid


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of tmp_path/out until its stdin closes (it then exits normally)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    assert proc.stdout.readline() == "held\n"
    yield out, proc
    proc.stdin.close()
    proc.wait()


def test_a_folder_another_process_holds_is_refused_naming_the_folder_and_the_holder(holder):
    out, proc = holder
    with pytest.raises(UsageError) as refused:
        RunOutput.plan(out, overwrite=True, outputs=("x",))
    message = str(refused.value)
    assert f"output directory {out} is in use by another run (pid {proc.pid} on host {socket.gethostname()}" in message
    assert f"lock file {out / LOCK_NAME}" in message and "write to another directory (-o)" in message
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # the holder's lock is left alone
    proc.stdin.close()  # the holder exits: its lock goes with it (atexit)
    assert proc.wait() == 0
    assert not (out / LOCK_NAME).exists()
    with RunOutput.plan(out, overwrite=False, outputs=("x",)) as output:  # and the folder is free
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert not output.staged  # the lock is not an earlier run
    assert list(out.iterdir()) == []  # released again


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_notice(tmp_path, capsys):
    out = tmp_path / "out"
    pid = dead_pid()
    lock_file(out, pid)
    with RunOutput.plan(out, overwrite=False, outputs=("x",)) as output:
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert not output.staged  # a stale lock alone is no earlier run either
        (output.create() / "x").write_text("done")
        output.commit()
    note = capsys.readouterr().err
    assert f"took over the lock of {out}: pid {pid} on host {socket.gethostname()}" in note
    assert "no longer running" in note
    assert sorted(p.name for p in out.iterdir()) == ["x"]  # the lock gone after the run, the output there


def test_a_lock_of_another_host_is_respected_and_the_message_says_how_to_clear_it(tmp_path):
    out = tmp_path / "out"
    path = lock_file(out, 1, host="node-17")
    before = path.read_bytes()
    with pytest.raises(UsageError) as refused:
        RunOutput.plan(out, overwrite=False, outputs=("x",))
    assert "in use by another run (pid 1 on host node-17, started 2026-01-01T10:00:00; " in str(refused.value)
    assert str(refused.value).endswith(f"; if no run writes there any more, delete {path}")
    assert path.read_bytes() == before and sorted(out.iterdir()) == [path]


def test_an_unreadable_lock_is_respected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("")
    with pytest.raises(UsageError, match="in use by another run \\(an unknown run; .*delete"):
        RunOutput.plan(out, overwrite=False, outputs=("x",))


def test_a_stale_lock_replaced_by_another_run_in_between_is_not_removed(tmp_path):
    path = lock_file(tmp_path, 123456)
    stale = path.read_bytes()
    path.write_bytes(b'{"pid": 1, "host": "h"}')  # another run took it over after we read it
    assert not _remove_stale(path, stale)
    assert path.read_bytes() == b'{"pid": 1, "host": "h"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]


def test_the_lock_is_released_when_the_run_fails_and_a_folder_it_made_goes_too(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), RunOutput.plan(out, overwrite=False, outputs=("x",)):
        assert (out / LOCK_NAME).exists()
        raise RuntimeError("a crash")
    assert not out.exists()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "x").write_text("old")
    with pytest.raises(KeyboardInterrupt), RunOutput.plan(earlier, overwrite=True, outputs=("x",)) as output:
        (output.create() / "x").write_text("new, half done")
        raise KeyboardInterrupt
    assert sorted(p.name for p in earlier.iterdir()) == ["x"] and (earlier / "x").read_text() == "old"


def test_a_refused_plan_releases_the_lock(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("old")
    with pytest.raises(UsageError, match="is not empty"):
        RunOutput.plan(out, overwrite=False, outputs=("x",))
    assert sorted(p.name for p in out.iterdir()) == ["x"]


def test_commit_leaves_the_lock_in_place_until_the_run_ends(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("old")
    with RunOutput.plan(out, overwrite=True, outputs=("x",)) as output:
        (output.create() / "x").write_text("new")
        output.commit()
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "x"]
    assert sorted(p.name for p in out.iterdir()) == ["x"] and (out / "x").read_text() == "new"


def test_only_the_main_process_of_a_launch_takes_the_lock(tmp_path, monkeypatch):
    out = tmp_path / "out"
    lock_file(out, os.getpid())  # the main process (this one, here) holds it
    monkeypatch.setenv("RANK", "1")
    with RunOutput.plan(out, overwrite=False, outputs=("x",)) as output:  # another rank plans too, and agrees
        assert output.lock is None and not output.staged
    assert (out / LOCK_NAME).exists()  # and leaves the main process's lock alone


@pytest.mark.parametrize("staged", [True, False])
def test_a_full_disk_in_a_staged_run_says_the_earlier_run_is_unchanged(tmp_path, staged):
    out = tmp_path / "out"
    out.mkdir()
    if staged:
        (out / "x").write_text("old")
    failure = WriteFailure(out / ".tmp-new-run" / "x", "No space left on device", no_space=True)
    with pytest.raises(WriteFailure) as raised, RunOutput.plan(out, overwrite=True, outputs=("x",)) as output:
        output.create()
        raise failure
    message = str(raised.value)
    assert message.startswith(f"no space left on device while writing {out / '.tmp-new-run' / 'x'}; free some space")
    note = f"the previous run in {out} is unchanged: --overwrite replaces it only when the new run completes"
    assert (note in message) == staged
    assert sorted(p.name for p in out.iterdir()) == (["x"] if staged else [])


def test_lock_take_and_release_by_hand(tmp_path):
    lock = RunLock.take(tmp_path)
    with pytest.raises(UsageError, match=f"pid {os.getpid()}"):  # a second run in this very process
        RunLock.take(tmp_path)
    lock.release()
    lock.release()  # twice is harmless
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_output_directory_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=f"^cannot write in output directory {blocker / 'out'}: Not a directory; "):
        RunOutput.plan(blocker / "out", overwrite=False, outputs=("x",))
