"""Two network namespaces joined by a veth pair: the test bed of the tests, demo and benchmarks.

Addresses stay inside 10.201.0.0/16 and fd00:201::/64 (10.202.0.0/16 is for spoofed flood
sources); every route stays inside the namespaces, and ``close()`` deletes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address

from knockgate.client.knock import tcp_segment
from knockgate.model import TcpFlag

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

SERVER_V4 = "10.201.0.1"
CLIENT_V4 = "10.201.0.2"
CLIENT_V4_OTHER = "10.201.0.3"
SERVER_V6 = "fd00:201::1"
CLIENT_V6 = "fd00:201::2"
SPOOFED_NET = "10.202.0.0/16"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Switch this thread into ``namespace``; sockets made inside stay there after we leave."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{namespace}") as target:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home failed")


@dataclass
class TestBed:
    __test__ = False  # a test bed, not a test class, wherever a test module imports it

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    listeners: list[socket.socket] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"kg-srv-{self.tag}"

    @property
    def client(self) -> str:
        return f"kg-cli-{self.tag}"

    def open(self) -> TestBed:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        srv_if, cli_if = f"kgs{self.tag}", f"kgc{self.tag}"
        sh("ip", "netns", "add", self.server)
        sh("ip", "netns", "add", self.client)
        sh("ip", "link", "add", srv_if, "netns", self.server, "type", "veth",
           "peer", "name", cli_if, "netns", self.client)
        for ns, iface, v4, extra, v6 in (
            (self.server, srv_if, SERVER_V4, None, SERVER_V6),
            (self.client, cli_if, CLIENT_V4, CLIENT_V4_OTHER, CLIENT_V6),
        ):
            self.run(ns, "ip", "link", "set", "lo", "up")
            self.run(ns, "ip", "addr", "add", f"{v4}/16", "dev", iface)
            if extra:
                self.run(ns, "ip", "addr", "add", f"{extra}/16", "dev", iface)
            self.run(ns, "ip", "addr", "add", f"{v6}/64", "dev", iface, "nodad")
            self.run(ns, "ip", "link", "set", iface, "up")
        self.server_if, self.client_if = srv_if, cli_if

    def run(self, namespace: str, *argv: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", namespace, *argv, check=check)

    def spawn(self, namespace: str, argv: Sequence[str], **kwargs: object
              ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(["ip", "netns", "exec", namespace, *argv], **kwargs)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def knockgate(self, namespace: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        return self.spawn(namespace, [sys.executable, "-m", "knockgate", *args], **kwargs)

    def make_socket(self, namespace: str, family: int, kind: int) -> socket.socket:
        with inside(namespace):
            return socket.socket(family, kind)

    def listen(self, port: int, family: int = socket.AF_INET) -> socket.socket:
        """A TCP listener in the server namespace; the kernel completes handshakes for it."""
        sock = self.make_socket(self.server, family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.listen(1024)
        self.listeners.append(sock)  # kept open for the bed's life, even if the caller drops it
        return sock

    def can_connect(self, host: str, port: int, source: str | None = None,
                    timeout: float = 0.3) -> bool:
        """True if a new TCP connection from the client namespace is accepted."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.make_socket(self.client, family, socket.SOCK_STREAM) as sock:
            if source:
                sock.bind((source, 0))
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except (TimeoutError, ConnectionRefusedError):
                return False
            return True

    def wait_until_open(self, host: str, port: int, source: str | None = None,
                        deadline: float = 3.0, probe_timeout: float = 0.002,
                        since: float | None = None) -> float | None:
        """Probe until a connection is accepted; return the seconds since ``since`` (a
        perf_counter reading, default now), or None if ``deadline`` passes first."""
        start = time.perf_counter() if since is None else since
        while time.perf_counter() - start < deadline:
            if self.can_connect(host, port, source, probe_timeout):
                return time.perf_counter() - start
        return None

    def send_spoofed_syns(self, port: int, count: int, seed: int = 0) -> None:
        """``count`` SYNs to the server's ``port`` from random sources in 10.202.0.0/16, sent
        from the client namespace. Replies are routed back into it, where they die."""
        self.run(self.server, "ip", "route", "replace", SPOOFED_NET, "via", CLIENT_V4)
        rng = random.Random(seed)
        server = ip_address(SERVER_V4)
        header = struct.Struct("!BBHHHBBH4s4s")
        with inside(self.client), socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                socket.IPPROTO_RAW) as raw:
            for index in range(count):
                source = ip_address(f"10.202.{rng.randrange(256)}.{rng.randrange(1, 255)}")
                segment = tcp_segment(source, server, 1024 + index % 60000, port, TcpFlag.SYN,
                                      index)
                packet = header.pack(0x45, 0, 20 + len(segment), 0, 0, 64, socket.IPPROTO_TCP,
                                     0, source.packed, server.packed) + segment
                raw.sendto(packet, (SERVER_V4, 0))

    def send_syns(self, ports: Iterable[int], source: str = CLIENT_V4) -> None:
        """One SYN to each of ``ports``, in the order given (a port scan), from ``source``."""
        server = ip_address(SERVER_V4)
        with inside(self.client), socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                socket.IPPROTO_TCP) as raw:
            raw.bind((source, 0))
            for index, port in enumerate(ports):
                raw.sendto(tcp_segment(ip_address(source), server, 40000 + index % 20000, port,
                                       TcpFlag.SYN, index), (SERVER_V4, 0))

    def close(self) -> None:
        for sock in self.listeners:
            sock.close()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for ns in (self.server, self.client):
            sh("ip", "netns", "del", ns, check=False)

    def __enter__(self) -> TestBed:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_order(sequence_ports: Sequence[int], rng: random.Random) -> list[int]:
    """Every port once, in random order except that the knock ports come in sequence order:
    the case in which a door that never resets opens."""
    ports = list(range(1, 65536))
    rng.shuffle(ports)
    slots = sorted(ports.index(port) for port in sequence_ports)
    for slot, port in zip(slots, sequence_ports, strict=True):
        ports[slot] = port
    return ports


def require_root_tools() -> str | None:
    """Why the test bed cannot be built here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool in ("ip", "nft"):
        if sh("which", tool, check=False).returncode != 0:
            return f"needs the '{tool}' command"
    return None
