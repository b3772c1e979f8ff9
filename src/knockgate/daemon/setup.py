"""What one loaded configuration needs at run time, built whole before it replaces the last one
(a reload that fails half-way leaves the running setup untouched).

Modules are imported when a configuration needs them: a daemon with sequence doors only never
loads libpcap, SQLite or the SPA crypto.
"""

from __future__ import annotations

import logging
import os.path
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from knockgate.config.checks import check_kernel_memory, host_memory_bytes
from knockgate.config.schema import Config
from knockgate.core.capture_filter import capture_filter, datagram_length_clause
from knockgate.core.gate import Gate
from knockgate.core.nft.first_stage import first_stage_summary
from knockgate.core.nft.grants import HostChain, closed_port_answer
from knockgate.core.nft.kernel_doors import KernelSettings
from knockgate.core.nft.memory import table_memory
from knockgate.core.nft.table import TablePlan, render_dormant, render_table
from knockgate.io.netlink import check_interfaces
from knockgate.model import Packet

if TYPE_CHECKING:
    from knockgate.core.replay import ReplayStore
    from knockgate.daemon.fwknop import FwknopService
    from knockgate.daemon.spa import ReplayGuardedService, SpaService
    from knockgate.io.capture import Capture
    from knockgate.io.nft import Nftables
    from knockgate.io.store import SqliteReplayStore, UnavailableStore

log = logging.getLogger("knockgate")


class ReplayStores:
    """Replay stores, opened once per file and kept across reloads. One connection per file
    (it locks the file): a store the window replaced itself (its file was deleted, replaced
    or corrupt) takes the old one's place; a file that could not be opened is tried again."""

    def __init__(self) -> None:
        self._open: dict[str, SqliteReplayStore | UnavailableStore] = {}

    def get(self, state_dir: str, file_name: str, *, starting: bool,
            in_use: ReplayStore | None = None) -> SqliteReplayStore | UnavailableStore:
        """The store of ``state_dir``/``file_name``. A file that cannot be opened raises, but
        when ``starting`` it gives an UnavailableStore: the daemon serves its doors and
        refuses SPA packets until a reload opens the file (a reload keeps the old store).
        ``in_use``: the running service's store."""
        from knockgate.errors import ConfigError, KnockgateError
        from knockgate.io.store import SqliteReplayStore, UnavailableStore

        if isinstance(in_use, SqliteReplayStore):
            self._open[os.path.normpath(in_use.path)] = in_use
        # os.path, not pathlib: pathlib (with urllib.parse) held ~0.7 MB of the daemon.
        path = os.path.normpath(os.path.join(state_dir, file_name))
        known = self._open.get(path)
        if known is not None and not isinstance(known, UnavailableStore):
            return known  # if its file went away, the window writes a new one (core/replay.py)
        store: SqliteReplayStore | UnavailableStore
        try:
            opened = SqliteReplayStore(state_dir, file_name)
        except ConfigError:
            raise
        except KnockgateError as exc:
            if not starting:
                raise
            log.error("%s; SPA packets are refused until a reload (SIGHUP) can open it", exc)
            store = UnavailableStore(path, exc)
        else:
            if opened.set_aside is not None:
                log.error("the replay store %s was corrupt: set aside as %s; a new one "
                          "refuses packets it cannot vouch for", path, opened.set_aside)
            store = opened
        self._open[path] = store
        return store

    def close(self) -> None:
        for store in self._open.values():
            store.close()


class Setup(NamedTuple):
    config: Config
    gate: Gate
    capture: Capture | None
    spa: SpaService | None
    fwknop: FwknopService | None
    spa_clauses: tuple[str, ...] = ()  # the capture filter's SPA part
    spa_shape: tuple[int, int] = (0, 0)  # our packets' length and first byte

    def spa_service_for(self, packet: Packet) -> SpaService | FwknopService | None:
        """Our SPA packets have one length and start with the version byte; fwknop's are
        base64 text of at least 140 bytes, so one port can serve both."""
        payload = packet.payload
        if (self.spa is not None and packet.dport == self.spa.config.port
                and (len(payload), payload[0] if payload else -1) == self.spa_shape):
            return self.spa
        if self.fwknop is not None and packet.dport == self.fwknop.config.port:
            return self.fwknop
        return None

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()


