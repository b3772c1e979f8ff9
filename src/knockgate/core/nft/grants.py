"""Who is let in: the grant sets, the rules that accept their sources and drop everyone else,
and the set elements a grant adds (io/nft.py sends them).

Each door has two sets of granted sources (IPv4 and IPv6) whose elements carry a kernel timeout,
so a grant ends even if the daemon dies. Per-port grants (SPA asks for exact ports) go to one
set of source . protocol . port per IP version. The input chain only ever adds drops: new
connections to a protected port are closed unless the source is in one of the sets that opens
it; established connections are left alone.

Closed here means what a closed port of this host does (``[daemon] closed_ports``): where the
host rejects, a protected or hidden port answers as the kernel answers for a port nothing
listens on (TCP: a reset; UDP: ICMP or ICMPv6 port unreachable, sent by the kernel's own
icmp_send, so under the same icmp_ratelimit); where the admin's firewall drops, it is silent.
Otherwise the one silent port among answering ones gives itself away to a scanner.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from knockgate.core.kinds import KINDS
from knockgate.core.nft.names import VERSIONS, grant_set, shared_sets
from knockgate.core.nft.parts import TablePart, add_rule, declare_set
from knockgate.model import Door, IPAddress, PortSpec

# The ports kind validates the protocols a PortSpec names; these are their IANA numbers.
_PROTOCOL_NUMBERS = {name: number for kind in KINDS for number, name in kind.IP_PROTOCOLS.items()}


class ElementGrant(NamedTuple):
    """Add ``keys`` to ``set_name``, each element timing out after ``timeout_ms``."""

    set_name: str
    keys: tuple[bytes, ...]
    timeout_ms: int


def door_grant(door_name: str, source: IPAddress, seconds: float) -> ElementGrant:
    """Open door ``door_name`` for ``source`` for ``seconds``."""
    return ElementGrant(grant_set(door_name, source.version), (source.packed,),
                        round(seconds * 1000))


def port_grant(source: IPAddress, ports: Iterable[PortSpec], seconds: float) -> ElementGrant:
    """Open exactly ``ports`` for ``source`` for ``seconds`` (an SPA grant)."""
    return ElementGrant(shared_sets(source.version).ports,
                        tuple(concat_key(source, spec.proto, spec.port) for spec in ports),
                        round(seconds * 1000))


def concat_key(address: IPAddress, proto: str, port: int) -> bytes:
    """Key of an ``addr . inet_proto . inet_service`` element; each field padded to 4 bytes."""
    return (address.packed + bytes([_PROTOCOL_NUMBERS[proto], 0, 0, 0])
            + struct.pack("!HH", port, 0))


def _ports_by_proto(specs: Iterable[PortSpec]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for spec in sorted(set(specs), key=lambda s: (s.proto, s.port)):
        grouped.setdefault(spec.proto, []).append(spec.port)
    return grouped


def _port_set(ports: list[int]) -> str:
    return "{ " + ", ".join(str(p) for p in ports) + " }"


def render_grants(doors: Sequence[Door], port_grants: Sequence[PortSpec]) -> TablePart:
    """The grant sets of ``doors`` and, if any port may be granted, the per-port sets; the
    rules accept what they granted (and loopback, and established connections). The sets are
    never recreated: live grants survive a reload or a restart."""
    declarations = [command for door in doors for version in VERSIONS
                    for command in declare_set(grant_set(door.name, version.number),
                                               f"type {version.address_type}")]
    sets = {grant_set(door.name, version.number) for door in doors for version in VERSIONS}
    rules = ['iif "lo" accept', "ct state established,related accept"]
    if port_grants:
        for version in VERSIONS:
            name = shared_sets(version.number).ports
            declarations += declare_set(name, f"type {version.address_type} . inet_proto . "
                                              "inet_service", dynamic=False)
            sets.add(name)
            rules.append(f"{version.source} . meta l4proto . th dport @{name} accept")
    for door in doors:
        for proto, ports in _ports_by_proto(door.open).items():
            rules += [f"{proto} dport {_port_set(ports)} {version.source} "
                      f"@{grant_set(door.name, version.number)} accept" for version in VERSIONS]
    return TablePart(tuple(declarations), tuple(map(add_rule, rules)), frozenset(sets))


REJECT = "reject"
DROP = "drop"
CLOSED_PORT_SETTINGS = ("auto", REJECT, DROP)
def _kernel_answer(proto: str) -> str:
    """What the kernel sends for a port nothing listens on: a TCP reset, and for other
    protocols ICMP port unreachable (icmpx: ICMPv6 port unreachable for IPv6)."""
    return "reject with tcp reset" if proto == "tcp" else "reject with icmpx port-unreachable"


class ClosedPortAnswer(NamedTuple):
    """What this host does with a packet to a closed port, per IP version: REJECT or DROP;
    ``why`` says where that was read."""

    v4: str = DROP
    v6: str = DROP
    why: str = "knockgate's default"

    def of(self, version: int) -> str:
        return self.v4 if version == 4 else self.v6


SILENT = ClosedPortAnswer()  # a plan that says nothing of closed ports drops them


class HostChain(NamedTuple):
    """A base chain on the input hook of a table that is not knockgate's, as io/nft.py reads
    it: ``last_rule`` holds the expression kinds of its last rule (("counter", "drop"))."""

    family: str
    table: str
    name: str
    priority: int
    policy: str
    last_rule: tuple[str, ...] = ()

    def verdict(self) -> str | None:
        """DROP or REJECT if every packet that reaches the end of the chain gets it (its last
        rule matches everything, or its policy drops), else None."""
        *before, last = self.last_rule or ("",)
        if all(kind in ("counter", "log") for kind in before):
            if last in (DROP, REJECT):
                return last
            if last == "accept":  # the policy is never reached
                return None
        return DROP if self.policy == DROP else None


_FAMILY_VERSIONS = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}


def closed_port_answer(setting: str, chains: Iterable[HostChain]) -> ClosedPortAnswer:
    """The answer ``[daemon] closed_ports = setting`` asks for. "auto" reads the host's input
    chains: per IP version, the first one by priority whose end drops or rejects every packet
    decides; with none, the kernel's own answer (reject) holds. Chains that drop some closed
    ports and not others are beyond it: the admin then says "reject" or "drop"."""
    if setting != "auto":
        return ClosedPortAnswer(setting, setting, f'closed_ports = "{setting}"')
    found: dict[int, tuple[str, str]] = {}
    for chain in sorted(chains, key=lambda chain: chain.priority):
        verdict = chain.verdict()
        if verdict is None:
            continue
        for version in _FAMILY_VERSIONS.get(chain.family, ()):
            how = "policy drop" if verdict == DROP and chain.policy == DROP else "last rule"
            found.setdefault(version, (verdict, f"{chain.family} {chain.table} {chain.name} "
                                                f"{how}"))
    default = (REJECT, "no input chain drops or rejects everything: the kernel answers")
    v4, v6 = (found.get(version, default) for version in (4, 6))
    return ClosedPortAnswer(v4[0], v6[0], f"IPv4 from {v4[1]}; IPv6 from {v6[1]}")


def describe_closed_ports(answer: ClosedPortAnswer) -> str:
    """One line for the log and `knockgate check`."""
    def said(verdict: str) -> str:
        return "reject (TCP reset, ICMP port unreachable)" if verdict == REJECT else "drop"
    return (f"closed, hidden and ungranted ports: IPv4 {said(answer.v4)}, IPv6 "
            f"{said(answer.v6)} ({answer.why})")


def render_drops(doors: Sequence[Door], hidden: Iterable[PortSpec],
                 port_grants: Iterable[PortSpec],
                 answer: ClosedPortAnswer = SILENT) -> tuple[str, ...]:
    """The rules, last in the input chain, that close every port a grant may open and the
    ``hidden`` ones as ``answer`` says: after every knock rule, so a rejected knock still
    counts. A version that rejects gets the kernel's answer; the rest is dropped."""
    protected = [spec for door in doors for spec in door.open]
    closed = _ports_by_proto([*protected, *port_grants, *hidden])
    rejecting = [version for version in VERSIONS if answer.of(version.number) == REJECT]
    # Both versions alike need no nfproto match; a reject rule is final, so no drop follows.
    qualifiers = ([""] if len(rejecting) == len(VERSIONS)
                  else [f"meta nfproto {version.nfproto} " for version in rejecting])
    rules = [f"{qualifier}{proto} dport {_port_set(ports)} {_kernel_answer(proto)}"
             for qualifier in qualifiers for proto, ports in closed.items()]
    if len(rejecting) < len(VERSIONS):
        rules += [f"{proto} dport {_port_set(ports)} drop" for proto, ports in closed.items()]
    return tuple(map(add_rule, rules))
