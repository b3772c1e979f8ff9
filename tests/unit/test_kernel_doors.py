from ipaddress import ip_address

import pytest

from knockgate.core.kinds import parse_frame
from knockgate.core.nft.kernel_doors import (
    KernelSettings,
    kernel_reason,
    render_kernel_doors,
    stage_timeout_ms,
)
from knockgate.model import ALL_FLAGS, Door, OneTimeSource, PortSpec, TcpFlag

SETTINGS = KernelSettings(log_group=7, stage_size=1024, overflow_seed=0x1234ABCD)


def door(*frames: str, name: str = "ssh", timeout: float = 5.0, opens: tuple[str, ...] = ("22",),
         open_for: float = 30, penalty: float = 0) -> Door:
    return Door(name=name, sequence=tuple(parse_frame(f) for f in frames), timeout=timeout,
                open=tuple(PortSpec("tcp", int(p)) for p in opens), open_for=open_for,
                engine="kernel", penalty=penalty)


V4, V6 = "add rule inet knockgate knock_v4 ", "add rule inet knockgate knock_v6 "
THREE = door("tcp:7000", "udp:8000", "tcp:9000:fa")
PENALISED = THREE._replace(penalty=10)

GOLDEN_DECLARATIONS = """\
add chain inet knockgate knock_v4
flush chain inet knockgate knock_v4
add chain inet knockgate knock_v6
flush chain inet knockgate knock_v6
add set inet knockgate ssh-stage1_v4 { type ipv4_addr; size 1024; flags dynamic,timeout; timeout 2500ms; }
delete set inet knockgate ssh-stage2_v4
add set inet knockgate ssh-stage2_v4 { type ipv4_addr; size 256; flags dynamic,timeout; timeout 2500ms; }
add set inet knockgate ssh-overflow_v4 { typeof numgen random mod 1024; size 2048; flags dynamic,timeout; timeout 2500ms; }
add set inet knockgate ssh-penalty_v4 { type ipv4_addr; size 256; flags dynamic,timeout; timeout 10000ms; }
add set inet knockgate ssh-stage1_v6 { type ipv6_addr; size 1024; flags dynamic,timeout; timeout 2500ms; }
add set inet knockgate ssh-stage2_v6 { type ipv6_addr; size 256; flags dynamic,timeout; timeout 2500ms; }
add set inet knockgate ssh-overflow_v6 { typeof numgen random mod 1024; size 2048; flags dynamic,timeout; timeout 2500ms; }
add set inet knockgate ssh-penalty_v6 { type ipv6_addr; size 256; flags dynamic,timeout; timeout 10000ms; }
"""  # noqa: E501

