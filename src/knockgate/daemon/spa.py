"""SPA on the daemon's side: verify, admit once, authorize. Effects stay with the daemon.

Every rejection of an unauthenticated packet is logged at debug level only (and rate-limited):
to the outside, and to a log reader during a flood, all garbage looks the same. Rejections of
authenticated packets (replays, refused ports) are warnings: they name a real key.
"""

from __future__ import annotations

import logging

from knockgate.config.schema import SpaConfig
from knockgate.core.ratelimit import LogBudget
from knockgate.core.replay import ReplayWindow
from knockgate.core.spa import make_keyring, open_at
from knockgate.core.spa_policy import SpaGrant, authorize
from knockgate.errors import InvalidMessage, KnockgateError
from knockgate.io.store import SqliteReplayStore
from knockgate.model import Packet

log = logging.getLogger("knockgate.spa")


class SpaService:
    def __init__(self, config: SpaConfig, store: SqliteReplayStore, now: float) -> None:
        self.config = config
        self.store = store
        self._keyring = make_keyring(entry.key for entry in config.keys)
        self._policies = config.by_name()
        self._window = ReplayWindow(store, now=now, max_age=config.max_age)
        self._debug_budget = LogBudget(rate=20, burst=50)
        self.rejected = 0

    def handle(self, packet: Packet, now: float) -> SpaGrant | None:
        """The grant ``packet`` earns at wall-clock time ``now``, or None (already logged)."""
        try:
            verified = open_at(unverified_packet=packet.payload, now=now,
                               max_age=self.config.max_age, keyring=self._keyring)
        except InvalidMessage as exc:
            self.rejected += 1
            if self._debug_budget.allow(now):
                log.debug("spa: dropped a packet from %s: %s", packet.src, exc.reason)
            return None
        try:
            self._window.admit(verified, now)
            return authorize(verified, packet.src, self._policies[verified.key_name])
        except InvalidMessage as exc:
            log.warning("spa: key %s, packet from %s refused: %s", verified.key_name,
                        packet.src, exc.reason)
        except KnockgateError as exc:
            log.error("spa: key %s, packet from %s refused, the replay store failed: %s",
                      verified.key_name, packet.src, exc)
        return None

    def save(self) -> None:
        """Persist what ``handle`` admitted: the daemon calls it right after acting."""
        save_admitted(self._window, "spa")

    def prune(self, now: float) -> None:
        try:
            self._window.prune(now)
        except KnockgateError as exc:
            log.error("spa: pruning the replay store failed: %s", exc)


def save_admitted(window: ReplayWindow, what: str) -> None:
    """``window.save()`` with its outcome logged; see core/replay.py for the order."""
    try:
        if window.save():
            log.warning("%s: the replay store already held a packet just admitted", what)
    except KnockgateError as exc:
        log.error("%s: the replay store failed, packets are refused until it works: %s",
                  what, exc)
