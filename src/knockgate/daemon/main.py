"""The composition root: event loop, clock, signals, reload and teardown.

Everything below this module is pure (core/) or one side effect (io/). Signals are handled in
the event loop through ``add_signal_handler``, never in async-unsafe handlers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from knockgate.compat.fwknop.wire import MAX_PAYLOAD as FWKNOP_MAX
from knockgate.compat.fwknop.wire import MIN_PAYLOAD as FWKNOP_MIN
from knockgate.config.load import load_config
from knockgate.config.schema import Config
from knockgate.core.actions import expand_argv
from knockgate.core.decode import decode_datagram, decode_knock
from knockgate.core.engine import Engine
from knockgate.core.kernel_events import (
    HandedKnock,
    Handover,
    KernelOpened,
    ScanReset,
    kernel_event,
)
from knockgate.core.nft.first_stage import (
    earliest_first_knock,
    first_stage_summary,
    staged_doors,
)
from knockgate.core.nft.kernel_doors import KernelSettings
from knockgate.core.ratelimit import LogBudget
from knockgate.core.spa import PACKET_SIZE as SPA_PACKET_SIZE
from knockgate.core.spa import VERSION as SPA_VERSION
from knockgate.core.spa_policy import SpaGrant
from knockgate.daemon.fwknop import FwknopService
from knockgate.daemon.spa import SpaService
from knockgate.errors import KnockgateError
from knockgate.io.bpf import datagram_length_clause, fixed_datagram_clause, port_filter
from knockgate.io.capture import Capture, check_interfaces
from knockgate.io.commands import run_command
from knockgate.io.instance import claim_namespace
from knockgate.io.netlink import LocalAddresses
from knockgate.io.nflog import MAX_READS, LogEvent, NflogListener
from knockgate.io.nft import Nftables
from knockgate.io.notify import notify
from knockgate.io.onetime import consume_one_time
from knockgate.io.store import FILE_NAME as STORE_FILE
from knockgate.io.store import FWKNOP_FILE_NAME as FWKNOP_FILE
from knockgate.io.store import SqliteReplayStore
from knockgate.model import Decision, Door, IPAddress, Open, Packet, PortSpec, Progress, Reset

log = logging.getLogger("knockgate")
_SHUTDOWN_COMMAND_BUDGET = 0.5
_PRUNE_EVERY = 60.0
# Each knock and reset is logged, but a flood of them must not become a flood of log lines.
_STAGE_LOGS_PER_SECOND = 50.0
_STAGE_LOG_BURST = 200


def hidden_ports(config: Config) -> list[PortSpec]:
    """Knock and SPA ports, dropped so they look like every other closed port."""
    if not config.options.hide_knock_ports:
        return []
    ports = {PortSpec(f.proto, f.port) for d in config.doors for f in d.sequence}
    if config.spa is not None:
        ports.add(PortSpec("udp", config.spa.port))
    if config.fwknop is not None:
        ports.add(PortSpec("udp", config.fwknop.port))
    return sorted(ports, key=lambda s: (s.proto, s.port))


def spa_ports(config: Config) -> list[PortSpec]:
    """Every port an SPA key or fwknop stanza may open: the per-port grant sets guard these."""
    ports: set[PortSpec] = set()
    if config.spa is not None:
        ports |= {spec for entry in config.spa.keys for spec in entry.open}
    if config.fwknop is not None:
        ports |= set(config.fwknop.protected_ports())
    return sorted(ports, key=lambda s: (s.proto, s.port))


def capture_filter(config: Config, engine: Engine) -> str | None:
    """Knock ports, and SPA datagrams of the one valid length and version that name a
    configured key: a flood of garbage at the SPA port is dropped in the kernel, never copied
    to Python."""
    spa = []
    if config.spa is not None:
        key_ids = [entry.key.key_id for entry in config.spa.keys]
        spa.append(fixed_datagram_clause(config.spa.port, SPA_PACKET_SIZE, SPA_VERSION, key_ids))
    if config.fwknop is not None:
        spa.append(datagram_length_clause(config.fwknop.port, FWKNOP_MIN, FWKNOP_MAX))
    if not engine.watched_ports() and not spa:
        return None  # every door runs in the kernel: nothing for userspace to capture
    return port_filter(engine.watched_ports(), spa)


@dataclass(frozen=True)
class _PendingStop:
    handle: asyncio.TimerHandle
    argv: tuple[str, ...]
    context: str


@dataclass
class _Running:
    """What one loaded configuration needs at run time; swapped whole on reload."""

    config: Config
    engine: Engine  # userspace doors whose knocks are captured
    staged: Engine  # userspace doors whose first stage the kernel keeps (core/first_stage.py)
    capture: Capture | None
    doors: dict[str, Door]
    spa: SpaService | None
    fwknop: FwknopService | None


class Daemon:
    def __init__(self, config: Config, interfaces: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._first_config = config
        self._interface_override = interfaces
        self._clock = clock
        self._wall_clock = wall_clock
        self._stores: dict[Path, SqliteReplayStore] = {}
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[object]] = set()
        self._pending_stops: dict[int, _PendingStop] = {}
        self._stop_tokens = itertools.count()
        self._nft: Nftables | None = None
        self._addresses: LocalAddresses | None = None
        self._running: _Running | None = None
        self._batch_started = 0.0
        self._stage_log = LogBudget(rate=_STAGE_LOGS_PER_SECOND, burst=_STAGE_LOG_BURST)
        self._nflog: NflogListener | None = None
        self._kernel_events: deque[LogEvent] = deque()
        self._kernel_events_due = False
        self._installed = False
        # Random per run, so a flooder cannot aim at a real client's overflow bucket.
        self._overflow_seed = int.from_bytes(os.urandom(4), "big")

    # --- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        claim = claim_namespace()
        try:
            self._nft = Nftables()
            self._addresses = LocalAddresses()
            self._running = self._prepare(self._first_config)
            self._install(self._first_config)
            self._installed = True
            self._watch(self._running)
            self._schedule_prune()
            loop.add_reader(self._addresses.fileno(), self._on_address_change)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._stop, signum)
            loop.add_signal_handler(signal.SIGHUP, self._reload)
            loop.add_signal_handler(signal.SIGUSR1, self._log_state)
            self._log_doors(self._running.config, "serving")
            interfaces = self._interface_override or self._first_config.options.interfaces
            log.info("ready, watching %s", ", ".join(interfaces) or "every interface but lo")
            notify("READY=1")
            await self._stopping.wait()
        finally:
            await self._teardown(loop)
            claim.close()

    def _prepare(self, config: Config) -> _Running:
        staged = staged_doors(config.doors)
        engine = Engine([d for d in config.doors if d.engine == "userspace" and d not in staged],
                        config.options.max_pending)
        state_dir, now = config.options.state_dir, self._wall_clock()
        spa = fwknop = None
        if config.spa is not None:
            spa = SpaService(config.spa, self._replay_store(state_dir, STORE_FILE), now)
        if config.fwknop is not None:
            fwknop = FwknopService(config.fwknop, self._replay_store(state_dir, FWKNOP_FILE),
                                   now)
        interfaces = self._interfaces(config)
        check_interfaces(interfaces)
        expression = capture_filter(config, engine)
        capture = Capture(expression, interfaces) if expression else None
        return _Running(config, engine, Engine(staged, config.options.max_pending), capture,
                        {d.name: d for d in config.doors}, spa, fwknop)

    def _interfaces(self, config: Config) -> tuple[str, ...]:
        return self._interface_override or config.options.interfaces

    def _replay_store(self, state_dir: str, file_name: str) -> SqliteReplayStore:
        """Stores are opened once and kept across reloads."""
        path = Path(state_dir, file_name)
        if path not in self._stores:
            self._stores[path] = SqliteReplayStore(state_dir, file_name)
        return self._stores[path]

    def _install(self, config: Config) -> None:
        assert self._nft is not None
        self._nft.install(list(config.doors), hidden_ports(config), spa_ports(config),
                          KernelSettings(config.options.nflog_group,
                                         min(config.options.max_pending, 1 << 20),
                                         self._overflow_seed, self._interfaces(config)))
        self._listen_to_the_kernel(config)

    def _listen_to_the_kernel(self, config: Config) -> None:
        """Kernel doors report each opening to an NFLOG group (the daemon logs it and runs the
        door's commands); the scan guard of userspace doors reports sources that touched
        another port while knocking."""
        wanted = bool(config.doors)
        group = config.options.nflog_group
        if self._nflog is not None and (not wanted or self._nflog.group != group):
            asyncio.get_running_loop().remove_reader(self._nflog.fileno())
            self._nflog.close()
            self._nflog = None
        if wanted and self._nflog is None:
            self._nflog = NflogListener(group)
            asyncio.get_running_loop().add_reader(self._nflog.fileno(), self._on_kernel_events)

    def _read_kernel_events(self) -> bool:
        """Queue the events of one NFLOG datagram; False when none was waiting."""
        if self._nflog is None:
            return False
        lost = self._nflog.lost
        events = self._nflog.read()
        if self._nflog.lost > lost:
            log.warning("NFLOG overflowed: some kernel openings, scan resets or handed-over "
                        "knocks were not reported")
        if events is None:
            return False
        self._kernel_events.extend(events)
        return True

    def _on_kernel_events(self) -> None:
        """Handle NFLOG events in the order the kernel logged them, each datagram's before
        the next is read (the read that finds nothing comes after a grant, not before)."""
        self._batch_started = time.perf_counter()
        self._kernel_events_due = False
        for _ in range(MAX_READS):
            while self._kernel_events and self._running is not None:
                self._on_kernel_event(self._kernel_events.popleft(), self._running)
            if not self._read_kernel_events():
                return
        self._kernel_events_later()  # bounded per turn; the socket may be empty by now

    def _kernel_events_later(self) -> None:
        """Handle queued events on the loop's next turn: the socket's reader only fires for
        what is still unread."""
        if self._kernel_events and not self._kernel_events_due:
            self._kernel_events_due = True
            asyncio.get_running_loop().call_soon(self._on_kernel_events)

    def _on_kernel_event(self, logged: LogEvent, running: _Running) -> None:
        event = kernel_event(*logged)
        if isinstance(event, HandedKnock):
            self._on_handed_knock(event, running)
        elif isinstance(event, ScanReset):
            running.engine.forget(event.source)
            running.staged.forget(event.source)
            if self._stage_log.allow(self._clock()):
                log.info("%s reset on every door: it touched another port while knocking",
                         event.source)
        elif isinstance(event, Handover):
            name = event.door
            door = running.doors.get(name)
            if door is not None:
                now = self._clock()
                started = earliest_first_knock(door, now)
                for decision in running.staged.vouch_first(event.source.packed, name, started,
                                                           now):
                    self._act(decision, running, now, captured=False)
        elif isinstance(event, KernelOpened):
            door = running.doors.get(event.door)
            if door is not None and door.engine == "kernel":
                log.info("door %s: opened %s for %s for %gs (in the kernel)", door.name,
                         ", ".join(map(str, door.open)) or "nothing", event.source,
                         door.open_for)
                self._start_commands(door, event.source)

    def _on_handed_knock(self, event: HandedKnock, running: _Running) -> None:
        knock = decode_knock(event.packet)
        if knock is None:
            return
        now = self._clock()
        for decision in running.staged.handle_knock(knock.src, knock.dst, knock.proto,
                                                    knock.dport, knock.flags, now):
            self._act(decision, running, now, captured=False)

    def _reported_scanning(self, source: IPAddress, read_more: bool) -> bool:
        """Whether the scan guard has reported ``source`` in events not handled yet (after
        reading what NFLOG holds, with ``read_more``)."""
        for _ in range(MAX_READS if read_more else 0):
            if not self._read_kernel_events():
                break
        self._kernel_events_later()
        return any(isinstance(kernel_event(*event), ScanReset) and event.source == source
                   for event in self._kernel_events)

    def _schedule_prune(self) -> None:
        running = self._running
        for service in (running.spa, running.fwknop) if running is not None else ():
            if service is not None:
                service.prune(self._wall_clock())
        asyncio.get_running_loop().call_later(_PRUNE_EVERY, self._schedule_prune)

    def _watch(self, running: _Running) -> None:
        if running.capture is not None:
            asyncio.get_running_loop().add_reader(running.capture.fileno(), self._on_packets)

    def _unwatch(self, running: _Running) -> None:
        if running.capture is not None:
            asyncio.get_running_loop().remove_reader(running.capture.fileno())
            running.capture.close()

    def _stop(self, signum: int) -> None:
        log.info("received %s; closing every door and exiting", signal.Signals(signum).name)
        notify("STOPPING=1")
        self._stopping.set()

    async def _teardown(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
        if self._running is not None:
            self._unwatch(self._running)
        if self._addresses is not None:
            loop.remove_reader(self._addresses.fileno())
            self._addresses.close()
        if self._nflog is not None:
            loop.remove_reader(self._nflog.fileno())
            self._nflog.close()
        await self._run_pending_stop_commands()
        if self._nft is not None:
            # A start that failed before installing leaves any existing table alone.
            if self._installed:
                try:
                    self._nft.remove()
                    log.info("removed nftables table inet knockgate")
                except KnockgateError as exc:
                    log.error("teardown: %s", exc)
            self._nft.close()
        for store in self._stores.values():
            store.close()

    async def _run_pending_stop_commands(self) -> None:
        """Run stop commands now rather than never: the door must not stay open."""
        pending = list(self._pending_stops.values())
        self._pending_stops.clear()
        for stop in pending:
            stop.handle.cancel()
        jobs = [run_command(stop.argv, _SHUTDOWN_COMMAND_BUDGET, stop.context) for stop in pending]
        if jobs:
            await asyncio.gather(*jobs)

    def _log_state(self) -> None:
        """SIGUSR1: how full the bounded tables are, for an admin watching a flood."""
        running = self._running
        if running is None:
            return
        for machine in [*running.engine.doors.values(), *running.staged.doors.values()]:
            log.info("state: door %s: %d sources mid-sequence (cap %d), %d evicted so far",
                     machine.door.name, len(machine), machine.max_pending, machine.evicted)
        for machine in running.staged.doors.values():
            log.info("state: door %s keeps its first stage in the kernel: nft list table inet "
                     "knockgate shows %s-first_v4 and _v6", machine.door.name,
                     machine.door.name)
        for door in running.config.doors:
            if door.engine == "kernel":
                log.info("state: door %s runs in the kernel: nft list table inet knockgate "
                         "shows its stage sets", door.name)
        if running.spa is not None:
            log.info("state: spa: %d packets rejected so far", running.spa.rejected)

    # --- reload -------------------------------------------------------------------------

    def _reload(self) -> None:
        notify("RELOADING=1")
        assert self._running is not None and self._nft is not None
        old = self._running
        path = old.config.path
        try:
            config = load_config(path)
            fresh = self._prepare(config)
        except KnockgateError as exc:
            log.error("reload failed, still serving the previous configuration: %s", exc)
            notify("READY=1")
            return
        try:
            self._install(config)
        except KnockgateError as exc:
            if fresh.capture is not None:
                fresh.capture.close()
            log.error("reload failed, still serving the previous configuration: %s", exc)
            notify("READY=1")
            return
        self._unwatch(old)
        self._running = fresh
        self._watch(fresh)
        self._log_doors(config, "reloaded")
        notify("READY=1")

    # --- packets ------------------------------------------------------------------------

    def _on_address_change(self) -> None:
        assert self._addresses is not None
        for change in self._addresses.on_readable():
            log.info("%s", change)

    def _on_packets(self) -> None:
        running, addresses = self._running, self._addresses
        assert running is not None and addresses is not None
        now = self._clock()
        assert running.capture is not None
        if self._nflog is not None:  # scan resets queued before these packets apply first
            self._on_kernel_events()
        self._batch_started = time.perf_counter()
        spa_ports, local, engine = _spa_ports(running), addresses.packed, running.engine
        packets = running.capture.drain()
        while True:
            # Each packet is handled before the next read: the read that finds nothing left
            # comes after a grant, not before it.
            try:
                data = next(packets, None)
            except OSError as exc:
                log.error("capture read failed: %s", exc)
                return
            if data is None:
                return
            knock = decode_knock(data)
            if knock is None:
                continue
            if knock.dst not in local and not engine.counts_for(knock.dst):
                continue
            if knock.proto == "udp" and knock.dport in spa_ports:
                packet = decode_datagram(data, knock)
                if packet is not None:
                    self._on_spa(running, packet)
                continue
            for decision in engine.handle_knock(knock.src, knock.dst, knock.proto, knock.dport,
                                                knock.flags, now):
                self._act(decision, running, now)

    def _on_spa(self, running: _Running, packet: Packet) -> None:
        """Our SPA packets are exactly SPA_PACKET_SIZE bytes starting with the version byte;
        fwknop's are base64 text of at least 140 bytes, so one port can serve both."""
        ours = len(packet.payload) == SPA_PACKET_SIZE and packet.payload[0] == SPA_VERSION
        spa, fwknop = running.spa, running.fwknop
        service: SpaService | FwknopService
        if ours and spa is not None and packet.dport == spa.config.port:
            service = spa
        elif fwknop is not None and packet.dport == fwknop.config.port:
            service = fwknop
        else:
            return
        grant = service.handle(packet, self._wall_clock())
        if grant is not None:
            self._apply_grant(grant)
        service.save()  # after the grant: the door need not wait for the disk (core/replay.py)

    def _apply_grant(self, grant: SpaGrant) -> None:
        assert self._nft is not None
        if grant.ports:
            try:
                self._nft.grant_ports(grant.target, grant.ports, grant.open_for)
            except KnockgateError as exc:
                log.error("spa: key %s: could not open for %s: %s", grant.key, grant.target, exc)
                return
            log.info("spa: key %s: opened %s for %s for %gs (%.3f ms after the packet was "
                     "read)", grant.key, ", ".join(map(str, grant.ports)), grant.target,
                     grant.open_for, (time.perf_counter() - self._batch_started) * 1000)
        if grant.command:
            values = {"ip": str(grant.target), "key": grant.key, "door": grant.key}
            argv = grant.command if grant.literal_command else expand_argv(grant.command, values)
            what = f"action {grant.action}" if grant.action is not None else "command"
            log.info("spa: key %s: %s for %s", grant.key, what, grant.target)
            self._spawn(run_command(argv, self._command_timeout(), f"spa key {grant.key}: {what}",
                                    user=grant.user, group=grant.group))

    def _act(self, decision: Decision, running: _Running, now: float,
             captured: bool = True) -> None:
        """``decision.source`` is packed bytes here (the engine's hot path). ``captured``: the
        knock came from the capture socket, which races the scan guard's NFLOG events; a knock
        handed over through NFLOG is queued behind every scan reset logged before it."""
        if isinstance(decision, Progress | Reset) and not self._stage_log.allow(now):
            return
        suppressed = self._stage_log.take_suppressed()
        if suppressed:
            log.warning("%d knock and reset messages suppressed (more than %g per second)",
                        suppressed, self._stage_log.rate)
        source = ip_address(decision.source)
        if isinstance(decision, Progress):
            log.info("door %s: %s knock %d/%d", decision.door, source, decision.step,
                     decision.total)
        elif isinstance(decision, Reset):
            log.info("door %s: %s reset (%s)", decision.door, source, decision.reason)
        elif isinstance(decision, Open):
            self._open(running.doors[decision.door], source, captured)

    def _open(self, door: Door, source: IPAddress, captured: bool = True) -> None:
        assert self._nft is not None
        if self._reported_scanning(source, read_more=captured):
            log.info("door %s: not opened for %s: it touched another port while knocking",
                     door.name, source)
            return
        if door.one_time is not None and not self._consume_one_time(door):
            return
        if door.open:
            try:
                self._nft.grant(door.name, source, door.open_for)
            except KnockgateError as exc:
                log.error("door %s: could not open for %s: %s", door.name, source, exc)
                return
            log.info("door %s: opened %s for %s for %gs (%.3f ms after the packet was read)",
                     door.name, ", ".join(str(p) for p in door.open), source, door.open_for,
                     (time.perf_counter() - self._batch_started) * 1000)
        else:
            log.info("door %s: sequence completed by %s", door.name, source)
        self._start_commands(door, source)

    def _consume_one_time(self, door: Door) -> bool:
        """Mark the used sequence in its file and arm the next one; False (door stays shut)
        if the file cannot be written, since the sequence would stay usable."""
        running = self._running
        assert running is not None and door.one_time is not None
        try:
            following = consume_one_time(door)
        except KnockgateError as exc:
            log.error("door %s: not opened, cannot mark the one-time sequence used: %s",
                      door.name, exc)
            return False
        running.doors[door.name] = following
        running.engine.replace_door(following)
        expression = capture_filter(running.config, running.engine)
        if expression is not None and running.capture is not None:
            running.capture.replace_filter(expression)
        # else: nothing is left to watch; the old filter only lets through knocks nobody counts
        if following.sequence:
            log.info("door %s: one-time sequence used; the next line of %s is armed",
                     door.name, door.one_time.path)
        else:
            log.warning("door %s: %s is used up; the door is disabled", door.name,
                        door.one_time.path)
        return True

    def _start_commands(self, door: Door, source: IPAddress) -> None:
        values = {"ip": str(source), "door": door.name}
        command, stop_command = door.commands_for(source)
        if command:
            self._spawn(run_command(expand_argv(command, values), self._command_timeout(),
                                    f"door {door.name}: command for {source}"))
        if stop_command:
            token = next(self._stop_tokens)
            handle = asyncio.get_running_loop().call_later(
                door.command_delay, self._fire_stop, token)
            self._pending_stops[token] = _PendingStop(
                handle, expand_argv(stop_command, values),
                f"door {door.name}: stop_command for {source}")

    def _fire_stop(self, token: int) -> None:
        pending = self._pending_stops.pop(token)
        self._spawn(run_command(pending.argv, self._command_timeout(), pending.context))

    def _command_timeout(self) -> float:
        assert self._running is not None
        return self._running.config.options.command_timeout

    def _spawn(self, job: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log_doors(self, config: Config, verb: str) -> None:
        for door in config.doors:
            log.info("%s door %s: %d knocks, opens %s for %gs, %s engine (%s)", verb, door.name,
                     len(door.sequence), ", ".join(str(p) for p in door.open) or "nothing",
                     door.open_for, door.engine, door.engine_reason)
            if door.engine == "userspace":
                log.info("%s door %s: %s", verb, door.name, first_stage_summary(door))
        if config.spa is not None:
            log.info("%s spa on udp:%d with %d key(s): %s", verb, config.spa.port,
                     len(config.spa.keys), ", ".join(e.key.name for e in config.spa.keys))
        if config.fwknop is not None:
            log.info("%s fwknop SPA on udp:%d with %d stanza(s) from %s", verb,
                     config.fwknop.port, len(config.fwknop.access.stanzas),
                     config.fwknop.access.path)
        for warning in config.warnings:
            log.warning("%s", warning)


def _spa_ports(running: _Running) -> frozenset[int]:
    config = running.config
    return frozenset(c.port for c in (config.spa, config.fwknop) if c is not None)


def serve(config: Config, interfaces: tuple[str, ...] = ()) -> None:
    asyncio.run(Daemon(config, interfaces).run())