GOLDEN_RULES_V4 = """\
add rule inet knockgate input meta pkttype host meta l4proto { tcp, udp } meta nfproto vmap { ipv4 : jump knock_v4, ipv6 : jump knock_v6 }
add rule inet knockgate knock_v4 ip saddr @ssh-stage2_v4 tcp dport 9000 tcp flags & (fin|syn|rst|psh|ack|urg) == fin|ack delete @ssh-stage2_v4 { ip saddr } update @ssh_v4 { ip saddr timeout 30000ms } log prefix "kg:ssh" group 7
add rule inet knockgate knock_v4 ip saddr @ssh-stage2_v4 meta l4proto != udp delete @ssh-stage2_v4 { ip saddr } add @ssh-penalty_v4 { ip saddr }
add rule inet knockgate knock_v4 ip saddr @ssh-stage2_v4 udp dport != 8000 delete @ssh-stage2_v4 { ip saddr } add @ssh-penalty_v4 { ip saddr }
add rule inet knockgate knock_v4 ip saddr @ssh-stage1_v4 udp dport 8000 delete @ssh-stage1_v4 { ip saddr } add @ssh-stage2_v4 { ip saddr }
add rule inet knockgate knock_v4 ip saddr @ssh-stage1_v4 meta l4proto != tcp delete @ssh-stage1_v4 { ip saddr } add @ssh-penalty_v4 { ip saddr }
add rule inet knockgate knock_v4 ip saddr @ssh-stage1_v4 tcp dport != 7000 delete @ssh-stage1_v4 { ip saddr } add @ssh-penalty_v4 { ip saddr }
add rule inet knockgate knock_v4 ip saddr @ssh-stage1_v4 tcp dport 7000 tcp flags & (fin|syn|rst|psh|ack|urg) != syn delete @ssh-stage1_v4 { ip saddr } add @ssh-penalty_v4 { ip saddr }
add rule inet knockgate knock_v4 jhash ip saddr mod 1024 seed 0x1234abcd @ssh-overflow_v4 ip saddr != @ssh-penalty_v4 udp dport 8000 delete @ssh-overflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd } add @ssh-stage2_v4 { ip saddr }
add rule inet knockgate knock_v4 jhash ip saddr mod 1024 seed 0x1234abcd @ssh-overflow_v4 meta l4proto != tcp delete @ssh-overflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd }
add rule inet knockgate knock_v4 jhash ip saddr mod 1024 seed 0x1234abcd @ssh-overflow_v4 tcp dport != 7000 delete @ssh-overflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd }
add rule inet knockgate knock_v4 jhash ip saddr mod 1024 seed 0x1234abcd @ssh-overflow_v4 tcp dport 7000 tcp flags & (fin|syn|rst|psh|ack|urg) != syn delete @ssh-overflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd }
add rule inet knockgate knock_v4 tcp dport 7000 tcp flags & (fin|syn|rst|psh|ack|urg) == syn ip saddr != @ssh-stage1_v4 ip saddr != @ssh-stage2_v4 ip saddr != @ssh-penalty_v4 add @ssh-stage1_v4 { ip saddr }
add rule inet knockgate knock_v4 tcp dport 7000 tcp flags & (fin|syn|rst|psh|ack|urg) == syn ip saddr != @ssh-stage1_v4 ip saddr != @ssh-stage2_v4 ip saddr != @ssh-penalty_v4 add @ssh-overflow_v4 { jhash ip saddr mod 1024 seed 0x1234abcd }
"""  # noqa: E501


def test_three_knock_door_golden():
    rendered = render_kernel_doors([PENALISED], SETTINGS, ["ssh-stage2_v4", "other"])
    assert "\n".join(rendered.declarations) + "\n" == GOLDEN_DECLARATIONS
    v4 = [rendered.rules[0], *(r for r in rendered.rules if r.startswith(V4))]
    assert "\n".join(v4) + "\n" == GOLDEN_RULES_V4


def test_ipv6_rules_mirror_ipv4():
    rules = render_kernel_doors([PENALISED], SETTINGS).rules
    v4 = [r for r in rules if r.startswith(V4)]
    v6 = [r for r in rules if r.startswith(V6)]
    assert v6 == [r.replace("_v4", "_v6").replace("ip saddr", "ip6 saddr") for r in v4]


def test_without_penalty_resets_only():
    rules = render_kernel_doors([THREE], SETTINGS).rules
    assert not any("penalty" in r for r in rules)
    for mismatch in ("meta l4proto != tcp", "tcp dport != 7000"):
        assert (f"add rule inet knockgate knock_v4 ip saddr @ssh-stage1_v4 {mismatch} "
                "delete @ssh-stage1_v4 { ip saddr }") in rules


def test_single_knock_door_opens_at_once():
    rendered = render_kernel_doors([door("udp:5000", name="one", open_for=2.5, penalty=10)],
                                   SETTINGS)
    assert rendered.declarations[4:] == ()  # no stage, overflow or (useless) penalty set
    assert rendered.sets == set()
    assert rendered.rules[1] == (
        "add rule inet knockgate knock_v4 udp dport 5000 update @one_v4 "
        '{ ip saddr timeout 2500ms } log prefix "kg:one" group 7')


