"""Hidden and protected ports answer exactly like the host's other closed ports (issue 12 item 9):
a TCP reset and ICMP port unreachable where the host rejects, silence where the admin's
firewall drops, for IPv4 and IPv6; a rejected knock still counts."""

from __future__ import annotations

import socket
import time

import pytest

from knockgate.core.spa import SpaRequest
from tests.e2e.conftest import knockgate_cli, sealed, send_raw
from tests.support.testbed import CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, TestBed, inside

SEQUENCE = ("tcp:7000", "udp:8000", "tcp:9000")
# Ports knockgate closes: the knock ports, the SPA port and the ports doors and keys open.
HIDDEN = ("tcp:7000", "udp:8000", "tcp:9000", "udp:62201")
PROTECTED = ("tcp:22", "tcp:2222")
# Ports nothing listens on and knockgate leaves alone: how this host answers a closed port.
CLOSED = ("tcp:7999", "udp:8001", "udp:62299")
# Protected ports first: the hidden ones, probed in order, are the door's knock sequence.
EVERY_PORT = (*PROTECTED, *HIDDEN, *CLOSED)


def door_config(spa_config) -> str:
    return spa_config(extra=f"""
[[door]]
name = "ssh"
sequence = {list(SEQUENCE)}
timeout = 5
open = ["tcp:22"]
open_for = 30
""")


def answer(bed: TestBed, host: str, port_spec: str, wait: float = 0.4) -> str:
    """How the server answers one probe from the client: "refused" (a TCP reset, or an ICMP
    port unreachable that a connected UDP socket reports as ECONNREFUSED), "silent" or
    "open"."""
    proto, port = port_spec.split(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with bed.make_socket(bed.client, family, kind) as sock:
        sock.settimeout(wait)
        try:
            sock.connect((host, int(port)))
            if kind == socket.SOCK_STREAM:
                return "open"
            sock.send(b"probe")
            sock.recv(64)
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "silent"


def answers(bed: TestBed, host: str, ports=EVERY_PORT) -> dict[str, str]:
    return {port: answer(bed, host, port) for port in ports}


@pytest.mark.parametrize("host", [SERVER_V4, SERVER_V6])
def test_hidden_and_protected_ports_answer_like_closed_ones(bed, serve, spa_setup, host):
    config, _ = spa_setup
    bed.listen(22, socket.AF_INET6 if ":" in host else socket.AF_INET)
    daemon = serve(door_config(config))
    daemon.wait_for("closed, hidden and ungranted ports: IPv4 reject (TCP reset, ICMP port "
                    "unreachable), IPv6 reject")
    assert answers(bed, host) == dict.fromkeys(EVERY_PORT, "refused")


def test_a_rejected_knock_still_counts(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.listen(22)
    daemon = serve(door_config(config))
    assert answer(bed, SERVER_V4, "tcp:22") == "refused"
    result = knockgate_cli(bed, bed.client, "knock", SERVER_V4, *SEQUENCE)
    assert result.returncode == 0, result.stderr
    daemon.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V4}")
    assert answer(bed, SERVER_V4, "tcp:22") == "open"
    send_raw(bed, sealed(SpaRequest(ports=(("tcp", 2222),))))
    daemon.wait_for(f"opened tcp:2222 for {CLIENT_V4}")


ADMIN_DROPS = """
add table inet admin
add chain inet admin in { type filter hook input priority 0; policy drop; }
add rule inet admin in ct state established,related accept
add rule inet admin in meta l4proto ipv6-icmp accept
add rule inet admin in tcp dport { 22, 2222 } accept
"""


@pytest.mark.parametrize("host", [SERVER_V4, SERVER_V6])
def test_where_the_admin_drops_every_closed_port_is_silent(bed, serve, spa_setup, host):
    config, _ = spa_setup
    bed.run(bed.server, "nft", ADMIN_DROPS)
    bed.listen(22, socket.AF_INET6 if ":" in host else socket.AF_INET)
    daemon = serve(door_config(config))
    daemon.wait_for("closed, hidden and ungranted ports: IPv4 drop, IPv6 drop "
                    "(IPv4 from inet admin in policy drop")
    assert answers(bed, host) == dict.fromkeys(EVERY_PORT, "silent")
    # The silent knocks were seen: the sequence opens the door, and the admin lets tcp:22 in.
    mark = daemon.mark()
    result = knockgate_cli(bed, bed.client, "knock", host, *SEQUENCE)
    assert result.returncode == 0, result.stderr
    client = CLIENT_V6 if ":" in host else CLIENT_V4
    daemon.wait_for(f"door ssh: opened tcp:22 for {client}", after=mark)
    assert answer(bed, host, "tcp:22") == "open"


def test_closed_ports_setting_overrides_what_the_host_does(bed, serve, spa_setup):
    config, _ = spa_setup
    daemon = serve(door_config(config).replace("[daemon]", '[daemon]\nclosed_ports = "drop"'))
    daemon.wait_for('IPv4 drop, IPv6 drop (closed_ports = "drop")')
    assert answers(bed, SERVER_V4, HIDDEN) == dict.fromkeys(HIDDEN, "silent")
    assert answers(bed, SERVER_V4, CLOSED) == dict.fromkeys(CLOSED, "refused")


def port_unreachables(bed: TestBed, host: str, port: int, probes: int) -> int:
    """How many ICMP(v6) port unreachables ``probes`` datagrams to ``port``, sent at once,
    bring back."""
    v6 = ":" in host
    family = socket.AF_INET6 if v6 else socket.AF_INET
    icmp = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with inside(bed.client), socket.socket(family, socket.SOCK_RAW, icmp) as raw, \
            socket.socket(family, socket.SOCK_DGRAM) as udp:
        raw.setblocking(False)
        for _ in range(probes):
            udp.sendto(b"probe", (host, port))
        time.sleep(0.3)
        count = 0
        while True:
            try:
                packet = raw.recv(2048)
            except BlockingIOError:
                return count
            # IPv4 raw sockets see the IP header (20 bytes here), IPv6 ones do not. The
            # quoted packet follows the 8-byte ICMP header: IP header, then the UDP ports.
            icmp_message = packet if v6 else packet[20:]
            quoted_udp = icmp_message[8 + (40 if v6 else 20):]
            unreachable = (1, 4) if v6 else (3, 3)
            if (icmp_message[0], icmp_message[1]) == unreachable and \
                    int.from_bytes(quoted_udp[2:4], "big") == port:
                count += 1


@pytest.mark.parametrize("host", [SERVER_V4, SERVER_V6])
def test_the_kernel_rate_limit_holds_for_hidden_ports(bed, serve, spa_setup, host):
    """nft's reject sends through the kernel's icmp_send, so the host's ICMP rate limit
    (icmp_ratelimit: a burst of 6 per peer, then one per interval) caps both alike."""
    config, _ = spa_setup
    sysctl = "net.ipv6.icmp.ratelimit" if ":" in host else "net.ipv4.icmp_ratelimit"
    bed.run(bed.server, "sysctl", "-q", f"{sysctl}=100")  # refills the burst in 0.6 s
    serve(door_config(config))
    counts = {}
    for port in (62299, 62201, 8001, 8000):
        time.sleep(1.0)
        counts[port] = port_unreachables(bed, host, port, probes=40)
    assert counts[62201] == counts[62299] and counts[8000] == counts[8001], counts
    assert 0 < counts[62201] < 40, counts



def test_each_ip_version_answers_as_its_own_firewall_does(bed, serve, spa_setup):
    config, _ = spa_setup
    bed.run(bed.server, "nft", "add table ip6 admin\n"
            "add chain ip6 admin in { type filter hook input priority 0; policy drop; }\n"
            "add rule ip6 admin in ct state established,related accept\n"
            "add rule ip6 admin in meta l4proto ipv6-icmp accept\n")
    daemon = serve(door_config(config))
    daemon.wait_for("IPv4 reject (TCP reset, ICMP port unreachable), IPv6 drop")
    assert answers(bed, SERVER_V4) == dict.fromkeys(EVERY_PORT, "refused")
    assert answers(bed, SERVER_V6, (*HIDDEN, *CLOSED)) == dict.fromkeys((*HIDDEN, *CLOSED),
                                                                        "silent")
    daemon.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V6}")  # the silent knocks counted


