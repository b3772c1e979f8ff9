"""Protected ports stay closed while no daemon runs (issue 12 item 1): after SIGTERM, after a
failed start, and from `knockgate up` on, until `knockgate down` removes the table. Live grants
keep working until their kernel timers end them; no knock opens anything while no daemon logs it.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.e2e.conftest import knock_from, knockgate_cli
from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, SERVER_V4

BOTH = pytest.mark.parametrize("engine", ["userspace", "kernel"])
LEFT_IN_PLACE = "left table inet knockgate in place without knock rules"


def door(engine: str, open_for: float = 30) -> str:
    return f"""
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = {open_for}
engine = "{engine}"
"""


def knock(bed, *sources: str) -> None:
    """The door's sequence from each of ``sources`` (the client's own address by default)."""
    for source in sources:
        knock_from(bed, source, "tcp:7000", "udp:8000", "tcp:9000")
    if not sources:
        result = knockgate_cli(bed, bed.client, "knock", SERVER_V4, "tcp:7000", "udp:8000",
                               "tcp:9000")
        assert result.returncode == 0, result.stderr


def listing(bed) -> str:
    return bed.run(bed.server, "nft", "list", "table", "inet", "knockgate", check=False).stdout


def assert_dormant(bed) -> None:
    """The table is there, closing port 22, with no rule that could open a door: no knock
    chain, no NFLOG rule (openings, hand-overs), no stage or first-stage set."""
    text = listing(bed)
    assert 'comment "made by knockgate serve"' in text, text
    assert "dport { 22" in text, text
    for knock_part in ("knock_v4", "log prefix", "stage1", "first_v4", "_knocking"):
        assert knock_part not in text, text


def open_for_client(bed, serve, config: str):
    """A daemon serving ``config`` that opened port 22 for CLIENT_V4 (and not for the other
    address: port 22 is protected while it runs)."""
    bed.listen(22)
    assert bed.can_connect(SERVER_V4, 22), "the listener answers before any table"
    daemon = serve(config)
    knock(bed)
    daemon.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V4}")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    return daemon


def stopped(daemon) -> None:
    assert daemon.stop() < 1.0
    assert daemon.process.returncode == 0, daemon.log
    daemon.wait_for(LEFT_IN_PLACE)


@BOTH
def test_after_sigterm_ports_stay_closed_and_a_live_grant_lasts_until_it_expires(
        bed, serve, engine):
    daemon = open_for_client(bed, serve, door(engine, open_for=3))
    opened_at = time.monotonic()
    stopped(daemon)
    assert_dormant(bed)
    assert bed.can_connect(SERVER_V4, 22), "the live grant outlives the daemon"
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER), "22 is still closed"
    knock(bed, CLIENT_V4_OTHER)  # no rule is left to count it: nothing opens unlogged
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    time.sleep(max(0.0, 3.3 - (time.monotonic() - opened_at)))
    assert not bed.can_connect(SERVER_V4, 22), "the kernel ends the grant on its own"


@BOTH
def test_a_restart_after_sigterm_keeps_a_live_grant(bed, serve, engine):
    stopped(open_for_client(bed, serve, door(engine)))
    restarted = serve(door(engine))
    assert bed.can_connect(SERVER_V4, 22), "the adopted table kept the grant"
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    knock(bed, CLIENT_V4_OTHER)  # the restarted daemon answers knocks again
    restarted.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V4_OTHER}")
    assert bed.wait_until_open(SERVER_V4, 22, source=CLIENT_V4_OTHER) is not None


def test_a_start_with_a_broken_config_leaves_the_table_in_place(bed, serve, tmp_path):
    stopped(open_for_client(bed, serve, door("kernel")))
    broken = tmp_path / "broken.toml"
    broken.write_text(door("kernel").replace("tcp:9000", "tcp:99999"))
    result = knockgate_cli(bed, bed.server, "serve", "--config", str(broken))
    assert result.returncode == 3 and "99999" in result.stderr, result.stderr
    assert_dormant(bed)
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    assert bed.can_connect(SERVER_V4, 22), "and the live grant with it"


@BOTH
def test_a_start_that_fails_after_reading_its_config_installs_the_protection(
        bed, serve, engine, tmp_path):
    """No table before (a first start), or the whole table a crash left (kill -9): either
    way a start that fails leaves the protection, with no knock rule."""
    bed.listen(22)
    config = tmp_path / "knockgate.toml"
    config.write_text(door(engine))
    config.chmod(0o600)
    for before in ("no table", "after a crash"):
        result = knockgate_cli(bed, bed.server, "serve", "--config", str(config),
                               "--interface", "kg-missing0")
        assert result.returncode != 0 and "kg-missing0" in result.stderr, result.stderr
        assert LEFT_IN_PLACE in result.stderr, (before, result.stderr)
        assert_dormant(bed)
        assert not bed.can_connect(SERVER_V4, 22), before
        if before == "no table":
            crashed = serve(door(engine))
            assert "log prefix" in listing(bed)
            crashed.process.kill()
            crashed.process.wait()
    knock(bed)  # a kernel door whose rules a crash left would open here
    assert not bed.can_connect(SERVER_V4, 22)


@BOTH
def test_up_installs_the_protection_and_serve_adopts_it(bed, serve, engine, tmp_path):
    bed.listen(22)
    assert bed.can_connect(SERVER_V4, 22), "the listener answers before any table"
    config = tmp_path / "boot.toml"
    config.write_text(door(engine))
    config.chmod(0o600)
    result = knockgate_cli(bed, bed.server, "up", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert_dormant(bed)
    assert not bed.can_connect(SERVER_V4, 22), "closed from `up` on, before any daemon"
    knock(bed)  # no daemon: nothing may open
    assert not bed.can_connect(SERVER_V4, 22)
    daemon = serve(door(engine))
    knock(bed)
    daemon.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V4}")
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)


def test_down_removes_the_table_and_refuses_a_running_daemon_or_a_foreign_table(bed, serve):
    daemon = open_for_client(bed, serve, door("kernel"))
    result = knockgate_cli(bed, bed.server, "down")
    assert result.returncode == 1 and "stop it first" in result.stderr, result.stderr
    assert "log prefix" in listing(bed), "the running daemon's table is untouched"
    stopped(daemon)
    result = knockgate_cli(bed, bed.server, "down")
    assert result.returncode == 0, result.stderr
    assert listing(bed) == ""
    assert bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER), "an explicit act opens all"
    bed.run(bed.server, "nft", "add table inet knockgate\n"
            "add chain inet knockgate input { type filter hook input priority 0; }")
    before = listing(bed)
    result = knockgate_cli(bed, bed.server, "down")
    assert result.returncode == 4, result.stderr
    assert "knockgate did not make" in result.stderr
    assert listing(bed) == before


def test_up_refuses_a_foreign_table(bed, tmp_path):
    bed.run(bed.server, "nft", "add table inet knockgate")
    before = listing(bed)
    config = tmp_path / "boot.toml"
    config.write_text(door("kernel"))
    config.chmod(0o600)
    result = knockgate_cli(bed, bed.server, "up", "--config", str(config))
    assert result.returncode == 4 and "knockgate did not make" in result.stderr, result.stderr
    assert listing(bed) == before


def test_serve_with_a_daemon_already_running_leaves_its_table_alone(bed, serve, tmp_path):
    daemon = serve(door("kernel"))
    config = tmp_path / "second.toml"
    config.write_text(door("userspace"))
    config.chmod(0o600)
    second = bed.knockgate(bed.server, "serve", "--config", str(config),
                           stderr=subprocess.PIPE)
    _, stderr = second.communicate(timeout=5)
    assert second.returncode == 1 and b"stop it first" in stderr
    assert "knock_v4" in listing(bed), "the first daemon's knock rules are untouched"
    assert daemon.process.poll() is None


def test_up_with_a_broken_config_falls_back_loudly_on_the_table_the_daemon_saved(
        bed, serve, tmp_path):
    """A config that breaks between the last start and a boot (an edit SIGHUP refused) must
    not boot the host unprotected: `up` installs the table the daemon saved, and fails."""
    state = tmp_path / "state"
    config = f'[daemon]\nstate_dir = "{state}"\n' + door("kernel")
    stopped(open_for_client(bed, serve, config))
    saved = state / "table.nft"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert knockgate_cli(bed, bed.server, "down").returncode == 0  # as after a reboot
    assert bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    broken = tmp_path / "knockgate.toml"
    broken.write_text(config.replace("tcp:9000", "tcp:99999"))
    result = knockgate_cli(bed, bed.server, "up", "--config", str(broken), "--state-dir",
                           str(state))
    assert result.returncode == 3, result.stderr
    assert f"installed instead the table the daemon saved in {saved}" in result.stderr
    assert f"{broken}:" in result.stderr and "99999" in result.stderr
    assert_dormant(bed)
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    saved.chmod(0o644)  # a saved table others may read or write is not trusted
    assert knockgate_cli(bed, bed.server, "down").returncode == 0
    result = knockgate_cli(bed, bed.server, "up", "--config", str(broken), "--state-dir",
                           str(state))
    assert result.returncode == 3 and "NOTHING INSTALLED" in result.stderr, result.stderr
    assert listing(bed) == ""
