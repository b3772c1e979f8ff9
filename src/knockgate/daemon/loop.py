"""The daemon's event loop: file descriptors, timers and signals on one epoll, in one thread.

Not asyncio. The daemon needs readers, timers and signals; asyncio brings those plus an
import of ssl (OpenSSL) and of its own machinery, 6 to 10 MB of resident memory on a daemon
whose budget is 20 MB (bench/footprint.py measures it). Signals arrive through
``signal.set_wakeup_fd`` and their handlers run in the loop, never inside the interrupted code.
A callback that raises is logged and the loop carries on: a packet never kills the daemon.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable

log = logging.getLogger("knockgate")
Callback = Callable[[], None]


class Timer:
    """A call due at ``when`` (loop clock); ``cancel()`` keeps it from running."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._selector = selectors.EpollSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties between timers due at once run in call order
        self._signal_handlers: dict[int, Callback] = {}
        self._previous_handlers: dict[int, object] = {}
        self._running = False
        self._wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_write = wakeup_write
        self.add_reader(self._wakeup_read, self._on_signals)

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(self.clock() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        """Run ``callback`` in the loop when ``signum`` arrives."""
        self._signal_handlers[signum] = callback
        self._previous_handlers.setdefault(signum, signal.signal(signum, _note_signal))
        signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        """Until ``stop()``."""
        self._running = True
        while self._running:
            self.run_once(self._next_timeout())

    def run_until(self, done: Callable[[], bool], budget: float) -> None:
        """Until ``done()`` or ``budget`` seconds have passed (teardown's last commands)."""
        deadline = self.clock() + budget
        while not done() and (left := deadline - self.clock()) > 0:
            timeout = self._next_timeout()
            self.run_once(left if timeout is None else min(left, timeout))

    def run_once(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            _call(key.data)
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                _call(timer.callback)

    def _next_timeout(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - self.clock())

    def _on_signals(self) -> None:
        try:
            received = os.read(self._wakeup_read, 256)
        except BlockingIOError:
            return
        for signum in received:
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler()

    def close(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]  # as signal.signal gave it
        self._signal_handlers.clear()
        signal.set_wakeup_fd(-1)
        self._selector.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)


def _note_signal(signum: int, frame: object) -> None:
    """The Python-level handler does nothing: the wakeup fd carries the signal to the loop."""


def _call(callback: Callback) -> None:
    try:
        callback()
    except Exception:
        log.exception("unexpected error in %s; carrying on", getattr(callback, "__qualname__",
                                                                      callback))