def first_reply(bed: TestBed, proto: int, send) -> bytes:
    """The first IPv4 packet of protocol ``proto`` the client receives after ``send()``."""
    with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_RAW, proto) as raw:
        raw.settimeout(1.0)
        send()
        return raw.recv(2048)


def masked(packet: bytes, *fields: tuple[int, int]) -> bytes:
    """``packet`` with the byte ranges ``fields`` zeroed (checksums, ports, IP ID)."""
    data = bytearray(packet)
    for start, end in fields:
        data[start:end] = bytes(end - start)
    return bytes(data)


def test_the_answers_are_the_kernels_own_byte_for_byte(bed, serve, spa_setup):
    config, _ = spa_setup
    serve(door_config(config))

    def reset(port: int) -> bytes:  # IP and TCP checksums and the source port differ
        packet = first_reply(bed, socket.IPPROTO_TCP, lambda: bed.send_syns([port]))
        return masked(packet, (10, 12), (20, 22), (36, 38))

    def unreachable(port: int) -> bytes:  # IP ID counts up; checksums, quoted ports differ
        def send() -> None:
            with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"probe", (SERVER_V4, port))
        packet = first_reply(bed, socket.IPPROTO_ICMP, send)
        return masked(packet, (4, 6), (10, 12), (22, 24), (32, 34), (38, 40), (48, 56))

    assert reset(22) == reset(23)
    assert reset(7000) == reset(7001)
    assert unreachable(62201) == unreachable(62299)
