"""What the daemon does about the gate's decisions: grants, commands, one-time files and the
log lines that say what happened and why. Every effect goes through io/."""

from __future__ import annotations

import itertools
import logging
import time
from ipaddress import ip_address

from knockgate.core.actions import expand_argv
from knockgate.core.capture_filter import capture_filter
from knockgate.core.gate import Forgotten
from knockgate.core.nft.grants import door_grant, port_grant
from knockgate.core.ratelimit import LogBudget
from knockgate.core.spa_policy import SpaGrant
from knockgate.daemon.loop import Loop, Timer
from knockgate.daemon.setup import Setup
from knockgate.errors import KnockgateError
from knockgate.io.commands import CommandRunner
from knockgate.io.nft import Nftables
from knockgate.io.onetime import consume_one_time
from knockgate.model import Door, IPAddress, Progress, Reset

log = logging.getLogger("knockgate")
# Each knock and reset is logged, but a flood of them must not become a flood of log lines.
_STAGE_LOGS_PER_SECOND = 50.0
_STAGE_LOG_BURST = 200


class Effects:
    def __init__(self, loop: Loop, nft: Nftables, commands: CommandRunner) -> None:
        self.loop = loop
        self.nft = nft
        self.commands = commands
        # When the read that brought the current packet began: the log says how long the
        # daemon took from there to the grant.
        self.batch_started = 0.0
        self._stops: dict[int, tuple[Timer, tuple[str, ...], str, float]] = {}
        self._stop_tokens = itertools.count()
        self._stage_log = LogBudget(rate=_STAGE_LOGS_PER_SECOND, burst=_STAGE_LOG_BURST)

    def log_stage(self, decision: Progress | Reset | Forgotten) -> None:
        if not self._stage_log.allow(self.loop.clock()):
            return
        suppressed = self._stage_log.take_suppressed()
        if suppressed:
            log.warning("%d knock and reset messages suppressed (more than %g per second)",
                        suppressed, self._stage_log.rate)
        if isinstance(decision, Forgotten):
            log.info("%s reset on every door: it touched another port while knocking",
                     decision.source)
        elif isinstance(decision, Progress):
            log.info("door %s: %s knock %d/%d", decision.door, ip_address(decision.source),
                     decision.step, decision.total)
        else:
            log.info("door %s: %s reset (%s)", decision.door, ip_address(decision.source),
                     decision.reason)

    def open_door(self, setup: Setup, door: Door, source: IPAddress) -> None:
        if door.one_time is not None and not self._consume_one_time(setup, door):
            return
        if door.open:
            try:
                self.nft.add_elements(door_grant(door.name, source, door.open_for))
            except KnockgateError as exc:
                log.error("door %s: could not open for %s: %s", door.name, source, exc)
                return
            log.info("door %s: opened %s for %s for %gs (%.3f ms after the packet was read)",
                     door.name, ", ".join(str(p) for p in door.open), source, door.open_for,
                     self._since_read())
        else:
            log.info("door %s: sequence completed by %s", door.name, source)
        self.start_commands(setup, door, source)

    def opened_in_kernel(self, setup: Setup, door: Door, source: IPAddress) -> None:
        log.info("door %s: opened %s for %s for %gs (in the kernel)", door.name,
                 ", ".join(map(str, door.open)) or "nothing", source, door.open_for)
        self.start_commands(setup, door, source)

    def _consume_one_time(self, setup: Setup, door: Door) -> bool:
        """Mark the used sequence in its file and arm the next one; False (door stays shut)
        if the file cannot be written, since the sequence would stay usable."""
        path = door.one_time.path if door.one_time is not None else ""
        try:
            following = consume_one_time(door)
        except KnockgateError as exc:
            log.error("door %s: not opened, cannot mark the one-time sequence used: %s",
                      door.name, exc)
            return False
        setup.gate.replace_door(following)
        expression = capture_filter(setup.gate.capture_clauses(), setup.spa_clauses)
        if expression is not None and setup.capture is not None:
            setup.capture.replace_filter(expression)
        # else: nothing is left to watch; the old filter only lets through knocks nobody counts
        if following.sequence:
            log.info("door %s: one-time sequence used; the next line of %s is armed",
                     door.name, path)
        else:
            log.warning("door %s: %s is used up; the door is disabled", door.name, path)
        return True

    def apply_grant(self, setup: Setup, grant: SpaGrant) -> None:
        if grant.ports:
            try:
                self.nft.add_elements(port_grant(grant.target, grant.ports, grant.open_for))
            except KnockgateError as exc:
                log.error("spa: key %s: could not open for %s: %s", grant.key, grant.target, exc)
                return
            log.info("spa: key %s: opened %s for %s for %gs (%.3f ms after the packet was "
                     "read)", grant.key, ", ".join(map(str, grant.ports)), grant.target,
                     grant.open_for, self._since_read())
        if grant.command:
            values = {"ip": str(grant.target), "key": grant.key, "door": grant.key}
            argv = grant.command if grant.literal_command else expand_argv(grant.command, values)
            what = f"action {grant.action}" if grant.action is not None else "command"
            log.info("spa: key %s: %s for %s", grant.key, what, grant.target)
            self.commands.run(argv, setup.config.options.command_timeout,
                              f"spa key {grant.key}: {what}", user=grant.user, group=grant.group)

    def start_commands(self, setup: Setup, door: Door, source: IPAddress) -> None:
        values = {"ip": str(source), "door": door.name}
        command, stop_command = door.commands_for(source)
        timeout = setup.config.options.command_timeout
        if command:
            self.commands.run(expand_argv(command, values), timeout,
                              f"door {door.name}: command for {source}")
        if stop_command:
            token = next(self._stop_tokens)
            timer = self.loop.call_later(door.command_delay, lambda: self._fire_stop(token))
            self._stops[token] = (timer, expand_argv(stop_command, values),
                                  f"door {door.name}: stop_command for {source}", timeout)

    def _fire_stop(self, token: int) -> None:
        _, argv, context, timeout = self._stops.pop(token)
        self.commands.run(argv, timeout, context)

    def run_stop_commands_now(self, budget: float) -> None:
        """At exit: stop commands run now rather than never (the door must not stay open),
        each within ``budget`` seconds; then whatever still runs is killed."""
        for timer, argv, context, _ in self._stops.values():
            timer.cancel()
            self.commands.run(argv, budget, context)
        self._stops.clear()
        self.loop.run_until(lambda: self.commands.running == 0, 2 * budget)
        self.commands.kill_all()

    def _since_read(self) -> float:
        return (time.perf_counter() - self.batch_started) * 1000
