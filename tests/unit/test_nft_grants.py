"""How protected and hidden ports are closed (core/nft/grants.py: render_drops and the answer a
host gives a closed port) and how knockgate knows its own table (core/nft/names.py)."""

from __future__ import annotations

import pytest

from knockgate.config.load import parse_config
from knockgate.core.kinds import parse_frame
from knockgate.core.nft.grants import (
    DROP,
    REJECT,
    SILENT,
    ClosedPortAnswer,
    HostChain,
    closed_port_answer,
    describe_closed_ports,
    render_drops,
)
from knockgate.core.nft.names import MARKED_TABLE, TABLE_COMMENT, is_marked
from knockgate.errors import ConfigError, FirewallError
from knockgate.io import nft as nft_module
from knockgate.io.nft import Nftables
from knockgate.model import Door, PortSpec

DOOR = Door(name="ssh", sequence=(parse_frame("tcp:7000"), parse_frame("udp:8000")),
            open=(PortSpec("tcp", 22),))
HIDDEN = (PortSpec("tcp", 7000), PortSpec("udp", 8000), PortSpec("udp", 62201))
GRANTS = (PortSpec("tcp", 443),)
PREFIX = "add rule inet knockgate input "


def rules(answer: ClosedPortAnswer) -> list[str]:
    rendered = render_drops([DOOR], HIDDEN, GRANTS, answer)
    assert all(rule.startswith(PREFIX) for rule in rendered)
    return [rule.removeprefix(PREFIX) for rule in rendered]


def test_drops_by_default_as_before():
    assert rules(SILENT) == ["tcp dport { 22, 443, 7000 } drop", "udp dport { 8000, 62201 } drop"]


def test_rejecting_hosts_get_the_kernels_answer_and_no_drop():
    assert rules(ClosedPortAnswer(REJECT, REJECT)) == [
        "tcp dport { 22, 443, 7000 } reject with tcp reset",
        "udp dport { 8000, 62201 } reject with icmpx port-unreachable",
    ]


@pytest.mark.parametrize(("answer", "rejecting"), [
    (ClosedPortAnswer(REJECT, DROP), "ipv4"),
    (ClosedPortAnswer(DROP, REJECT), "ipv6"),
])
def test_one_version_rejects_the_other_falls_through_to_the_drop(answer, rejecting):
    assert rules(answer) == [
        f"meta nfproto {rejecting} tcp dport {{ 22, 443, 7000 }} reject with tcp reset",
        f"meta nfproto {rejecting} udp dport {{ 8000, 62201 }} reject with icmpx port-unreachable",
        "tcp dport { 22, 443, 7000 } drop",
        "udp dport { 8000, 62201 } drop",
    ]


def test_nothing_to_close_renders_nothing():
    assert render_drops([], [], [], ClosedPortAnswer(REJECT, REJECT)) == ()


def chain(family="inet", policy="accept", last_rule=(), priority=0, name="in") -> HostChain:
    return HostChain(family, "admin", name, priority, policy, last_rule)


@pytest.mark.parametrize(("host_chain", "verdict"), [
    (chain(), None),
    (chain(policy="drop"), DROP),
    (chain(last_rule=("counter", "drop")), DROP),
    (chain(last_rule=("log", "reject")), REJECT),
    (chain(last_rule=("match", "drop")), None),  # drops some packets only
    (chain(last_rule=("match", "drop"), policy="drop"), DROP),
    (chain(last_rule=("counter", "accept"), policy="drop"), None),  # never reaches the policy
    (chain(last_rule=("match", "accept"), policy="drop"), DROP),
    (chain(last_rule=("jump",)), None),
])
def test_what_a_chain_does_at_its_end(host_chain, verdict):
    assert host_chain.verdict() == verdict


def test_settings_other_than_auto_say_what_holds_without_looking():
    dropping = [chain(policy="drop")]
    assert closed_port_answer("reject", dropping)[:2] == (REJECT, REJECT)
    assert closed_port_answer("drop", [])[:2] == (DROP, DROP)


