"""The first knock of a userspace door, absorbed in the kernel.

A spoofed flood of first knocks is all an attacker who knows one knock port can produce, and it
is more than Python reads on one core (400 000 packets a second on the test bed). So for
userspace doors nftables keeps the first stage: it remembers which sources sent F1, and only a
source that then sends F2 is handed to the daemon. From then on the daemon sees every knock of
that source through NFLOG (payload included) and runs the door's state machine,
core/sequence.py, as it does for captured packets. The flood never leaves the kernel. (An
attacker who knows the first two knocks can still make the daemon read, as it could with every
knock captured; only the kernel engine does without the daemon.)

Sets, per IP version (v4 shown), for door ``ssh``:

- ``ssh-first_v4``: sources that sent F1 and nothing of the door since (``size N``, timeout:
  the door's timeout split over its gaps, as for kernel doors), with the bucket set
  ``ssh-firstoverflow_v4`` for first knocks that find it full (core/nft/kernel_doors.py explains
  the scheme: bounded however many sources flood, and the real client's knock still lands).
- ``_handed_v4``, shared by these doors: sources handed to the daemon.

Rules, per door and in this order, for TCP and UDP addressed to this host:

1. In ``ssh-first`` (or its bucket) and F2: leave it, enter ``_handed``, log ``kg1:ssh``. The
   daemon counts F1 as sent one stage ago, the earliest the kernel allows, so the whole
   sequence still fits the door's timeout. That is stricter than core/sequence.py: the first
   gap must fit its share, timeout / (n - 1), and the last knock must come within the rest of
   the timeout after F2, however quick the first gap was.
2. In ``ssh-first`` and any later frame of the door: leave it (a knock out of order).
3. F1: enter ``ssh-first`` with ``add``, so a retransmission does not extend the attempt
   (core/sequence.py counts the timeout from the first knock); when it is full, set the
   source's bucket.

then once per version:

4. In ``_handed`` and a knock port of these doors: log ``kg-knock``. It comes after rule 1, so
   the packet that hands a source over is reported as both events, the hand-over first.

The scan guard (core/nft/scan_guard.py) also removes a source that touched another port from these
sets, see ``forget_statements``, and reports it only if the daemon holds its progress.

Where this is looser or weaker than reading every knock, all bounded and shared with kernel
doors (core/nft/kernel_doors.py):
- While ``ssh-first`` is full (a flood of more distinct sources than its size within one
  stage), a source whose bucket a flooder set may skip F1; it still needs F2..Fn in order.
- ``_handed`` has a size too: an attacker who knows F1 and F2 can fill it with spoofed pairs,
  and new hand-overs fail until its entries expire (captured knocks evict old attempts
  instead). The first-knock flood cannot.
- These rules sit after the input chain's accept rules: a knock that another rule already
  accepted (an established connection, a port another door opened for that source) is not
  seen, as for kernel doors.

A door keeps the old path (every knock captured) when there is nothing to absorb or the kernel
cannot tell, see ``first_stage_reason``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from knockgate.core.kinds import knock_port, nft_match
from knockgate.core.nft.kernel_doors import (
    MIN_STAGE_MS,
    KernelSettings,
    bucket_key,
    bucket_of,
    overflow_set_size,
    stage_timeout_ms,
)
from knockgate.core.nft.names import (
    HANDED_KNOCK_PREFIX,
    VERSIONS,
    IpVersion,
    first_overflow_set,
    first_set,
    handover_prefix,
    shared_sets,
)
from knockgate.core.nft.parts import TablePart, add_rule, declare_set, join, knock_ports
from knockgate.core.nft.scan_guard import FirstStageLink, render_scan_guard
from knockgate.model import Door

_ROUNDING_SLACK = 0.001


def first_stage_reason(door: Door) -> str | None:
    """Why the kernel cannot keep ``door``'s first stage, or None if it can."""
    if len(door.sequence) < 2:
        return "a single knock opens at once: there is no first stage to keep"
    if door.target is not None:
        return "it has a target: forwarded knocks never reach the input hook"
    if door.one_time is not None:
        return "its first knock changes with each use of the one-time file"
    first = door.sequence[0]
    if any(knock_port(frame) == knock_port(first) for frame in door.sequence[1:]):
        return ("a later knock shares the first knock's port, and the kernel would have to "
                "tell a retransmission from a restart")
    if stage_timeout_ms(door) < MIN_STAGE_MS:
        return f"its first gap would get under {MIN_STAGE_MS} ms"
    return None


def earliest_first_knock(door: Door, now: float) -> float:
    """When a source handed over at ``now`` may have sent F1, at the earliest: one stage ago.
    The millisecond given back absorbs float rounding (a two-knock door's hand-over must not
    look expired by 1e-13 s); the kernel's own timeouts are coarser, one jiffy."""
    return now - stage_timeout_ms(door) / 1000 + _ROUNDING_SLACK


def first_stage_summary(door: Door) -> str:
    """One line for `knockgate check` and the daemon's log about a userspace door."""
    reason = first_stage_reason(door)
    if reason is not None:
        return f"every knock is read by the daemon: {reason}"
    share = stage_timeout_ms(door) / 1000
    rest = (f", the last within {door.timeout - share:g}s of the second"
            if len(door.sequence) > 2 else "")
    return (f"first knock kept in the kernel (a spoofed flood of it never reaches the daemon); "
            f"the second must follow within {share:g}s{rest}")


