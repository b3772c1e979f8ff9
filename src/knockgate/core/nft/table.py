"""nftables text for knockgate's table, rendered by pure functions and applied by io/nft.py.

Everything lives in ``table inet knockgate``. Each door has two sets of granted sources (IPv4 and
IPv6) whose elements carry a kernel timeout, so a grant ends even if the daemon dies. The chain
only ever adds drops: new connections to a protected port are dropped unless the source is in
one of the sets of a door that opens it; established connections are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from knockgate.model import Door, PortSpec

TABLE = "knockgate"
FAMILY = "inet"
CHAIN = "input"
_TABLE_REF = f"{FAMILY} {TABLE}"
# Per-port grants (SPA asks for exact ports): one set of address . protocol . port per version.
# A leading '_' keeps the name clear of door names, which must start with a letter.
_PORT_GRANTS = "_ports"


def set_name(door: str, version: int) -> str:
    return f"{door}_v{version}"


def port_set_name(version: int) -> str:
    return f"{_PORT_GRANTS}_v{version}"


def door_sets(doors: Iterable[Door]) -> set[str]:
    return {set_name(door.name, version) for door in doors for version in (4, 6)}


def _ports_by_proto(specs: Iterable[PortSpec]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for spec in sorted(set(specs), key=lambda s: (s.proto, s.port)):
        grouped.setdefault(spec.proto, []).append(spec.port)
    return grouped


def _port_set(ports: list[int]) -> str:
    return "{ " + ", ".join(str(p) for p in ports) + " }"


@dataclass(frozen=True, slots=True)
class Spliced:
    """Commands another renderer (core/kernel_doors.py) adds to the transaction:
    ``declarations`` right after the input chain's flush, ``rules`` before its drops, and the
    names of the ``sets`` they own, which must not be deleted as stale."""

    declarations: Sequence[str] = ()
    rules: Sequence[str] = ()
    sets: frozenset[str] = frozenset()


def render_ruleset(
    doors: Iterable[Door],
    hidden: Iterable[PortSpec] = (),
    existing_sets: Iterable[str] = (),
    port_grants: Iterable[PortSpec] = (),
    spliced: Spliced = Spliced(),
) -> str:
    """One transaction that creates or updates the table in place.

    ``port_grants`` are the ports that per-port grants (SPA) may open. Sets that already exist
    keep their elements, so a reload or restart keeps live grants; sets of doors that are gone
    are deleted.
    """
    doors, port_grants = list(doors), sorted(set(port_grants), key=lambda s: (s.proto, s.port))
    wanted = door_sets(doors) | ({port_set_name(4), port_set_name(6)} if port_grants else set())
    wanted |= spliced.sets
    commands = [
        f"add table {_TABLE_REF}",
        f"add chain {_TABLE_REF} {CHAIN} "
        "{ type filter hook input priority filter - 10; policy accept; }",
        f"flush chain {_TABLE_REF} {CHAIN}",
        *spliced.declarations,
    ]
    for door in doors:
        for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            # dynamic: a kernel door's rule adds to it; nft 1.0.6 then insists on the flag.
            commands.append(
                f"add set {_TABLE_REF} {set_name(door.name, version)} "
                f"{{ type {kind}; flags dynamic,timeout; }}"
            )
    if port_grants:
        for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            commands.append(
                f"add set {_TABLE_REF} {port_set_name(version)} "
                f"{{ type {kind} . inet_proto . inet_service; flags timeout; }}"
            )
    commands += [f"delete set {_TABLE_REF} {name}"
                 for name in sorted(set(existing_sets) - wanted)]
    commands += [f"add rule {_TABLE_REF} {CHAIN} {rule}"
                 for rule in _accept_rules(doors, port_grants)]
    commands += spliced.rules
    commands += [f"add rule {_TABLE_REF} {CHAIN} {rule}"
                 for rule in _drop_rules(doors, hidden, port_grants)]
    return "\n".join(commands) + "\n"


def _accept_rules(doors: list[Door], port_grants: list[PortSpec]) -> list[str]:
    rules = ['iif "lo" accept', "ct state established,related accept"]
    if port_grants:
        for version, family in ((4, "ip"), (6, "ip6")):
            rules.append(f"{family} saddr . meta l4proto . th dport @{port_set_name(version)} "
                         "accept")
    for door in doors:
        for proto, ports in _ports_by_proto(door.open).items():
            for version, family in ((4, "ip"), (6, "ip6")):
                rules.append(
                    f"{proto} dport {_port_set(ports)} {family} saddr "
                    f"@{set_name(door.name, version)} accept"
                )
    return rules


def _drop_rules(doors: list[Door], hidden: Iterable[PortSpec],
                port_grants: list[PortSpec]) -> list[str]:
    protected = [spec for door in doors for spec in door.open] + port_grants
    return [f"{proto} dport {_port_set(ports)} drop"
            for proto, ports in _ports_by_proto([*protected, *hidden]).items()]


def render_teardown() -> str:
    return f"delete table {_TABLE_REF}\n"