def prepare(config: Config, interfaces: tuple[str, ...], stores: ReplayStores, now: float,
            previous: Setup | None = None) -> Setup:
    """Everything ``config`` needs at run time; raises KnockgateError, leaving nothing open.

    On a reload ``previous`` is the running setup: its SPA services' replay entries carry over
    and are written to the new stores before this returns (or it raises).
    """
    spa = fwknop = None
    spa_clauses = []
    spa_shape = (0, 0)
    if config.spa is not None:
        from knockgate.core import spa as spa_format
        from knockgate.core.capture_filter import fixed_datagram_clause
        from knockgate.daemon.spa import SpaService
        from knockgate.io.store import FILE_NAME

        old_spa = None if previous is None else previous.spa
        store = _store(stores, config, FILE_NAME, old_spa)
        spa = SpaService(config.spa, store, now, old_spa, reopens_its_file(old_spa, store))
        _sync(spa, now, starting=old_spa is None)
        spa_shape = (spa_format.PACKET_SIZE, spa_format.VERSION)
        spa_clauses.append(fixed_datagram_clause(
            config.spa.port, spa_format.PACKET_SIZE, spa_format.VERSION,
            [entry.key.key_id for entry in config.spa.keys]))
    if config.fwknop is not None:
        from knockgate.compat.fwknop import wire
        from knockgate.daemon.fwknop import FwknopService
        from knockgate.io.store import FWKNOP_FILE_NAME

        old_fwknop = None if previous is None else previous.fwknop
        store = _store(stores, config, FWKNOP_FILE_NAME, old_fwknop)
        fwknop = FwknopService(config.fwknop, store, now, old_fwknop,
                               reopens_its_file(old_fwknop, store))
        _sync(fwknop, now, starting=old_fwknop is None)
        spa_clauses.append(datagram_length_clause(config.fwknop.port, wire.MIN_PAYLOAD,
                                                  wire.MAX_PAYLOAD))
    spa_ports = frozenset(c.port for c in (config.spa, config.fwknop) if c is not None)
    gate = Gate(config.doors, config.options.max_pending, spa_ports)
    return Setup(config, gate, open_capture(gate, spa_clauses, interfaces), spa, fwknop,
                 tuple(spa_clauses), spa_shape)




def _store(stores: ReplayStores, config: Config, file_name: str,
           previous: ReplayGuardedService[Any] | None) -> SqliteReplayStore | UnavailableStore:
    return stores.get(config.options.state_dir, file_name, starting=previous is None,
                      in_use=None if previous is None else previous.window.store)


def reopens_its_file(previous: ReplayGuardedService[Any] | None,
                    store: SqliteReplayStore | UnavailableStore) -> bool:
    """Whether ``previous`` could not open its store's file and ``store`` now opens that very
    file: the file's own vouch point then holds, and ``previous``'s entries (every packet it
    refused for want of a store) cover the time since (core/replay.py, ``store_history``)."""
    from knockgate.io.store import UnavailableStore

    if previous is None:
        return False
    old_store = previous.window.store
    return (isinstance(old_store, UnavailableStore) and not isinstance(store, UnavailableStore)
            and old_store.path == os.path.normpath(store.path))


def _sync(service: ReplayGuardedService[Any], now: float, *, starting: bool) -> None:
    """A reload fails if its store cannot take the carried entries (the old setup serves
    on); at start the daemon serves its doors and the service refuses packets until then."""
    from knockgate.errors import KnockgateError

    try:
        service.sync(now)
    except KnockgateError as exc:
        if not starting:
            raise
        log.error("%s: the replay store failed, packets are refused until it works: %s",
                  service.name, exc)


def table_plan(config: Config, interfaces: tuple[str, ...], overflow_seed: int,
               host_chains: Iterable[HostChain]) -> TablePlan:
    """The table ``config`` asks for on this host, whose own input chains are ``host_chains``
    (they decide how closed ports answer)."""
    settings = KernelSettings(config.options.nflog_group,
                              min(config.options.max_pending, 1 << 20), overflow_seed, interfaces)
    return TablePlan(config.doors, tuple(config.hidden_ports), tuple(config.grant_ports),
                     settings, closed_port_answer(config.options.closed_ports, host_chains))


def install_table(nft: Nftables, config: Config, interfaces: tuple[str, ...],
                  overflow_seed: int) -> TablePlan:
    """The whole table ``config`` asks for, in one transaction (doors that still exist keep
    their grants); then the table it leaves when it stops is saved for `knockgate up`."""
    plan = table_plan(config, interfaces, overflow_seed, nft.input_chains())
    text = render_table(plan, nft.existing_sets())
    # Refused over budget as `knockgate check` refuses it, measured on the text applied.
    check_kernel_memory(config, host_memory_bytes(), table_memory(text.splitlines()))
    nft.apply(text)
    _save_dormant(config, plan)
    return plan


