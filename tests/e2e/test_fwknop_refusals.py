"""access.conf stanzas knockgate cannot honour as fwknopd would, against the real `fwknop`
client: a stanza asking for what knockgate does not do (FORCE_NAT) opens nothing, and an expired
stanza matches nothing, while the other stanzas of the same file keep working."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import need_tool
from tests.support.testbed import CLIENT_V4, SERVER_V4

KEY_A = base64.b64encode(bytes(range(32))).decode()
HMAC_A = base64.b64encode(bytes(range(100, 164))).decode()
KEY_B = base64.b64encode(bytes(range(32, 64))).decode()
HMAC_B = base64.b64encode(bytes(range(164, 228))).decode()


def stanza(key: str, hmac: str, extra: str = "", ports: str = "OPEN_PORTS tcp/22\n") -> str:
    return f"SOURCE ANY\n{ports}KEY_BASE64 {key}\nHMAC_KEY_BASE64 {hmac}\n{extra}\n"


def serve_access(serve, tmp_path: Path, text: str):
    access = tmp_path / "access.conf"
    access.write_text(text)
    access.chmod(0o600)
    return serve(f'[daemon]\nstate_dir = "{tmp_path}/state"\n\n[fwknop]\naccess = "{access}"\n')


def fwknop_client(bed, key: str, hmac: str) -> None:
    tool = need_tool("fwknop")
    result = bed.run(bed.client, tool, "--no-rc-file", "--no-save-args", "-A", "tcp/22",
                     "-D", SERVER_V4, "-a", CLIENT_V4, "--use-hmac", "--key-base64-rijndael",
                     key, "--key-base64-hmac", hmac, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_force_nat_stanza_opens_nothing_and_the_others_work(bed, serve, tmp_path):
    bed.listen(22)
    daemon = serve_access(serve, tmp_path,
                          stanza(KEY_A, HMAC_A, "FORCE_NAT 10.201.0.99 22\n")  # lines 1-5
                          + stanza(KEY_A, HMAC_A)  # the same keys: must not catch the packet
                          + stanza(KEY_B, HMAC_B))
    closed = daemon.wait_for("is closed: FORCE_NAT")
    assert "access.conf:5: error: stanza 1 (SOURCE line 1)" in closed, closed
    fwknop_client(bed, KEY_A, HMAC_A)
    refused = daemon.wait_for(f"fwknop: stanza 1, packet from {CLIENT_V4} refused")
    assert "FORCE_NAT (line 5)" in refused and "does not forward" in refused, refused
    assert not bed.can_connect(SERVER_V4, 22), "fwknopd would DNAT, not open the local port"
    fwknop_client(bed, KEY_B, HMAC_B)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    daemon.wait_for(f"opened tcp:22 for {CLIENT_V4}")


@pytest.mark.parametrize("expired_ports", ["OPEN_PORTS tcp/22\n", ""])
def test_expired_stanza_matches_nothing_and_the_others_work(bed, serve, tmp_path,
                                                            expired_ports):
    bed.listen(22)
    yesterday = time.strftime("%m/%d/%Y", time.gmtime(time.time() - 86400))
    daemon = serve_access(serve, tmp_path,
                          stanza(KEY_A, HMAC_A, f"ACCESS_EXPIRE {yesterday}\n", expired_ports)
                          + stanza(KEY_B, HMAC_B, "ACCESS_EXPIRE 12/31/2099\n"))
    expired = daemon.wait_for("expired at")
    assert "stanza 1 (SOURCE line 1)" in expired and "matches no packet" in expired, expired
    assert "stanza 2" not in expired
    fwknop_client(bed, KEY_A, HMAC_A)
    daemon.wait_for(f"fwknop: dropped a packet from {CLIENT_V4}: stanza 1: stanza expired")
    assert not bed.can_connect(SERVER_V4, 22)
    fwknop_client(bed, KEY_B, HMAC_B)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    daemon.wait_for(f"opened tcp:22 for {CLIENT_V4}")
