"""The names knockgate's nftables table is built from, and the prefixes its rules log with.

Every module that renders part of the table, and the daemon that reads its NFLOG events
(core/events.py), takes its names from here.
"""

from __future__ import annotations

from typing import NamedTuple

TABLE = "knockgate"
FAMILY = "inet"
TABLE_REF = f"{FAMILY} {TABLE}"
CHAIN = "input"


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
