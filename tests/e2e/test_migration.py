"""Migration end to end against the real programs from Debian's packages: fwknop's client and
server, knockd's client, and knockd.conf files served by knockgate."""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import knock_from, knockgate_cli, need_tool
from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, SERVER_V4, inside

KEY = base64.b64encode(bytes(range(32))).decode()
HMAC = base64.b64encode(bytes(range(100, 164))).decode()


def access_conf(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "access.conf"
    path.write_text(f"SOURCE ANY\nOPEN_PORTS tcp/22\nKEY_BASE64 {KEY}\n"
                    f"HMAC_KEY_BASE64 {HMAC}\nFW_ACCESS_TIMEOUT 2\n{extra}")
    path.chmod(0o600)
    return path


def fwknop_config(tmp_path: Path, access: Path) -> str:
    return f'[daemon]\nstate_dir = "{tmp_path}/state"\n\n[fwknop]\naccess = "{access}"\n'


def fwknop_client(bed, *args: str, digest: str = "sha256") -> None:
    tool = need_tool("fwknop")
    result = bed.run(bed.client, tool, "--no-rc-file", "--no-save-args", "-A", "tcp/22",
                     "-D", SERVER_V4, "--use-hmac", "--key-base64-rijndael", KEY,
                     "--key-base64-hmac", HMAC, "--hmac-digest-type", digest, *args,
                     check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def send_raw(bed, payload: bytes, source: str = CLIENT_V4) -> None:
    with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(payload, (SERVER_V4, 62201))


@pytest.mark.parametrize(("digest", "address"), [("sha256", ["-a", CLIENT_V4]),
                                                  ("sha512", ["-s"]), ("sha1", ["-a", CLIENT_V4])])
def test_real_fwknop_client_opens_a_knockgate_door(bed, serve, tmp_path, digest, address):
    bed.listen(22)
    extra = f"HMAC_DIGEST_TYPE {digest}\n"
    daemon = serve(fwknop_config(tmp_path, access_conf(tmp_path, extra)))
    assert not bed.can_connect(SERVER_V4, 22)
    fwknop_client(bed, *address, digest=digest)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    daemon.wait_for(f"opened tcp:22 for {CLIENT_V4} for 2s")
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    time.sleep(2.3)
    assert not bed.can_connect(SERVER_V4, 22), "FW_ACCESS_TIMEOUT closes it"


def test_replayed_fwknop_packet_is_rejected(bed, serve, tmp_path):
    bed.listen(22)
    daemon = serve(fwknop_config(tmp_path, access_conf(tmp_path)))
    saved = tmp_path / "packet.txt"
    fwknop_client(bed, "-a", CLIENT_V4, "-B", str(saved))
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    packet = saved.read_text().strip().encode()
    time.sleep(2.3)
    send_raw(bed, packet)
    daemon.wait_for(f"replayed packet from {CLIENT_V4} refused")
    send_raw(bed, packet, source=CLIENT_V4_OTHER)
    daemon.wait_for(f"replayed packet from {CLIENT_V4_OTHER} refused")
    assert not bed.can_connect(SERVER_V4, 22)


def test_stanza_rules_and_garbage(bed, serve, tmp_path):
    bed.listen(22)
    bed.listen(3306)
    daemon = serve(fwknop_config(tmp_path, access_conf(tmp_path, "REQUIRE_SOURCE_ADDRESS Y\n")))
    fwknop_client(bed, "-s")  # 0.0.0.0 is refused by REQUIRE_SOURCE_ADDRESS
    for payload in (b"U2FsdGVkX1" + b"A" * 200, os.urandom(300), b"A" * 150):
        send_raw(bed, payload)
    # The client's packet and the three after it each get a debug line: all were handled.
    daemon.wait_for(f"fwknop: dropped a packet from {CLIENT_V4}", count=4)
    assert not bed.can_connect(SERVER_V4, 22)
    assert "REQUIRE_SOURCE_ADDRESS" in daemon.log
    assert daemon.process.poll() is None
    fwknop_client(bed, "-a", CLIENT_V4)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


def test_knockgate_client_opens_a_real_fwknopd(bed, tmp_path):
    fwknopd = need_tool("fwknopd")
    iptables = need_tool("iptables")
    bed.listen(22)
    bed.run(bed.server, iptables, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")
    (tmp_path / "run").mkdir(mode=0o700)
    conf = tmp_path / "fwknopd.conf"
    conf.write_text(f"PCAP_INTF {bed.server_if};\nFWKNOP_RUN_DIR {tmp_path}/run;\n"
                    f"FWKNOP_PID_FILE {tmp_path}/run/fwknopd.pid;\n"
                    f"DIGEST_FILE {tmp_path}/run/digest.cache;\nFIREWALL_EXE {iptables};\n")
    conf.chmod(0o600)
    access = access_conf(tmp_path)
    bed.spawn(bed.server, [fwknopd, "-f", "-c", str(conf), "-a", str(access),
                           "-i", bed.server_if])
    time.sleep(1.0)  # fwknopd opens its pcap and iptables chains
    assert not bed.can_connect(SERVER_V4, 22)
    for digest in ("sha256",):
        result = knockgate_cli(bed, bed.client, "open", SERVER_V4, "--fwknop", "--key-base64",
                               KEY, "--hmac-key-base64", HMAC, "--hmac-digest-type", digest,
                               "--open", "tcp:22", "--allow-ip", CLIENT_V4)
        assert result.returncode == 0, result.stderr
    assert bed.wait_until_open(SERVER_V4, 22, deadline=5) is not None, "fwknopd did not open"
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)


KNOCKD_CONF = """\
[options]
    LogFile = {log}

[openSSH]
    sequence    = 7000,8000:udp,9000
    seq_timeout = 5
    tcpflags    = syn
    command     = {iptables} -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
"""


def test_knockd_client_opens_knockgate_serving_a_knockd_conf(bed, serve, tmp_path):
    knock = need_tool("knock")
    iptables = need_tool("iptables")
    bed.listen(22)
    bed.run(bed.server, iptables, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")
    daemon = serve(KNOCKD_CONF.format(log=tmp_path / "kg.log", iptables=iptables))
    assert not bed.can_connect(SERVER_V4, 22)
    result = bed.run(bed.client, knock, SERVER_V4, "7000", "8000:udp", "9000")
    assert result.returncode == 0, result.stderr
    daemon.wait_for("command for 10.201.0.2: /usr/sbin/iptables exited 0")
    assert bed.can_connect(SERVER_V4, 22)
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    assert "openSSH" in (tmp_path / "kg.log").read_text(), "knockd's LogFile is honoured"


def test_shell_commands_from_knockd_conf_get_the_address_as_a_parameter(bed, serve, tmp_path):
    knock = need_tool("knock")
    marker = tmp_path / "marker"
    conf = KNOCKD_CONF.format(log=tmp_path / "kg.log", iptables="/usr/sbin/iptables").replace(
        "command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT",
        f"command     = echo knocked from %IP% > {marker}")
    path = tmp_path / "knockd.conf"
    path.write_text(conf)
    checked = knockgate_cli(bed, bed.server, "check", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "shell = true" in checked.stderr, "check warns about commands run by a shell"
    daemon = serve(conf)
    bed.run(bed.client, knock, SERVER_V4, "7000", "8000:udp", "9000")
    daemon.wait_for("/bin/sh exited 0")
    assert marker.read_text() == f"knocked from {CLIENT_V4}\n"


def test_one_time_sequences_are_consumed(bed, serve, tmp_path):
    knock = need_tool("knock")
    sequences = tmp_path / "otp"
    sequences.write_text("7001,8001:udp,9001\n7002,8002:udp,9002\n")
    conf = (f"[options]\n    LogFile = {tmp_path}/kg.log\n\n[otp]\n"
            f"    one_time_sequences = {sequences}\n    seq_timeout = 5\n    tcpflags = syn\n"
            f"    command = /usr/bin/touch {tmp_path}/opened-%IP%\n")
    daemon = serve(conf)
    bed.run(bed.client, knock, SERVER_V4, "7001", "8001:udp", "9001")
    daemon.wait_for("one-time sequence used")
    daemon.wait_for("/usr/bin/touch exited 0")
    assert sequences.read_text().startswith("#001,8001:udp,9001\n"), "marked as knockd does"
    (tmp_path / f"opened-{CLIENT_V4}").unlink()
    mark = daemon.mark()
    bed.run(bed.client, knock, SERVER_V4, "7001", "8001:udp", "9001")
    # Another source's knock, read after those: once it is logged, they were all handled.
    knock_from(bed, CLIENT_V4_OTHER, "tcp:7002")
    daemon.wait_for(f"{CLIENT_V4_OTHER} knock 1/3", after=mark)
    assert "sequence completed" not in "\n".join(daemon.log.splitlines()[mark:])
    assert not (tmp_path / f"opened-{CLIENT_V4}").exists(), "a used sequence opens nothing"
    bed.run(bed.client, knock, SERVER_V4, "7002", "8002:udp", "9002")
    daemon.wait_for("is used up; the door is disabled", after=mark)
    daemon.wait_for("/usr/bin/touch exited 0", after=mark)
    assert (tmp_path / f"opened-{CLIENT_V4}").exists()


def test_import_writes_toml_that_check_accepts(bed, tmp_path):
    knockd = tmp_path / "knockd.conf"
    knockd.write_text(KNOCKD_CONF.format(log=tmp_path / "kg.log", iptables="/usr/sbin/iptables"))
    result = knockgate_cli(bed, bed.server, "import", "knockd", str(knockd))
    assert result.returncode == 0, result.stderr
    converted = tmp_path / "knockgate.toml"
    converted.write_text(result.stdout)
    checked = knockgate_cli(bed, bed.server, "check", "--config", str(converted))
    assert checked.returncode == 0, checked.stderr
    assert "door openSSH" in checked.stdout and "tcp:7000:syn udp:8000" in checked.stdout
