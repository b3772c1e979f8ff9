"""NFLOG prefixes → typed kernel events: every prefix the rules log with, and what is not ours."""

from ipaddress import ip_address

import pytest

from knockgate.core.kernel_events import (
    HandedKnock,
    Handover,
    KernelOpened,
    ScanReset,
    kernel_event,
)
from knockgate.core.nft.names import (
    HANDED_KNOCK_PREFIX,
    SCAN_RESET_PREFIX,
    handover_prefix,
    opened_prefix,
)

SOURCE = ip_address("10.201.0.2")
PACKET = b"\x45" + bytes(39)


@pytest.mark.parametrize(("prefix", "expected"), [
    (opened_prefix("ssh"), KernelOpened("ssh", SOURCE)),
    ("kg:ssh", KernelOpened("ssh", SOURCE)),
    (handover_prefix("ssh"), Handover("ssh", SOURCE)),
    ("kg1:web_2", Handover("web_2", SOURCE)),
    (HANDED_KNOCK_PREFIX, HandedKnock(SOURCE, PACKET)),
    (SCAN_RESET_PREFIX, ScanReset(SOURCE)),
    ("kg:", None),  # a marker without a door
    ("kg1:", None),
    ("kg-knockX", None),
    ("kg-reset ", None),
    ("", None),
    ("fail2ban", None),
])
def test_each_prefix_becomes_one_event_or_none(prefix, expected):
    assert kernel_event(prefix, SOURCE, PACKET) == expected
