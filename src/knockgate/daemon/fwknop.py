"""fwknop-compatible SPA on the daemon's side: replay digest, stanza choice, the grant.

fwknopd's order: the SHA-256 of the raw payload is looked up first (a replay costs no crypto),
then the stanzas are tried in file order (select_stanza), and the digest is remembered, durably,
before anything is granted.
"""

from __future__ import annotations

import shlex

from knockgate.compat.fwknop.access import FwknopMatch, select_stanza
from knockgate.compat.fwknop.wire import MsgType, replay_key
from knockgate.config.schema import FwknopConfig
from knockgate.core.replay import ReplayStore
from knockgate.core.spa_policy import SpaGrant
from knockgate.daemon.spa import ReplayEntry, ReplayGuardedService
from knockgate.errors import InvalidMessage
from knockgate.model import Packet, PortSpec

_REPLAY_ID = b"fwknop"
# fwknopd's strtoargv() fails once it has added a 29th word (its limit MAX_CMDLINE_ARGS is 30).
MAX_COMMAND_WORDS = 28


class FwknopSpa:
    """fwknop's format (compat/fwknop/): its replay key is the digest of the raw payload."""

    name = "fwknop"

    def __init__(self, config: FwknopConfig) -> None:
        self._config = config

    def replay_key(self, unverified_payload: bytes) -> tuple[bytes, bytes]:
        return _REPLAY_ID, replay_key(unverified_payload)

    def open(self, packet: Packet, now: float) -> FwknopMatch:
        return select_stanza(self._config.access.stanzas, packet.payload, packet.src, now,
                             destination=packet.dst, max_age=self._config.max_age)

    def entry(self, opened: FwknopMatch) -> ReplayEntry:
        return ReplayEntry(_REPLAY_ID, opened.request.replay_digest, opened.request.timestamp)

    def who(self, opened: FwknopMatch) -> str:
        return f"stanza {opened.stanza_number}"

    def grant(self, opened: FwknopMatch, packet: Packet) -> SpaGrant:
        return _grant(opened)


class FwknopService(ReplayGuardedService[FwknopMatch]):
    """fwknop-compatible SPA, as the daemon builds it from ``[fwknop]``."""

    config: FwknopConfig

    def __init__(self, config: FwknopConfig, store: ReplayStore, now: float,
                 previous: FwknopService | None = None, store_history: bool = False) -> None:
        super().__init__(FwknopSpa(config), config, store, now, previous, store_history)


def _grant(match: FwknopMatch) -> SpaGrant:
    stanza, request = match.stanza, match.request
    if stanza.closed_by is not None:
        raise InvalidMessage(f"the stanza is closed: {stanza.closed_by}")
    name = f"fwknop stanza {match.stanza_number} (user {request.username})"
    if request.msg_type is MsgType.COMMAND:
        return SpaGrant(name, match.allow_ip, match.allow_ip, (), match.open_for, None,
                        _command_argv(str(request.access), stanza.cmd_shell),
                        literal_command=True, user=stanza.run_as_user,
                        group=stanza.run_as_group)
    if isinstance(request.access, str):
        raise InvalidMessage("an access request without ports")
    ports = tuple(PortSpec(proto, port) for proto, port in request.access
                  if proto in ("tcp", "udp"))
    if not ports:
        raise InvalidMessage("asks for no TCP or UDP port")
    return SpaGrant(name, match.allow_ip, match.allow_ip, ports, match.open_for, None, ())


def _command_argv(command: str, shell: bool) -> tuple[str, ...]:
    # fwknopd splits a command at whitespace, without quoting, and refuses it when that gives
    # more than MAX_COMMAND_WORDS words; knockgate refuses the same commands, whatever the
    # split it then uses. (The wire format admits printable ASCII only: spaces separate.)
    words = len(command.split())
    if words > MAX_COMMAND_WORDS:
        raise InvalidMessage(f"command has {words} words; fwknopd runs at most "
                             f"{MAX_COMMAND_WORDS}")
    if shell:  # the stanza opted in with KNOCKGATE_CMD_SHELL Y
        return ("/bin/sh", "-c", command)
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise InvalidMessage(f"command does not split into arguments: {exc}") from exc
    if not argv:
        raise InvalidMessage("empty command")
    return argv
