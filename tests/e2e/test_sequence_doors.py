"""Port-sequence doors end to end: namespaces, real packets, real nftables, the real CLI."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import knock_from, knockgate_cli, need_tool
from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, SERVER_V4, SERVER_V6

DOOR = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = {open_for}
engine = "{engine}"
"""
BOTH = pytest.mark.parametrize("engine", ["userspace", "kernel"])


def door(open_for: float, engine: str = "userspace") -> str:
    return DOOR.format(open_for=open_for, engine=engine)


def knock(bed, *frames: str, host: str = SERVER_V4) -> None:
    result = knockgate_cli(bed, bed.client, "knock", host, *frames)
    assert result.returncode == 0, result.stderr


def open_for_other_source(bed, daemon) -> str:
    """The door opened for CLIENT_V4_OTHER, by knocks sent after everything before: the
    opening's log line proves the daemon has handled whatever came before them."""
    knock_from(bed, CLIENT_V4_OTHER, "tcp:7000", "udp:8000", "tcp:9000")
    return daemon.wait_for(f"opened tcp:22 for {CLIENT_V4_OTHER}")


def handed_over_other_source(bed, daemon) -> None:
    """Another source's first two knocks, sent after everything before: the daemon logs the
    second once the kernel hands it over, after any hand-over those knocks could cause."""
    mark = daemon.mark()
    knock_from(bed, CLIENT_V4_OTHER, "tcp:7000", "udp:8000")
    daemon.wait_for(f"{CLIENT_V4_OTHER} knock 2/3", after=mark)


@BOTH
def test_opens_for_the_knocker_only_then_closes(bed, serve, engine):
    bed.listen(22)
    daemon = serve(door(1.5, engine))
    assert not bed.can_connect(SERVER_V4, 22), "protected port must look dropped before a knock"

    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    daemon.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V4}")
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER), \
        "another address of the client host must stay shut"

    time.sleep(1.7)
    assert not bed.can_connect(SERVER_V4, 22), "the door must close after open_for"


