import re
from ipaddress import ip_address

import pytest

from knockgate.config.describe import describe
from knockgate.config.load import parse_config
from knockgate.core.kinds import parse_frame
from knockgate.core.nft.first_stage import (
    earliest_first_knock,
    first_stage_reason,
    first_stage_sets,
    forget_statements,
    render_first_stage,
    render_userspace_rules,
    staged_doors,
)
from knockgate.core.nft.kernel_doors import KernelSettings, render_kernel_doors
from knockgate.core.nft.names import HANDED_KNOCK_PREFIX, VERSIONS
from knockgate.core.nft.scan_guard import render_scan_guard
from knockgate.core.sequence import DoorSequence
from knockgate.model import Door, OneTimeSource, Open, PortSpec, Progress, TcpFlag

SETTINGS = KernelSettings(log_group=7, stage_size=1024, overflow_seed=0x1234ABCD)
A = ip_address("10.201.0.2").packed


def door(*frames: str, name: str = "ssh", timeout: float = 5.0) -> Door:
    return Door(name=name, sequence=tuple(parse_frame(f) for f in frames), timeout=timeout,
                open=(PortSpec("tcp", 22),), open_for=30, engine="userspace")


THREE = door("tcp:7000", "udp:8000", "tcp:9000:fa")

GOLDEN_RULES_V4 = """\
add rule inet knockgate input meta pkttype host ip saddr @ssh-first_v4 udp dport 8000 delete @ssh-first_v4 { ip saddr } update @_handed_v4 { ip saddr } log prefix "kg1:ssh" group 7
add rule inet knockgate input meta pkttype host jhash ip saddr mod 1024 seed 0x1234abcd @ssh-firstoverflow_v4 udp dport 8000 delete @ssh-firstoverflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd } update @_handed_v4 { ip saddr } log prefix "kg1:ssh" group 7
add rule inet knockgate input meta pkttype host ip saddr @ssh-first_v4 tcp dport 9000 tcp flags & (fin|syn|rst|psh|ack|urg) == fin|ack delete @ssh-first_v4 { ip saddr }
add rule inet knockgate input meta pkttype host jhash ip saddr mod 1024 seed 0x1234abcd @ssh-firstoverflow_v4 tcp dport 9000 tcp flags & (fin|syn|rst|psh|ack|urg) == fin|ack delete @ssh-firstoverflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd }
add rule inet knockgate input meta pkttype host tcp dport 7000 tcp flags & (fin|syn|rst|psh|ack|urg) == syn add @ssh-first_v4 { ip saddr }
add rule inet knockgate input meta pkttype host tcp dport 7000 tcp flags & (fin|syn|rst|psh|ack|urg) == syn ip saddr != @ssh-first_v4 add @ssh-firstoverflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd }
add rule inet knockgate input meta pkttype host ip saddr @_handed_v4 meta l4proto { tcp, udp } meta l4proto . th dport { tcp . 7000, tcp . 9000, udp . 8000 } log prefix "kg-knock" group 7
"""  # noqa: E501


def test_golden_rules_for_one_door():
    rendered = render_first_stage([THREE], SETTINGS)
    assert "\n".join(rendered.rules[:7]) + "\n" == GOLDEN_RULES_V4
    assert all("ip6 saddr" in rule for rule in rendered.rules[7:])
    assert len(rendered.rules) == 14


def test_sets_are_bounded_timed_and_recreated_when_they_exist():
    rendered = render_first_stage([THREE], SETTINGS, existing_sets=["ssh-first_v4", "other"])
    assert rendered.sets == first_stage_sets([THREE]) == {
        "_handed_v4", "_handed_v6", "ssh-first_v4", "ssh-first_v6",
        "ssh-firstoverflow_v4", "ssh-firstoverflow_v6"}
    first = rendered.declarations.index("delete set inet knockgate ssh-first_v4")
    assert rendered.declarations[first + 1] == (
        "add set inet knockgate ssh-first_v4 { type ipv4_addr; size 1024; "
        "flags dynamic,timeout; timeout 2500ms; }")
    assert ("add set inet knockgate _handed_v6 { type ipv6_addr; size 1024; "
            "flags dynamic,timeout; timeout 5000ms; }") in rendered.declarations
    assert not any("delete set inet knockgate other" in d for d in rendered.declarations)
    assert ("add set inet knockgate ssh-firstoverflow_v4 { typeof numgen random mod 1024; "
            "size 2048; flags dynamic,timeout; timeout 2500ms; }") in rendered.declarations


