"""io/commands.CommandRunner on the daemon's loop: argv without a shell, a timeout that kills
the whole process group, the outcome logged when the command exits, every failure logged."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from knockgate.daemon.loop import Loop
from knockgate.io.commands import CommandRunner

CONTEXT = "door ssh: command"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="knockgate")
    return caplog


def run(*argv: str, timeout: float = 10.0, user: str | None = None,
        group: str | None = None) -> None:
    """Run one command to its end on a loop of its own."""
    loop = Loop()
    runner = CommandRunner(loop)
    runner.run(argv, timeout, CONTEXT, user=user, group=group)
    loop.run_until(lambda: runner.running == 0, timeout + 5)
    loop.close()
    assert runner.running == 0


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(record.levelno, record.getMessage()) for record in caplog.records]


def test_exit_zero_is_logged_with_its_output(logs: pytest.LogCaptureFixture) -> None:
    run(sys.executable, "-c", "print('opened for 10.0.0.1')")
    assert logged(logs) == [
        (logging.INFO, f"{CONTEXT}: {sys.executable} exited 0: opened for 10.0.0.1")]


def test_exit_zero_without_output(logs: pytest.LogCaptureFixture) -> None:
    run(sys.executable, "-c", "pass")
    assert logged(logs) == [(logging.INFO, f"{CONTEXT}: {sys.executable} exited 0")]


def test_a_non_zero_status_is_an_error_with_stderr(logs: pytest.LogCaptureFixture) -> None:
    run(sys.executable, "-c", "import sys; sys.exit('no such chain')")
    assert logged(logs) == [
        (logging.ERROR, f"{CONTEXT}: {sys.executable} failed with status 1: no such chain")]


def test_arguments_never_reach_a_shell(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "pwned"
    run("echo", f"10.0.0.1; touch {marker}")
    assert not marker.exists()
    assert logged(logs) == [(logging.INFO, f"{CONTEXT}: echo exited 0: 10.0.0.1; touch {marker}")]


def test_a_timeout_kills_the_program(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    run(sys.executable, "-c", script, timeout=1.0)
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)
    assert logged(logs) == [(logging.ERROR, f"{CONTEXT}: {sys.executable} killed after 1s timeout")]


def test_a_missing_program_cannot_start(logs: pytest.LogCaptureFixture) -> None:
    run("/nonexistent/knock-hook", "10.0.0.1")
    assert logged(logs) == [
        (logging.ERROR, f"{CONTEXT}: cannot start /nonexistent/knock-hook: No such file or "
                        "directory")]


def test_a_file_that_is_not_executable_cannot_start(tmp_path: Path,
                                                     logs: pytest.LogCaptureFixture) -> None:
    script = tmp_path / "hook"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    run(str(script))
    assert logged(logs) == [(logging.ERROR, f"{CONTEXT}: cannot start {script}: Permission denied")]


@pytest.mark.parametrize(("owner", "name"), [("user", "no-such-user-kg"),
                                           ("group", "no-such-group-kg")])
def test_an_unknown_user_or_group_cannot_start(logs: pytest.LogCaptureFixture, owner: str,
                                               name: str) -> None:
    true = shutil.which("true") or "/bin/true"
    run(true, **{owner: name})
    ((level, message),) = logged(logs)
    assert level == logging.ERROR
    assert message.startswith(f"{CONTEXT}: cannot start {true}: ")
    assert name in message


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_timeout_kills_the_whole_process_group(logs, tmp_path):
    """The command and the child it started are both killed: nothing outlives the timeout."""
    pid_file = tmp_path / "child"
    started = time.monotonic()
    run("/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait", timeout=0.5)
    assert time.monotonic() - started < 3
    assert f"{CONTEXT}: /bin/sh killed after 0.5s timeout" in logs.text
    child = int(pid_file.read_text())
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the command's child {child} survived the timeout")


def test_a_background_child_holding_the_pipe_does_not_turn_success_into_a_kill(logs):
    started = time.monotonic()
    run("/bin/sh", "-c", "sleep 3 & echo started", timeout=2)
    assert time.monotonic() - started < 1.5, "reported when the command exited, not at EOF"
    assert f"{CONTEXT}: /bin/sh exited 0: started" in logs.text
    assert "killed" not in logs.text


def test_the_loop_runs_while_commands_run():
    """A slow command never blocks the loop: a timer due meanwhile fires on time."""
    loop = Loop()
    runner = CommandRunner(loop)
    runner.run(("/bin/sleep", "1"), 5, "test")
    fired = []
    loop.call_later(0.1, lambda: fired.append(loop.clock()))
    started = loop.clock()
    loop.run_until(lambda: bool(fired), 2)
    assert fired and fired[0] - started < 0.5
    runner.kill_all()
    loop.run_until(lambda: runner.running == 0, 2)
    loop.close()
