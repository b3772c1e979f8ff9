import base64
import json
import socket
import struct
import subprocess
import sys
from ipaddress import ip_address

import pytest

from knockgate.client.knock import connect_can_send, resolve, tcp_segment
from knockgate.core.kinds import parse_frame
from knockgate.errors import KnockgateError


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071's sum, written differently from the client's (modulo 0xFFFF, no carry loop),
    so the check does not verify the client's checksum with itself."""
    return sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)) % 0xFFFF


def test_ipv4_tcp_checksum_verifies():
    src, dst = ip_address("10.201.0.2"), ip_address("10.201.0.1")
    segment = tcp_segment(src, dst, 12345, 7000, 0x29, 99)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(segment))
    assert segment[16:18] != b"\0\0"
    assert ones_complement_sum(pseudo + segment) == 0
    assert segment == bytes.fromhex("30391b5800000063000000005029faf053420000")
    assert segment[13] == 0x29 and struct.unpack("!H", segment[2:4])[0] == 7000


def test_which_frames_need_raw_sockets():
    assert connect_can_send(parse_frame("tcp:1"))
    assert connect_can_send(parse_frame("tcp:1:syn,!ack"))
    assert connect_can_send(parse_frame("tcp:1:i"))
    assert not connect_can_send(parse_frame("tcp:1:x"))
    assert not connect_can_send(parse_frame("udp:1"))


def _resolver_answers(monkeypatch, answer: str) -> list[tuple[str, int]]:
    asked: list[tuple[str, int]] = []

    def getaddrinfo(host, port, family=0, kind=0):
        asked.append((host, family))
        if answer == "fail":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in answer else socket.AF_INET, kind, 0, "", (answer, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_address_literals_skip_the_resolver(monkeypatch):
    asked = _resolver_answers(monkeypatch, "fail")
    assert resolve("10.201.0.1") == ip_address("10.201.0.1")
    assert resolve("fd00:201::1", socket.AF_INET6) == ip_address("fd00:201::1")
    assert asked == []


def test_names_scoped_literals_and_other_families_go_to_the_resolver(monkeypatch):
    asked = _resolver_answers(monkeypatch, "fe80::1%lo")
    assert resolve("server.example") == ip_address("fe80::1")
    assert resolve("fe80::1%lo") == ip_address("fe80::1")
    assert asked == [("server.example", socket.AF_UNSPEC), ("fe80::1%lo", socket.AF_UNSPEC)]
    asked = _resolver_answers(monkeypatch, "fail")
    with pytest.raises(KnockgateError, match=r"cannot resolve '10\.201\.0\.1'"):
        resolve("10.201.0.1", socket.AF_INET6)
    assert asked == [("10.201.0.1", socket.AF_INET6)]


# Each client command, run in a fresh interpreter with its senders stubbed out (nothing leaves):
# what it imports beyond knockgate.config, which the parser reads DEFAULT_PATH from.
_IMPORTS_OF = """
import json, sys
import knockgate.config
before = set(sys.modules)
import knockgate.client.knock as sender
sender.send_frame = sender.send_datagram = lambda *args: None
from knockgate.cli import run
code = run(sys.argv[1:])
print(json.dumps({"code": int(code), "imported": sorted(set(sys.modules) - before)}))
"""
_SERVER_SIDE = ("asyncio", "logging.handlers", "tomllib", "knockgate.config.", "knockgate.core.nft",
                "knockgate.daemon", "knockgate.io", "knockgate.compat.knockd",
                "knockgate.compat.fwknop.access")
_SECRET = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(("argv", "forbidden"), [
    (["knock", "127.0.0.1", "tcp:7000", "udp:8000", "tcp:9000"],
     (*_SERVER_SIDE, "cryptography", "knockgate.core.spa", "knockgate.compat")),
    (["open", "127.0.0.1", "--key-name", "k", "--secret", _SECRET, "--open", "tcp:22",
      "--profiles", "/nonexistent/client.toml"], _SERVER_SIDE),
    (["open", "127.0.0.1", "--fwknop", "--key-base64", _SECRET, "--hmac-key-base64", _SECRET,
      "--open", "tcp:22"], _SERVER_SIDE),
], ids=["knock", "open", "open --fwknop"])
def test_client_commands_import_only_what_they_use(argv, forbidden):
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF, *argv], capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout)
    assert result["code"] == 0, done.stderr
    assert [name for name in result["imported"] if name.startswith(forbidden)] == []
