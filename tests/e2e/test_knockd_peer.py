"""knockd as a peer: knockgate's client opens a real knockd's door, and knockgate serves the
same knockd.conf. Debian's knockd runs in the server namespace; its command adds the knocker to
an nftables set that a drop rule for tcp:22 spares."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, SERVER_V4

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.support.testbed import TestBed
from tests.e2e.conftest import knock_from, knockgate_cli, need_tool

KNOCKD_CONF = """\
[options]
\tInterface = {iface}
\tLogFile = {log}
\tPidFile = {pid}

[openSSH]
\tsequence    = 7000,8000:udp,9000
\tseq_timeout = 5
\ttcpflags    = syn
\tcommand     = {nft} add element inet kdtest allowed {{ %IP% }}
"""

# Port 22 is dropped unless the source is in @allowed, which only the door's command fills.
GUARD = """\
table inet kdtest {
  set allowed { type ipv4_addr; }
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 22 ip saddr @allowed accept
    tcp dport 22 drop
  }
}
"""


def write_conf(bed: TestBed, tmp_path: Path) -> Path:
    conf = tmp_path / "knockd.conf"
    conf.write_text(KNOCKD_CONF.format(iface=bed.server_if, log=tmp_path / "knockd.log",
                                       pid=tmp_path / "knockd.pid", nft=need_tool("nft")))
    return conf


def guard_port_22(bed: TestBed, tmp_path: Path) -> None:
    ruleset = tmp_path / "guard.nft"
    ruleset.write_text(GUARD)
    bed.run(bed.server, need_tool("nft"), "-f", str(ruleset))
    bed.listen(22)
    assert not bed.can_connect(SERVER_V4, 22), "tcp:22 must be shut before any knock"


def wait_for_line(path: Path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {path}:\n{log}")


class Knockd:
    def __init__(self, bed: TestBed, tmp_path: Path) -> None:
        self.log_path = tmp_path / "knockd.log"
        conf = write_conf(bed, tmp_path)
        # Foreground (no -d); bed.close() terminates it.
        bed.spawn(bed.server, [need_tool("knockd"), "-c", str(conf)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # knockd reads the interface's addresses once, at start, so the bed must be up first.
        wait_for_line(self.log_path, "listening on")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str) -> str:
        return wait_for_line(self.log_path, text)


@pytest.fixture
def knockd(bed: TestBed, tmp_path: Path) -> Knockd:
    guard_port_22(bed, tmp_path)
    return Knockd(bed, tmp_path)


def knock(bed: TestBed, *frames: str) -> None:
    result = knockgate_cli(bed, bed.client, "knock", SERVER_V4, *frames)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("frames", [("7000", "8000:udp", "9000"),
                                    ("tcp:7000", "udp:8000", "tcp:9000")],
                         ids=["knockd-client-syntax", "frame-syntax"])
def test_knockgate_knock_opens_a_real_knockd(bed, knockd, frames):
    knock(bed, *frames)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, knockd.log
    knockd.wait_for(f"{CLIENT_V4}: openSSH: OPEN SESAME")


def test_wrong_order_keeps_knockd_shut(bed, knockd):
    knock(bed, "7000", "9000", "8000:udp")
    knockd.wait_for(f"{CLIENT_V4}: openSSH: Stage 1")
    # knockd reads packets in order and runs a door's command before it reads on: once
    # another source's first knock, sent after, is logged, the knocks above were handled.
    knock_from(bed, CLIENT_V4_OTHER, "tcp:7000")
    knockd.wait_for(f"{CLIENT_V4_OTHER}: openSSH: Stage 1")
    assert not bed.can_connect(SERVER_V4, 22), knockd.log
    assert "OPEN SESAME" not in knockd.log
    knock(bed, "7000", "8000:udp", "9000")  # and the right order still works afterwards
    assert bed.wait_until_open(SERVER_V4, 22) is not None, knockd.log


def test_knockgate_serves_the_same_knockd_conf(bed, serve, tmp_path):
    guard_port_22(bed, tmp_path)
    daemon = serve(write_conf(bed, tmp_path).read_text())
    knock(bed, "7000", "8000:udp", "9000")
    # knockd's command has braces, so it runs through /bin/sh with the address as "$1".
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    allowed = bed.run(bed.server, need_tool("nft"), "list", "set", "inet", "kdtest", "allowed")
    assert CLIENT_V4 in allowed.stdout


def test_knockgate_serves_knockd_conf_wrong_order_stays_shut(bed, serve, tmp_path):
    guard_port_22(bed, tmp_path)
    daemon = serve(write_conf(bed, tmp_path).read_text())
    knock(bed, "7000", "9000", "8000:udp")
    # A kernel door tells the daemon of openings only: another source's, knocked after these
    # knocks, is logged after any opening they could cause, and must be the only one.
    knock_from(bed, CLIENT_V4_OTHER, "tcp:7000", "udp:8000", "tcp:9000")
    other = daemon.wait_for(f"opened nothing for {CLIENT_V4_OTHER}")
    assert not bed.can_connect(SERVER_V4, 22), daemon.log
    assert [line for line in daemon.log.splitlines() if "opened" in line] == [other]
    knock(bed, "7000", "8000:udp", "9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
