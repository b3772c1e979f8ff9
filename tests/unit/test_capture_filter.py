"""The capture filter's text (core/capture_filter.py), compiled by the real libpcap."""

from knockgate.core.capture_filter import capture_filter, fixed_datagram_clause
from knockgate.core.gate import Gate
from knockgate.core.kinds import parse_frame
from knockgate.model import Door, PortSpec


def door(name: str, *frames: str) -> Door:
    return Door(name, tuple(map(parse_frame, frames)), 5, (PortSpec("tcp", 22),), 30,
                engine="userspace")


def test_nothing_to_capture_is_no_filter():
    assert capture_filter([], []) is None


def test_captured_doors_give_one_clause_per_knock_port_and_flags_stay_in_python():
    # A later knock on the first knock's port: every knock is captured (core/nft/first_stage.py)
    gate = Gate([door("a", "tcp:7000", "tcp:7000:fa", "udp:8000")], 16)
    assert gate.capture_clauses() == ["tcp dst port 7000", "udp dst port 8000"]
    assert capture_filter(gate.capture_clauses(), ["udp dst port 62201"]) == \
        "(tcp dst port 7000) or (udp dst port 8000) or (udp dst port 62201)"


def test_doors_whose_first_stage_the_kernel_keeps_are_not_captured():
    gate = Gate([door("a", "tcp:7000", "udp:8000", "tcp:9000")], 16)
    assert gate.capture_clauses() == []


def test_spa_filter_names_every_key_id_and_compiles():
    from knockgate.core.spa import key_id_for
    from knockgate.io.bpf import compile_filter

    ids = [key_id_for(name) for name in ("alice", "bob")]
    clause = fixed_datagram_clause(62201, 112, 1, ids)
    for key_id in ids:
        assert f"udp[9:4] = 0x{key_id[:4].hex()}" in clause
        assert f"ip6[53:4] = 0x{key_id[4:].hex()}" in clause
    assert len(compile_filter(clause)) < 100
    many = [key_id_for(f"k{n}") for n in range(300)]
    assert "udp[9:4]" not in fixed_datagram_clause(62201, 112, 1, many), "too many: no id test"
