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

from knockgate.core.ruleset import CHAIN, FAMILY, TABLE, Spliced
from knockgate.model import Door

RESET_PREFIX = "kg-reset"
_TABLE_REF = f"{FAMILY} {TABLE}"
_VERSIONS = ((4, "ip", "ipv4", "ipv4_addr"), (6, "ip6", "ipv6", "ipv6_addr"))


def knocking_set(version: int) -> str:
    # A leading '_' keeps it clear of door names, which start with a letter.
    return f"_knocking_v{version}"


def _pairs(specs: Iterable[tuple[str, int]]) -> str:
    return "{ " + ", ".join(f"{proto} . {port}" for proto, port in sorted(set(specs))) + " }"


def render_scan_guard(doors: Iterable[Door], log_group: int, size: int,
                      also_allowed: Iterable[tuple[str, int]] = (),
                      also_forget: Mapping[int, Sequence[str]] | None = None,
                      report_only: Mapping[int, str] | None = None) -> Spliced:
    """Declarations and rules for the userspace ``doors`` (empty when there are none).
    ``also_allowed``: ports that are no scan either (other doors' knocks, SPA ports).
    ``also_forget``: per IP version, statements the reset runs too (core/first_stage.py).
    ``report_only``: per IP version, the set of the only sources the daemon keeps progress
    for (when the kernel keeps every door's first stage); others are reset without a report,
    so spoofed first knocks followed by other ports cannot become a flood of NFLOG events."""
    doors = [door for door in doors if door.sequence]
    if not doors:
        return Spliced()
    knocks = {(f.proto, f.port) for door in doors for f in door.sequence}
    allowed = knocks | {(spec.proto, spec.port) for door in doors for spec in door.open}
    allowed |= set(also_allowed)
    timeout_ms = round(max(door.timeout for door in doors) * 1000)
    declarations, rules = [], []
    for version, family, nfproto, kind in _VERSIONS:
        name = knocking_set(version)
        forget = "".join(f"{statement} " for statement in (also_forget or {}).get(version, ()))
        declarations.append(f"add set {_TABLE_REF} {name} {{ type {kind}; size {size}; "
                            f"flags dynamic,timeout; timeout {timeout_ms}ms; }}")
        touched = (f"add rule {_TABLE_REF} {CHAIN} meta nfproto {nfproto} meta l4proto "
                   f"{{ tcp, udp }} {family} saddr @{name} meta l4proto . th dport != "
                   f"{_pairs(allowed)} ")
        reset = f"delete @{name} {{ {family} saddr }} {forget}"
        report = f'log prefix "{RESET_PREFIX}" group {log_group}'
        reported = (report_only or {}).get(version)
        if reported is None:
            rules.append(f"{touched}{reset}{report}")
        else:
            rules.append(f"{touched}{family} saddr @{reported} {reset}{report}")
            rules.append(f"{touched}{reset.rstrip()}")
        rules.append(f"add rule {_TABLE_REF} {CHAIN} meta nfproto {nfproto} meta l4proto "
                     f"{{ tcp, udp }} meta l4proto . th dport {_pairs(knocks)} "
                     f"update @{name} {{ {family} saddr }}")
    return Spliced(tuple(declarations), tuple(rules),
                   frozenset(knocking_set(v) for v, *_ in _VERSIONS))


def merge(*parts: Spliced) -> Spliced:
    return Spliced(tuple(d for p in parts for d in p.declarations),
                   tuple(r for p in parts for r in p.rules),
                   frozenset().union(*(p.sets for p in parts)))


