"""Knock-to-open latency of a kernel sequence door on the namespace test bed.

Same method as bench/knock_latency.py: N times, the time from the moment the final knock leaves
the client to the moment tcp:22 accepts a TCP connection from that client; each round knocks
from its own address (10.201.1.X) so every round starts from a closed door. No daemon runs: the
door is nftables rules (core/kernel_doors.py) loaded into the server namespace.

    sudo .venv/bin/python bench/kernel_latency.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from knockgate.core.frames import parse_frame
from knockgate.core.kernel_doors import KernelSettings, render_kernel_doors
from knockgate.core.ruleset import render_ruleset
from knockgate.model import Door, PortSpec
from knockgate.testbed import SERVER_V4, TestBed, inside, require_root_tools

DOOR = Door(name="ssh", sequence=tuple(parse_frame(f) for f in ("tcp:7000", "udp:8000",
                                                               "tcp:9000")),
            timeout=5, open=(PortSpec("tcp", 22),), open_for=60)


def ruleset() -> str:
    """render_ruleset with the kernel door spliced in, until core/ruleset.py does it itself."""
    kernel = render_kernel_doors([DOOR], KernelSettings())
    hidden = sorted({PortSpec(f.proto, f.port) for f in DOOR.sequence},
                    key=lambda s: (s.proto, s.port))
    lines = render_ruleset([DOOR], hidden).splitlines()
    drops = next(n for n, line in enumerate(lines) if line.endswith(" drop"))
    lines[drops:drops] = kernel.rules
    flush = lines.index("flush chain inet knockgate input") + 1
    lines[flush:flush] = kernel.declarations
    return "\n".join(lines) + "\n"


def _connects(source: str, probe_timeout: float) -> bool:
    """One SYN from ``source``; True on SYN-ACK within ``probe_timeout``."""
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.bind((source, 0))
        code = sock.connect_ex((SERVER_V4, 22))
        if code not in (0, errno.EINPROGRESS):
            return False
        _, writable, _ = select.select([], [sock], [], probe_timeout)
        return bool(writable) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def _send(source: str, proto: str, port: int) -> None:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setblocking(False)
        sock.bind((source, 0))
        if proto == "udp":
            sock.sendto(b"\0", (SERVER_V4, port))
        else:
            sock.connect_ex((SERVER_V4, port))


def _round(source: str, probe_timeout: float) -> float | None:
    """Milliseconds from the final knock to an accepted connection, None if it never opens."""
    for frame in DOOR.sequence[:-1]:
        _send(source, frame.proto, frame.port)
    time.sleep(0.01)
    sent = time.perf_counter()
    _send(source, DOOR.sequence[-1].proto, DOOR.sequence[-1].port)
    while time.perf_counter() - sent < 2.0:
        if _connects(source, probe_timeout):
            return (time.perf_counter() - sent) * 1000
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--probe-timeout-us", type=float, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reason = require_root_tools()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    samples: list[float] = []
    with TestBed() as bed:
        sources = [f"10.201.1.{i}" for i in range(1, args.rounds + 1)]
        for source in sources:
            bed.run(bed.client, "ip", "addr", "add", f"{source}/16", "dev", bed.client_if)
        bed.listen(22)
        subprocess.run(["ip", "netns", "exec", bed.server, "nft", "-f", "-"], input=ruleset(),
                       text=True, check=True)
        with inside(bed.client):
            for source in sources:
                opened = _round(source, args.probe_timeout_us / 1e6)
                if opened is None:
                    print(f"round from {source}: door did not open", file=sys.stderr)
                    return 1
                samples.append(opened)
                time.sleep(0.05)
    ordered = sorted(samples)
    result = {
        "rounds": len(samples),
        "median_ms": round(statistics.median(samples), 3),
        "p90_ms": round(ordered[int(0.9 * (len(samples) - 1))], 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
        "samples_ms": [round(s, 3) for s in samples],
    }
    print(f"knockgate kernel sequence door, final knock sent -> tcp:22 accepts "
          f"({result['rounds']} rounds): median {result['median_ms']} ms, "
          f"p90 {result['p90_ms']} ms, min {result['min_ms']} ms, max {result['max_ms']} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
