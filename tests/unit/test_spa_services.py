"""daemon/spa.py and daemon/fwknop.py: the SPA services the daemon feeds, with real replay stores.

knockgate's packets are sealed here; fwknop's come from the real client (tests/vectors/fwknop).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import resource
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from knockgate.compat.fwknop.access import parse_access_conf
from knockgate.compat.fwknop.wire import MsgType, encode
from knockgate.config.schema import FwknopConfig, SpaConfig
from knockgate.core.spa import SpaKey, SpaRequest, seal_at
from knockgate.core.spa_policy import SpaGrant
from knockgate.daemon.fwknop import FwknopService
from knockgate.daemon.setup import ReplayStores, reopens_its_file
from knockgate.daemon.spa import ReplayGuardedService, SpaService
from knockgate.errors import KnockgateError
from knockgate.io.store import FILE_NAME, FWKNOP_FILE_NAME, SqliteReplayStore, UnavailableStore
from knockgate.model import Packet, PortSpec, SpaKeyConfig
from tests.unit.test_replay import DictStore

SERVER = ip_address("10.201.0.1")
CLIENT = ip_address("10.201.0.2")  # the address the fwknop vectors ask to open
OTHER_CLIENT = ip_address("10.201.0.3")
SSH = PortSpec("tcp", 22)

# --- knockgate's SPA ------------------------------------------------------------------------

NOW = 1_700_000_000
MAX_AGE = 30.0
ALICE = SpaKey("alice", bytes(range(32)))
MALLORY = SpaKey("mallory", bytes(range(32, 64)))  # a valid key the server does not know
SPA = SpaConfig(port=62201, max_age=MAX_AGE, keys=(
    SpaKeyConfig(key=ALICE, open=(SSH,), open_for=30.0, actions={}, sources=(),
                 allow_nat=False, line=1),))


def spa_packet(nonce: int = 1, *, ports: tuple[tuple[str, int], ...] = (("tcp", 22),),
               key: SpaKey = ALICE, source: IPv4Address = CLIENT, sealed_at: float = NOW
               ) -> Packet:
    sealed = seal_at(key=key, now=sealed_at, nonce=nonce.to_bytes(12, "big"),
                     request=SpaRequest(None, ports))
    return Packet(source, SERVER, "udp", 40000, SPA.port, 0, sealed)


# --- fwknop ---------------------------------------------------------------------------------

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "fwknop"
FWKNOP_NOW = 1795424233  # when the client built every vector
KEY_B64 = "9tqdu18hZRfu2miX+kwyzWjdF2F0sFcEUZk3zGg4faM="
HMAC_B64 = ("kGCC26sPXa/dnueGlkJB1wniaRAckOmcg6bxdQ+KaxIX7P3wiLeO3npu/HTCVHBn+WJtzwUx/EXGbB0r+"
            "cZeLA==")
STANZA = f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\nHMAC_KEY_BASE64 {HMAC_B64}\n"


def fwknop_config(text: str = STANZA, max_age: float = 120.0) -> FwknopConfig:
    return FwknopConfig(access=parse_access_conf(text), port=62201, max_age=max_age)


def fwknop_packet(name: str, source: IPv4Address = CLIENT) -> Packet:
    payload = json.loads((VECTORS / f"{name}.json").read_text())["payload"].encode()
    return Packet(source, SERVER, "udp", 40000, 62201, 0, payload)


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteReplayStore]:
    with SqliteReplayStore(tmp_path / "state") as opened:
        yield opened


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="knockgate")
    return caplog


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def granted_once(service: ReplayGuardedService, packet: Packet, now: float) -> SpaGrant:
    grant = service.handle(packet, now)
    assert grant is not None
    return grant


# --- knockgate's SPA: grant, replay, stale, unknown key --------------------------------------


def test_spa_grants_what_the_key_may_open(store: SqliteReplayStore, logs) -> None:
    service = SpaService(SPA, store, NOW)
    assert granted_once(service, spa_packet(), NOW) == SpaGrant(
        "alice", CLIENT, CLIENT, (SSH,), 30.0, None, ())
    assert service.config.port == 62201
    assert lines(logs, logging.WARNING) == lines(logs, logging.ERROR) == []


def test_spa_replay_is_refused_from_any_source(store: SqliteReplayStore, logs) -> None:
    service = SpaService(SPA, store, NOW)
    granted_once(service, spa_packet(), NOW)
    assert service.handle(spa_packet(), NOW + 1) is None
    assert service.handle(spa_packet(source=OTHER_CLIENT), NOW + 2) is None
    assert lines(logs, logging.WARNING) == [
        f"spa: key alice, packet from {CLIENT} refused: replay",
        f"spa: key alice, packet from {OTHER_CLIENT} refused: replay"]
    assert service.rejected == 0  # replays authenticate: warnings, not garbage


def test_spa_replay_is_refused_after_a_restart(tmp_path: Path, logs) -> None:
    with SqliteReplayStore(tmp_path) as first:
        granted_once(SpaService(SPA, first, NOW), spa_packet(), NOW)
    with SqliteReplayStore(tmp_path) as second:
        assert SpaService(SPA, second, NOW + 5).handle(spa_packet(), NOW + 5) is None
    assert lines(logs, logging.WARNING) == [f"spa: key alice, packet from {CLIENT} refused: replay"]


def test_spa_stale_packet_is_dropped_quietly(store: SqliteReplayStore, logs) -> None:
    service = SpaService(SPA, store, NOW)
    assert service.handle(spa_packet(sealed_at=NOW - MAX_AGE - 1), NOW) is None
    assert lines(logs, logging.DEBUG) == [f"spa: dropped a packet from {CLIENT}: stale"]
    assert lines(logs, logging.WARNING) == []
    assert service.rejected == 1
    assert store.load(0) == []


def test_spa_unknown_key_is_dropped_quietly(store: SqliteReplayStore, logs) -> None:
    service = SpaService(SPA, store, NOW)
    assert service.handle(spa_packet(key=MALLORY), NOW) is None
    assert lines(logs, logging.DEBUG) == [f"spa: dropped a packet from {CLIENT}: unknown key"]
    assert lines(logs, logging.WARNING) == []
    assert service.rejected == 1


def test_spa_refused_ports_use_up_the_packet(store: SqliteReplayStore, logs) -> None:
    service = SpaService(SPA, store, NOW)
    assert service.handle(spa_packet(ports=(("tcp", 22), ("tcp", 80))), NOW) is None
    assert service.handle(spa_packet(ports=(("tcp", 22), ("tcp", 80))), NOW) is None
    assert lines(logs, logging.WARNING) == [
        f"spa: key alice, packet from {CLIENT} refused: asks for tcp:80, which the key may not "
        "open",
        f"spa: key alice, packet from {CLIENT} refused: replay"]


def test_spa_garbage_is_counted_but_its_debug_lines_are_rate_limited(
        store: SqliteReplayStore, logs) -> None:
    service = SpaService(SPA, store, NOW)
    for _ in range(200):
        assert service.handle(Packet(CLIENT, SERVER, "udp", 1, SPA.port, 0, b"\x01junk"),
                              NOW) is None
    assert service.rejected == 200
    assert 0 < len(lines(logs, logging.DEBUG)) <= 50


def test_spa_prune_forgets_what_no_copy_could_replay(store: SqliteReplayStore) -> None:
    service = SpaService(SPA, store, NOW)
    granted_once(service, spa_packet(), NOW)
    service.prune(NOW + 60)
    assert len(store.load(0)) == 1  # still inside max_age + margin
    service.prune(NOW + MAX_AGE + 61)
    assert store.load(0) == []


# --- fwknop: packets from the real client ---------------------------------------------------


def test_fwknop_grants_the_vector_request(store: SqliteReplayStore, logs) -> None:
    service = FwknopService(fwknop_config(), store, FWKNOP_NOW)
    assert granted_once(service, fwknop_packet("access_sha256"), FWKNOP_NOW) == SpaGrant(
        "fwknop stanza 1 (user kgtest)", CLIENT, CLIENT, (SSH,), 30, None, ())
    assert service.config.port == 62201
    assert lines(logs, logging.WARNING) == lines(logs, logging.ERROR) == []


def test_fwknop_source_ip_vector_opens_for_the_sender(store: SqliteReplayStore) -> None:
    service = FwknopService(fwknop_config(), store, FWKNOP_NOW)
    grant = granted_once(service, fwknop_packet("source_ip", OTHER_CLIENT), FWKNOP_NOW)
    assert (grant.source, grant.target) == (OTHER_CLIENT, OTHER_CLIENT)


def test_fwknop_command_vector_runs_literally(store: SqliteReplayStore) -> None:
    config = fwknop_config(STANZA + "ENABLE_CMD_EXEC Y\nCMD_EXEC_USER nobody\n")
    service = FwknopService(config, store, FWKNOP_NOW)
    grant = granted_once(service, fwknop_packet("command"), FWKNOP_NOW)
    assert (grant.ports, grant.command, grant.literal_command, grant.user) == (
        (), ("echo", "hello", "world"), True, "nobody")


def test_fwknop_replay_is_refused_before_any_crypto(store: SqliteReplayStore, logs) -> None:
    service = FwknopService(fwknop_config(), store, FWKNOP_NOW)
    granted_once(service, fwknop_packet("access_sha256"), FWKNOP_NOW)
    assert service.handle(fwknop_packet("access_sha256"), FWKNOP_NOW + 1) is None
    assert service.handle(fwknop_packet("access_sha256", OTHER_CLIENT), FWKNOP_NOW + 2) is None
    assert lines(logs, logging.WARNING) == [
        f"fwknop: replayed packet from {CLIENT} refused",
        f"fwknop: replayed packet from {OTHER_CLIENT} refused"]
    assert lines(logs, logging.DEBUG) == []  # refused on the digest: no stanza was tried


def test_fwknop_replay_is_refused_after_a_restart(tmp_path: Path, logs) -> None:
    with SqliteReplayStore(tmp_path, FWKNOP_FILE_NAME) as first:
        granted_once(FwknopService(fwknop_config(), first, FWKNOP_NOW),
                     fwknop_packet("access_sha256"), FWKNOP_NOW)
    with SqliteReplayStore(tmp_path, FWKNOP_FILE_NAME) as second:
        service = FwknopService(fwknop_config(), second, FWKNOP_NOW + 5)
        assert service.handle(fwknop_packet("access_sha256"), FWKNOP_NOW + 5) is None
    assert lines(logs, logging.WARNING) == [f"fwknop: replayed packet from {CLIENT} refused"]


def test_fwknop_stale_packet_is_dropped_quietly(store: SqliteReplayStore, logs) -> None:
    service = FwknopService(fwknop_config(max_age=30), store, FWKNOP_NOW)
    assert service.handle(fwknop_packet("access_sha256"), FWKNOP_NOW + 31) is None
    assert lines(logs, logging.DEBUG) == [
        f"fwknop: dropped a packet from {CLIENT}: stanza 1: stale or future timestamp"]
    assert lines(logs, logging.WARNING) == []
    assert store.load(0) == []


def test_fwknop_unknown_key_is_dropped_quietly(store: SqliteReplayStore, logs) -> None:
    other_key = base64.b64encode(b"k" * 32).decode()
    config = fwknop_config(f"SOURCE ANY\nKEY_BASE64 {other_key}\n"
                           f"HMAC_KEY_BASE64 {base64.b64encode(b'h' * 64).decode()}\n")
    service = FwknopService(config, store, FWKNOP_NOW)
    assert service.handle(fwknop_packet("access_sha256"), FWKNOP_NOW) is None
    (line,) = lines(logs, logging.DEBUG)
    assert line.startswith(f"fwknop: dropped a packet from {CLIENT}: stanza 1: ")
    assert lines(logs, logging.WARNING) == []
    assert service.rejected == 1


def test_fwknop_refused_after_admission_names_the_stanza(store: SqliteReplayStore,
                                                          logs) -> None:
    unsplittable = encode(FWKNOP_NOW, "1234567890123456", b"saltsalt", "kgtest", "10.201.0.2",
                          "echo 'unterminated", base64.b64decode(KEY_B64),
                          base64.b64decode(HMAC_B64), msg_type=MsgType.COMMAND)
    service = FwknopService(fwknop_config(STANZA + "ENABLE_CMD_EXEC Y\n"), store, FWKNOP_NOW)
    packet = Packet(CLIENT, SERVER, "udp", 40000, 62201, 0, unsplittable)
    assert service.handle(packet, FWKNOP_NOW) is None
    assert lines(logs, logging.WARNING) == [
        f"fwknop: stanza 1, packet from {CLIENT} refused: command does not split into "
        "arguments: No closing quotation"]


# --- a replay store whose writes fail: nothing is granted twice -----------------------------


class FailingStore(DictStore):
    """test_replay's store, whose writes (prune too) fail while ``broken`` is set."""

    def prune(self, older_than: float) -> int:
        if self.broken:
            raise KnockgateError("disk full")
        return super().prune(older_than)


