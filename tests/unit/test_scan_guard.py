from knockgate.config.load import parse_config
from knockgate.core.nft.names import SCAN_RESET_PREFIX
from knockgate.core.nft.parts import TablePart
from knockgate.core.nft.scan_guard import render_scan_guard

CONFIG = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000"]
open = ["tcp:22"]
engine = "userspace"
"""


def test_guard_tracks_knockers_and_reports_other_ports():
    doors = parse_config(CONFIG).doors
    guard = render_scan_guard(doors, 27495, 1024, also_allowed=[("udp", 62201)])
    assert guard.sets == {"_knocking_v4", "_knocking_v6"}
    assert ("add set inet knockgate _knocking_v4 { type ipv4_addr; size 1024; "
            "flags dynamic,timeout; timeout 10000ms; }") in guard.declarations
    report, track = guard.rules[:2]
    assert report == (
        "add rule inet knockgate input meta nfproto ipv4 meta l4proto { tcp, udp } ip saddr "
        "@_knocking_v4 meta l4proto . th dport != { tcp . 22, tcp . 7000, udp . 8000, "
        "udp . 62201 } delete @_knocking_v4 { ip saddr } "
        f'log prefix "{SCAN_RESET_PREFIX}" group 27495')
    assert track.endswith("meta l4proto . th dport { tcp . 7000, udp . 8000 } "
                          "update @_knocking_v4 { ip saddr }")
    assert any("ip6 saddr @_knocking_v6" in rule for rule in guard.rules)


def test_no_userspace_door_no_guard():
    assert render_scan_guard([], 1, 1) == TablePart()