def test_auto_on_a_host_without_firewall_rejects_like_the_kernel():
    answer = closed_port_answer("auto", [])
    assert answer[:2] == (REJECT, REJECT)
    assert "the kernel answers" in answer.why


def test_auto_reads_each_version_from_its_own_chains():
    answer = closed_port_answer("auto", [chain("ip", policy="drop", name="INPUT")])
    assert answer[:2] == (DROP, REJECT)
    assert answer.why.startswith("IPv4 from ip admin INPUT policy drop; IPv6 from no input chain")
    assert closed_port_answer("auto", [chain("ip6", policy="drop")])[:2] == (REJECT, DROP)
    assert closed_port_answer("auto", [chain("inet", policy="drop")])[:2] == (DROP, DROP)


def test_auto_takes_the_first_chain_by_priority_that_decides():
    early_reject = chain(last_rule=("reject",), priority=-5, name="early")
    late_drop = chain(policy="drop", priority=10, name="late")
    undecided = chain(priority=-100, name="raw")
    answer = closed_port_answer("auto", [late_drop, undecided, early_reject])
    assert answer[:2] == (REJECT, REJECT)
    assert "inet admin early last rule" in answer.why


def test_auto_ignores_families_that_do_not_filter_input():
    chains = [chain("bridge", policy="drop"), chain("netdev", policy="drop"),
              chain("arp", policy="drop")]
    assert closed_port_answer("auto", chains)[:2] == (REJECT, REJECT)


def test_describe_says_both_versions_and_why():
    line = describe_closed_ports(ClosedPortAnswer(REJECT, DROP, "because"))
    assert line == ("closed, hidden and ungranted ports: IPv4 reject (TCP reset, ICMP port "
                    "unreachable), IPv6 drop (because)")


@pytest.mark.parametrize(("text", "setting"), [
    ("", "auto"),
    ('[daemon]\nclosed_ports = "reject"\n', REJECT),
    ('[daemon]\nclosed_ports = "drop"\n', DROP),
])
def test_closed_ports_option(text, setting):
    config = parse_config(text + '[[door]]\nname = "a"\nsequence = ["tcp:1"]\nopen = ["tcp:22"]\n',
                          "k.toml")
    assert config.options.closed_ports == setting


@pytest.mark.parametrize("value", ['"silent"', '["drop"]', "1", '"DROP"'])
def test_closed_ports_option_refuses_other_values(value):
    with pytest.raises(ConfigError) as info:
        parse_config(f"[daemon]\nclosed_ports = {value}\n", "k.toml")
    assert (info.value.path, info.value.line) == ("k.toml", 2)
    assert "'auto', 'reject' or 'drop'" in str(info.value)


# --- the table's mark (core/nft/names.py) -----------------------------------------------------


def test_the_table_is_created_with_its_mark():
    expected = f'add table inet knockgate {{ comment "{TABLE_COMMENT}"; }}'
    assert expected == MARKED_TABLE


@pytest.mark.parametrize(("listing", "marked"), [
    (f'table inet knockgate {{\n\tcomment "{TABLE_COMMENT}"\n\tset a {{\n', True),
    (f'table inet knockgate {{\n\tcomment "{TABLE_COMMENT}"\n}}\n', True),
    ("table inet knockgate {\n\tchain input {\n", False),  # made by someone else
    ('table inet knockgate {\n\tcomment "made by firewalld"\n', False),
    (f'table inet knockgate {{\n\tcomment "{TABLE_COMMENT} (not)"\n', False),
    # knockgate's comment lower down, on a set or rule, is not the table's
    (f'table inet knockgate {{\n\tset a {{\n\t\tcomment "{TABLE_COMMENT}"\n', False),
    ("", False),
    ("table inet knockgate {\n", False),
])
def test_only_a_table_knockgate_made_is_marked(listing, marked):
    assert is_marked(listing) is marked


# --- reading the host's ruleset (io/nft.py), against a stand-in for libnftables -------------


