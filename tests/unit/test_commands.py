"""io/commands.run_command: argv without a shell, a timeout that kills, every failure logged."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from knockgate.io.commands import run_command

CONTEXT = "door ssh: command"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="knockgate")
    return caplog


def run(*argv: str, timeout: float = 10.0, user: str | None = None,
        group: str | None = None) -> int | None:
    return asyncio.run(run_command(argv, timeout, CONTEXT, user=user, group=group))


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(record.levelno, record.getMessage()) for record in caplog.records]


def test_exit_zero_is_logged_with_its_output(logs: pytest.LogCaptureFixture) -> None:
    assert run(sys.executable, "-c", "print('opened for 10.0.0.1')") == 0
    assert logged(logs) == [
        (logging.INFO, f"{CONTEXT}: {sys.executable} exited 0: opened for 10.0.0.1")]


def test_exit_zero_without_output(logs: pytest.LogCaptureFixture) -> None:
    assert run(sys.executable, "-c", "pass") == 0
    assert logged(logs) == [(logging.INFO, f"{CONTEXT}: {sys.executable} exited 0")]


def test_a_non_zero_status_is_an_error_with_stderr(logs: pytest.LogCaptureFixture) -> None:
    assert run(sys.executable, "-c", "import sys; sys.exit('no such chain')") == 1
    assert logged(logs) == [
        (logging.ERROR, f"{CONTEXT}: {sys.executable} failed with status 1: no such chain")]


def test_arguments_never_reach_a_shell(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "pwned"
    assert run("echo", f"10.0.0.1; touch {marker}") == 0
    assert not marker.exists()
    assert logged(logs) == [(logging.INFO, f"{CONTEXT}: echo exited 0: 10.0.0.1; touch {marker}")]


def test_a_timeout_kills_the_program(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    assert run(sys.executable, "-c", script, timeout=1.0) is None
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)
    assert logged(logs) == [(logging.ERROR, f"{CONTEXT}: {sys.executable} killed after 1s timeout")]


def test_a_missing_program_cannot_start(logs: pytest.LogCaptureFixture) -> None:
    assert run("/nonexistent/knock-hook", "10.0.0.1") is None
    assert logged(logs) == [
        (logging.ERROR, f"{CONTEXT}: cannot start /nonexistent/knock-hook: No such file or "
                        "directory")]


def test_a_file_that_is_not_executable_cannot_start(tmp_path: Path,
                                                     logs: pytest.LogCaptureFixture) -> None:
    script = tmp_path / "hook"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    assert run(str(script)) is None
    assert logged(logs) == [(logging.ERROR, f"{CONTEXT}: cannot start {script}: Permission denied")]


@pytest.mark.parametrize(("owner", "name"), [("user", "no-such-user-kg"),
                                           ("group", "no-such-group-kg")])
def test_an_unknown_user_or_group_cannot_start(logs: pytest.LogCaptureFixture, owner: str,
                                               name: str) -> None:
    true = shutil.which("true") or "/bin/true"
    assert run(true, **{owner: name}) is None
    ((level, message),) = logged(logs)
    assert level == logging.ERROR
    assert message.startswith(f"{CONTEXT}: cannot start {true}: ")
    assert name in message
