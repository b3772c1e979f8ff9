"""Every name in knockgate's nftables table, and the prefixes its rules log with.

Each module that renders part of the table, the grants (core/nft/grants.py) and the daemon that
reads the NFLOG events (core/kernel_events.py) take their names from here.

Set names end in ``_v4`` or ``_v6``: each set holds addresses of one IP version. Sets that are
not a door's own start with '_', which keeps them clear of door names (those start with a
letter); a door's other sets are ``<door>-<role>``, and ``-`` cannot occur in a door name.
"""

from __future__ import annotations

from typing import NamedTuple

TABLE = "knockgate"
FAMILY = "inet"
TABLE_REF = f"{FAMILY} {TABLE}"
CHAIN = "input"
# knockgate creates its table with this comment, and adopts only a table that has it (one its
# own crash left), never a table another program made under the same name.
TABLE_COMMENT = "made by knockgate serve"
MARKED_TABLE = f'add table {TABLE_REF} {{ comment "{TABLE_COMMENT}"; }}'


def is_marked(listing: str) -> bool:
    """Whether ``listing`` (``nft list table``'s text) is of a table knockgate made: nft prints
    a table's comment on the line after its name."""
    lines = listing.splitlines()
    return len(lines) > 1 and lines[1].strip() == f'comment "{TABLE_COMMENT}"'


class IpVersion(NamedTuple):
    """How nftables names one IP version: ``ip saddr``, ``meta nfproto ipv4``, ``ipv4_addr``."""

    number: int
    family: str
    nfproto: str
    address_type: str

    @property
    def source(self) -> str:
        return f"{self.family} saddr"


VERSIONS = (IpVersion(4, "ip", "ipv4", "ipv4_addr"), IpVersion(6, "ip6", "ipv6", "ipv6_addr"))

# NFLOG prefixes. nftables truncates a prefix to 127 bytes; door names are at most 32.
OPENED_PREFIX = "kg:"  # + door: a kernel door opened for the logged packet's source
HANDOVER_PREFIX = "kg1:"  # + door: the kernel kept the first stage and hands the source over
HANDED_KNOCK_PREFIX = "kg-knock"  # a knock of a source handed over, the whole packet logged
SCAN_RESET_PREFIX = "kg-reset"  # a knocking source touched another port


def opened_prefix(door: str) -> str:
    return f"{OPENED_PREFIX}{door}"


def handover_prefix(door: str) -> str:
    return f"{HANDOVER_PREFIX}{door}"


def knock_chain(version: int) -> str:
    """The chain a kernel door's knocks of one IP version are matched in."""
    return f"knock_v{version}"


class SharedSets(NamedTuple):
    """The sets of one IP version that no door owns: ``_handed_v4`` and so on."""

    ports: str  # source . protocol . port triples that per-port grants (SPA) opened
    handed: str  # sources the kept first stage of userspace doors handed over to the daemon
    knocking: str  # sources that touched a knock port of a userspace door (the scan guard)
    captured: str  # sources that touched a knock port of a door whose knocks are captured


def shared_sets(version: int) -> SharedSets:
    return SharedSets(*(f"_{role}_v{version}" for role in SharedSets._fields))


def grant_set(door: str, version: int) -> str:
    """Sources a door is open for (core/nft/grants.py)."""
    return f"{door}_v{version}"


# --- kernel doors (core/nft/kernel_doors.py) --------------------------------------------------


def stage_set(door: str, stage: int, version: int) -> str:
    """Sources that matched exactly ``stage`` frames of a kernel door."""
    return f"{door}-stage{stage}_v{version}"


def overflow_set(door: str, version: int) -> str:
    """Buckets of first knocks that found a kernel door's first stage full."""
    return f"{door}-overflow_v{version}"


def penalty_set(door: str, version: int) -> str:
    """Sources whose knocks a kernel door ignores for a while."""
    return f"{door}-penalty_v{version}"


# --- first stage of userspace doors (core/nft/first_stage.py) ---------------------------------


def first_set(door: str, version: int) -> str:
    """Sources that sent a userspace door's first knock and nothing of the door since."""
    return f"{door}-first_v{version}"


def first_overflow_set(door: str, version: int) -> str:
    """Buckets of first knocks that found ``first_set`` full."""
    return f"{door}-firstoverflow_v{version}"