class FakeLibnftables:
    """Answers ``cmd`` and ``json_cmd`` as libnftables would: (rc, output, error)."""

    def __init__(self, listing=(0, "", ""), json_answers=None):
        self.listing = listing
        self.json_answers = json_answers or {}

    def set_terse_output(self, value):
        self.terse = value

    def cmd(self, command):
        return self.listing

    def json_cmd(self, root):
        what = root["nftables"][0]["list"]
        key = "chains" if "chains" in what else what["chain"]["name"]
        return self.json_answers.get(key, (1, "", "Error: Operation not permitted"))


def nftables_with(fake) -> Nftables:
    nft = Nftables.__new__(Nftables)  # no libnftables, no netlink socket
    nft._ctx = fake
    return nft


@pytest.mark.parametrize("listing", [
    (1, "", "Error: No such file or directory\nlist table inet knockgate\n"),  # no table yet
    (0, f'table inet knockgate {{\n\tcomment "{TABLE_COMMENT}"\n}}\n', ""),  # ours: adopt
])
def test_no_table_or_our_own_is_fine(listing):
    nftables_with(FakeLibnftables(listing)).refuse_foreign_table()


@pytest.mark.parametrize(("listing", "words"), [
    ((0, "table inet knockgate {\n\tchain input {\n\t}\n}\n", ""), "knockgate did not make"),
    ((1, "", "Error: Operation not permitted"), "could not read table"),  # fail closed
])
def test_a_foreign_or_unreadable_table_stops_the_start(listing, words):
    with pytest.raises(FirewallError, match=words) as info:
        nftables_with(FakeLibnftables(listing)).refuse_foreign_table()
    assert "hint" in str(info.value) or "could not read" in str(info.value)


def json_chain(family, table, name, hook="input", policy="accept", prio=0):
    return {"chain": {"family": family, "table": table, "name": name, "hook": hook,
                      "prio": prio, "policy": policy, "type": "filter"}}


def test_input_chains_skips_our_table_other_hooks_and_families():
    chains = [json_chain("inet", "knockgate", "input", policy="drop"),
              json_chain("ip", "filter", "FORWARD", hook="forward", policy="drop"),
              json_chain("netdev", "edge", "ingress", hook="ingress", policy="drop"),
              {"chain": {"family": "ip", "table": "nat", "name": "helper"}},  # not a base chain
              json_chain("ip", "filter", "INPUT", policy="drop"),
              json_chain("inet", "fw", "in", prio=10)]
    rules = {"INPUT": [], "in": [{"rule": {"expr": [{"match": {}}, {"accept": None}]}},
                                 {"rule": {"expr": [{"counter": {}}, {"reject": None}]}}]}
    fake = FakeLibnftables(json_answers={
        "chains": (0, {"nftables": [{"metainfo": {}}, *chains]}, ""),
        **{name: (0, {"nftables": listed}, "") for name, listed in rules.items()}})
    assert nftables_with(fake).input_chains() == [
        HostChain("ip", "filter", "INPUT", 0, "drop", ()),
        HostChain("inet", "fw", "in", 10, "accept", ("counter", "reject")),
    ]


def test_an_unreadable_ruleset_stops_the_start():
    with pytest.raises(FirewallError, match="could not list the ruleset"):
        nftables_with(FakeLibnftables()).input_chains()


def test_the_check_line_reads_the_host_or_says_why_it_cannot(monkeypatch):
    class Readable(FakeLibnftables):
        def __init__(self):
            super().__init__(json_answers={"chains": (0, {"nftables": [
                json_chain("ip", "filter", "INPUT", policy="drop")]}, ""),
                "INPUT": (0, {"nftables": []}, "")})

    class Stub(Nftables):
        def __init__(self, fake=Readable):
            self._ctx = fake()

        def close(self):
            pass

    monkeypatch.setattr(nft_module, "Nftables", Stub)
    assert nft_module.closed_ports_line("auto").startswith(
        "closed, hidden and ungranted ports: IPv4 drop, IPv6 reject")
    assert "IPv4 reject" in nft_module.closed_ports_line("reject")
    monkeypatch.setattr(Stub, "__init__", lambda self: setattr(self, "_ctx", FakeLibnftables()))
    assert nft_module.closed_ports_line("auto") == (
        'closed ports: closed_ports = "auto", decided at start (could not list the ruleset: '
        "Error: Operation not permitted)")
