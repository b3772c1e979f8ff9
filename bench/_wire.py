"""One knock-to-open round timed on the client's wire, by the compiled prober ``probe.c``.

Shared by knock_latency.py and compare.py. The harness sends a round's earlier knocks itself
(through ordinary sockets, as a knock client does) and hands the final packet to the prober,
which sends it as a raw frame at a given time and then probes tcp:22 until a SYN-ACK comes
back. The latency is the difference of two kernel timestamps on the client's interface (the
final packet leaving, the first SYN-ACK arriving), so the harness's own costs -- creating
sockets, Python, waking up after the pause between rounds -- are never part of it.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

from tests.support.testbed import SERVER_V4, TestBed, sh

BENCH = Path(__file__).resolve().parent
_SO_TIMESTAMPNS = 35
GUARDED_PORT = 22
KNOCK_GAP = 0.01  # from the earlier knocks to the final one, which is what gets timed


@dataclass(frozen=True)
class FinalPacket:
    """The packet whose departure starts the clock: a TCP SYN, or a UDP datagram."""

    proto: str
    port: int
    payload: bytes = b""


@functools.cache
def split_cpus() -> tuple[frozenset[int], frozenset[int]]:
    """(client CPUs, server CPUs). The daemon gets a core of its own, as it would on its own
    machine: otherwise the scheduler may wake it on the prober's or the flooder's core, and
    both then wait for each other. On one CPU there is nothing to split. Decided once, before
    ``pin_client`` narrows this process's own set."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return frozenset(cpus), frozenset(cpus)
    return frozenset(cpus[:-1]), frozenset(cpus[-1:])


def pin_client() -> None:
    """This process and everything it starts from now on (prober, flooder) stay off the
    server's core; daemons are started with ``on_server_core``."""
    os.sched_setaffinity(0, split_cpus()[0])


def on_server_core() -> Callable[[], None]:
    """A ``preexec_fn`` that moves a daemon (and the commands it runs) to the server's core."""
    server = split_cpus()[1]
    return lambda: os.sched_setaffinity(0, server)


def server_mac(bed: TestBed) -> str:
    out = sh("ip", "-n", bed.server, "-j", "link", "show", bed.server_if).stdout
    return str(json.loads(out)[0]["address"])


def add_client_addresses(bed: TestBed, sources: list[str]) -> None:
    """Give the client ``sources`` and tell the server their link address up front. Each round
    knocks from a fresh address, and without this the server's first reply to it waits for an
    ARP exchange (a retry after 1 s if that is lost under a flood). A real server answers an
    Internet client through its gateway, whose address it already knows."""
    client_mac = json.loads(sh("ip", "-n", bed.client, "-j", "link", "show",
                               bed.client_if).stdout)[0]["address"]
    for namespace, lines in (
            (bed.client, [f"addr add {s}/16 dev {bed.client_if}" for s in sources]),
            (bed.server, [f"neigh replace {s} lladdr {client_mac} dev {bed.server_if} "
                          "nud permanent" for s in sources])):
        subprocess.run(["ip", "-n", namespace, "-batch", "-"], input="\n".join(lines) + "\n",
                       text=True, check=True, capture_output=True)


def build_prober(folder: Path) -> Path:
    binary = folder / "probe"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(BENCH / "probe.c")],
                   check=True, capture_output=True, text=True)
    return binary


class Prober:
    """Runs rounds from inside the client namespace (the caller enters it). A context
    manager: timestamps stay exact while it is open."""

    def __init__(self, binary: Path, bed: TestBed) -> None:
        # The kernel stamps packets as they pass only while some socket asks for timestamps,
        # and turns that on lazily: one socket asking for the whole run keeps stamps exact.
        self._keep_stamping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._keep_stamping.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._base = [str(binary), "--iface", bed.client_if, "--dst-mac", server_mac(bed),
                      "--dst", SERVER_V4, "--port", str(GUARDED_PORT)]

    def round(self, source: str, final: FinalPacket, deadline: float) -> float | None:
        """ms from ``final`` leaving ``source`` to tcp:22 accepting it; None past ``deadline``.

        The final packet leaves KNOCK_GAP after this call (the prober starts meanwhile)."""
        at = time.monotonic_ns() + int(KNOCK_GAP * 1e9)
        argv = [*self._base, "--src", source, "--knock", f"{final.proto}:{final.port}",
                "--at-ns", str(at), "--deadline-ms", f"{deadline * 1000:.0f}"]
        if final.payload:
            argv += ["--payload-hex", final.payload.hex()]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"probe failed: {done.stderr.strip()}")
        ms = json.loads(done.stdout)["ms"]
        return None if ms is None else float(ms)

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self._keep_stamping.close()
