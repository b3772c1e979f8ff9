"""The daemon's handling of NFLOG events, with a fake listener: no sockets, no kernel."""

import asyncio
from collections import deque
from ipaddress import ip_address

from knockgate.config.load import parse_config
from knockgate.core.engine import Engine
from knockgate.core.nft.first_stage import staged_doors
from knockgate.core.nft.names import SCAN_RESET_PREFIX
from knockgate.daemon.main import Daemon, _Running
from knockgate.io.nflog import MAX_READS, LogEvent

CONFIG = parse_config("""
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
open = ["tcp:22"]
engine = "userspace"
""")


class FakeNflog:
    """Hands out one queued datagram's events per read(), like NflogListener."""

    lost = 0

    def __init__(self, datagrams: list[list[LogEvent]]) -> None:
        self.datagrams = deque(datagrams)

    def read(self) -> list[LogEvent] | None:
        return self.datagrams.popleft() if self.datagrams else None


def reset(n: int) -> LogEvent:
    return LogEvent(SCAN_RESET_PREFIX, ip_address(f"10.202.{n // 250}.{n % 250 + 1}"), b"")


def daemon_with(datagrams: list[list[LogEvent]]) -> tuple[Daemon, list[bytes]]:
    daemon = Daemon(CONFIG)
    staged = Engine(staged_doors(CONFIG.doors))
    forgotten: list[bytes] = []
    staged.forget = lambda source: forgotten.append(source.packed)  # type: ignore[method-assign]
    daemon._running = _Running(CONFIG, Engine([]), staged, None,
                               {d.name: d for d in CONFIG.doors}, None, None)
    daemon._nflog = FakeNflog(datagrams)  # type: ignore[assignment]
    return daemon, forgotten


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_long_burst_is_handled_over_several_turns_and_nothing_is_stranded():
    events = [[reset(n)] for n in range(MAX_READS + 40)]

    async def run() -> tuple[Daemon, list[bytes]]:
        daemon, forgotten = daemon_with(events)
        daemon._on_kernel_events()
        assert len(forgotten) < len(events), "one turn is bounded"
        await turns(3)
        return daemon, forgotten

    daemon, forgotten = asyncio.run(run())
    assert len(forgotten) == len(events)
    assert not daemon._kernel_events


def test_events_read_for_a_scan_check_are_handled_on_the_next_turn():
    async def run() -> tuple[Daemon, list[bytes]]:
        daemon, forgotten = daemon_with([[reset(1)], [reset(2)]])
        assert daemon._reported_scanning(reset(2).source, read_more=True)
        assert forgotten == []
        await turns(2)
        return daemon, forgotten

    daemon, forgotten = asyncio.run(run())
    assert forgotten == [reset(1).source.packed, reset(2).source.packed]
    assert not daemon._kernel_events