def test_command_only_door_logs_without_granting():
    rules = render_kernel_doors([door("tcp:7000", "tcp:7001", opens=())], SETTINGS).rules
    assert rules[1].startswith(V4)
    assert rules[1].endswith('delete @ssh-stage1_v4 { ip saddr } log prefix "kg:ssh" group 7')
    assert not any("update" in r for r in rules)


def test_flag_frames():
    rules = render_kernel_doors([door("tcp:110:i", "tcp:110:n", "tcp:110:syn,!ack")],
                                SETTINGS).rules
    assert any("@ssh-stage2_v4 tcp dport 110 tcp flags & (syn|ack) == syn " in r for r in rules)
    assert any("@ssh-stage1_v4 tcp dport 110 tcp flags & (fin|syn|rst|psh|ack|urg) == 0x0 " in r
               for r in rules)
    # Stage 2 waits for the frame "n": retransmissions are flagless, anything else resets.
    assert any("@ssh-stage2_v4 tcp dport 110 tcp flags & (fin|syn|rst|psh|ack|urg) != 0x0 "
               "delete" in r for r in rules)
    # Flags are ignored on the first frame, so only another port or protocol resets stage 1.
    stage1_resets = [r for r in rules if r.startswith(f"{V4}ip saddr @ssh-stage1_v4 ")
                     and "add @ssh-stage2" not in r]
    assert stage1_resets == [f"{V4}ip saddr @ssh-stage1_v4 {mismatch} delete @ssh-stage1_v4 "
                             "{ ip saddr }"
                             for mismatch in ("meta l4proto != tcp", "tcp dport != 110")]


def test_doors_render_one_after_another_per_version():
    rules = render_kernel_doors([THREE, door("udp:1", "udp:2", name="vpn")], SETTINGS).rules
    chains = [r.split()[4] for r in rules[1:]]
    assert chains == sorted(chains)  # every v4 rule, then every v6 rule
    v4_doors = [("vpn" if "vpn" in r else "ssh") for r in rules if r.startswith(V4)]
    assert v4_doors == sorted(v4_doors, key=["ssh", "vpn"].index)


def test_no_kernel_doors_still_flushes_the_chains():
    rendered = render_kernel_doors([], SETTINGS)
    assert rendered.rules == ()
    assert rendered.declarations == (
        "add chain inet knockgate knock_v4", "flush chain inet knockgate knock_v4",
        "add chain inet knockgate knock_v6", "flush chain inet knockgate knock_v6")


def test_set_names():
    assert render_kernel_doors([THREE._replace(penalty=5)], SETTINGS).sets == {
        f"ssh-{kind}_v{v}" for kind in ("stage1", "stage2", "overflow", "penalty")
        for v in (4, 6)}
    assert render_kernel_doors([door("tcp:1", penalty=5)], SETTINGS).sets == set()


def test_timeout_is_split_over_the_gaps():
    assert stage_timeout_ms(door("tcp:1", timeout=5)) == 5000
    assert stage_timeout_ms(door("tcp:1", "tcp:2", "tcp:3", "tcp:4", timeout=1)) == 333


def test_kernel_reason():
    assert kernel_reason(THREE) is None
    assert "target" in kernel_reason(THREE._replace(target=ip_address("10.0.0.1")))
    one_time = OneTimeSource("/etc/knockd/ssh.seq", ALL_FLAGS, TcpFlag.SYN, None)
    assert "one-time" in kernel_reason(THREE._replace(one_time=one_time, sequence=()))
    assert kernel_reason(door(*(f"tcp:{p}" for p in range(1, 33)), timeout=0.5)) is not None
    assert kernel_reason(door("tcp:1", timeout=0.1)) is None
    with pytest.raises(ValueError, match="cannot run in the kernel"):
        render_kernel_doors([door("tcp:1", "tcp:2", "tcp:3", timeout=0.02)], SETTINGS)


@pytest.mark.parametrize("kwargs", [{"log_group": 65536}, {"stage_size": 0},
                                    {"overflow_seed": -1}])
def test_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        KernelSettings(**kwargs)