def test_later_frames_reset_once_each_and_a_repeat_of_the_second_is_a_handover():
    rules = render_first_stage([door("tcp:1", "tcp:2", "tcp:3", "tcp:2", "tcp:3")],
                               SETTINGS).rules
    resets = [rule for rule in rules if "ip saddr @ssh-first_v4 tcp dport 3 " in rule]
    assert len(resets) == 1 and "log" not in resets[0]
    assert not any("ip saddr @ssh-first_v4 tcp dport 2 " in rule and "log" not in rule
                   for rule in rules)


def test_every_door_shares_the_handed_set_and_the_knock_log():
    rules = render_first_stage([THREE, door("udp:1", "udp:2", name="vpn")], SETTINGS).rules
    knock_rules = [rule for rule in rules if HANDED_KNOCK_PREFIX in rule]
    assert len(knock_rules) == 2
    assert "{ tcp . 7000, tcp . 9000, udp . 1, udp . 2, udp . 8000 }" in knock_rules[0]
    assert rules.index(knock_rules[0]) > max(i for i, r in enumerate(rules)
                                            if "kg1:vpn" in r and "ip saddr" in r)


@pytest.mark.parametrize(("changed", "why"), [
    (door("tcp:7000"), "single knock"),
    (THREE._replace(target=ip_address("10.201.0.9")), "target"),
    (THREE._replace(one_time=OneTimeSource("/x", 0, 0, 0)), "one-time"),
    (door("tcp:110:s", "tcp:110:a"), "shares the first knock's port"),
    (door("udp:1", "tcp:2", "udp:1"), "shares the first knock's port"),
    (door("tcp:1", "tcp:2", "tcp:3", timeout=0.03), "under 20 ms"),
])
def test_doors_the_kernel_cannot_stage_keep_every_knock_captured(changed, why):
    reason = first_stage_reason(changed)
    assert reason is not None and why in reason
    assert staged_doors([changed]) == []
    with pytest.raises(ValueError, match="cannot keep its first stage"):
        render_first_stage([changed], SETTINGS)


def test_only_userspace_doors_are_staged():
    assert staged_doors([THREE, THREE._replace(name="k", engine="kernel")]) == [THREE]
    assert render_first_stage([], SETTINGS).rules == ()


def test_the_scan_guard_forgets_the_first_stage_too():
    rules = render_userspace_rules([THREE], SETTINGS).rules
    reported, silent = rules[0], rules[1]
    forget = ("delete @_knocking_v4 { ip saddr } delete @_handed_v4 { ip saddr } "
              "delete @ssh-first_v4 { ip saddr } delete @ssh-firstoverflow_v4 { jhash ip saddr "
              "mod 1024 seed 0x1234abcd }")
    assert reported.endswith(f'ip saddr @_handed_v4 {forget} log prefix "kg-reset" group 7')
    assert silent.endswith(f"}} {forget}")
    assert forget_statements([], VERSIONS[0], SETTINGS) == []


def test_when_every_door_is_staged_only_handed_sources_are_reported():
    rules = render_userspace_rules([THREE], SETTINGS).rules
    reports = [rule for rule in rules if "kg-reset" in rule]
    assert len(reports) == 2 and all("saddr @_handed_v" in rule for rule in reports)
    assert not any("_captured" in rule for rule in rules)


