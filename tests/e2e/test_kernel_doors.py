"""Kernel sequence doors end to end: real nftables in the server namespace, real packets from the
client namespace, no daemon. The ruleset is the table core/nft/table.py renders for the daemon
(see ``ruleset`` below)."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterable, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING

from knockgate.client.knock import send_frame
from knockgate.core.kinds import parse_frame
from knockgate.core.nft.kernel_doors import KernelSettings
from knockgate.core.nft.table import TablePlan, render_table
from knockgate.io.nflog import LogEvent, NflogListener
from knockgate.model import Door, PortSpec
from tests.e2e.conftest import knock_from, wait_until_in_set
from tests.support.testbed import (
    CLIENT_V4,
    CLIENT_V4_OTHER,
    CLIENT_V6,
    SERVER_V4,
    SERVER_V6,
    inside,
    scan_order,
)

if TYPE_CHECKING:
    from tests.support.testbed import TestBed  # a name pytest would try to collect as a test class

SETTINGS = KernelSettings(log_group=4711, stage_size=1024, overflow_seed=0x5EED)
SEQUENCE = ("tcp:7000", "udp:8000", "tcp:9000")
ALL_TCP = ("tcp:7000", "tcp:8000", "tcp:9000")


def door(frames: Sequence[str] = SEQUENCE, timeout: float = 5, open_for: float = 30,
         name: str = "ssh", penalty: float = 0) -> Door:
    return Door(name=name, sequence=tuple(parse_frame(f) for f in frames), timeout=timeout,
                open=(PortSpec("tcp", 22),), open_for=open_for, engine="kernel",
                penalty=penalty)


def ruleset(doors: list[Door], existing: Iterable[str] = (), hide: bool = True) -> str:
    """The table the daemon installs for these kernel doors."""
    hidden = sorted({PortSpec(f.proto, f.port) for d in doors for f in d.sequence},
                    key=lambda s: (s.proto, s.port)) if hide else []
    return render_table(TablePlan(tuple(doors), tuple(hidden), (), SETTINGS), set(existing))


def load(bed: TestBed, tmp_path: Path, text: str) -> None:
    path = tmp_path / "ruleset.nft"
    path.write_text(text)
    result = bed.run(bed.server, "nft", "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr


def knock(bed: TestBed, *frames: str, host: str = SERVER_V4) -> None:
    with inside(bed.client):
        for frame in frames:
            send_frame(ip_address(host), parse_frame(frame))


def existing_sets(bed: TestBed) -> list[str]:
    listing = json.loads(bed.run(bed.server, "nft", "-j", "list", "sets", "inet").stdout)
    return [item["set"]["name"] for item in listing["nftables"] if "set" in item]


def elements(bed: TestBed, name: str) -> list[object]:
    listing = json.loads(bed.run(bed.server, "nft", "-j", "list", "set", "inet", "knockgate",
                                 name).stdout)
    return next(item["set"] for item in listing["nftables"] if "set" in item).get("elem", [])


def count_tcp_from(bed: TestBed, source: str) -> int:
    """Packets the server's input hook saw from ``source`` since ``start_counting``."""
    listing = bed.run(bed.server, "nft", "list", "chain", "inet", "knockgate", "input").stdout
    line = next(line for line in listing.splitlines() if f"ip saddr {source}" in line)
    return int(line.split("counter packets ")[1].split()[0])


def start_counting(bed: TestBed, source: str) -> None:
    bed.run(bed.server, "nft", "insert", "rule", "inet", "knockgate", "input", "ip", "saddr",
            source, "meta", "l4proto", "tcp", "counter")


def test_opens_for_the_knocker_only_then_closes(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door(open_for=1.5)]))
    assert not bed.can_connect(SERVER_V4, 22)
    knock(bed, *SEQUENCE)
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    time.sleep(1.7)
    assert not bed.can_connect(SERVER_V4, 22), "the kernel must close the door after open_for"


def test_wrong_order_stays_shut(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door()]))
    knock(bed, "tcp:7000", "tcp:9000", "udp:8000")
    knock(bed, "udp:8000", "tcp:7000", "tcp:9000")
    knock(bed, "tcp:7000", "udp:8000", "tcp:7001", "tcp:9000")  # a stray port in between
    assert not bed.can_connect(SERVER_V4, 22)
    knock(bed, "tcp:9000", "tcp:7000", "udp:8000", "tcp:9000")  # a wrong first knock is harmless
    assert bed.wait_until_open(SERVER_V4, 22) is not None


def test_retransmissions_and_restarts(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door()]))
    knock(bed, "tcp:7000", "tcp:7000", "udp:8000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    bed.run(bed.server, "nft", "flush", "set", "inet", "knockgate", "ssh_v4")
    knock(bed, "tcp:7000", "udp:8000", "tcp:7000", "udp:8000", "tcp:9000")  # F1 out of order
    assert bed.wait_until_open(SERVER_V4, 22) is not None, "F1 out of order starts over"


def test_ipv6(bed, tmp_path):
    bed.listen(22, socket.AF_INET6)
    load(bed, tmp_path, ruleset([door()]))
    assert not bed.can_connect(SERVER_V6, 22)
    knock(bed, *SEQUENCE, host=SERVER_V6)
    assert bed.wait_until_open(SERVER_V6, 22) is not None
    assert elements(bed, "ssh_v6") and not elements(bed, "ssh_v4")


def test_flag_frames_by_raw_packets(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door(("tcp:110:x", "tcp:110:up", "tcp:110:n", "tcp:7000:fa"))]))
    knock(bed, "tcp:110:x", "tcp:110:up", "tcp:7000:fa")
    assert not bed.can_connect(SERVER_V4, 22)
    knock(bed, "tcp:110:x", "tcp:110:up", "tcp:110:n", "tcp:7000:fa")
    assert bed.wait_until_open(SERVER_V4, 22) is not None