def test_established_connection_outlives_the_grant(bed, serve):
    listener = bed.listen(22)
    serve(door(1))
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    client = bed.make_socket(bed.client, socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(1)
    client.connect((SERVER_V4, 22))
    listener.settimeout(1)
    server_side, peer = listener.accept()
    while peer != client.getsockname():  # skip the probes wait_until_open left in the queue
        server_side.close()
        server_side, peer = listener.accept()
    time.sleep(1.3)
    assert not bed.can_connect(SERVER_V4, 22)
    client.sendall(b"still here")
    server_side.settimeout(1)
    assert server_side.recv(100) == b"still here"
    client.close()
    server_side.close()


@BOTH
def test_wrong_order_stays_shut(bed, serve, engine):
    bed.listen(22)
    daemon = serve(door(5, engine))
    knock(bed, "tcp:7000", "tcp:9000", "udp:8000")
    knock(bed, "udp:8000", "tcp:7000", "tcp:9000")  # a stray first knock, then wrong again
    # Back to the start after the second knock, then a step skipped: the userspace door's
    # first stage is in the kernel, which hands the source over at udp:8000.
    knock(bed, "tcp:7000", "udp:8000", "tcp:7000", "tcp:9000")
    if engine == "userspace":
        # The third knock resets (and, being the first, restarts), the last resets again.
        daemon.wait_for("reset (knock out of order)", count=2)
        openings = []
    else:  # the kernel tells the daemon of openings only: another source's is the proof
        openings = [open_for_other_source(bed, daemon)]
    assert not bed.can_connect(SERVER_V4, 22)
    assert [line for line in daemon.log.splitlines() if "opened" in line] == openings


def test_userspace_door_restarts_after_the_handover(bed, serve):
    """The first knock again, after the kernel handed the source over, starts over in the
    daemon. The rest follows after the kernel's first stage (2.5 s) is over, so only that
    restart can open: the first attempt's clock, started one stage before the hand-over, has
    run out by then."""
    bed.listen(22)
    daemon = serve(door(5))
    daemon.wait_for("first knock kept in the kernel")
    knock(bed, "tcp:7000", "udp:8000", "tcp:7000")
    time.sleep(2.7)
    knock(bed, "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


def test_userspace_door_refuses_a_first_gap_longer_than_its_share(bed, serve):
    """The kernel keeps a first knock for timeout / (knocks - 1): 1 s here."""
    bed.listen(22)
    daemon = serve(door(5).replace("timeout = 5", "timeout = 2"))
    knock(bed, "tcp:7000")
    time.sleep(1.3)
    knock(bed, "udp:8000", "tcp:9000")
    handed_over_other_source(bed, daemon)
    assert not bed.can_connect(SERVER_V4, 22)
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


@BOTH
def test_ipv6(bed, serve, engine):
    bed.listen(22, socket.AF_INET6)
    daemon = serve(door(5, engine))
    assert not bed.can_connect(SERVER_V6, 22)
    knock(bed, "-6", "tcp:7000", "udp:8000", "tcp:9000", host=SERVER_V6)
    assert bed.wait_until_open(SERVER_V6, 22) is not None, daemon.log
    daemon.wait_for("opened tcp:22 for fd00:201::2")
    assert not bed.can_connect(SERVER_V4, 22), "an IPv6 grant opens nothing for IPv4"


@BOTH
def test_flag_knocks_by_raw_packets(bed, serve, engine):
    bed.listen(22)
    daemon = serve(door(5, engine).replace('["tcp:7000", "udp:8000", "tcp:9000"]',
                                           '["tcp:110:x", "tcp:110:up", "tcp:110:n", '
                                           '"tcp:7000:fa"]'))
    knock(bed, "tcp:110:x", "tcp:110:up", "tcp:110:n", "tcp:7000:fa")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


@BOTH
def test_knockd_client_opens_a_knockgate_door(bed, serve, engine):
    knock_tool = need_tool("knock")
    bed.listen(22)
    daemon = serve(door(5, engine))
    result = bed.run(bed.client, knock_tool, SERVER_V4, "7000", "8000:udp", "9000")
    assert result.returncode == 0, result.stderr
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


@BOTH
def test_commands_run_with_placeholders_and_stop_after_delay(bed, serve, tmp_path: Path, engine):
    bed.listen(22)
    config = door(5, engine) + (
        f'command = ["/usr/bin/touch", "{tmp_path}/opened-{{door}}-{{ip}}"]\n'
        f'stop_command = ["/usr/bin/touch", "{tmp_path}/closed-{{ip}}"]\n'
        "command_delay = 1\n"
    )
    daemon = serve(config)
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    daemon.wait_for("command for 10.201.0.2: /usr/bin/touch exited 0")
    assert (tmp_path / f"opened-ssh-{CLIENT_V4}").exists()
    assert not (tmp_path / f"closed-{CLIENT_V4}").exists()
    daemon.wait_for("stop_command for 10.201.0.2: /usr/bin/touch exited 0", timeout=3)
    assert (tmp_path / f"closed-{CLIENT_V4}").exists()


def test_failing_command_is_logged_not_fatal(bed, serve):
    bed.listen(22)
    daemon = serve(door(5) + 'command = ["/bin/false"]\n')
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    daemon.wait_for("/bin/false failed with status 1")
    assert bed.can_connect(SERVER_V4, 22)
    assert daemon.process.poll() is None


def test_new_local_address_is_watched_live(bed, serve):
    bed.listen(22)
    daemon = serve(door(5))
    bed.run(bed.server, "ip", "addr", "add", "10.201.5.1/16", "dev", bed.server_if)
    daemon.wait_for("address 10.201.5.1 added")
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000", host="10.201.5.1")
    assert bed.wait_until_open("10.201.5.1", 22) is not None, daemon.log


def test_knocks_to_other_destinations_do_not_count(bed, serve):
    """A packet the host would forward is not a knock on this host."""
    bed.listen(22)
    daemon = serve(door(5))
    bed.run(bed.client, "ip", "route", "add", "10.201.9.9/32", "via", SERVER_V4)
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000", host="10.201.9.9")
    handed_over_other_source(bed, daemon)
    assert f"{CLIENT_V4} knock" not in daemon.log
    assert not bed.can_connect(SERVER_V4, 22)


@BOTH
def test_sighup_with_broken_file_keeps_serving(bed, serve, tmp_path: Path, engine):
    bed.listen(22)
    bed.listen(2222)
    daemon = serve(door(30, engine))
    config = tmp_path / "knockgate.toml"
    config.write_text(config.read_text() + "\nbogus = [\n")
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    line = daemon.wait_for("reload failed, still serving the previous configuration", after=mark)
    assert "knockgate.toml:" in line
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log

    # A new door, and the old one switched to the other engine: its live grant stays.
    other = "kernel" if engine == "userspace" else "userspace"
    config.write_text(door(30, other) + WEB_DOOR)
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("reloaded door web", after=mark)
    assert bed.can_connect(SERVER_V4, 22), "the grant on a kept door survives a reload"
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER), "22 is still guarded"
    assert not bed.can_connect(SERVER_V4, 2222), "the new door starts shut"
    knock(bed, "tcp:7100", "tcp:7200")
    assert bed.wait_until_open(SERVER_V4, 2222) is not None, daemon.log


WEB_DOOR = """
[[door]]
name = "web"
sequence = ["tcp:7100", "tcp:7200"]
open = ["tcp:2222"]
"""


@BOTH
def test_sigterm_leaves_the_table_without_knock_rules_within_a_second(bed, serve, engine):
    """Fail closed (issue 12 item 1): the drops and grants stay, nothing opens unlogged."""
    bed.listen(22)
    daemon = serve(door(30, engine))
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    assert "log prefix" in bed.run(bed.server, "nft", "list", "ruleset").stdout
    assert daemon.stop() < 1.0
    assert daemon.process.returncode == 0
    left = bed.run(bed.server, "nft", "list", "ruleset").stdout
    assert "table inet knockgate" in left and "log prefix" not in left, left


@BOTH
def test_grants_expire_in_the_kernel_even_if_the_daemon_dies(bed, serve, engine):
    bed.listen(22)
    daemon = serve(door(1, engine))
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None
    daemon.process.kill()
    daemon.process.wait()
    time.sleep(1.3)
    assert not bed.can_connect(SERVER_V4, 22), "the kernel must close the door on its own"


def test_check_reports_file_line_and_hint(bed, tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('[[door]]\nname = "ssh"\nsequence = ["tcp:7000", "tcp:99999"]\n'
                      'open = ["tcp:22"]\n')
    result = knockgate_cli(bed, bed.server, "check", "--config", str(config))
    assert result.returncode == 3
    assert result.stderr.startswith(f"{config}:3: port 99999 is out of range")
    assert "hint:" in result.stderr
    config.write_text(door(5))
    result = knockgate_cli(bed, bed.server, "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "door ssh" in result.stdout and "open tcp:22 for 5s" in result.stdout


def test_serve_refuses_a_bad_config_and_leaves_no_table(bed, tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('[[door]]\nname = "ssh"\nsequence = ["tcp:7000"]\nopen = ["tcp:22"]\n'
                      "open_for = -1\n")
    result = knockgate_cli(bed, bed.server, "serve", "--config", str(config))
    assert result.returncode == 3 and f"{config}:5:" in result.stderr
    assert "knockgate" not in bed.run(bed.server, "nft", "list", "ruleset").stdout


def test_interfaces_lists_the_namespace_links(bed):
    result = knockgate_cli(bed, bed.server, "interfaces")
    assert result.returncode == 0
    assert bed.server_if in result.stdout and "loopback" in result.stdout


def received_packets(bed) -> int:
    path = f"/sys/class/net/{bed.server_if}/statistics/rx_packets"
    return int(bed.run(bed.server, "cat", path).stdout)


@BOTH
def test_knocks_on_an_interface_not_named_do_not_count(bed, serve, engine):
    """The kernel's rules (kernel doors, the first stage) honour `interfaces` as the capture
    does: here only an unused link is watched, and the knocks arrive on the test veth."""
    bed.listen(22)
    bed.run(bed.server, "ip", "link", "add", "kgother0", "type", "veth", "peer", "name", "kgother1")
    daemon = serve(door(5, engine), "--interface", "kgother0")
    arrived = received_packets(bed)
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    deadline = time.monotonic() + 5
    while received_packets(bed) < arrived + 3:  # proof the knocks reached the server's veth
        assert time.monotonic() < deadline, "the knocks never arrived"
        time.sleep(0.02)
    assert not bed.can_connect(SERVER_V4, 22), daemon.log
    assert "opened" not in daemon.log and "knock 1/3" not in daemon.log


def test_named_interface_is_watched_and_a_missing_one_is_refused(bed, serve, tmp_path: Path):
    bed.listen(22)
    daemon = serve(door(5), "--interface", bed.server_if)
    knock(bed, "tcp:7000", "udp:8000", "tcp:9000")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    config = tmp_path / "knockgate.toml"
    second = knockgate_cli(bed, bed.server, "serve", "--config", str(config))
    assert second.returncode == 1 and "another 'knockgate serve' is running" in second.stderr
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER), \
        "the refused second daemon must leave the first one's table alone"
    daemon.stop()
    result = knockgate_cli(bed, bed.server, "serve", "--config", str(config),
                           "--interface", "nosuch0")
    assert result.returncode == 5
    assert "no interface 'nosuch0'" in result.stderr


def test_userspace_door_reports_a_handed_source_that_touches_another_port(bed, serve):
    """The kernel forgets the source's first stage and hand-over itself; the daemon is told,
    since it holds the source's progress."""
    bed.listen(22)
    daemon = serve(door(5))
    knock(bed, "tcp:7000", "udp:8000")
    daemon.wait_for("knock 2/3")
    knock(bed, "tcp:5555")
    daemon.wait_for(f"{CLIENT_V4} reset on every door")
    knock(bed, "tcp:9000")
    handed_over_other_source(bed, daemon)
    assert not bed.can_connect(SERVER_V4, 22)
    assert "opened" not in daemon.log
