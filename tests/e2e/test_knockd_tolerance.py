"""What knockd tolerates, a served knockd.conf tolerates too (issue 11, item 2): a second
[options] section, two doors with the same sequence, a LogFile that cannot be opened. Each
file runs under the real knockd and under `knockgate serve`, and the same knock must open the
same ports. Each door's command adds the knocker to an nftables set that a drop rule spares."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import RunningDaemon, knockgate_cli, need_tool
from tests.e2e.test_knockd_peer import knock, wait_for_line
from tests.support.testbed import CLIENT_V4, SERVER_V4

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.support.testbed import TestBed

# tcp:22 and tcp:23 are dropped unless the source is in @door22 / @door23 respectively.
GUARD = """\
table inet kdtest {
  set door22 { type ipv4_addr; }
  set door23 { type ipv4_addr; }
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 22 ip saddr @door22 accept
    tcp dport 23 ip saddr @door23 accept
    tcp dport { 22, 23 } drop
  }
}
"""

SECOND_OPTIONS = """\
[options]
\tInterface = {iface}
\tLogFile = {unused_log}

[openSSH]
\tsequence = 7000,8000:udp,9000
\tseq_timeout = 5
\tcommand = {nft} add element inet kdtest door22 {{ %IP% }}

[options]
\tLogFile = {log}
\tPidFile = {pid}
"""

SAME_SEQUENCE = """\
[options]
\tInterface = {iface}
\tLogFile = {log}
\tPidFile = {pid}

[openSSH]
\tsequence = 7000,8000:udp,9000
\tseq_timeout = 5
\tcommand = {nft} add element inet kdtest door22 {{ %IP% }}
{ssh_target}
[openTelnet]
\tsequence = 7000,8000:udp,9000
\tseq_timeout = 5
\tcommand = {nft} add element inet kdtest door23 {{ %IP% }}
{telnet_target}
"""

UNOPENABLE_LOG = """\
[options]
\tInterface = {iface}
\tLogFile = /nonexistent-knockgate-dir/knockd.log
\tPidFile = {pid}

