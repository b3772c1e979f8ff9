"""SetElementWriter against the real kernel: a grant is one nfnetlink batch answered by a single
acknowledgement, and a refused one leaves no reply behind that a later grant could misread. And
io/nft.py's Nftables, which sends the table core/nft renders and the grants it names."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from knockgate.core.kinds import parse_frame
from knockgate.core.nft.grants import door_grant, port_grant
from knockgate.core.nft.table import TablePlan, render_table
from knockgate.errors import FirewallError
from knockgate.io.nfnetlink import SetElementWriter
from knockgate.io.nft import Nftables
from knockgate.model import Door, PortSpec
from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, inside

if TYPE_CHECKING:
    from tests.support.testbed import TestBed  # a name pytest would try to collect as a test class

SETS = """
table inet knockgate {
    set open_v4 { type ipv4_addr; flags dynamic,timeout; }
    set full_v4 { type ipv4_addr; flags dynamic,timeout; size 1; }
}
"""
CLIENT = ip_address(CLIENT_V4).packed
OTHER = ip_address(CLIENT_V4_OTHER).packed


@pytest.fixture
def writer(bed: TestBed, tmp_path: Path) -> Iterator[SetElementWriter]:
    path = tmp_path / "sets.nft"
    path.write_text(SETS)
    bed.run(bed.server, "nft", "-f", str(path))
    with inside(bed.server):
        element_writer = SetElementWriter("knockgate")
    yield element_writer
    element_writer.close()


def elements(bed: TestBed, set_name: str) -> dict[str, dict[str, int]]:
    """Address → {"timeout": s, "expires": s} of each element of ``set_name``."""
    listing = json.loads(bed.run(bed.server, "nft", "-j", "list", "set", "inet", "knockgate",
                                 set_name).stdout)
    (found,) = [item["set"] for item in listing["nftables"] if "set" in item]
    return {item["elem"]["val"]: item["elem"] for item in found.get("elem", [])}


def assert_nothing_queued(writer: SetElementWriter) -> None:
    with pytest.raises(BlockingIOError):
        writer._sock.recv(65536, socket.MSG_DONTWAIT)


def test_grant_adds_the_element_with_its_timeout(bed, writer):
    writer.grant("open_v4", [CLIENT], 60000)
    element = elements(bed, "open_v4")[CLIENT_V4]
    assert element["timeout"] == 60
    assert 58 <= element["expires"] <= 60
    assert_nothing_queued(writer)


def test_granting_again_restarts_the_timeout(bed, writer):
    writer.grant("open_v4", [CLIENT], 60000)
    time.sleep(1.1)
    assert elements(bed, "open_v4")[CLIENT_V4]["expires"] <= 58
    writer.grant("open_v4", [CLIENT], 60000)
    assert elements(bed, "open_v4")[CLIENT_V4]["expires"] >= 59  # whole seconds, rounded down
    writer.grant("open_v4", [CLIENT], 30000)
    assert elements(bed, "open_v4")[CLIENT_V4]["timeout"] == 30
    assert_nothing_queued(writer)


def test_a_missing_set_is_refused_and_the_writer_still_works(bed, writer):
    with pytest.raises(FirewallError, match="in set nope: No such file or directory"):
        writer.grant("nope", [CLIENT], 60000)
    assert_nothing_queued(writer)
    writer.grant("open_v4", [CLIENT], 60000)
    assert CLIENT_V4 in elements(bed, "open_v4")


def test_a_full_set_is_refused_and_the_writer_still_works(bed, writer):
    writer.grant("full_v4", [CLIENT], 60000)
    with pytest.raises(FirewallError, match="in set full_v4: Too many open files in system"):
        writer.grant("full_v4", [OTHER], 60000)
    assert_nothing_queued(writer)
    assert list(elements(bed, "full_v4")) == [CLIENT_V4]
    writer.grant("full_v4", [CLIENT], 60000)  # re-granting a present element needs no room


def test_a_refused_key_aborts_the_batch_even_when_the_acked_message_succeeds(bed, writer):
    # The 16-byte key is invalid in an IPv4 set, the last message (the acked one) is fine: the
    # kernel queues errors and then a success ack, and all of them must be read.
    with pytest.raises(FirewallError, match="in set open_v4: Invalid argument"):
        writer.grant("open_v4", [ip_address("fd00:201::2").packed, CLIENT], 60000)
    assert_nothing_queued(writer)
    assert elements(bed, "open_v4") == {}
    writer.grant("open_v4", [CLIENT, OTHER], 60000)
    assert set(elements(bed, "open_v4")) == {CLIENT_V4, CLIENT_V4_OTHER}


def test_nftables_applies_the_table_adds_grants_and_removes_the_table(bed):
    door = Door("ssh", (parse_frame("tcp:7000"),), 5, (PortSpec("tcp", 22),), 30,
                engine="kernel")
    plan = TablePlan((door,), port_grants=(PortSpec("udp", 1194),))
    source = ip_address(CLIENT_V4)
    with inside(bed.server):
        nft = Nftables()
        try:
            assert nft.existing_sets() == set()
            nft.apply(render_table(plan, nft.existing_sets()))
            assert nft.existing_sets() == {"ssh_v4", "ssh_v6", "_ports_v4", "_ports_v6"}
            nft.add_elements(door_grant("ssh", source, 60))
            nft.add_elements(port_grant(source, [PortSpec("udp", 1194)], 60))
            assert CLIENT_V4 in elements(bed, "ssh_v4")
            listing = bed.run(bed.server, "nft", "list", "set", "inet", "knockgate",
                              "_ports_v4").stdout
            assert f"{CLIENT_V4} . udp . 1194" in listing
            with pytest.raises(FirewallError, match="nftables refused the change"):
                nft.apply("add rule inet knockgate nowhere drop\n")
            nft.remove_table()
            assert nft.existing_sets() == set()
            nft.remove_table()  # a table that is already gone is fine
        finally:
            nft.close()
