from ipaddress import ip_address

import pytest

from knockgate.core.engine import Engine
from knockgate.core.kinds import parse_frame
from knockgate.core.sequence import DoorSequence
from knockgate.model import Door, Open, Packet, PortSpec, Progress, Reset, TcpFlag

SYN, ACK = TcpFlag.SYN, TcpFlag.ACK
A = ip_address("10.201.0.2")
B = ip_address("10.201.0.3")
SERVER = ip_address("10.201.0.1")


def door(*frames: str, timeout: float = 5.0, name: str = "ssh") -> Door:
    return Door(name=name, sequence=tuple(parse_frame(f) for f in frames), timeout=timeout,
                open=(PortSpec("tcp", 22),), open_for=30)


def machine(*frames: str, timeout: float = 5.0, cap: int = 100) -> DoorSequence:
    return DoorSequence(door(*frames, timeout=timeout), cap)


def knock(m: DoorSequence, src, frame: str, now: float, flags: int | None = None):
    f = parse_frame(frame)
    return m.handle(src, f.proto, f.port, SYN if flags is None and f.proto == "tcp"
                    else (flags or 0), now)


def test_right_order_opens_and_forgets():
    m = machine("tcp:7000", "udp:8000", "tcp:9000")
    assert knock(m, A, "tcp:7000", 0) == [Progress("ssh", A, 1, 3)]
    assert knock(m, A, "udp:8000", 1) == [Progress("ssh", A, 2, 3)]
    assert knock(m, A, "tcp:9000", 2) == [Open("ssh", A)]
    assert len(m) == 0


def test_timeout_counts_from_first_knock():
    m = machine("tcp:7000", "udp:8000", "tcp:9000", timeout=5)
    knock(m, A, "tcp:7000", 0)
    knock(m, A, "udp:8000", 4.9)
    assert knock(m, A, "tcp:9000", 5.1) == []  # expired: 9000 is out of order for a fresh start
    assert len(m) == 0


def test_completion_exactly_at_timeout_still_counts():
    m = machine("tcp:7000", "tcp:9000", timeout=5)
    knock(m, A, "tcp:7000", 0)
    assert knock(m, A, "tcp:9000", 5.0) == [Open("ssh", A)]


def test_wrong_order_resets():
    m = machine("tcp:7000", "udp:8000", "tcp:9000")
    knock(m, A, "tcp:7000", 0)
    assert knock(m, A, "tcp:9000", 1) == [Reset("ssh", A, "knock out of order")]
    assert knock(m, A, "udp:8000", 2) == []  # no progress left; 8000 alone means nothing
    assert len(m) == 0


def test_wrong_knock_on_first_port_restarts():
    m = machine("tcp:7000", "udp:8000", "tcp:9000")
    knock(m, A, "tcp:7000", 0)
    knock(m, A, "udp:8000", 1)
    assert knock(m, A, "tcp:7000", 2) == [
        Reset("ssh", A, "knock out of order"), Progress("ssh", A, 1, 3)]
    knock(m, A, "udp:8000", 3)
    assert knock(m, A, "tcp:9000", 6.9) == [Open("ssh", A)]  # timeout restarted at t=2


def test_syn_retransmit_does_not_reset():
    m = machine("tcp:7000", "udp:8000", "tcp:9000")
    knock(m, A, "tcp:7000", 0)
    assert knock(m, A, "tcp:7000", 1) == []
    knock(m, A, "udp:8000", 1.5)
    assert knock(m, A, "udp:8000", 1.6) == []
    assert knock(m, A, "tcp:9000", 2) == [Open("ssh", A)]


def test_mismatched_flags_are_ignored_not_reset():
    m = machine("tcp:7000", "tcp:9000")
    knock(m, A, "tcp:7000", 0)
    assert knock(m, A, "tcp:9000", 1, flags=ACK) == []  # wrong flags: ignored
    assert knock(m, A, "tcp:7000", 1, flags=SYN | ACK) == []
    assert knock(m, A, "tcp:9000", 2) == [Open("ssh", A)]


def test_flag_knocking_on_one_port():
    m = machine("tcp:110:x", "tcp:110:up", "tcp:110:n")
    x, up = 0x3F, TcpFlag.URG | TcpFlag.PSH
    assert knock(m, A, "tcp:110", 0, flags=x) == [Progress("ssh", A, 1, 3)]
    assert knock(m, A, "tcp:110", 1, flags=up) == [Progress("ssh", A, 2, 3)]
    assert knock(m, A, "tcp:110", 2, flags=SYN) == []  # flags match no frame: ignored
    assert knock(m, A, "tcp:110", 3, flags=0) == [Open("ssh", A)]


def test_sources_are_independent():
    m = machine("tcp:7000", "tcp:9000")
    knock(m, A, "tcp:7000", 0)
    assert knock(m, B, "tcp:9000", 1) == []
    assert knock(m, A, "tcp:9000", 1) == [Open("ssh", A)]


