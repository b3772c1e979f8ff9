import base64
import json
import socket
import struct
import subprocess
import sys
import time
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


# Secrets in files, never on the command line: what `knockgate open` says and reads.

_SENT = """
import sys
import time
import knockgate.client.knock as sender
sent = []
sender.send_datagram = lambda address, port, payload: sent.append(payload)
from knockgate.cli import run
code = run(sys.argv[1:])
sys.stdout.write(sent[0].hex() if sent else "")
sys.exit(int(code))
"""


def open_with(*argv: str) -> subprocess.CompletedProcess[str]:
    """`knockgate open ARGV` in a fresh interpreter; stdout: the packet it sent, in hex."""
    return subprocess.run([sys.executable, "-c", _SENT, "open", "127.0.0.1", *argv],
                          capture_output=True, text=True, check=False)


def key_file(tmp_path, name: str, secret: str, mode: int):
    path = tmp_path / name
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("mode", "shown"), [(0o644, "-rw-r--r--"), (0o640, "-rw-r-----"),
                                             (0o606, "-rw----rw-")])
def test_open_warns_when_others_may_read_the_secret_file_and_still_sends(tmp_path, mode, shown):
    path = key_file(tmp_path, "alice.key", _SECRET, mode)
    done = open_with("--key-name", "k", "--secret-file", str(path), "--open", "tcp:22",
                     "--profiles", "/nonexistent/client.toml")
    assert done.returncode == 0 and done.stdout, done.stderr
    assert done.stderr == (f"knockgate open: warning: {path} holds a secret and is readable or "
                           f"writable by others (mode {shown}); anyone who can read it can open "
                           f"your doors (hint: chmod 600 {path})\n")


def test_open_is_silent_about_a_secret_file_only_its_owner_reads(tmp_path):
    path = key_file(tmp_path, "alice.key", _SECRET, 0o600)
    done = open_with("--key-name", "k", "--secret-file", str(path), "--open", "tcp:22",
                     "--profiles", "/nonexistent/client.toml")
    assert (done.returncode, done.stderr) == (0, "")


def test_open_warns_about_a_profile_file_with_an_inline_secret_others_may_read(tmp_path):
    profiles = key_file(tmp_path, "client.toml", f'[server.box]\nhost = "127.0.0.1"\n'
                        f'key_name = "k"\nsecret = "{_SECRET}"\nopen = ["tcp:22"]', 0o644)
    done = subprocess.run([sys.executable, "-c", _SENT, "open", "box", "--profiles",
                           str(profiles)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"warning: {profiles} holds a secret and is readable" in done.stderr


def test_fwknop_keys_from_files_make_the_same_packet_as_keys_on_the_command_line(tmp_path):
    from knockgate.compat.fwknop.wire import decode

    hmac = base64.b64encode(bytes(range(64))).decode()
    keys = [("--key-file", str(key_file(tmp_path, "key", _SECRET, 0o600))),
            ("--hmac-key-file", str(key_file(tmp_path, "hmac", hmac, 0o400)))]
    done = open_with("--fwknop", *keys[0], *keys[1], "--open", "tcp:22")
    assert (done.returncode, done.stderr) == (0, "")
    request = decode(bytes.fromhex(done.stdout), key=base64.b64decode(_SECRET),
                     hmac_key=base64.b64decode(hmac), now=time.time(), max_age=60)
    assert request.access == (("tcp", 22),)


def test_fwknop_key_file_others_may_read_warns_and_garbage_in_it_is_named(tmp_path):
    hmac = key_file(tmp_path, "hmac", base64.b64encode(bytes(64)).decode(), 0o600)
    shared = key_file(tmp_path, "key", _SECRET, 0o644)
    done = open_with("--fwknop", "--key-file", str(shared), "--hmac-key-file", str(hmac),
                     "--open", "tcp:22")
    assert done.returncode == 0 and f"warning: {shared} holds a secret" in done.stderr
    garbage = key_file(tmp_path, "garbage", "not base64!", 0o600)
    done = open_with("--fwknop", "--key-file", str(garbage), "--hmac-key-file", str(hmac),
                     "--open", "tcp:22")
    assert done.returncode == 1
    assert f"error: {garbage} (one base64 line) is not valid base64" in done.stderr


def test_fwknop_takes_one_form_of_each_key():
    done = open_with("--fwknop", "--key-file", "/k", "--key-base64", _SECRET, "--open", "tcp:22")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
    done = open_with("--fwknop", "--key-base64", _SECRET, "--open", "tcp:22")
    assert done.returncode == 1 and "--fwknop needs --hmac-key-file" in done.stderr


def test_help_says_which_options_put_a_secret_where_ps_shows_it():
    from knockgate.cli import _parser

    parser = _parser(["open"])
    (open_parser,) = (action.choices["open"] for action in parser._actions
                      if isinstance(action.choices, dict))
    helps = {action.dest: action.help or "" for action in open_parser._actions}
    for dest in ("secret", "key_base64", "key_rijndael", "hmac_key_base64", "hmac_key"):
        assert "ps and /proc/PID/cmdline" in helps[dest], dest
    for dest in ("secret_file", "key_file", "hmac_key_file"):
        assert "ps" not in helps[dest].split(), dest


def test_a_secret_file_brings_in_the_permission_rule_and_nothing_else_of_the_server(tmp_path):
    path = key_file(tmp_path, "alice.key", _SECRET, 0o600)
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF, "open", "127.0.0.1", "--key-name",
                           "k", "--secret-file", str(path), "--open", "tcp:22", "--profiles",
                           "/nonexistent/client.toml"], capture_output=True, text=True, check=True)
    imported = json.loads(done.stdout)["imported"]
    assert "knockgate.config.files" in imported
    assert [name for name in imported if name.startswith(_SERVER_SIDE)
            and name != "knockgate.config.files"] == []
