from knockgate.config.load import parse_config
from knockgate.core.nft.table import render_ruleset, render_teardown
from knockgate.daemon.main import hidden_ports
from knockgate.model import PortSpec

CONFIG = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000"]
open = ["tcp:22", "tcp:2222"]

[[door]]
name = "vpn"
sequence = ["udp:5000", "tcp:5001"]
open = ["udp:1194", "tcp:22"]
"""

GOLDEN = """\
add table inet knockgate
add chain inet knockgate input { type filter hook input priority filter - 10; policy accept; }
flush chain inet knockgate input
add set inet knockgate ssh_v4 { type ipv4_addr; flags dynamic,timeout; }
add set inet knockgate ssh_v6 { type ipv6_addr; flags dynamic,timeout; }
add set inet knockgate vpn_v4 { type ipv4_addr; flags dynamic,timeout; }
add set inet knockgate vpn_v6 { type ipv6_addr; flags dynamic,timeout; }
delete set inet knockgate old_v4
add rule inet knockgate input iif "lo" accept
add rule inet knockgate input ct state established,related accept
add rule inet knockgate input tcp dport { 22, 2222 } ip saddr @ssh_v4 accept
add rule inet knockgate input tcp dport { 22, 2222 } ip6 saddr @ssh_v6 accept
add rule inet knockgate input tcp dport { 22 } ip saddr @vpn_v4 accept
add rule inet knockgate input tcp dport { 22 } ip6 saddr @vpn_v6 accept
add rule inet knockgate input udp dport { 1194 } ip saddr @vpn_v4 accept
add rule inet knockgate input udp dport { 1194 } ip6 saddr @vpn_v6 accept
add rule inet knockgate input tcp dport { 22, 2222, 5001, 7000 } drop
add rule inet knockgate input udp dport { 1194, 5000, 8000 } drop
"""


def test_ruleset_golden():
    config = parse_config(CONFIG)
    text = render_ruleset(config.doors, hidden_ports(config), ["ssh_v4", "old_v4"])
    assert text == GOLDEN


def test_teardown():
    assert render_teardown() == "delete table inet knockgate\n"


def test_port_grant_sets_and_rules():
    config = parse_config('[[door]]\nname="ssh"\nsequence=["tcp:1","tcp:2"]\nopen=["tcp:22"]\n')
    text = render_ruleset(config.doors, [], ["_ports_v4", "_ports_v6"],
                          [PortSpec("udp", 1194), PortSpec("tcp", 22)])
    lines = text.splitlines()
    assert "add set inet knockgate _ports_v4 { type ipv4_addr . inet_proto . inet_service; " \
           "flags timeout; }" in lines
    assert "add rule inet knockgate input ip saddr . meta l4proto . th dport @_ports_v4 accept" \
        in lines
    assert "add rule inet knockgate input udp dport { 1194 } drop" in lines
    assert not any(line.startswith("delete set") for line in lines)
    without = render_ruleset(config.doors, [], ["_ports_v4", "_ports_v6"], [])
    assert "delete set inet knockgate _ports_v4" in without.splitlines()


def test_spa_filter_names_every_key_id_and_compiles():
    from knockgate.core.spa import key_id_for
    from knockgate.io.bpf import compile_filter, fixed_datagram_clause

    ids = [key_id_for(name) for name in ("alice", "bob")]
    clause = fixed_datagram_clause(62201, 112, 1, ids)
    for key_id in ids:
        assert f"udp[9:4] = 0x{key_id[:4].hex()}" in clause
        assert f"ip6[53:4] = 0x{key_id[4:].hex()}" in clause
    assert len(compile_filter(clause)) < 100
    many = [key_id_for(f"k{n}") for n in range(300)]
    assert "udp[9:4]" not in fixed_datagram_clause(62201, 112, 1, many), "too many: no id test"
