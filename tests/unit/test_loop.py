"""daemon/loop.py: readers, timers in order, signals handled in the loop, and a callback that
raises does not stop it."""

import logging
import os
import signal

from knockgate.daemon.loop import Loop


def test_timers_run_in_due_order_and_cancelled_ones_never():
    loop = Loop()
    ran: list[str] = []
    loop.call_later(0.03, lambda: ran.append("late"))
    loop.call_later(0.01, lambda: ran.append("early"))
    loop.call_later(0.02, lambda: ran.append("cancelled")).cancel()
    loop.call_later(0.05, loop.stop)
    loop.run()
    loop.close()
    assert ran == ["early", "late"]


def test_a_reader_fires_when_its_fd_is_readable():
    loop = Loop()
    read_end, write_end = os.pipe()
    got: list[bytes] = []

    def on_readable() -> None:
        got.append(os.read(read_end, 10))
        loop.stop()

    loop.add_reader(read_end, on_readable)
    os.write(write_end, b"x")
    loop.call_later(2, loop.stop)
    loop.run()
    loop.remove_reader(read_end)
    loop.close()
    os.close(read_end)
    os.close(write_end)
    assert got == [b"x"]


def test_signals_run_their_handler_in_the_loop_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGUSR2)
    loop = Loop()
    seen: list[str] = []
    loop.add_signal_handler(signal.SIGUSR2, lambda: (seen.append("usr2"), loop.stop()))
    loop.call_later(0.01, lambda: os.kill(os.getpid(), signal.SIGUSR2))
    loop.call_later(2, loop.stop)
    loop.run()
    loop.close()
    assert seen == ["usr2"]
    assert signal.getsignal(signal.SIGUSR2) == before


def test_a_callback_that_raises_is_logged_and_the_loop_goes_on(caplog):
    loop = Loop()
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("a bug")

    loop.call_later(0.0, broken)
    loop.call_later(0.01, lambda: ran.append("after"))
    loop.call_later(0.02, loop.stop)
    with caplog.at_level(logging.ERROR, "knockgate"):
        loop.run()
    loop.close()
    assert ran == ["after"]
    assert "unexpected error in test_a_callback_that_raises" in caplog.text
    assert "ValueError: a bug" in caplog.text


def test_run_until_stops_at_its_budget():
    loop = Loop()
    started = loop.clock()
    loop.run_until(lambda: False, 0.1)
    loop.close()
    assert 0.1 <= loop.clock() - started < 0.5
