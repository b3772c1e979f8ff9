"""Knock-to-open latency of knockgate on the namespace test bed.

Measures, N times, the time from the moment the final knock (or the SPA packet) leaves the
client to the moment the protected port accepts a TCP connection from that client, both taken
as kernel timestamps on the client's interface (bench/_wire.py, bench/probe.c). Each round
comes from its own client address (10.201.1.X), so every round starts from a closed door.

    sudo .venv/bin/python bench/knock_latency.py --mode userspace [--rounds 20]
    sudo .venv/bin/python bench/knock_latency.py --mode kernel
    sudo .venv/bin/python bench/knock_latency.py --mode spa
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import select
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

from _wire import (
    FinalPacket,
    Prober,
    add_client_addresses,
    build_prober,
    on_server_core,
    pin_client,
)
from tests.support.testbed import SERVER_V4, TestBed, inside, require_root_tools

from knockgate.core.spa import (
    NONCE_SIZE,
    SECRET_SIZE,
    SpaKey,
    SpaRequest,
    decode_secret,
    generate_secret,
    seal_at,
)

SEQUENCE_CONFIG = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 60
engine = "{engine}"
"""
SPA_CONFIG = """
[daemon]
state_dir = "{folder}/state"

[[spa.key]]
name = "bench"
secret = "{secret}"
open = ["tcp:22"]
open_for = 60
"""


def connects(source: str, probe_timeout: float) -> bool:
    """One SYN from ``source``; True on SYN-ACK within ``probe_timeout``."""
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.bind((source, 0))
        code = sock.connect_ex((SERVER_V4, 22))
        if code not in (0, errno.EINPROGRESS):
            return False
        _, writable, _ = select.select([], [sock], [], probe_timeout)
        return bool(writable) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def send_from(source: str, proto: str, port: int, payload: bytes = b"\0") -> None:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setblocking(False)
        sock.bind((source, 0))
        if proto == "udp":
            sock.sendto(payload, (SERVER_V4, port))
        else:
            sock.connect_ex((SERVER_V4, port))


def sequence_round(source: str) -> FinalPacket:
    """Send the first knocks; the last one is the prober's to send and time."""
    send_from(source, "tcp", 7000)
    send_from(source, "udp", 8000)
    return FinalPacket("tcp", 9000)


def spa_round(key: SpaKey) -> Callable[[str], FinalPacket]:
    def prepare(_source: str) -> FinalPacket:
        packet = seal_at(key=key, now=time.time(), nonce=os.urandom(NONCE_SIZE),
                         request=SpaRequest(ports=(("tcp", 22),)))
        return FinalPacket("udp", 62201, packet)
    return prepare


def measure(prepare: Callable[[str], FinalPacket], sources: list[str],
            prober: Prober) -> list[float]:
    """Inside the client namespace: per source, ms from the final packet to an open port."""
    samples = []
    for source in sources:
        latency = prober.round(source, prepare(source), deadline=2.0)
        if latency is None:
            raise RuntimeError(f"round from {source}: the door did not open")
        samples.append(latency)
        time.sleep(0.05)
    return samples


def summary(samples: list[float]) -> dict[str, object]:
    ordered = sorted(samples)
    return {
        "rounds": len(samples),
        "median_ms": round(statistics.median(samples), 3),
        "p90_ms": round(ordered[int(0.9 * (len(samples) - 1))], 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
        "samples_ms": [round(s, 3) for s in samples],
    }


def run(mode: str, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder, TestBed() as bed:
        binary = build_prober(Path(folder))
        pin_client()
        secret = generate_secret(os.urandom(SECRET_SIZE))
        config = Path(folder, "k.toml")
        if mode == "spa":
            config.write_text(SPA_CONFIG.format(folder=folder, secret=secret))
            config.chmod(0o600)  # it holds a secret: knockgate refuses it readable
            prepare = spa_round(SpaKey("bench", decode_secret(secret)))
        else:
            config.write_text(SEQUENCE_CONFIG.format(engine=mode))
            prepare = sequence_round
        sources = [f"10.201.1.{i}" for i in range(1, rounds + 1)]
        add_client_addresses(bed, sources)
        bed.listen(22)
        log = Path(folder, "log")
        with log.open("wb") as sink:
            bed.knockgate(bed.server, "serve", "--config", str(config), stderr=sink,
                          preexec_fn=on_server_core())
            while "ready, watching" not in log.read_text():
                time.sleep(0.05)
            try:
                with inside(bed.client), Prober(binary, bed) as prober:
                    samples = measure(prepare, sources, prober)
            except RuntimeError:
                print(log.read_text(), file=sys.stderr)
                raise
        inside_daemon = [float(m) for m in re.findall(r"\(([\d.]+) ms after the packet was read",
                                                      log.read_text())]
    result = summary(samples)
    if inside_daemon:  # kernel doors open without the daemon: it only hears of it afterwards
        result["daemon_read_to_grant_median_ms"] = round(statistics.median(inside_daemon), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("userspace", "kernel", "spa"), default="userspace",
                        help="sequence door on either engine, or SPA")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reason = require_root_tools()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    result = run(args.mode, args.rounds)
    what = "SPA packet" if args.mode == "spa" else "final knock"
    inside = result.get("daemon_read_to_grant_median_ms")
    print(f"knockgate {args.mode}: {what} sent -> tcp:22 accepts ({result['rounds']} rounds): "
          f"median {result['median_ms']} ms, p90 {result['p90_ms']} ms, "
          f"min {result['min_ms']} ms, max {result['max_ms']} ms"
          + (f"; inside the daemon, packet read -> grant done: median {inside} ms"
             if inside is not None else ""))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