@contextlib.contextmanager
def files_cannot_grow() -> Iterator[None]:
    """Every write that would grow a file fails (EFBIG), as on a full disk. A read-only
    directory would not do: the store keeps its files open, and root writes anyway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@dataclass
class Format:
    name: str
    who: str  # what the service's warnings name after authenticating
    service: Callable[[object, float], ReplayGuardedService]
    first: Packet
    second: Packet
    now: float


FORMATS = [
    Format("spa", "key alice", lambda store, now: SpaService(SPA, store, now),
           spa_packet(1), spa_packet(2), NOW),
    Format("fwknop", "stanza 1",
           lambda store, now: FwknopService(fwknop_config(), store, now),
           fwknop_packet("access_sha256"), fwknop_packet("client_timeout"), FWKNOP_NOW),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.name)
def test_a_failing_store_refuses_everything_until_it_works(fmt: Format, logs) -> None:
    store = FailingStore()
    service = fmt.service(store, fmt.now)
    store.broken = True
    assert service.handle(fmt.first, fmt.now) is None  # not recorded: not granted
    assert lines(logs, logging.ERROR) == [
        f"{fmt.name}: {fmt.who}, packet from {CLIENT} refused, the replay store failed: "
        "disk full"]
    service.prune(fmt.now + 3)
    assert lines(logs, logging.ERROR)[-1] == (
        f"{fmt.name}: pruning the replay store failed: disk full")

    store.broken = False
    assert service.handle(fmt.first, fmt.now + 4) is None  # used up when it was refused
    assert service.handle(fmt.second, fmt.now + 5) is not None
    assert len(store.rows) == 1


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.name)
def test_a_full_disk_under_a_real_store_grants_nothing_twice(fmt: Format, tmp_path: Path,
                                                            logs) -> None:
    with SqliteReplayStore(tmp_path) as store:
        service = fmt.service(store, fmt.now)
        with files_cannot_grow():
            assert service.handle(fmt.first, fmt.now) is None
            assert service.handle(fmt.first, fmt.now + 1) is None
        errors = lines(logs, logging.ERROR)
        assert len(errors) == 1
        assert errors[0].startswith(f"{fmt.name}: {fmt.who}, packet from {CLIENT} refused, "
                                    "the replay store failed: cannot record an SPA nonce: ")
        assert service.handle(fmt.second, fmt.now + 5) is not None
    with SqliteReplayStore(tmp_path) as reopened:  # a restart: the granted one stays used
        restarted = fmt.service(reopened, fmt.now + 6)
        assert restarted.handle(fmt.second, fmt.now + 6) is None


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.name)
def test_a_reload_carries_entries_to_a_new_store(fmt: Format, tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path / "a") as old_store, \
            SqliteReplayStore(tmp_path / "b") as new_store:
        old = fmt.service(old_store, fmt.now)
        assert old.handle(fmt.first, fmt.now) is not None
        reloaded = type(old)(old.config, new_store, fmt.now + 1, old)
        reloaded.sync(fmt.now + 1)
        assert reloaded.handle(fmt.first, fmt.now + 1) is None
        assert len(new_store.load(0)) == 1
        assert fmt.service(new_store, fmt.now + 2).handle(fmt.first, fmt.now + 2) is None


def test_a_store_that_already_held_an_admitted_packet_is_refused(logs) -> None:
    store = FailingStore()
    service = SpaService(SPA, store, NOW)
    store.rows[ALICE.key_id, (1).to_bytes(12, "big")] = NOW  # written behind the window's back
    assert service.handle(spa_packet(1), NOW) is None
    assert lines(logs, logging.WARNING) == [
        f"spa: key alice, packet from {CLIENT} refused: replay (the store knew it, memory "
        "did not)"]


# --- the daemon's stores across reloads (daemon/setup.py) ------------------------------------


def test_stores_are_kept_across_reloads_one_connection_per_file(tmp_path: Path) -> None:
    stores = ReplayStores()
    try:
        first = stores.get(str(tmp_path), FILE_NAME, starting=True)
        assert stores.get(str(tmp_path) + "/", FILE_NAME, starting=False) is first
        assert isinstance(first, SqliteReplayStore)
        (tmp_path / FILE_NAME).unlink()
        # The window writes a new file itself; its store takes the old one's place.
        rewritten = first.reopened()
        assert stores.get(str(tmp_path), FILE_NAME, starting=False, in_use=rewritten) \
            is rewritten
    finally:
        stores.close()


def test_an_unopenable_store_is_unavailable_at_start_and_an_error_on_reload(
        tmp_path: Path, logs) -> None:
    (tmp_path / FILE_NAME).mkdir()  # not a file: SQLite cannot open it
    stores = ReplayStores()
    store = stores.get(str(tmp_path), FILE_NAME, starting=True)
    assert isinstance(store, UnavailableStore)
    assert stores.get(str(tmp_path), FILE_NAME, starting=True) is not store  # tried again
    assert lines(logs, logging.ERROR)[0].endswith(
        "SPA packets are refused until a reload (SIGHUP) can open it")
    with pytest.raises(KnockgateError, match="cannot open the replay store"):
        stores.get(str(tmp_path), FILE_NAME, starting=False)
    service = SpaService(SPA, store, NOW)
    assert service.handle(spa_packet(3), NOW) is None  # fail closed
    (tmp_path / FILE_NAME).rmdir()
    with SqliteReplayStore(tmp_path) as real:
        real.remember(ALICE.key_id, (1).to_bytes(12, "big"), NOW)
    reopened = stores.get(str(tmp_path), FILE_NAME, starting=False)
    try:
        # The file's own history counts, and so does every packet the window without a file
        # refused: its use could not be recorded, but a replay of it must not open later.
        assert reopens_its_file(service, reopened)
        fresh = SpaService(SPA, reopened, NOW + 1, service, reopens_its_file(service, reopened))
        assert fresh.handle(spa_packet(1), NOW + 1) is None  # used before the start
        assert fresh.handle(spa_packet(3), NOW + 1) is None  # refused while unavailable
        assert fresh.handle(spa_packet(2), NOW + 1) is not None
    finally:
        stores.close()


def test_a_deleted_file_is_rewritten_and_logged(tmp_path: Path, logs) -> None:
    store = SqliteReplayStore(tmp_path)
    service = SpaService(SPA, store, NOW)
    granted_once(service, spa_packet(1), NOW)
    (tmp_path / FILE_NAME).unlink()
    service.prune(NOW + 1)  # the periodic prune notices it too, without any packet
    assert lines(logs, logging.ERROR) == [
        "spa: the replay store file was deleted, replaced or corrupt; wrote a new one from memory "
        "(1 entries)"]
    service.window.store.close()  # type: ignore[attr-defined]
    with SqliteReplayStore(tmp_path) as reopened:
        assert SpaService(SPA, reopened, NOW + 2).handle(spa_packet(1), NOW + 2) is None
