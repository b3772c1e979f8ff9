"""The daemon under hostile traffic: spoofed first-knock floods, full port scans, garbage at
the SPA port. Every flood is bounded in count, stays inside the test's namespaces and uses
10.202.0.0/16 for spoofed sources."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time

import pytest

from knockgate.core.spa import SpaRequest
from tests.e2e.conftest import knock_from, knockgate_cli, sealed, send_raw
from tests.support.testbed import CLIENT_V4_OTHER, SERVER_V4, inside, scan_order

DOOR = """
[daemon]
max_pending = 1000

[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 30
engine = "{engine}"
"""


def knock(bed) -> None:
    result = knockgate_cli(bed, bed.client, "knock", SERVER_V4, "tcp:7000", "udp:8000",
                           "tcp:9000")
    assert result.returncode == 0, result.stderr


def state_of(daemon, door: str) -> tuple[int, int]:
    """(sources mid-sequence, evicted) from the daemon's SIGUSR1 report on ``door``."""
    mark = daemon.mark()
    daemon.signal(signal.SIGUSR1)
    line = daemon.wait_for(f"state: door {door}:", after=mark)
    return int(line.split(f"door {door}: ")[1].split()[0]), int(line.split("), ")[1].split()[0])


def set_size(bed, name: str) -> int:
    listing = json.loads(bed.run(bed.server, "nft", "-j", "list", "set", "inet", "knockgate",
                                 name).stdout)
    return len(next(item["set"] for item in listing["nftables"] if "set" in item)
               .get("elem", []))


@pytest.mark.parametrize("engine", ["userspace", "captured", "kernel"])
def test_spoofed_first_knock_flood_stays_bounded_and_a_real_knock_opens(bed, serve, engine):
    """userspace: the kernel keeps the first stage (core/nft/first_stage.py); captured: a door
    with a target, whose every knock the daemon reads; kernel: nftables does it all."""
    bed.listen(22)
    config = DOOR.format(engine="kernel" if engine == "kernel" else "userspace")
    if engine == "captured":
        config += f'target = "{SERVER_V4}"\n'
    daemon = serve(config)
    bed.send_spoofed_syns(7000, 20000, seed=7)
    if engine == "userspace":
        assert set_size(bed, "ssh-first_v4") == 1000, "bounded by max_pending, and full"
        assert state_of(daemon, "ssh") == (0, 0), "the flood never reached the daemon"
    knock(bed)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    if engine == "captured":
        pending, evicted = state_of(daemon, "ssh")
        assert pending <= 1000 and evicted >= 19000 - 1000, (pending, evicted)
    assert daemon.process.poll() is None


def test_spoofed_first_knocks_then_other_ports_reach_the_daemon_as_nothing(bed, serve):
    """The kernel resets those sources itself: only sources handed to the daemon are reported,
    so this flood cannot become a flood of NFLOG events."""
    bed.listen(22)
    daemon = serve(DOOR.format(engine="userspace"))
    bed.send_spoofed_syns(7000, 5000, seed=9)
    bed.send_spoofed_syns(5555, 5000, seed=9)  # the same sources, in the same order
    knock(bed)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    assert "touched another port" not in daemon.log
    assert state_of(daemon, "ssh") == (0, 0)


@pytest.mark.parametrize("engine", ["userspace", "kernel"])
def test_full_random_order_port_scan_opens_nothing_then_a_knock_opens(bed, serve, engine):
    """A scan that hits the knock ports in the right order, among every other port, must
    not open the door."""
    bed.listen(22)
    daemon = serve(DOOR.format(engine=engine).replace('\nsequence = ["tcp:7000", "udp:8000", '
                                                        '"tcp:9000"]',
                                                        '\nsequence = ["tcp:7000", "tcp:8000", '
                                                        '"tcp:9000"]'))
    other_openings = []
    for seed in (1, 2):
        bed.send_syns(scan_order([7000, 8000, 9000], random.Random(seed)))
        # Another source's sequence, sent after the scan: once its opening is logged, the
        # daemon has handled everything the scan could have caused (on either engine).
        knock_from(bed, CLIENT_V4_OTHER, "tcp:7000", "tcp:8000", "tcp:9000")
        other_openings.append(daemon.wait_for(f"opened tcp:22 for {CLIENT_V4_OTHER}",
                                              count=seed))
        assert not bed.can_connect(SERVER_V4, 22), f"scan {seed} opened the door"
    assert [line for line in daemon.log.splitlines() if "opened" in line] == other_openings
    result = knockgate_cli(bed, bed.client, "knock", SERVER_V4, "tcp:7000", "tcp:8000",
                           "tcp:9000")
    assert result.returncode == 0
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


def test_garbage_at_the_spa_port_does_not_starve_a_valid_packet(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.listen(22)
    daemon = serve(config(open_for=5))
    rng = random.Random(3)
    with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(20000):
            size = rng.choice((1, 64, 111, 112, 113, 500, 1400))
            sock.sendto(os.urandom(size), (SERVER_V4, 62201))
    send_raw(bed, sealed(SpaRequest(ports=(("tcp", 22),))))
    assert bed.wait_until_open(SERVER_V4, 22, deadline=2.0) is not None, daemon.log
    assert daemon.process.poll() is None


def test_sigterm_during_a_flood_exits_within_a_second_leaving_no_knock_rules(bed, serve):
    """knockd can deadlock here (signal handlers that are not async-signal-safe)."""
    daemon = serve(DOOR.format(engine="userspace"))
    flood = threading.Thread(target=bed.send_spoofed_syns, args=(7000, 40000, 11))
    flood.start()
    time.sleep(0.1)
    took = daemon.stop()
    flood.join()
    assert took < 1.0 and daemon.process.returncode == 0
    left = bed.run(bed.server, "nft", "list", "ruleset").stdout
    assert "table inet knockgate" in left and "log prefix" not in left, left  # fail closed