def test_a_captured_door_is_reported_for_its_own_knockers_only():
    """A door whose knocks are captured (here a single knock) needs reports for sources
    that touched its ports; sources that only sent another door's first knock stay silent."""
    rules = render_userspace_rules([THREE, door("udp:5", name="one")], SETTINGS).rules
    v4 = [rule for rule in rules if "ip saddr" in rule or "nfproto ipv4" in rule]
    reports = [rule for rule in v4 if "kg-reset" in rule]
    assert [re.search(r"ip saddr @(\S+) delete", r)[1] for r in reports] == [
        "_handed_v4", "_captured_v4"]
    assert all("delete @_captured_v4 { ip saddr }" in rule for rule in reports)
    assert any(rule.endswith("meta l4proto . th dport { udp . 5 } "
                             "update @_captured_v4 { ip saddr }") for rule in v4)


def test_without_staged_doors_every_knocker_is_reported_as_before():
    one = door("udp:5", name="one")
    assert render_userspace_rules([one], SETTINGS) == render_scan_guard(
        [one], SETTINGS.log_group, SETTINGS.stage_size)
    kernel_only = THREE._replace(engine="kernel")
    assert render_userspace_rules([kernel_only], SETTINGS).rules == ()


def test_a_handed_over_source_still_fits_the_whole_timeout():
    """F1 counts as one stage before the hand-over: F3 must come within the rest."""
    m = DoorSequence(THREE, 100)
    now = 1000.0
    assert m.vouch_first(A, earliest_first_knock(THREE, now), now) == [Progress("ssh", A, 1, 3)]
    assert m.handle(A, "udp", 8000, 0, now) == [Progress("ssh", A, 2, 3)]
    fin_ack = TcpFlag.FIN | TcpFlag.ACK
    assert m.handle(A, "tcp", 9000, fin_ack, now + 2.6) == []  # 2.5 s before + 2.6 s > 5 s
    m.vouch_first(A, earliest_first_knock(THREE, now), now)
    m.handle(A, "udp", 8000, 0, now)
    assert m.handle(A, "tcp", 9000, fin_ack, now + 2.4) == [Open("ssh", A)]


@pytest.mark.parametrize("now", [0.1, 1000.1, 123456.7, 1e6 + 0.3])
def test_a_two_knock_door_opens_on_the_handover_packet_despite_rounding(now):
    two = door("udp:1", "udp:2", timeout=0.3)
    m = DoorSequence(two, 10)
    m.vouch_first(A, earliest_first_knock(two, now), now)
    assert m.handle(A, "udp", 2, 0, now) == [Open("ssh", A)]


def test_a_handover_never_rewinds_a_source_further_along():
    m = DoorSequence(THREE, 100)
    m.handle(A, "tcp", 7000, TcpFlag.SYN, 10.0)
    m.handle(A, "udp", 8000, 0, 11.0)
    assert m.vouch_first(A, earliest_first_knock(THREE, 11.0), 11.0) == []
    assert m.handle(A, "tcp", 9000, TcpFlag.FIN | TcpFlag.ACK, 12.0) == [Open("ssh", A)]


def test_check_says_where_the_first_knock_is_kept():
    config = parse_config("""
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
engine = "userspace"

[[door]]
name = "flags"
sequence = ["tcp:110:s", "tcp:110:a"]
open = ["tcp:23"]
engine = "userspace"
""")
    text = "\n".join(describe(config))
    assert "first knock kept in the kernel" in text
    assert "the second must follow within 2.5s, the last within 2.5s of the second" in text
    assert "every knock is read by the daemon: a later knock shares" in text


def test_named_interfaces_limit_the_first_stage_and_the_kernel_doors():
    settings = SETTINGS._replace(interfaces=("eth0", "wg0"))
    rules = render_first_stage([THREE], settings).rules
    head = 'add rule inet knockgate input iifname { "eth0", "wg0" } meta pkttype host '
    assert all(rule.startswith(head) for rule in rules)
    jump = render_kernel_doors([THREE], settings).rules[0]
    assert jump.startswith(head)
    assert render_kernel_doors([THREE], SETTINGS).rules[0].startswith(
        "add rule inet knockgate input meta pkttype host ")