def staged_doors(doors: Iterable[Door]) -> list[Door]:
    """The userspace doors whose first stage the kernel keeps."""
    return [door for door in doors
            if door.engine == "userspace" and first_stage_reason(door) is None]


def first_stage_sets(doors: Sequence[Door]) -> frozenset[str]:
    if not doors:
        return frozenset()
    return frozenset(name for version in VERSIONS for name in (
        shared_sets(version.number).handed,
        *(first_set(door.name, version.number) for door in doors),
        *(first_overflow_set(door.name, version.number) for door in doors)))


def forget_statements(doors: Sequence[Door], version: IpVersion, settings: KernelSettings
                      ) -> list[str]:
    """Statements that make the kernel forget a source's first stage on ``doors`` (the scan
    guard runs them for a source that touched another port while knocking)."""
    if not doors:
        return []
    source, number = version.source, version.number
    bucket = bucket_of(version, settings)
    statements = [f"delete @{shared_sets(number).handed} {{ {source} }}"]
    for door in doors:
        statements += [f"delete @{first_set(door.name, number)} {{ {source} }}",
                       f"delete @{first_overflow_set(door.name, number)} {{ {bucket} }}"]
    return statements


def render_userspace_rules(doors: Sequence[Door], settings: KernelSettings,
                           also_allowed: Iterable[tuple[str, int]] = (),
                           existing_sets: Collection[str] = ()) -> TablePart:
    """Everything the kernel does for the userspace ``doors`` (others are skipped): the scan
    guard (core/nft/scan_guard.py) and, for the doors it can take, the first stage, linked so
    a scan resets the first stage too and only sources the daemon tracks are reported."""
    userspace = [door for door in doors if door.engine == "userspace"]
    staged = staged_doors(userspace)
    link = None
    if staged:
        link = FirstStageLink(frozenset(door.name for door in staged),
                              {v.number: forget_statements(staged, v, settings) for v in VERSIONS})
    guard = render_scan_guard(userspace, settings.log_group, settings.stage_size, also_allowed,
                              link)
    return join(guard, render_first_stage(staged, settings, existing_sets))


def render_first_stage(doors: Sequence[Door], settings: KernelSettings,
                       existing_sets: Collection[str] = ()) -> TablePart:
    """Declarations and rules for ``doors``, which must all pass ``first_stage_reason``.
    Sets that exist are recreated, so a changed size or timeout applies (and, as for every
    userspace door on reload, progress is forgotten)."""
    for door in doors:
        reason = first_stage_reason(door)
        if reason is not None:
            raise ValueError(f"door {door.name!r}: the kernel cannot keep its first stage: "
                             f"{reason}")
    if not doors:
        return TablePart()
    size, existing = settings.stage_size, existing_sets
    handed_ms = round(max(door.timeout for door in doors) * 1000)
    knocks = knock_ports(knock_port(frame) for door in doors for frame in door.sequence)
    declarations: list[str] = []
    rules: list[str] = []
    for version in VERSIONS:
        address, number = f"type {version.address_type}", version.number
        handed = shared_sets(number).handed
        declarations += declare_set(handed, address, size=size,
                                    timeout_ms=handed_ms, existing=existing)
        for door in doors:
            stage_ms = stage_timeout_ms(door)
            declarations += declare_set(first_set(door.name, number), address, size=size,
                                        timeout_ms=stage_ms, existing=existing)
            declarations += declare_set(first_overflow_set(door.name, number),
                                        bucket_key(settings), size=overflow_set_size(settings),
                                        timeout_ms=stage_ms, existing=existing)
            rules += _door_rules(door, version, settings)
        rules.append(f"{settings.arriving}meta pkttype host {version.source} "
                     f"@{handed} meta l4proto {{ tcp, udp }} "
                     f"meta l4proto . th dport {knocks} "
                     f'log prefix "{HANDED_KNOCK_PREFIX}" group {settings.log_group}')
    return TablePart(tuple(declarations), tuple(map(add_rule, rules)), first_stage_sets(doors))


def _door_rules(door: Door, version: IpVersion, settings: KernelSettings) -> list[str]:
    source, number = version.source, version.number
    first, overflow = first_set(door.name, number), first_overflow_set(door.name, number)
    bucket = bucket_of(version, settings)
    members = ((f"{source} @{first}", f"delete @{first} {{ {source} }}"),
               (f"{bucket} @{overflow}", f"delete @{overflow} {{ {bucket} }}"))
    head = f"{settings.arriving}meta pkttype host"
    handover = (f"update @{shared_sets(number).handed} {{ {source} }} "
                f'log prefix "{handover_prefix(door.name)}" group {settings.log_group}')
    second = door.sequence[1]
    later = [frame for frame in dict.fromkeys(door.sequence[2:]) if frame != second]
    rules = [f"{head} {member} {nft_match(second)} {leave} {handover}"
             for member, leave in members]
    rules += [f"{head} {member} {nft_match(frame)} {leave}"
              for frame in later for member, leave in members]
    start = nft_match(door.sequence[0])
    return [*rules, f"{head} {start} add @{first} {{ {source} }}",
            f"{head} {start} {source} != @{first} add @{overflow} {{ {bucket} }}"]
