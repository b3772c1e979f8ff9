"""Knock-to-open latency of knockgate's port-sequence doors on the namespace test bed.

Measures, N times, the time from the moment the final knock leaves the client to the moment
the protected port accepts a TCP connection from that client. Each round knocks from its own
client address (10.201.1.X) so every round starts from a closed door.

    sudo .venv/bin/python bench/knock_latency.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from knockgate.core.frames import parse_frame
from knockgate.testbed import SERVER_V4, TestBed, inside, require_root_tools

FRAMES = [parse_frame(f) for f in ("tcp:7000", "udp:8000", "tcp:9000")]
CONFIG = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 60
"""


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


def knock_from(source: str) -> None:
    for frame in FRAMES[:-1]:
        kind = socket.SOCK_DGRAM if frame.proto == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setblocking(False)
            sock.bind((source, 0))
            if frame.proto == "udp":
                sock.sendto(b"\0", (SERVER_V4, frame.port))
            else:
                sock.connect_ex((SERVER_V4, frame.port))


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
    with tempfile.TemporaryDirectory() as folder, TestBed() as bed:
        config = Path(folder, "k.toml")
        config.write_text(CONFIG)
        sources = [f"10.201.1.{i}" for i in range(1, args.rounds + 1)]
        for source in sources:
            bed.run(bed.client, "ip", "addr", "add", f"{source}/16", "dev", bed.client_if)
        bed.listen(22)
        log = Path(folder, "log")
        with log.open("wb") as sink:
            bed.knockgate(bed.server, "serve", "--config", str(config), stderr=sink)
            while "ready, watching" not in log.read_text():
                time.sleep(0.05)
            with inside(bed.client):
                for source in sources:
                    knock_from(source)
                    time.sleep(0.01)
                    with socket.socket() as sock:
                        sock.setblocking(False)
                        sock.bind((source, 0))
                        sent = time.perf_counter()
                        sock.connect_ex((SERVER_V4, FRAMES[-1].port))
                    opened = None
                    while time.perf_counter() - sent < 2.0:
                        if _connects(source, args.probe_timeout_us / 1e6):
                            opened = time.perf_counter() - sent
                            break
                    if opened is None:
                        print(f"round from {source}: door did not open", file=sys.stderr)
                        print(log.read_text(), file=sys.stderr)
                        return 1
                    samples.append(opened * 1000)
                    time.sleep(0.05)
    samples_sorted = sorted(samples)
    result = {
        "rounds": len(samples),
        "median_ms": round(statistics.median(samples), 3),
        "p90_ms": round(samples_sorted[int(0.9 * (len(samples) - 1))], 3),
        "min_ms": round(samples_sorted[0], 3),
        "max_ms": round(samples_sorted[-1], 3),
        "samples_ms": [round(s, 3) for s in samples],
    }
    print(f"knockgate userspace sequence door, final knock sent -> tcp:22 accepts "
          f"({result['rounds']} rounds): median {result['median_ms']} ms, "
          f"p90 {result['p90_ms']} ms, min {result['min_ms']} ms, max {result['max_ms']} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