def _save_dormant(config: Config, plan: TablePlan) -> None:
    """A failed save is no reason to stop serving: only the fallback at boot is lost."""
    from knockgate.io.nft import save_table

    try:
        save_table(config.options.state_dir, render_dormant(plan, ()))
    except OSError as exc:
        log.warning("could not save the table in state_dir %s for `knockgate up` to fall "
                    "back on if the configuration breaks: %s", config.options.state_dir, exc)


def install_saved_table(nft: Nftables, state_dir: str) -> str:
    """`knockgate up` with a broken configuration: install the table the daemon last saved in
    ``state_dir`` (if knockgate may trust it: config/files.py's rule) rather than leave every
    protected port open. Returns what happened, for the admin."""
    from knockgate.config.files import check_trusted
    from knockgate.errors import KnockgateError
    from knockgate.io.nft import read_saved_table

    try:
        path, text, status, directory = read_saved_table(state_dir)
        check_trusted(f"state_dir {state_dir}", state_dir, directory)
        check_trusted("the saved table", path, status, secret=True)
        nft.apply(text)
    except OSError as exc:
        return (f"knockgate up: NOTHING INSTALLED: no table saved by the daemon to fall back "
                f"on ({exc.strerror}: {exc.filename}); protected ports are open")
    except KnockgateError as exc:
        return f"knockgate up: NOTHING INSTALLED: the saved table was refused: {exc}"
    saved = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.st_mtime))
    return (f"knockgate up: the configuration is broken (below): installed instead the table "
            f"the daemon saved in {path} at {saved}, without knock rules; fix the "
            "configuration, then start the daemon")


def install_dormant(nft: Nftables, config: Config) -> None:
    """The table while no daemon runs (core/nft/table.py's render_dormant): what the daemon
    leaves when it stops or fails to start, and what `knockgate up` installs."""
    plan = table_plan(config, (), 0, nft.input_chains())  # no knock rule: no interface, no seed
    nft.apply(render_dormant(plan, nft.existing_sets()))


def leave_dormant(nft: Nftables, config: Config) -> None:
    """Stopping or failing to start: the protection stays in the kernel, without knock rules
    (core/nft/table.py's render_dormant); `knockgate down` is what removes it."""
    from knockgate.errors import KnockgateError

    try:
        install_dormant(nft, config)
    except KnockgateError as exc:
        log.error("could not leave the protection in place: %s", exc)
        return
    log.info("left table inet knockgate in place without knock rules: protected ports stay "
             "closed and live grants run out on their kernel timers (`knockgate down` "
             "removes it)")


def open_capture(gate: Gate, spa_clauses: list[str], interfaces: tuple[str, ...]
                 ) -> Capture | None:
    """The capture socket, or None when the kernel handles every knock and there is no SPA."""
    check_interfaces(interfaces)  # the kernel's rules are limited to them as well
    expression = capture_filter(gate.capture_clauses(), spa_clauses)
    if expression is None:
        return None
    from knockgate.io.capture import Capture

    return Capture(expression, interfaces)


def log_setup(config: Config, verb: str) -> None:
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
    for warning in config.warnings:  # a closed fwknop stanza's line says "error:"
        log.log(logging.ERROR if ": error: " in warning else logging.WARNING, "%s", warning)


def log_state(setup: Setup) -> None:
    """SIGUSR1: how full the bounded tables are, for an admin watching a flood."""
    gate = setup.gate
    for machine in [*gate.captured.doors.values(), *gate.staged.doors.values()]:
        log.info("state: door %s: %d sources mid-sequence (cap %d), %d evicted so far",
                 machine.door.name, len(machine), machine.max_pending, machine.evicted)
    for machine in gate.staged.doors.values():
        log.info("state: door %s keeps its first stage in the kernel: nft list table inet "
                 "knockgate shows %s-first_v4 and _v6", machine.door.name,
                 machine.door.name)
    for door in setup.config.doors:
        if door.engine == "kernel":
            log.info("state: door %s runs in the kernel: nft list table inet knockgate "
                     "shows its stage sets", door.name)
    if setup.spa is not None:
        log.info("state: spa: %d packets rejected so far", setup.spa.rejected)