[openSSH]
\tsequence = 7000,8000:udp,9000
\tseq_timeout = 5
\tcommand = {nft} add element inet kdtest door22 {{ %IP% }}
"""


def write_conf(bed: TestBed, tmp_path: Path, template: str, targets: tuple[str, str] = ("", "")
               ) -> Path:
    ruleset = tmp_path / "guard.nft"
    ruleset.write_text(GUARD)
    bed.run(bed.server, need_tool("nft"), "-f", str(ruleset))
    bed.listen(22)
    bed.listen(23)
    assert not bed.can_connect(SERVER_V4, 22) and not bed.can_connect(SERVER_V4, 23)
    conf = tmp_path / "knockd.conf"
    conf.write_text(template.format(
        iface=bed.server_if, log=tmp_path / "server.log", unused_log=tmp_path / "unused.log",
        pid=tmp_path / "server.pid", nft=need_tool("nft"), ssh_target=targets[0],
        telnet_target=targets[1]))
    return conf


def start_knockd(bed: TestBed, conf: Path, tmp_path: Path) -> Path:
    """knockd in the foreground; its stderr (where it says it is listening when LogFile
    cannot be opened, and its own log otherwise) goes to a file the test reads."""
    stderr = tmp_path / "knockd.stderr"
    with stderr.open("wb") as sink:
        bed.spawn(bed.server, [need_tool("knockd"), "-c", str(conf), "-v"],
                  stdout=sink, stderr=subprocess.STDOUT)
    return stderr


def start_knockgate(bed: TestBed, conf: Path) -> RunningDaemon:
    daemon = RunningDaemon(bed, conf)
    daemon.wait_for("ready, watching")
    return daemon


def opens(bed: TestBed, settled: Callable[[], object] = lambda: None) -> tuple[bool, bool]:
    """Knock the shared sequence, wait for ``settled``; which of tcp:22 and tcp:23 then
    accept connections."""
    knock(bed, "7000", "8000:udp", "9000")
    settled()
    ssh = bed.wait_until_open(SERVER_V4, 22) is not None
    telnet = bed.wait_until_open(SERVER_V4, 23, deadline=1.0 if ssh else 0.2) is not None
    return ssh, telnet


@pytest.mark.parametrize("peer", ["knockd", "knockgate"])
def test_second_options_section_is_merged_last_value_wins(bed, tmp_path, peer):
    conf = write_conf(bed, tmp_path, SECOND_OPTIONS)
    if peer == "knockd":
        start_knockd(bed, conf, tmp_path)
        wait_for_line(tmp_path / "server.log", "listening on")
        assert opens(bed) == (True, False)
        wait_for_line(tmp_path / "server.log", f"{CLIENT_V4}: openSSH: OPEN SESAME")
    else:
        check = knockgate_cli(bed, bed.server, "check", "--config", str(conf))
        assert check.returncode == 0, check.stderr
        assert f"{conf}:10: warning: a second [options] section" in check.stderr
        assert "LogFile given again (first at line 3)" in check.stderr
        daemon = start_knockgate(bed, conf)
        assert opens(bed) == (True, False)
        daemon.wait_for(f"opened nothing for {CLIENT_V4}")
        # LogFile is the second section's: the daemon logs there, never to the first's.
        wait_for_line(tmp_path / "server.log", "ready, watching")
    assert not (tmp_path / "unused.log").exists()


# A Target puts a knockgate door on the userspace engine: each engine, and both together,
# must fire every door the knock completes.
# It takes the blank line before [openTelnet], so that door stays on line 11.
USERSPACE = f"\tTarget = {SERVER_V4}"


@pytest.mark.parametrize("targets", [("", ""), ("", USERSPACE), (USERSPACE, USERSPACE)],
                         ids=["kernel-and-kernel", "kernel-and-userspace",
                              "userspace-and-userspace"])
@pytest.mark.parametrize("peer", ["knockd", "knockgate"])
def test_two_doors_with_the_same_sequence_both_open(bed, tmp_path, peer, targets):
    conf = write_conf(bed, tmp_path, SAME_SEQUENCE, targets)
    if peer == "knockd":
        start_knockd(bed, conf, tmp_path)
        wait_for_line(tmp_path / "server.log", "listening on")
        assert opens(bed) == (True, True)
        wait_for_line(tmp_path / "server.log", f"{CLIENT_V4}: openTelnet: OPEN SESAME")
    else:
        check = knockgate_cli(bed, bed.server, "check", "--config", str(conf))
        assert check.returncode == 0, check.stderr
        assert (f"{conf}:11: warning: door 'openTelnet' has the same sequence as door "
                f"'openSSH' (line 6)") in check.stderr
        daemon = start_knockgate(bed, conf)

        # A connection to what one door opened, made before the daemon has read the last
        # knock for a userspace door, can reach it first and reset that door as a scan (see
        # docs/migrating.md); knockd reads in order. So the probes wait for both commands.
        def both_opened() -> None:
            daemon.wait_for(f"door openSSH: command for {CLIENT_V4}: /bin/sh exited 0")
            daemon.wait_for(f"door openTelnet: command for {CLIENT_V4}: /bin/sh exited 0")

        assert opens(bed, both_opened) == (True, True), daemon.log


@pytest.mark.parametrize("peer", ["knockd", "knockgate"])
def test_an_unopenable_log_file_is_a_warning(bed, tmp_path, peer):
    conf = write_conf(bed, tmp_path, UNOPENABLE_LOG)
    if peer == "knockd":
        stderr = start_knockd(bed, conf, tmp_path)
        wait_for_line(stderr, "listening on")
        assert opens(bed) == (True, False)
        wait_for_line(stderr, f"{CLIENT_V4}: openSSH: OPEN SESAME")
    else:
        check = knockgate_cli(bed, bed.server, "check", "--config", str(conf))
        assert check.returncode == 0, check.stderr
        assert f"{conf}:3: warning: cannot open LogFile" in check.stderr
        daemon = start_knockgate(bed, conf)
        daemon.wait_for("cannot open log file /nonexistent-knockgate-dir/knockd.log")
        assert opens(bed) == (True, False), daemon.log
