"""Scan resistance for userspace doors: the kernel tells the daemon when a knocking source
touches another port.

The capture filter only lets knock packets reach the daemon, so on its own the userspace engine
never sees a scan's other 65 532 ports and a random-order scan would open a 3-knock door one
time in six. These rules keep, in a bounded kernel set, every source that touched a knock port;
when such a source sends TCP or UDP to any port that is neither a knock port nor a port the
doors protect (connecting to the opened port after knocking is expected), the rule removes it
from the set and logs the packet once to the NFLOG group with the prefix ``kg-reset``. The
daemon then forgets that source's progress on every door.

Ordering: for one packet the kernel queues its NFLOG event before any later packet reaches the
capture socket, so the daemon reads the NFLOG queue before each capture batch, and again before
it opens a door: a source with an event queued by then is not let in (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from knockgate.core.nft.names import SCAN_RESET_PREFIX
from knockgate.core.nft.table import CHAIN, FAMILY, TABLE, Spliced
from knockgate.model import Door

_TABLE_REF = f"{FAMILY} {TABLE}"
_VERSIONS = ((4, "ip", "ipv4", "ipv4_addr"), (6, "ip6", "ipv6", "ipv6_addr"))


def knocking_set(version: int) -> str:
    # A leading '_' keeps it clear of door names, which start with a letter.
    return f"_knocking_v{version}"


def _pairs(specs: Iterable[tuple[str, int]]) -> str:
    return "{ " + ", ".join(f"{proto} . {port}" for proto, port in sorted(set(specs))) + " }"


@dataclass(frozen=True, slots=True)
class FirstStageLink:
    """What the guard needs from core/first_stage.py when the kernel keeps the first stage of
    the userspace doors named in ``doors``: per IP version, the statements that forget a
    source's first stage, and the set of sources handed over to the daemon."""

    doors: frozenset[str]
    forget: Mapping[int, Sequence[str]]
    handed: Mapping[int, str]


def captured_set(version: int) -> str:
    return f"_captured_v{version}"


def render_scan_guard(doors: Iterable[Door], log_group: int, size: int,
                      also_allowed: Iterable[tuple[str, int]] = (),
                      first_stage: FirstStageLink | None = None) -> Spliced:
    """Declarations and rules for the userspace ``doors`` (empty when there are none).
    ``also_allowed``: ports that are no scan either (other doors' knocks, SPA ports).

    With ``first_stage``, only sources the daemon may hold progress for are reported: those
    handed over, and those that touched a knock port of a door whose knocks are captured
    (kept in ``_captured``). Every other source is reset in the kernel without a report, so
    spoofed first knocks followed by other ports cannot become a flood of NFLOG events."""
    doors = [door for door in doors if door.sequence]
    if not doors:
        return Spliced()
    knocks = {(f.proto, f.port) for door in doors for f in door.sequence}
    allowed = knocks | {(spec.proto, spec.port) for door in doors for spec in door.open}
    allowed |= set(also_allowed)
    captured = {(f.proto, f.port) for door in doors for f in door.sequence
                if first_stage is not None and door.name not in first_stage.doors}
    timeout_ms = round(max(door.timeout for door in doors) * 1000)
    declarations, rules, sets = [], [], set()
    for version, family, nfproto, kind in _VERSIONS:
        tracked = [knocking_set(version)] + ([captured_set(version)] if captured else [])
        for name in tracked:
            declarations.append(f"add set {_TABLE_REF} {name} {{ type {kind}; size {size}; "
                                f"flags dynamic,timeout; timeout {timeout_ms}ms; }}")
        sets.update(tracked)
        source = f"{family} saddr"
        head = f"add rule {_TABLE_REF} {CHAIN} meta nfproto {nfproto} meta l4proto {{ tcp, udp }} "
        touched = f"{head}{source} @{knocking_set(version)} meta l4proto . th dport != " \
                  f"{_pairs(allowed)} "
        reset = " ".join([*(f"delete @{name} {{ {source} }}" for name in tracked),
                          *(first_stage.forget.get(version, ()) if first_stage else ())])
        report = f'log prefix "{SCAN_RESET_PREFIX}" group {log_group}'
        if first_stage is None:
            rules.append(f"{touched}{reset} {report}")
        else:
            reported = [first_stage.handed[version], *tracked[1:]]
            rules += [f"{touched}{source} @{name} {reset} {report}" for name in reported]
            rules.append(f"{touched}{reset}")
        rules.append(f"{head}meta l4proto . th dport {_pairs(knocks)} "
                     f"update @{knocking_set(version)} {{ {source} }}")
        if captured:
            rules.append(f"{head}meta l4proto . th dport {_pairs(captured)} "
                         f"update @{captured_set(version)} {{ {source} }}")
    return Spliced(tuple(declarations), tuple(rules), frozenset(sets))


def merge(*parts: Spliced) -> Spliced:
    return Spliced(tuple(d for p in parts for d in p.declarations),
                   tuple(r for p in parts for r in p.rules),
                   frozenset().union(*(p.sets for p in parts)))