def test_state_is_bounded_and_evicts_oldest_first():
    m = machine("tcp:7000", "tcp:9000", cap=3)
    sources = [ip_address(f"10.202.0.{i}") for i in range(1, 6)]
    for t, src in enumerate(sources):
        knock(m, src, "tcp:7000", t * 0.01)
    assert len(m) == 3
    assert m.evicted == 2
    assert knock(m, sources[0], "tcp:9000", 1) == []  # evicted
    assert knock(m, sources[4], "tcp:9000", 1) == [Open("ssh", sources[4])]


def test_a_first_knock_flood_cannot_evict_sources_further_along():
    m = machine("tcp:7000", "udp:8000", "tcp:9000", cap=100)
    knock(m, A, "tcp:7000", 0)
    knock(m, A, "udp:8000", 0.1)
    for i in range(10_000):
        knock(m, ip_address(0x0ACA0000 + i), "tcp:7000", 0.2)
    assert len(m) == 101 and m.evicted == 10_000 - 100
    assert knock(m, A, "tcp:9000", 0.3) == [Open("ssh", A)]


def test_an_expired_attempt_is_not_resumed_even_if_not_yet_pruned():
    m = machine("tcp:7000", "udp:8000", "tcp:9000", timeout=1)
    knock(m, B, "tcp:7000", 0.5)  # pruning stops at B, which is still fresh at t=1.2
    knock(m, A, "tcp:7000", 0.0)  # ...but A was re-added after B: behind it in the table
    assert knock(m, A, "udp:8000", 1.2) == []


def test_expired_entries_are_pruned_without_their_source_returning():
    m = machine("tcp:7000", "tcp:9000", timeout=1)
    for i in range(50):
        knock(m, ip_address(f"10.202.1.{i}"), "tcp:7000", 0)
    knock(m, A, "tcp:7000", 2)
    assert len(m) == 1


def test_max_pending_must_be_positive():
    with pytest.raises(ValueError):
        DoorSequence(door("tcp:1"), 0)


def route(engine: Engine, packet: Packet, now: float) -> list:
    return engine.handle_knock(packet.src.packed, packet.dst.packed, packet.proto, packet.dport,
                               packet.flags, now)


def pending(engine: Engine) -> int:
    return sum(len(machine) for machine in engine.doors.values())


def test_engine_routes_only_the_ports_of_its_doors():
    engine = Engine([door("tcp:7000", "tcp:9000"), door("udp:5000", "udp:6000", name="vpn")],
                    max_pending=16)
    pkt = Packet(A, SERVER, "tcp", 40000, 7000, SYN)
    assert route(engine, pkt, 0) == [Progress("ssh", A.packed, 1, 2)]
    assert route(engine, Packet(A, SERVER, "tcp", 40000, 22, SYN), 0) == []
    assert route(engine, Packet(A, SERVER, "udp", 40000, 7000), 0) == []
    assert route(engine, Packet(A, SERVER, "udp", 40000, 5000), 0) == [
        Progress("vpn", A.packed, 1, 2)]
    assert route(engine, Packet(A, SERVER, "tcp", 40000, 9000, SYN), 1) == [
        Open("ssh", A.packed)]
    assert pending(engine) == 1


def test_engine_cost_does_not_grow_with_pending_sources():
    """Every packet is O(1): a million-source table answers as fast as an empty one."""
    import time

    engine = Engine([door("tcp:7000", "tcp:9000")], max_pending=200_000)
    pkt = Packet(A, SERVER, "tcp", 40000, 9000, SYN)

    def cost() -> float:
        start = time.perf_counter()
        for _ in range(20_000):
            route(engine, pkt, 1.0)
        return time.perf_counter() - start

    empty = cost()
    for i in range(200_000):
        route(engine, Packet(ip_address(0x0ACA0000 + i), SERVER, "tcp", 1, 7000, SYN), 0.5)
    assert pending(engine) == 200_000
    assert cost() < empty * 3 + 0.05


def test_cost_stays_flat_while_a_full_table_churns():
    """Evicting from the front of a plain dict makes each later lookup of its oldest entry
    walk over the holes (O(n)); the tables must stay O(1) under a flood that churns them."""
    import time

    m = machine("tcp:7000", "udp:8000", "tcp:9000", cap=50_000)

    def churn(base: int) -> float:
        start = time.perf_counter()
        for i in range(50_000):
            knock(m, ip_address(base + i), "tcp:7000", 1.0)
        return time.perf_counter() - start

    filling = churn(0x0ACA0000)
    evicting = churn(0x0ACB0000)  # every insert now evicts the oldest
    assert m.evicted == 50_000
    assert evicting < filling * 3 + 0.1
