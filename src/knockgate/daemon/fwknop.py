"""fwknop-compatible SPA on the daemon's side: replay digest, stanza choice, the grant.

fwknopd's order: the SHA-256 of the raw payload is looked up first (a replay costs no crypto),
then the stanzas are tried in file order (select_stanza), and the digest is remembered, durably,
before anything is granted.
"""

from __future__ import annotations

import logging
import shlex

from knockgate.compat.fwknop.access import FwknopMatch, select_stanza
from knockgate.compat.fwknop.wire import MsgType, replay_key
from knockgate.config.schema import FwknopConfig
from knockgate.core.ratelimit import LogBudget
from knockgate.core.replay import ReplayWindow
from knockgate.core.spa_policy import SpaGrant
from knockgate.daemon.spa import save_admitted
from knockgate.errors import InvalidMessage, KnockgateError
from knockgate.io.store import SqliteReplayStore
from knockgate.model import Packet, PortSpec

log = logging.getLogger("knockgate.fwknop")
_REPLAY_ID = b"fwknop"


class FwknopService:
    def __init__(self, config: FwknopConfig, store: SqliteReplayStore, now: float) -> None:
        self.config = config
        self.store = store
        self._window = ReplayWindow(store, now=now, max_age=config.max_age)
        self._debug_budget = LogBudget(rate=20, burst=50)

    def handle(self, packet: Packet, now: float) -> SpaGrant | None:
        digest = replay_key(packet.payload)
        if self._window.seen(_REPLAY_ID, digest):
            log.warning("fwknop: replayed packet from %s refused", packet.src)
            return None
        try:
            match = select_stanza(self.config.access.stanzas, packet.payload, packet.src, now,
                                  destination=packet.dst, max_age=self.config.max_age)
        except InvalidMessage as exc:
            if self._debug_budget.allow(now):
                log.debug("fwknop: dropped a packet from %s: %s", packet.src, exc.reason)
            return None
        try:
            self._window.admit_entry(_REPLAY_ID, digest, match.request.timestamp, now)
            return _grant(match)
        except InvalidMessage as exc:
            log.warning("fwknop: stanza %d, packet from %s refused: %s", match.stanza_number,
                        packet.src, exc.reason)
        except KnockgateError as exc:
            log.error("fwknop: packet from %s refused, the replay store failed: %s",
                      packet.src, exc)
        return None

    def save(self) -> None:
        """Persist what ``handle`` admitted: the daemon calls it right after acting."""
        save_admitted(self._window, "fwknop")

    def prune(self, now: float) -> None:
        try:
            self._window.prune(now)
        except KnockgateError as exc:
            log.error("fwknop: pruning the replay store failed: %s", exc)


def _grant(match: FwknopMatch) -> SpaGrant:
    stanza, request = match.stanza, match.request
    name = f"fwknop stanza {match.stanza_number} (user {request.username})"
    if request.msg_type is MsgType.COMMAND:
        return SpaGrant(name, match.allow_ip, match.allow_ip, (), match.open_for, None,
                        _command_argv(str(request.access), stanza.cmd_shell),
                        literal_command=True, user=stanza.cmd_exec_user,
                        group=stanza.cmd_exec_group)
    if isinstance(request.access, str):
        raise InvalidMessage("an access request without ports")
    ports = tuple(PortSpec(proto, port) for proto, port in request.access
                  if proto in ("tcp", "udp"))
    if not ports:
        raise InvalidMessage("asks for no TCP or UDP port")
    return SpaGrant(name, match.allow_ip, match.allow_ip, ports, match.open_for, None, ())


def _command_argv(command: str, shell: bool) -> tuple[str, ...]:
    if shell:  # the stanza opted in with KNOCKGATE_CMD_SHELL Y
        return ("/bin/sh", "-c", command)
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise InvalidMessage(f"command does not split into arguments: {exc}") from exc
    if not argv:
        raise InvalidMessage("empty command")
    return argv
