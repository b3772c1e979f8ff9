"""Who is let in: the grant sets, the rules that accept their sources and drop everyone else,
and the set elements a grant adds (io/nft.py sends them).

Each door has two sets of granted sources (IPv4 and IPv6) whose elements carry a kernel timeout,
so a grant ends even if the daemon dies. Per-port grants (SPA asks for exact ports) go to one
set of source . protocol . port per IP version. The input chain only ever adds drops: new
connections to a protected port are dropped unless the source is in one of the sets that opens
it; established connections are left alone.
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


def render_drops(doors: Sequence[Door], hidden: Iterable[PortSpec],
                 port_grants: Iterable[PortSpec]) -> tuple[str, ...]:
    """The rules, last in the input chain, that drop new connections to every port a grant
    may open and to the ``hidden`` ones."""
    protected = [spec for door in doors for spec in door.open]
    return tuple(add_rule(f"{proto} dport {_port_set(ports)} drop")
                 for proto, ports in _ports_by_proto([*protected, *port_grants, *hidden]).items())
