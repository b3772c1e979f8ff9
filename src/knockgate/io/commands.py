"""The only place knockgate starts a process: argv lists, no shell, a timeout, the outcome logged.

Commands run beside the event loop, never blocking it: the loop watches each command's output
pipe and a pidfd that becomes readable when it exits. Each command leads its own process group
(``start_new_session``), so a timeout kills everything it started, and the outcome logged is
the exit status of the command itself, even when a child it left behind keeps the pipe open
(the daemon stops reading then: a background child should not write to its stdout).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("knockgate.command")
_OUTPUT_KEPT = 4096  # bytes of output kept for the log line (200 characters are shown)


class Scheduler(Protocol):
    """What the runner needs of the daemon's loop (daemon/loop.py)."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_reader(self, fd: int) -> None: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class _Job:
    def __init__(self, process: subprocess.Popen[bytes], pidfd: int, context: str,
                 timeout: float) -> None:
        self.process = process
        self.pidfd = pidfd
        self.context = context
        self.timeout = timeout
        self.output = bytearray()
        self.killed = False
        self.timer: Cancellable | None = None


class CommandRunner:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._jobs: dict[int, _Job] = {}

    @property
    def running(self) -> int:
        return len(self._jobs)

    def run(self, argv: tuple[str, ...], timeout: float, context: str,
            user: str | None = None, group: str | None = None) -> None:
        """Start ``argv`` (as ``user``/``group`` if given); its outcome is logged later."""
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       user=user, group=group)
        except (OSError, KeyError, ValueError) as exc:  # KeyError: no such user or group
            log.error("%s: cannot start %s: %s", context, argv[0],
                      getattr(exc, "strerror", None) or exc)
            return
        assert process.stdout is not None
        job = _Job(process, os.pidfd_open(process.pid), f"{context}: {argv[0]}", timeout)
        self._jobs[process.pid] = job
        output = process.stdout.fileno()
        os.set_blocking(output, False)
        self._scheduler.add_reader(output, lambda: self._read(job))
        self._scheduler.add_reader(job.pidfd, lambda: self._exited(job))
        job.timer = self._scheduler.call_later(timeout, lambda: self._kill(job))

    def kill_all(self) -> None:
        """Kill every command still running (the daemon is going away)."""
        for job in list(self._jobs.values()):
            self._kill(job)

    def _read(self, job: _Job) -> None:
        assert job.process.stdout is not None
        try:
            data = os.read(job.process.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self._scheduler.remove_reader(job.process.stdout.fileno())
        elif len(job.output) < _OUTPUT_KEPT:
            job.output += data[:_OUTPUT_KEPT - len(job.output)]

    def _kill(self, job: _Job) -> None:
        if job.process.returncode is None and not job.killed:
            job.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)

    def _exited(self, job: _Job) -> None:
        status = job.process.wait()
        self._read(job)  # what the command wrote before it exited
        assert job.process.stdout is not None
        self._scheduler.remove_reader(job.process.stdout.fileno())
        self._scheduler.remove_reader(job.pidfd)
        job.process.stdout.close()
        os.close(job.pidfd)
        if job.timer is not None:
            job.timer.cancel()
        del self._jobs[job.process.pid]
        text = job.output.decode(errors="replace").strip()
        shown = f": {text[:200]}" if text else ""
        if job.killed:
            log.error("%s killed after %gs timeout", job.context, job.timeout)
        elif status == 0:
            log.info("%s exited 0%s", job.context, shown)
        else:
            log.error("%s failed with status %s%s", job.context, status, shown)
