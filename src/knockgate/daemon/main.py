"""The composition root: the loop, signals, reload, teardown, and applying what the gate decides.

Everything it calls is pure (core/: the gate decides) or one side effect (io/). The daemon is
built from resources that are open before it starts, so none of its fields is ever missing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from knockgate.config.load import load_config
from knockgate.config.schema import Config
from knockgate.core.gate import (
    Forgotten,
    GateDecision,
    Granted,
    NotOpened,
    OpenedInKernel,
    SyncKernel,
    VerifySpa,
)
from knockgate.core.kernel_events import kernel_event
from knockgate.core.nft.grants import describe_closed_ports
from knockgate.daemon.effects import Effects
from knockgate.daemon.loop import Loop
from knockgate.daemon.setup import (
    ReplayStores,
    Setup,
    install_table,
    leave_dormant,
    log_setup,
    log_state,
    prepare,
)
from knockgate.errors import KnockgateError
from knockgate.io.commands import CommandRunner
from knockgate.io.instance import claim_namespace
from knockgate.io.netlink import LocalAddresses
from knockgate.io.nflog import MAX_READS, NflogListener
from knockgate.io.nft import Nftables
from knockgate.io.notify import notify
from knockgate.model import Progress, Reset

log = logging.getLogger("knockgate")
_SHUTDOWN_COMMAND_BUDGET = 0.5
_PRUNE_EVERY = 60.0


class Resources(NamedTuple):
    """What the daemon holds for its whole life, opened before it starts."""

    loop: Loop
    nft: Nftables
    addresses: LocalAddresses
    effects: Effects
    stores: ReplayStores
    # Random per run, so a flooder cannot aim at a real client's overflow bucket.
    overflow_seed: int


class Daemon:
    def __init__(self, resources: Resources, setup: Setup, nflog: NflogListener,
                 interfaces: tuple[str, ...] = (),
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.resources = resources
        self.setup = setup
        self.nflog = nflog
        self._interface_override = interfaces
        self.effects = resources.effects
        self._clock = resources.loop.clock
        self._wall_clock = wall_clock

    def run(self) -> None:
        loop = self.resources.loop
        try:
            self._install(self.setup.config)
            self._watch(self.setup)
            loop.add_reader(self.nflog.fileno(), self._on_kernel_readable)
            loop.add_reader(self.resources.addresses.fileno(), self._on_address_change)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, functools.partial(self._stop, signum))
            loop.add_signal_handler(signal.SIGHUP, self._reload)
            loop.add_signal_handler(signal.SIGUSR1, lambda: log_state(self.setup))
            loop.call_later(_PRUNE_EVERY, self._prune)
            log_setup(self.setup.config, "serving")
            log.info("ready, watching %s",
                     ", ".join(self._interfaces(self.setup.config)) or "every interface but lo")
            notify("READY=1")
            loop.run()
        finally:
            self._teardown()

    def _interfaces(self, config: Config) -> tuple[str, ...]:
        return self._interface_override or config.options.interfaces

    def _install(self, config: Config) -> None:
        """The whole table in one transaction; doors that still exist keep their grants."""
        plan = install_table(self.resources.nft, config, self._interfaces(config),
                             self.resources.overflow_seed)
        log.info("%s", describe_closed_ports(plan.answer))

    def _watch(self, setup: Setup) -> None:
        if setup.capture is not None:
            self.resources.loop.add_reader(setup.capture.fileno(), self._on_capture_readable)

    def _unwatch(self, setup: Setup) -> None:
        if setup.capture is not None:
            self.resources.loop.remove_reader(setup.capture.fileno())
        setup.close()

    def _stop(self, signum: int) -> None:
        log.info("received %s; exiting", signal.Signals(signum).name)
        notify("STOPPING=1")
        self.resources.loop.stop()

    def _teardown(self) -> None:
        self._unwatch(self.setup)
        self.effects.run_stop_commands_now(_SHUTDOWN_COMMAND_BUDGET)
        self.nflog.close()
        leave_dormant(self.resources.nft, self.setup.config)

    def _reload(self) -> None:
        """All or nothing: a config that fails to load, prepare or install changes nothing."""
        notify("RELOADING=1")
        with contextlib.ExitStack() as undo:
            try:
                config = load_config(self.setup.config.path)
                fresh = prepare(config, self._interfaces(config), self.resources.stores,
                                self._wall_clock(), previous=self.setup)
                undo.callback(fresh.close)
                nflog = self.nflog
                if config.options.nflog_group != nflog.group:
                    nflog = NflogListener(config.options.nflog_group)
                    undo.callback(nflog.close)
                self._install(config)
            except KnockgateError as exc:
                log.error("reload failed, still serving the previous configuration: %s", exc)
                notify("READY=1")
                return
            undo.pop_all()
        if nflog is not self.nflog:
            self.resources.loop.remove_reader(self.nflog.fileno())
            self.nflog.close()
            self.nflog = nflog
            self.resources.loop.add_reader(nflog.fileno(), self._on_kernel_readable)
        self._unwatch(self.setup)
        self.setup = fresh
        self._watch(fresh)
        log_setup(config, "reloaded")
        notify("READY=1")

    def _prune(self) -> None:
        for service in (self.setup.spa, self.setup.fwknop):
            if service is not None:
                service.prune(self._wall_clock())
        self.resources.loop.call_later(_PRUNE_EVERY, self._prune)

    # --- reading: each datagram and packet is handled before the next read -----------------

    def _on_address_change(self) -> None:
        for change in self.resources.addresses.on_readable():
            log.info("%s", change)

    def _on_kernel_readable(self) -> None:
        self.effects.batch_started = time.perf_counter()
        self._read_kernel()

    def _read_kernel(self) -> None:
        """Up to MAX_READS NFLOG datagrams (the rest waits for the next turn of the loop)."""
        for _ in range(MAX_READS):
            lost = self.nflog.lost
            logged = self.nflog.read()
            if self.nflog.lost > lost:
                log.warning("NFLOG overflowed: some kernel openings, scan resets or "
                            "handed-over knocks were not reported")
            if logged is None:
                return
            events = [event for event in (kernel_event(*item) for item in logged) if event]
            self._apply(self.setup.gate.on_kernel(events, self._clock()))

    def _on_capture_readable(self) -> None:
        setup = self.setup
        assert setup.capture is not None  # watched only when there is one
        self._read_kernel()  # scan resets queued before these packets apply first
        self.effects.batch_started = time.perf_counter()
        now, local = self._clock(), self.resources.addresses.packed
        try:
            for data in setup.capture.drain():
                self._apply(setup.gate.on_capture(data, now, local))
        except OSError as exc:
            log.error("capture read failed: %s", exc)

    # --- applying decisions ----------------------------------------------------------------

    def _apply(self, decisions: Iterable[GateDecision]) -> None:
        for decision in decisions:
            if isinstance(decision, Progress | Reset | Forgotten):
                self.effects.log_stage(decision)
            elif isinstance(decision, NotOpened):
                log.info("door %s: not opened for %s: %s", *decision)
            elif isinstance(decision, Granted):
                self.effects.open_door(self.setup, decision.door, decision.source)
            elif isinstance(decision, OpenedInKernel):
                self.effects.opened_in_kernel(self.setup, decision.door, decision.source)
            elif isinstance(decision, SyncKernel):
                self._read_kernel()
                self._apply(self.setup.gate.release())
            elif isinstance(decision, VerifySpa):
                self._verify_spa(decision)

    def _verify_spa(self, request: VerifySpa) -> None:
        service = self.setup.spa_service_for(request.packet)
        if service is None:
            return
        grant = service.handle(request.packet, self._wall_clock())  # recorded on disk first
        if grant is not None:
            self.effects.apply_grant(self.setup, grant)


def serve(config: Config, interfaces: tuple[str, ...] = ()) -> None:
    """Run the daemon until SIGTERM; every resource is closed on the way out, in reverse."""
    with contextlib.ExitStack() as stack:
        stack.callback(claim_namespace().close)
        loop = stack.enter_context(contextlib.closing(Loop()))
        nft = stack.enter_context(contextlib.closing(Nftables()))
        nft.refuse_foreign_table()  # before anything that could touch another program's table
        try:  # from here a start that fails leaves the protection; Daemon.run then does
            addresses = stack.enter_context(contextlib.closing(LocalAddresses()))
            stores = stack.enter_context(contextlib.closing(ReplayStores()))
            setup = prepare(config, interfaces or config.options.interfaces, stores, time.time())
            stack.callback(setup.close)  # the daemon closes it, or a reload replaced it
            nflog = NflogListener(config.options.nflog_group)
        except BaseException:
            leave_dormant(nft, config)
            raise
        resources = Resources(loop, nft, addresses, Effects(loop, nft, CommandRunner(loop)),
                              stores, int.from_bytes(os.urandom(4), "big"))
        Daemon(resources, setup, nflog, interfaces).run()

