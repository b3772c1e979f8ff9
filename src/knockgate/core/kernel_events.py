"""What the kernel's rules report over NFLOG, as typed events: the one reader of the prefixes
that core/nft/names.py defines and the rules log with. Pure; unknown prefixes are None."""

from __future__ import annotations

from typing import NamedTuple

from knockgate.core.nft.names import (
    HANDED_KNOCK_PREFIX,
    HANDOVER_PREFIX,
    OPENED_PREFIX,
    SCAN_RESET_PREFIX,
)
from knockgate.model import IPAddress


class KernelOpened(NamedTuple):
    """A kernel door opened for ``source``: the daemon logs it and runs the door's commands."""

    door: str
    source: IPAddress


class Handover(NamedTuple):
    """The kernel kept ``door``'s first stage and saw ``source`` send its second knock."""

    door: str
    source: IPAddress


class HandedKnock(NamedTuple):
    """A knock of a source the kernel handed over; ``packet`` is the whole IP packet."""

    source: IPAddress
    packet: bytes


class ScanReset(NamedTuple):
    """A knocking ``source`` touched a port that is no knock: it loses its progress."""

    source: IPAddress


KernelEvent = KernelOpened | Handover | HandedKnock | ScanReset


def _door_after(marker: str, prefix: str) -> str | None:
    if not prefix.startswith(marker) or len(prefix) == len(marker):
        return None
    return prefix[len(marker):]


def kernel_event(prefix: str, source: IPAddress, packet: bytes) -> KernelEvent | None:
    """The event an NFLOG message with ``prefix`` reports, or None if it is not ours."""
    if prefix == HANDED_KNOCK_PREFIX:
        return HandedKnock(source, packet)
    if prefix == SCAN_RESET_PREFIX:
        return ScanReset(source)
    if (door := _door_after(HANDOVER_PREFIX, prefix)) is not None:
        return Handover(door, source)
    if (door := _door_after(OPENED_PREFIX, prefix)) is not None:
        return KernelOpened(door, source)
    return None
