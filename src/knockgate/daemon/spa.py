"""SPA on the daemon's side: verify, admit once, authorize. Effects stay with the daemon.

One service (``ReplayGuardedService``) runs every SPA wire format; a format (``SpaFormat``)
only says how its packets are authenticated, what the replay window records and what an
admitted packet earns. knockgate's own format is here, fwknop's is in daemon/fwknop.py.

Every rejection of an unauthenticated packet is logged at debug level only (and rate-limited):
to the outside, and to a log reader during a flood, all garbage looks the same. Rejections of
authenticated packets (replays, refused ports) are warnings: they name a real key.
"""

from __future__ import annotations

import logging
from typing import Generic, NamedTuple, Protocol, TypeVar

from knockgate.config.schema import SpaConfig
from knockgate.core.ratelimit import LogBudget
from knockgate.core.replay import ReplayStore, ReplayWindow
from knockgate.core.spa import VerifiedRequest, make_keyring, open_at
from knockgate.core.spa_policy import SpaGrant, authorize
from knockgate.errors import InvalidMessage, KnockgateError
from knockgate.model import Packet

Opened = TypeVar("Opened")


class ReplayEntry(NamedTuple):
    """What the replay window admits once: an authenticated (key id, nonce) and its time."""

    key_id: bytes
    nonce: bytes
    timestamp: int


class ServiceConfig(Protocol):
    """The part of a format's configuration the shared service reads."""

    @property
    def port(self) -> int: ...

    @property
    def max_age(self) -> float: ...


class SpaFormat(Protocol[Opened]):
    """What one SPA wire format contributes; ``Opened`` is a packet that authenticated."""

    # Names the logger (knockgate.NAME) and starts every log line ("NAME: ...").
    name: str

    def replay_key(self, unverified_payload: bytes) -> tuple[bytes, bytes] | None:
        """A (key id, nonce) to look up before any crypto, or None to look up only after."""
        ...

    def open(self, packet: Packet, now: float) -> Opened:
        """Authenticate ``packet`` at wall-clock time ``now``; InvalidMessage if it fails."""
        ...

    def entry(self, opened: Opened) -> ReplayEntry:
        ...

    def who(self, opened: Opened) -> str:
        """The key (or stanza) that authenticated the packet, e.g. "key alice"."""
        ...

    def grant(self, opened: Opened, packet: Packet) -> SpaGrant:
        """What an admitted packet earns; InvalidMessage if what it asks is refused."""
        ...


class ReplayGuardedService(Generic[Opened]):
    """Turns the packets of one SPA format into grants, each packet at most once."""

    def __init__(self, spa_format: SpaFormat[Opened], config: ServiceConfig,
                 store: ReplayStore, now: float,
                 previous: ReplayGuardedService[Opened] | None = None,
                 store_history: bool = False) -> None:
        """``previous``: the service this one replaces on a reload; its replay entries and
        what it vouches for carry over (core/replay.py), so no reload reopens a packet;
        ``store_history``: see ReplayWindow."""
        self.config = config
        self.rejected = 0  # unauthenticated packets dropped, for the daemon's state report
        self._format = spa_format
        self.name = spa_format.name  # starts its log lines
        self._log = logging.getLogger(f"knockgate.{spa_format.name}")
        carried = None if previous is None else previous.window
        self.window: ReplayWindow = ReplayWindow(store, now=now, max_age=config.max_age,
                                                 carried=carried, store_history=store_history)
        self._debug_budget = LogBudget(rate=20, burst=50)

    def sync(self, now: float) -> None:
        """Write carried-over entries to the store now; raises KnockgateError if it fails
        (every packet retries it first and is refused while it fails)."""
        self.window.sync(now)

    def handle(self, packet: Packet, now: float) -> SpaGrant | None:
        """The grant ``packet`` earns at wall-clock time ``now``, or None (already logged)."""
        early = self._format.replay_key(packet.payload)
        if early is not None and self.window.seen(*early):
            self._log.warning("%s: replayed packet from %s refused", self.name, packet.src)
            return None
        try:
            opened = self._format.open(packet, now)
        except InvalidMessage as exc:
            self.rejected += 1
            if self._debug_budget.allow(now):
                self._log.debug("%s: dropped a packet from %s: %s", self.name, packet.src,
                                exc.reason)
            return None
        store = self.window.store
        try:
            # Recorded durably before anything is granted (core/replay.py).
            self.window.admit_entry(*self._format.entry(opened), now)
            return self._format.grant(opened, packet)
        except InvalidMessage as exc:
            self._log.warning("%s: %s, packet from %s refused: %s", self.name,
                              self._format.who(opened), packet.src, exc.reason)
        except KnockgateError as exc:
            self._log.error("%s: %s, packet from %s refused, the replay store failed: %s",
                            self.name, self._format.who(opened), packet.src, exc)
        finally:
            self._log_if_rewritten(store)
        return None

    def prune(self, now: float) -> None:
        store = self.window.store
        try:
            self.window.prune(now)
        except KnockgateError as exc:
            self._log.error("%s: pruning the replay store failed: %s", self.name, exc)
        finally:
            self._log_if_rewritten(store)

    def _log_if_rewritten(self, before: ReplayStore) -> None:
        if self.window.store is not before:
            self._log.error("%s: the replay store file was deleted, replaced or corrupt; "
                            "wrote a new one from memory (%d entries)", self.name,
                            len(self.window))


class KnockgateSpa:
    """knockgate's own format (core/spa.py): authenticated first, so a replay is refused, and
    logged with the key it names, only once the packet proves it holds that key."""

    name = "spa"

    def __init__(self, config: SpaConfig) -> None:
        self._max_age = config.max_age
        self._keyring = make_keyring(entry.key for entry in config.keys)
        self._policies = config.by_name()

    def replay_key(self, unverified_payload: bytes) -> None:
        return None

    def open(self, packet: Packet, now: float) -> VerifiedRequest:
        return open_at(unverified_packet=packet.payload, now=now, max_age=self._max_age,
                       keyring=self._keyring)

    def entry(self, opened: VerifiedRequest) -> ReplayEntry:
        return ReplayEntry(opened.key_id, opened.nonce, opened.timestamp)

    def who(self, opened: VerifiedRequest) -> str:
        return f"key {opened.key_name}"

    def grant(self, opened: VerifiedRequest, packet: Packet) -> SpaGrant:
        return authorize(opened, packet.src, self._policies[opened.key_name])


class SpaService(ReplayGuardedService[VerifiedRequest]):
    """knockgate's SPA, as the daemon builds it from ``[spa]``."""

    config: SpaConfig

    def __init__(self, config: SpaConfig, store: ReplayStore, now: float,
                 previous: SpaService | None = None, store_history: bool = False) -> None:
        super().__init__(KnockgateSpa(config), config, store, now, previous, store_history)
