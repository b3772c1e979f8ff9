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
from typing import NamedTuple

from knockgate.core.kinds import knock_port
from knockgate.core.nft.names import (
    SCAN_RESET_PREFIX,
    VERSIONS,
    shared_sets,
)
from knockgate.core.nft.parts import TablePart, add_rule, declare_set, knock_ports
from knockgate.model import Door


class FirstStageLink(NamedTuple):
    """What the guard needs from core/nft/first_stage.py when the kernel keeps the first stage
    of the userspace doors named in ``doors``: per IP version, the statements that forget a
    source's first stage."""

    doors: frozenset[str]
    forget: Mapping[int, Sequence[str]]


def render_scan_guard(doors: Iterable[Door], log_group: int, size: int,
                      also_allowed: Iterable[tuple[str, int]] = (),
                      first_stage: FirstStageLink | None = None) -> TablePart:
    """Declarations and rules for the userspace ``doors`` (empty when there are none).
    ``also_allowed``: ports that are no scan either (other doors' knocks, SPA ports).

    With ``first_stage``, only sources the daemon may hold progress for are reported: those
    handed over, and those that touched a knock port of a door whose knocks are captured
    (kept in ``_captured``). Every other source is reset in the kernel without a report, so
    spoofed first knocks followed by other ports cannot become a flood of NFLOG events."""
    doors = [door for door in doors if door.sequence]
    if not doors:
        return TablePart()
    knocks = {knock_port(frame) for door in doors for frame in door.sequence}
    allowed = knocks | {(spec.proto, spec.port) for door in doors for spec in door.open}
    allowed |= set(also_allowed)
    captured = {knock_port(frame) for door in doors for frame in door.sequence
                if first_stage is not None and door.name not in first_stage.doors}
    timeout_ms = round(max(door.timeout for door in doors) * 1000)
    declarations: list[str] = []
    rules: list[str] = []
    sets: set[str] = set()
    for version in VERSIONS:
        source, shared = version.source, shared_sets(version.number)
        tracked = [shared.knocking] + ([shared.captured] if captured else [])
        for name in tracked:
            declarations += declare_set(name, f"type {version.address_type}", size=size,
                                        timeout_ms=timeout_ms)
        sets.update(tracked)
        head = f"meta nfproto {version.nfproto} meta l4proto {{ tcp, udp }} "
        touched = (f"{head}{source} @{shared.knocking} meta l4proto . th dport != "
                   f"{knock_ports(allowed)} ")
        reset = " ".join([*(f"delete @{name} {{ {source} }}" for name in tracked),
                          *(first_stage.forget.get(version.number, ()) if first_stage else ())])
        report = f'log prefix "{SCAN_RESET_PREFIX}" group {log_group}'
        if first_stage is None:
            rules.append(f"{touched}{reset} {report}")
        else:
            reported = [shared.handed, *tracked[1:]]
            rules += [f"{touched}{source} @{name} {reset} {report}" for name in reported]
            rules.append(f"{touched}{reset}")
        rules.append(f"{head}meta l4proto . th dport {knock_ports(knocks)} "
                     f"update @{shared.knocking} {{ {source} }}")
        if captured:
            rules.append(f"{head}meta l4proto . th dport {knock_ports(captured)} "
                         f"update @{shared.captured} {{ {source} }}")
    return TablePart(tuple(declarations), tuple(map(add_rule, rules)), frozenset(sets))
