"""Single packet authorization end to end: real packets, real nftables, the real CLI."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from knockgate.core.spa import SpaRequest
from tests.e2e.conftest import OTHER_SECRET, knockgate_cli, sealed, send_raw
from tests.support.testbed import (
    CLIENT_V4,
    CLIENT_V4_OTHER,
    CLIENT_V6,
    SERVER_V4,
    SERVER_V6,
    inside,
)


def spa_open(bed, secret_file: Path, *args: str, host: str = SERVER_V4, source: str | None = None):
    command = ["open", host, "--key-name", "alice", "--secret-file", str(secret_file), *args]
    if source is None:
        result = knockgate_cli(bed, bed.client, *command)
        assert result.returncode == 0, result.stderr
        return
    raise AssertionError("use send_raw for another source")


def test_valid_packet_opens_exactly_the_asked_ports_for_the_sender(bed, serve, spa_setup):
    config, secret_file = spa_setup
    bed.listen(22)
    bed.listen(2222)
    daemon = serve(config(open_for=1.5))
    assert not bed.can_connect(SERVER_V4, 22)
    spa_open(bed, secret_file, "--open", "tcp:22")
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    daemon.wait_for(f"spa: key alice: opened tcp:22 for {CLIENT_V4}")
    assert not bed.can_connect(SERVER_V4, 2222), "only the asked-for port opens"
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER), "only for the sender"
    time.sleep(1.7)
    assert not bed.can_connect(SERVER_V4, 22), "closes after open_for"


def test_replays_are_rejected_from_any_address_and_after_restart(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.listen(22)
    daemon = serve(config(open_for=1))
    packet = sealed(SpaRequest(ports=(("tcp", 22),)))
    send_raw(bed, packet)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    time.sleep(1.3)
    send_raw(bed, packet)
    daemon.wait_for(f"packet from {CLIENT_V4} refused: replay")
    assert not bed.can_connect(SERVER_V4, 22)
    send_raw(bed, packet, source=CLIENT_V4_OTHER)
    daemon.wait_for(f"packet from {CLIENT_V4_OTHER} refused: replay")
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)

    daemon.stop()
    restarted = serve(config(open_for=1))
    send_raw(bed, packet)
    restarted.wait_for(f"packet from {CLIENT_V4} refused: replay")
    assert not bed.can_connect(SERVER_V4, 22)


def test_stale_packet_is_rejected(bed, serve, spa_setup):
    config, secret_file = spa_setup
    bed.listen(22)
    daemon = serve(config())
    spa_open(bed, secret_file, "--open", "tcp:22", "--time-offset=-120")
    daemon.wait_for("dropped a packet from 10.201.0.2: stale")
    assert not bed.can_connect(SERVER_V4, 22)
    spa_open(bed, secret_file, "--open", "tcp:22", "--time-offset=-30")  # inside max_age
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


def test_hostile_packets_are_rejected_and_the_daemon_lives(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.listen(22)
    daemon = serve(config())
    good = sealed(SpaRequest(ports=(("tcp", 22),)))
    flipped = bytearray(good)
    flipped[60] ^= 0x01
    hostile = {
        "wrong key": sealed(SpaRequest(ports=(("tcp", 22),)), secret=OTHER_SECRET),
        "unknown key name": sealed(SpaRequest(ports=(("tcp", 22),)), name="mallory"),
        "flipped byte": bytes(flipped),
        "truncated": good[:-1],
        "oversize": good + b"\0",
        "empty": b"",
        "garbage": os.urandom(1400),
    }
    for payload in hostile.values():
        send_raw(bed, payload)
    # Sent after them all from another address, read after them all: once its line is
    # logged, every hostile packet the kernel filter let through was handled.
    send_raw(bed, hostile["wrong key"], source=CLIENT_V4_OTHER)
    daemon.wait_for(f"dropped a packet from {CLIENT_V4_OTHER}: auth")
    assert not bed.can_connect(SERVER_V4, 22)
    assert f"dropped a packet from {CLIENT_V4}: auth" in daemon.log, \
        f"no debug line for the wrong key\n{daemon.log}"
    # Wrong sizes, versions and key ids never leave the kernel filter.
    for reason in ("short", "long", "version", "unknown key"):
        assert f": {reason}" not in daemon.log, daemon.log
    assert daemon.process.poll() is None
    send_raw(bed, good)
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


def test_a_port_the_key_may_not_open_stays_shut(bed, serve, spa_setup):
    config, secret_file = spa_setup
    bed.listen(3333)
    bed.listen(22)
    bob = f'\n[[spa.key]]\nname = "bob"\nsecret = "{OTHER_SECRET}"\nopen = ["tcp:3333"]\n'
    daemon = serve(config(extra=bob))
    assert not bed.can_connect(SERVER_V4, 3333), "bob's port is guarded"
    spa_open(bed, secret_file, "--open", "tcp:3333", "--open", "tcp:22")
    daemon.wait_for("asks for tcp:3333, which the key may not open")
    assert not bed.can_connect(SERVER_V4, 3333)
    assert not bed.can_connect(SERVER_V4, 22), "a refused request opens nothing at all"


def test_action_code_runs_its_argv_with_ip(bed, serve, spa_setup, tmp_path: Path):
    config, secret_file = spa_setup
    daemon = serve(config())
    spa_open(bed, secret_file, "--action", "21")
    daemon.wait_for("spa key alice: action 21: /usr/bin/touch exited 0")
    assert (tmp_path / f"action-{CLIENT_V4}").exists()
    spa_open(bed, secret_file, "--action", "22")
    daemon.wait_for("asks for action 22, which the key may not run")


def test_another_address_needs_allow_nat(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.listen(22)
    daemon = serve(config(open_for=5))
    request = SpaRequest(target=__import__("ipaddress").ip_address(CLIENT_V4_OTHER),
                         ports=(("tcp", 22),))
    send_raw(bed, sealed(request))
    daemon.wait_for("(allow_nat is off)")
    assert not bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)
    daemon.stop()

    nat = serve(config(open_for=5, extra="allow_nat = true"))
    send_raw(bed, sealed(request))
    assert bed.wait_until_open(SERVER_V4, 22, source=CLIENT_V4_OTHER) is not None, nat.log
    assert not bed.can_connect(SERVER_V4, 22), "the sender itself was not asked for"


def test_sources_restrict_where_packets_may_come_from(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.listen(22)
    daemon = serve(config(extra='sources = ["10.201.0.3/32"]'))
    send_raw(bed, sealed(SpaRequest(ports=(("tcp", 22),))))
    daemon.wait_for("outside the key's sources")
    assert not bed.can_connect(SERVER_V4, 22)
    send_raw(bed, sealed(SpaRequest(ports=(("tcp", 22),))), source=CLIENT_V4_OTHER)
    assert bed.wait_until_open(SERVER_V4, 22, source=CLIENT_V4_OTHER) is not None, daemon.log


def test_ipv6(bed, serve, spa_setup):
    config, secret_file = spa_setup
    bed.listen(22, socket.AF_INET6)
    daemon = serve(config(open_for=5))
    spa_open(bed, secret_file, "-6", "--open", "tcp:22", host=SERVER_V6)
    assert bed.wait_until_open(SERVER_V6, 22) is not None, daemon.log
    daemon.wait_for(f"opened tcp:22 for {CLIENT_V6}")


def test_the_spa_port_answers_like_a_closed_port(bed, serve, spa_setup):
    """No socket is bound; the hidden port answers as the host's closed ports do (here the
    kernel's ICMP port unreachable: this test bed's host rejects), so a scan cannot tell it."""
    config, _ = spa_setup
    daemon = serve(config())
    with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for port in (62201, 62202):
            sock.connect((SERVER_V4, port))
            # A probe the daemon logs (the wrong key), so we know it reached the server.
            sock.send(sealed(SpaRequest(ports=(("tcp", 22),)), secret=OTHER_SECRET))
            with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable came back
                sock.recv(10)
        daemon.wait_for(f"dropped a packet from {CLIENT_V4}: auth")


def test_profile_makes_open_a_one_word_command(bed, serve, spa_setup, tmp_path: Path):
    config, secret_file = spa_setup
    bed.listen(22)
    daemon = serve(config(open_for=5))
    profiles = tmp_path / "client.toml"
    profiles.write_text(f'[server.myserver]\nhost = "{SERVER_V4}"\nkey_name = "alice"\n'
                        f'secret_file = "{secret_file}"\nopen = ["tcp:22"]\n')
    result = knockgate_cli(bed, bed.client, "open", "myserver", "--profiles", str(profiles))
    assert result.returncode == 0, result.stderr
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log


def test_check_refuses_a_secret_file_others_can_read(bed, spa_setup, tmp_path: Path):
    config, secret_file = spa_setup
    secret_file.chmod(0o644)
    path = tmp_path / "k.toml"
    path.write_text(config())
    result = knockgate_cli(bed, bed.server, "check", "--config", str(path))
    assert result.returncode == 3
    assert f"chmod 600 {secret_file}" in result.stderr
    secret_file.chmod(0o600)
    result = knockgate_cli(bed, bed.server, "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "key alice" in result.stdout and "actions [21]" in result.stdout
