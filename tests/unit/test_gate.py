"""The gate's rules (core/gate.py), as a table: what goes in, in order, and what each input
decides. No sockets, no kernel: packets are bytes, kernel events are values, time is passed."""

from ipaddress import ip_address

import pytest

from knockgate.core.gate import (
    Forgotten,
    Gate,
    Granted,
    NotOpened,
    OpenedInKernel,
    SyncKernel,
    VerifySpa,
)
from knockgate.core.kernel_events import HandedKnock, Handover, KernelOpened, ScanReset
from knockgate.core.kinds import parse_frame
from knockgate.model import Door, Packet, PortSpec, Progress, Reset
from tests.support.packets import DST4, SRC4, ipv4, knock, udp

OTHER = ip_address("10.202.0.9")
SCANNED = "it touched another port while knocking"


def door(name: str, *frames: str, engine: str = "userspace") -> Door:
    return Door(name, tuple(map(parse_frame, frames)), 5, (PortSpec("tcp", 22),), 30,
                engine=engine)


ONE = door("one", "udp:9999")  # a single knock: every knock is captured
SSH = door("ssh", "tcp:7000", "udp:8000", "tcp:9000")  # the kernel keeps its first stage
KERNEL = door("k", "tcp:6000", "tcp:6001", engine="kernel")
LOCAL = {DST4.packed}


def gate() -> Gate:
    return Gate([ONE, SSH, KERNEL], max_pending=16, spa_ports=frozenset({62201}))


def progress(name: str, step: int, total: int = 3) -> Progress:
    return Progress(name, SRC4.packed, step, total)


def handed(frame: str) -> HandedKnock:
    return HandedKnock(SRC4, knock(frame))


# Each row: a name, then (input, what that input decides) pairs in order. Inputs:
# ("capture", packet bytes), ("kernel", [events of one NFLOG read]), ("release",).
RULES = [
    ("1. a captured knock that completes a door is held until the kernel is read", [
        (("capture", knock("udp:9999")), [SyncKernel()]),
        (("kernel", []), []),
        (("release",), [Granted(ONE, SRC4)]),
    ]),
    ("2. a scan reset read at the sync drops the held opening", [
        (("capture", knock("udp:9999")), [SyncKernel()]),
        (("kernel", [ScanReset(SRC4)]), [Forgotten(SRC4), NotOpened("one", SRC4, SCANNED)]),
        (("release",), []),
    ]),
    ("2. a scan reset of another source drops nothing", [
        (("capture", knock("udp:9999")), [SyncKernel()]),
        (("kernel", [ScanReset(OTHER)]), [Forgotten(OTHER)]),
        (("release",), [Granted(ONE, SRC4)]),
    ]),
    ("3+4. hand-over then handed knocks open a staged door", [
        (("kernel", [Handover("ssh", SRC4), handed("udp:8000")]),
         [progress("ssh", 1), progress("ssh", 2)]),
        (("kernel", [handed("tcp:9000")]), [Granted(SSH, SRC4)]),
    ]),
    ("3. a scan reset later in the same read keeps the staged door shut", [
        (("kernel", [Handover("ssh", SRC4), handed("udp:8000")]),
         [progress("ssh", 1), progress("ssh", 2)]),
        (("kernel", [handed("tcp:9000"), ScanReset(SRC4)]),
         [NotOpened("ssh", SRC4, SCANNED), Forgotten(SRC4)]),
    ]),
    ("3. a scan reset read after the opening changes nothing already granted", [
        (("kernel", [Handover("ssh", SRC4), handed("udp:8000")]),
         [progress("ssh", 1), progress("ssh", 2)]),
        (("kernel", [handed("tcp:9000")]), [Granted(SSH, SRC4)]),
        (("kernel", [ScanReset(SRC4)]), [Forgotten(SRC4)]),
    ]),
    ("2. a scan reset mid-sequence loses the progress: the last knock opens nothing", [
        (("kernel", [Handover("ssh", SRC4), handed("udp:8000")]),
         [progress("ssh", 1), progress("ssh", 2)]),
        (("kernel", [ScanReset(SRC4)]), [Forgotten(SRC4)]),
        (("kernel", [handed("tcp:9000")]), []),
    ]),
    ("staged engine: a knock out of order resets", [
        (("kernel", [Handover("ssh", SRC4), handed("udp:8000"), handed("tcp:7000")]),
         [progress("ssh", 1), progress("ssh", 2),
          Reset("ssh", SRC4.packed, "knock out of order"), progress("ssh", 1)]),
    ]),
    ("5. kernel openings: kernel doors only", [
        (("kernel", [KernelOpened("k", SRC4)]), [OpenedInKernel(KERNEL, SRC4)]),
        (("kernel", [KernelOpened("ssh", SRC4), KernelOpened("gone", SRC4)]), []),
    ]),
    ("4. a hand-over for a door that no longer exists is ignored", [
        (("kernel", [Handover("gone", SRC4)]), []),
    ]),
    ("captured packets not addressed to this host do not count", [
        (("capture", knock("udp:9999", dst=OTHER)), []),
    ]),
    ("a datagram to the SPA port goes to the SPA services", [
        (("capture", ipv4(17, udp(62201, b"spa"))),
         [VerifySpa(Packet(SRC4, DST4, "udp", 40000, 62201, 0, b"spa"))]),
    ]),
    ("garbage decides nothing", [
        (("capture", b"\x45garbage"), []),
        (("kernel", [HandedKnock(SRC4, b"")]), []),
    ]),
]


@pytest.mark.parametrize(("name", "steps"), RULES, ids=[row[0] for row in RULES])
def test_rules(name, steps):
    under_test = gate()
    now = 100.0
    for (kind, *argument), expected in steps:
        if kind == "capture":
            got = under_test.on_capture(argument[0], now, LOCAL)
        elif kind == "kernel":
            got = under_test.on_kernel(argument[0], now)
        else:
            got = under_test.release()
        assert got == expected, f"{name}: after {kind}"
        now += 0.1


def test_the_first_knock_of_a_handover_counts_from_one_stage_before():
    """The kernel's first stage lasts timeout / (knocks - 1) = 2.5 s; the whole sequence must
    still fit the door's 5 s from that earliest first knock."""
    under_test = gate()
    under_test.on_kernel([Handover("ssh", SRC4), handed("udp:8000")], 100.0)
    assert under_test.on_kernel([handed("tcp:9000")], 102.4) == [Granted(SSH, SRC4)]
    late = gate()
    late.on_kernel([Handover("ssh", SRC4), handed("udp:8000")], 100.0)
    assert late.on_kernel([handed("tcp:9000")], 102.6) == []


def test_capture_clauses_follow_a_replaced_door():
    under_test = gate()
    assert under_test.capture_clauses() == ["udp dst port 9999"]
    under_test.replace_door(door("one", "udp:9998"))
    assert under_test.capture_clauses() == ["udp dst port 9998"]
    assert under_test.on_capture(knock("udp:9999"), 1.0, LOCAL) == []
    assert under_test.on_capture(knock("udp:9998"), 1.0, LOCAL) == [SyncKernel()]
