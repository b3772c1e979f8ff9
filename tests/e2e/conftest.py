"""Fixtures that build real network namespaces and run the real CLI inside them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from knockgate.core.kinds import parse_frame
from knockgate.core.spa import NONCE_SIZE, SpaKey, SpaRequest, decode_secret, seal_at
from tests.support.testbed import CLIENT_V4, SERVER_V4, TestBed, inside, require_root_tools

REQUIRE_E2E = os.environ.get("KNOCKGATE_REQUIRE_E2E") == "1"


def _skip_or_fail(reason: str) -> None:
    message = f"END-TO-END TEST NOT RUN: {reason}"
    if REQUIRE_E2E:
        pytest.fail(message + " (KNOCKGATE_REQUIRE_E2E=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture
def bed() -> Iterator[TestBed]:
    reason = require_root_tools()
    if reason:
        _skip_or_fail(reason)
    with TestBed() as testbed:
        yield testbed


def need_tool(name: str) -> str:
    for folder in ("/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    _skip_or_fail(f"the '{name}' program is not installed")
    raise AssertionError("unreachable")


class RunningDaemon:
    """`knockgate serve` in the server namespace, its log collected line by line."""

    def __init__(self, bed: TestBed, config: Path, *extra: str) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = bed.knockgate(bed.server, "serve", "--config", str(config), "-v", *extra,
                                     stderr=subprocess.PIPE)
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 5.0, after: int = 0, count: int = 1) -> str:
        """The ``count``-th log line from line ``after`` on that holds ``text``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines[after:] if text in line]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} of {count} log lines with {text!r}; "
                                         f"log so far:\n{self.log}")
                self._changed.wait(min(left, 0.1))

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> float:
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - start


@pytest.fixture
def serve(bed: TestBed, tmp_path: Path):
    started: list[RunningDaemon] = []

    def start(config_text: str, *extra: str) -> RunningDaemon:
        config = tmp_path / "knockgate.toml"
        config.write_text(config_text)
        config.chmod(0o600)  # it may hold an inline secret
        daemon = RunningDaemon(bed, config, *extra)
        started.append(daemon)
        daemon.wait_for("ready, watching")
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()


def knockgate_cli(bed: TestBed, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return bed.run(namespace, sys.executable, "-m", "knockgate", *args, check=False)


SECRET = "qXfU0vYjW3nJ6mQm6w0m7R3Yl8q2bJ9cH1k4Zt5pA2s="
OTHER_SECRET = "ZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFrZWZha2U="


@pytest.fixture
def spa_setup(tmp_path: Path):
    secret_file = tmp_path / "alice.key"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    state = tmp_path / "state"

    def config(open_for: float = 1.0, extra: str = "") -> str:
        return f"""
[daemon]
state_dir = "{state}"

[spa]
max_age = 60

[[spa.key]]
name = "alice"
secret_file = "{secret_file}"
open = ["tcp:22", "tcp:2222"]
open_for = {open_for}
actions = {{ 21 = ["/usr/bin/touch", "{tmp_path}/action-{{ip}}"] }}
{extra}
"""
    return config, secret_file


def sealed(request: SpaRequest, secret: str = SECRET, name: str = "alice",
           skew: float = 0) -> bytes:
    key = SpaKey(name, decode_secret(secret))
    return seal_at(key=key, now=time.time() + skew, nonce=os.urandom(NONCE_SIZE),
                   request=request)


def send_raw(bed, payload: bytes, source: str = CLIENT_V4, host: str = SERVER_V4) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with inside(bed.client), socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(payload, (host, 62201))


def knock_from(bed: TestBed, source: str, *frames: str) -> None:
    """Plain knocks (a SYN, or a datagram) to SERVER_V4 from ``source``, any of the client's
    IPv4 addresses (the knock client sends from the routed one). They reach the server after
    every packet sent before them, so what they cause proves those were handled."""
    for frame in map(parse_frame, frames):
        if frame.proto == "udp":
            with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                sock.sendto(b"\0", (SERVER_V4, frame.port))
        else:
            bed.send_syns([frame.port], source=source)


def set_holds(bed: TestBed, name: str, address: str) -> bool:
    """Whether the set ``name`` of table inet knockgate has an element for ``address``."""
    listing = json.loads(bed.run(bed.server, "nft", "-j", "list", "set", "inet", "knockgate",
                                 name).stdout)
    elements = next(item["set"] for item in listing["nftables"] if "set" in item).get("elem", [])
    return f'"{address}"' in json.dumps(elements)


def wait_until_in_set(bed: TestBed, name: str, address: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not set_holds(bed, name, address):
        if time.monotonic() > deadline:
            listing = bed.run(bed.server, "nft", "list", "set", "inet", "knockgate", name)
            raise AssertionError(f"{address} never entered {name}:\n{listing.stdout}")
        time.sleep(0.02)
