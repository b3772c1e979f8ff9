"""io/commands.py on the daemon's real loop: real processes, no shell, outcomes logged."""

import logging
import time

import pytest

from knockgate.daemon.loop import Loop
from knockgate.io.commands import CommandRunner


@pytest.fixture
def loop(caplog):
    caplog.set_level(logging.INFO, "knockgate.command")
    loop = Loop()
    yield loop
    loop.close()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run(loop: Loop, argv: tuple[str, ...], timeout: float = 5.0, **kwargs: str) -> None:
    runner = CommandRunner(loop)
    runner.run(argv, timeout, "test", **kwargs)
    loop.run_until(lambda: runner.running == 0, timeout + 5)
    assert runner.running == 0


def test_exit_zero_is_logged_with_its_output(loop, caplog):
    run(loop, ("/bin/echo", "hello", "{ip}"))
    assert "test: /bin/echo exited 0: hello {ip}" in caplog.text


def test_a_failure_is_logged_with_its_status(loop, caplog):
    run(loop, ("/bin/sh", "-c", "echo oops >&2; exit 3"))
    assert "test: /bin/sh failed with status 3: oops" in caplog.text


def test_a_program_that_cannot_start(loop, caplog):
    run(loop, ("/nonexistent/program",))
    assert "test: cannot start /nonexistent/program: No such file or directory" in caplog.text


def test_an_unknown_user_is_refused_before_anything_runs(loop, caplog):
    run(loop, ("/bin/true",), user="no-such-user-knockgate")
    assert "test: cannot start /bin/true" in caplog.text


def test_a_timeout_kills_the_whole_process_group(loop, caplog, tmp_path):
    """The command and the child it started are both killed: nothing outlives the timeout."""
    pid_file = tmp_path / "child"
    started = time.monotonic()
    run(loop, ("/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"), timeout=0.5)
    assert time.monotonic() - started < 3
    assert "test: /bin/sh killed after 0.5s timeout" in caplog.text
    child = int(pid_file.read_text())
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the command's child {child} survived the timeout")


def test_a_background_child_holding_the_pipe_does_not_turn_success_into_a_kill(loop, caplog):
    started = time.monotonic()
    run(loop, ("/bin/sh", "-c", "sleep 3 & echo started"), timeout=2)
    assert time.monotonic() - started < 1.5, "reported when the command exited, not at EOF"
    assert "test: /bin/sh exited 0: started" in caplog.text
    assert "killed" not in caplog.text


def test_the_loop_runs_while_commands_run(loop):
    """A slow command never blocks the loop: a timer due meanwhile fires on time."""
    runner = CommandRunner(loop)
    runner.run(("/bin/sleep", "1"), 5, "test")
    fired = []
    loop.call_later(0.1, lambda: fired.append(loop.clock()))
    started = loop.clock()
    loop.run_until(lambda: bool(fired), 2)
    assert fired and fired[0] - started < 0.5
    runner.kill_all()
    loop.run_until(lambda: runner.running == 0, 2)