def test_each_gap_gets_its_share_of_the_timeout(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door(timeout=1.0)]))  # two gaps of 500 ms
    knock(bed, "tcp:7000", "udp:8000")
    time.sleep(0.7)
    knock(bed, "tcp:9000")
    assert not bed.can_connect(SERVER_V4, 22)
    knock(bed, "tcp:7000")
    time.sleep(0.3)
    knock(bed, "udp:8000")
    time.sleep(0.3)
    knock(bed, "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None


def test_random_order_full_port_scan_opens_nothing(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door(ALL_TCP)]))
    start_counting(bed, CLIENT_V4)
    ports = scan_order([7000, 8000, 9000], random.Random(20201))
    started = time.monotonic()
    bed.send_syns(ports)
    elapsed = time.monotonic() - started
    time.sleep(0.2)
    seen = count_tcp_from(bed, CLIENT_V4)
    assert seen >= 65535, f"every probe must reach the ruleset, {seen} did"
    assert not bed.can_connect(SERVER_V4, 22), f"a {elapsed:.1f}s full scan opened the door"
    assert not elements(bed, "ssh_v4")
    knock(bed, *ALL_TCP)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, "the real knock must still open"


def test_penalty_box(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door(ALL_TCP, penalty=1.5)]))
    knock(bed, "tcp:7000", "tcp:1234")  # a port outside the sequence while knocking
    assert [e for e in elements(bed, "ssh-penalty_v4") if CLIENT_V4 in json.dumps(e)]
    knock(bed, *ALL_TCP)
    # Another source's first knock, sent after: in stage 1, it proves those were handled.
    knock_from(bed, CLIENT_V4_OTHER, "tcp:7000")
    wait_until_in_set(bed, "ssh-stage1_v4", CLIENT_V4_OTHER)
    assert not bed.can_connect(SERVER_V4, 22), "a penalised source's knocks are ignored"
    time.sleep(1.6)
    knock(bed, *ALL_TCP)
    assert bed.wait_until_open(SERVER_V4, 22) is not None


def test_spoofed_first_knock_flood_stays_bounded_and_a_real_knock_opens(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door()]))
    started = time.monotonic()
    bed.send_spoofed_syns(7000, 20000, seed=20202)
    flooded = time.monotonic() - started
    assert len(elements(bed, "ssh-stage1_v4")) == SETTINGS.stage_size, "bounded, and full"
    assert len(elements(bed, "ssh-overflow_v4")) <= SETTINGS.stage_size
    assert time.monotonic() - started < 2.0, "stage 1 must still be full for the real knock"
    knock(bed, *SEQUENCE)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, f"after a {flooded:.2f}s flood"
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    assert len(elements(bed, "ssh_v4")) == 1


def queued(listener: NflogListener) -> list[LogEvent]:
    """Every event waiting on ``listener``."""
    events: list[LogEvent] = []
    while (batch := listener.read()) is not None:
        events += batch
    return events


def wait_for_events(listener: NflogListener, count: int, deadline: float = 2.0
                    ) -> list[LogEvent]:
    events: list[LogEvent] = []
    start = time.monotonic()
    while len(events) < count and time.monotonic() - start < deadline:
        events += queued(listener)
        time.sleep(0.01)
    return events


def test_nflog_listener_reports_each_opening(bed, tmp_path):
    load(bed, tmp_path, ruleset([door(), door(("udp:5000",), name="web")]))
    with inside(bed.server):
        listener = NflogListener(SETTINGS.log_group)
    with listener:
        knock(bed, *SEQUENCE)
        knock(bed, "udp:5000", host=SERVER_V6)
        events = wait_for_events(listener, 2)
        assert [(event.prefix, event.source) for event in events] == [
            ("kg:ssh", ip_address(CLIENT_V4)), ("kg:web", ip_address(CLIENT_V6))]
        knock(bed, "tcp:7000", "udp:8000")
        # Stage 2 holds the source once the kernel has handled both knocks; it logs as it
        # handles a packet (the listener asks for every message at once).
        wait_until_in_set(bed, "ssh-stage2_v4", CLIENT_V4)
        assert queued(listener) == [], "only openings are logged"


def test_reload_keeps_grants_and_forgets_progress(bed, tmp_path):
    bed.listen(22)
    load(bed, tmp_path, ruleset([door(penalty=30)]))
    knock(bed, *SEQUENCE)
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    with inside(bed.client), socket.socket() as other:
        other.bind((CLIENT_V4_OTHER, 0))
        other.setblocking(False)
        other.connect_ex((SERVER_V4, 7000))
    wait_until_in_set(bed, "ssh-stage1_v4", CLIENT_V4_OTHER)  # progress the reload must drop
    load(bed, tmp_path, ruleset([door(timeout=8, penalty=30)], existing=existing_sets(bed)))
    assert bed.can_connect(SERVER_V4, 22), "a grant survives a reload"
    assert not elements(bed, "ssh-stage1_v4")
    load(bed, tmp_path, ruleset([door(name="vpn")], existing=existing_sets(bed)))
    assert not any(name.startswith("ssh-") for name in existing_sets(bed))


def test_a_public_knock_port_keeps_working_when_knock_ports_are_not_hidden(bed, tmp_path):
    bed.listen(22)
    bed.listen(80)
    load(bed, tmp_path, ruleset([door(("tcp:80", "tcp:81"))], hide=False))
    assert bed.can_connect(SERVER_V4, 80, source=CLIENT_V4_OTHER)
    knock(bed, "tcp:80", "tcp:81")
    assert bed.wait_until_open(SERVER_V4, 22) is not None
