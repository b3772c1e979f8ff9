"""Sequence doors run by nftables itself: the knock state machine as set operations per packet.

A kernel door costs no userspace work per packet. The daemon still learns of every opening: the
rule that opens the door also logs the packet to an NFLOG group with the prefix ``kg:<door>``
(io/nflog.py reads it), so openings are logged and the door's commands run as usual.

Layout, for door ``ssh`` with frames F1..Fn and each IP version (v4 shown):

- ``ssh-stage1_v4`` .. ``ssh-stage<n-1>_v4``: sources that matched exactly k frames
  (``flags dynamic,timeout; size N``, N/4 from stage 2 on, see ``later_size``). A source sits
  in at most one of them.
- ``ssh-overflow_v4``: where a first knock goes while ``ssh-stage1_v4`` is full (see below).
- ``ssh-penalty_v4``, only with a penalty: sources whose knocks are ignored for a while
  (``size N/4``).
- ``ssh_v4``, the door's grant set (core/nft/grants.py): Fn adds the source with ``open_for``.

(core/nft/names.py spells every name.) The input chain sends TCP and UDP packets addressed to this
host (``meta pkttype host``: like the userspace engine, broadcast and multicast never count) to
``knock_v4`` / ``knock_v6``. The rules there carry no verdict, so every door sees every packet
(doors may share frames) and the input chain still decides the packet's fate afterwards:
``hide_knock_ports`` drops knock packets there, and a door that knocks on a public port (tcp:80)
keeps that port working. Per door, stages come highest first, so a packet that promotes a source is
not looked at again by the stage it entered:

1. In stage k and Fk+1: leave stage k, enter stage k+1; from stage n-1, open and log instead.
2. In stage k and anything but Fk (a retransmission of the step just matched changes nothing):
   leave stage k and, with a penalty, enter the penalty box. This covers knocks out of order and
   the scan case: ANY other TCP or UDP packet from the source, to any port. (ICMP does not
   count: neighbour discovery and path MTU messages come from the knocker mid-sequence.)
3. F1 from a source in no stage and not penalised: enter stage 1. After a reset by rule 2 the
   same packet may start over here, so a knock out of order that is F1 restarts the sequence,
   as in core/sequence.py (unless it earned a penalty).

Timeouts. core/sequence.py expires an attempt ``timeout`` seconds after its FIRST knock; a set
element's timeout is a constant given when it is added, so nftables cannot carry the remaining
time from one stage to the next. Each stage keeps its sources for ``timeout / (n - 1)``: every
sequence the kernel accepts completed within ``timeout`` of its first knock (never looser than
the userspace engine), but one whose gaps are uneven may be refused although its total fits.

Differences from core/sequence.py, all on the strict side:
- A packet on a knock port whose TCP flags match none of the door's frames is a reset, not
  ignored (rule 2); so is a knock on another door's port while in the middle of this one.
- A penalised source (scan or wrong order while knocking) has all its knocks ignored for
  ``penalty`` seconds. Anyone who can spoof your address can put you there: keep it short.

Bounded state under a spoofed first-knock flood. Stage sets have a size; nftables never evicts,
and an ``add`` to a full set fails. So a first knock that finds stage 1 full is remembered in
``ssh-overflow_v4`` instead: a set of ``jhash(source) mod N`` buckets (seeded by the caller), at
most N elements however many sources flood. A source whose bucket is set counts as in stage 1.
The real client's first knock always lands (its own bucket), so the door still opens during a
flood; the price, only while stage 1 is full, is that a source whose bucket a flooder happened to
set may skip F1 (it still needs F2..Fn in order). Bucket resets never penalise (a bucket is
shared). Later stages have no overflow: filling them takes the knocks before them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

from knockgate.core.kinds import nft_match, nft_mismatches
from knockgate.core.nft.names import (
    TABLE_REF,
    VERSIONS,
    IpVersion,
    grant_set,
    knock_chain,
    opened_prefix,
    overflow_set,
    penalty_set,
    stage_set,
)
from knockgate.core.nft.parts import TablePart, add_rule, declare_set
from knockgate.model import Door

DEFAULT_LOG_GROUP = 0x6B67  # "kg"
# Sources at the first knock, per door and IP version. Small on purpose: the kernel allocates a
# hash set's buckets for its whole size when the set is created (core/nft/memory.py), and a
# flood fills any size anyway -- the overflow buckets, not stage 1's size, keep the real
# client's knock working then.
DEFAULT_STAGE_SIZE = 192
# One jiffy at HZ=100 is 10 ms; a stage shorter than two could expire the moment it starts.
MIN_STAGE_MS = 20


class _SettingsFields(NamedTuple):
    log_group: int = DEFAULT_LOG_GROUP
    stage_size: int = DEFAULT_STAGE_SIZE
    overflow_seed: int = 0
    # Only knocks arriving on these interfaces count (empty: every one), as for the capture.
    interfaces: tuple[str, ...] = ()


class KernelSettings(_SettingsFields):
    """Knobs shared by every kernel door. ``overflow_seed`` is the jhash seed of the overflow
    buckets; the daemon passes a random one so flooders cannot aim at a client's bucket.
    (Build one by calling KernelSettings: the _replace it inherits skips the checks.)"""

    __slots__ = ()

    def __new__(cls, log_group: int = DEFAULT_LOG_GROUP, stage_size: int = DEFAULT_STAGE_SIZE,
                overflow_seed: int = 0, interfaces: tuple[str, ...] = ()) -> KernelSettings:
        if not 0 <= log_group <= 0xFFFF:
            raise ValueError("log_group must be 0-65535")
        if stage_size < 1:
            raise ValueError("stage_size must be at least 1")
        if not 0 <= overflow_seed <= 0xFFFFFFFF:
            raise ValueError("overflow_seed must fit in 32 bits")
        return super().__new__(cls, log_group, stage_size, overflow_seed, interfaces)

    @property
    def arriving(self) -> str:
        """The match for ``interfaces``, with a trailing space, or nothing."""
        if not self.interfaces:
            return ""
        return "iifname { " + ", ".join(f'"{name}"' for name in self.interfaces) + " } "


class _DoorSets(NamedTuple):
    """The set names of one door for one IP version."""

    version: IpVersion
    stages: tuple[str, ...]  # stages[k - 1] holds the sources that matched k frames
    overflow: str
    penalty: str | None
    grant: str

    @property
    def source(self) -> str:
        return self.version.source

    def owned(self) -> list[str]:
        """The sets this door renders (its grant set is core/nft/grants.py's)."""
        return [*self.stages, *([self.overflow] if self.stages else []),
                *([self.penalty] if self.penalty else [])]


def stage_timeout_ms(door: Door) -> int:
    """How long a source stays in each stage: the door's timeout split over its gaps."""
    gaps = max(1, len(door.sequence) - 1)
    return int(door.timeout * 1000) // gaps


def kernel_reason(door: Door) -> str | None:
    """Why ``door`` cannot run in the kernel, or None if it can.

    Every frame (TCP flags under any mask, UDP) is expressible in nftables, and commands are run
    by the daemon on the NFLOG event. What the rules cannot do is change themselves, see
    packets the input hook never gets, or time very short stages.
    """
    if door.one_time is not None or not door.sequence:
        return ("its sequence comes from a one-time file, which the daemon advances after each "
                "use; use the userspace engine")
    if door.target is not None:
        return ("it has a target, which may be an address this host forwards for; the input "
                "hook only sees packets for this host; use the userspace engine")
    if len(door.sequence) > 1 and stage_timeout_ms(door) < MIN_STAGE_MS:
        return (f"its timeout of {door.timeout:g}s split over {len(door.sequence) - 1} gaps "
                f"gives {stage_timeout_ms(door)} ms per knock, under the kernel's "
                f"{MIN_STAGE_MS} ms; raise timeout or use the userspace engine")
    return None


def _has_penalty(door: Door) -> bool:
    """A single-knock door opens at once: there is no sequence to break, so no penalty box."""
    return len(door.sequence) > 1 and door.penalty > 0


def _sets(door: Door, version: IpVersion) -> _DoorSets:
    name, number = door.name, version.number
    return _DoorSets(
        version=version,
        stages=tuple(stage_set(name, k, number) for k in range(1, len(door.sequence))),
        overflow=overflow_set(name, number),
        penalty=penalty_set(name, number) if _has_penalty(door) else None,
        grant=grant_set(name, number),
    )


def later_size(settings: KernelSettings) -> int:
    """The size of stages 2 and on and of the penalty box: a quarter of stage 1, as the
    userspace engine keeps a quarter as many sources further along (core/sequence.py).
    Reaching them takes a knock after the first, so a first-knock flood never fills them."""
    return max(1, settings.stage_size // 4)


def overflow_set_size(settings: KernelSettings) -> int:
    """Room for twice the buckets. An ``add`` does not refresh a bucket, so under a flood each
    expires and is set again; until the kernel's garbage collection (about once a second)
    frees the expired element, both count against the set's size. With room for only one
    per bucket the set filled up under a 340 kpps flood and a real first knock was lost."""
    return 2 * settings.stage_size


def bucket_key(settings: KernelSettings) -> str:
    """The key of an overflow bucket set. The bucket is a jhash, an integer: nft 1.0.6 crashes
    listing a set declared "typeof jhash ...", so the key is declared as another integer of
    the same width."""
    return f"typeof numgen random mod {settings.stage_size}"


def bucket_of(version: IpVersion, settings: KernelSettings) -> str:
    """The overflow bucket of the packet's source."""
    return (f"jhash {version.source} mod {settings.stage_size} "
            f"seed 0x{settings.overflow_seed:08x}")


def render_kernel_doors(doors: Sequence[Door], settings: KernelSettings,
                        existing_sets: Collection[str] = ()) -> TablePart:
    """Chains, sets and rules for ``doors``, which must all pass ``kernel_reason``; a door's
    ``penalty`` is its seconds in the penalty box (0: none).

    The ``knock_v4``/``knock_v6`` chains are declared and flushed even without doors, so sets
    of removed doors lose their last reference and can be deleted. Every stage set is
    recreated so a changed size or timeout applies. The rules go after the input chain's
    accept rules and before its drops.
    """
    for door in doors:
        reason = kernel_reason(door)
        if reason is not None:
            raise ValueError(f"door {door.name!r} cannot run in the kernel: {reason}")
    declarations = [command for version in VERSIONS
                    for command in (f"add chain {TABLE_REF} {knock_chain(version.number)}",
                                    f"flush chain {TABLE_REF} {knock_chain(version.number)}")]
    rules = []
    if doors:
        jumps = ", ".join(f"{version.nfproto} : jump {knock_chain(version.number)}"
                          for version in VERSIONS)
        rules.append(add_rule(f"{settings.arriving}meta pkttype host meta l4proto {{ tcp, udp }} "
                              f"meta nfproto vmap {{ {jumps} }}"))
    owned: list[str] = []
    for version in VERSIONS:
        for door in doors:
            sets = _sets(door, version)
            declarations += _declarations(door, sets, settings, existing_sets)
            owned += sets.owned()
            rules += [add_rule(rule, knock_chain(version.number))
                      for rule in _door_rules(door, sets, settings)]
    return TablePart(tuple(declarations), tuple(rules), frozenset(owned))


def _declarations(door: Door, sets: _DoorSets, settings: KernelSettings,
                  existing: Collection[str]) -> list[str]:
    stage_ms = stage_timeout_ms(door)
    address = f"type {sets.version.address_type}"
    commands = [command for index, stage in enumerate(sets.stages)
                for command in declare_set(stage, address, timeout_ms=stage_ms,
                                           size=later_size(settings) if index else
                                           settings.stage_size, existing=existing)]
    if sets.stages:
        commands += declare_set(sets.overflow, bucket_key(settings),
                                size=overflow_set_size(settings), timeout_ms=stage_ms,
                                existing=existing)
    if sets.penalty:
        commands += declare_set(sets.penalty, address, size=later_size(settings),
                                timeout_ms=max(1, round(door.penalty * 1000)), existing=existing)
    return commands


def _door_rules(door: Door, sets: _DoorSets, settings: KernelSettings) -> list[str]:
    rules = []
    for k in range(len(sets.stages), 0, -1):
        member = f"{sets.source} @{sets.stages[k - 1]}"
        leave = f"delete @{sets.stages[k - 1]} {{ {sets.source} }}"
        rules += _stage_rules(door, sets, settings, k, member, leave, exact=True)
        if k == 1:
            bucket = bucket_of(sets.version, settings)
            rules += _stage_rules(door, sets, settings, k, f"{bucket} @{sets.overflow}",
                                  f"delete @{sets.overflow} {{ {bucket} }}", exact=False)
    return rules + _start_rules(door, sets, settings)


def _stage_rules(door: Door, sets: _DoorSets, settings: KernelSettings, k: int, member: str,
                 leave: str, exact: bool) -> list[str]:
    """Rules 1 and 2 for a source in stage ``k``, known by ``member`` and removed by ``leave``."""
    frames = door.sequence
    guard = f" {sets.source} != @{sets.penalty}" if sets.penalty and not exact else ""
    if k + 1 == len(frames):
        step = _open_statements(door, sets, settings)
    else:
        step = f"add @{sets.stages[k]} {{ {sets.source} }}"
    rules = [f"{member}{guard} {nft_match(frames[k])} {leave} {step}"]
    punish = f" add @{sets.penalty} {{ {sets.source} }}" if sets.penalty and exact else ""
    rules += [f"{member} {other} {leave}{punish}" for other in nft_mismatches(frames[k - 1])]
    return rules


def _start_rules(door: Door, sets: _DoorSets, settings: KernelSettings) -> list[str]:
    """Rule 3. The second rule only fires when the first one's add found stage 1 full: the
    source is then still outside it, and its bucket goes to the overflow set instead."""
    fresh = " ".join([nft_match(door.sequence[0]),
                      *(f"{sets.source} != @{stage}" for stage in sets.stages),
                      *([f"{sets.source} != @{sets.penalty}"] if sets.penalty else [])])
    if not sets.stages:
        return [f"{fresh} {_open_statements(door, sets, settings)}"]
    return [f"{fresh} add @{sets.stages[0]} {{ {sets.source} }}",
            f"{fresh} add @{sets.overflow} {{ {bucket_of(sets.version, settings)} }}"]


def _open_statements(door: Door, sets: _DoorSets, settings: KernelSettings) -> str:
    log = f'log prefix "{opened_prefix(door.name)}" group {settings.log_group}'
    if not door.open:
        return log
    open_ms = round(door.open_for * 1000)
    return f"update @{sets.grant} {{ {sets.source} timeout {open_ms}ms }} {log}"
