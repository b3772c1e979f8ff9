"""knockgate adopts only its own table (issue 12 item 10): a ``table inet knockgate`` another
program made is neither rewritten nor deleted, while the table a crash left keeps its grants."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import knockgate_cli
from tests.support.testbed import CLIENT_V4, SERVER_V4

DOOR = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 30
"""

# Declared as knockgate declares its own chain, so that nothing but the mark tells them apart.
FOREIGN = """
add table inet knockgate
add chain inet knockgate input { type filter hook input priority filter - 10; policy accept; }
add set inet knockgate theirs { type ipv4_addr; }
add element inet knockgate theirs { 10.201.9.9 }
add rule inet knockgate input ip saddr @theirs counter
"""


def table_listing(bed) -> str:
    return bed.run(bed.server, "nft", "list", "table", "inet", "knockgate").stdout


def test_a_table_another_program_made_is_refused_and_left_alone(bed, tmp_path):
    bed.run(bed.server, "nft", FOREIGN)
    before = table_listing(bed)
    config = tmp_path / "knockgate.toml"
    config.write_text(DOOR)
    daemon = bed.knockgate(bed.server, "serve", "--config", str(config),
                           stderr=subprocess.PIPE)
    try:
        _, stderr = daemon.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise AssertionError("serve adopted a table another program made") from None
    assert daemon.returncode == 4, stderr
    assert b"table inet knockgate exists that knockgate did not make" in stderr
    assert b"nft delete table inet knockgate" in stderr  # the fix, if nothing needs it
    assert table_listing(bed) == before


def test_its_own_table_left_by_a_crash_is_adopted_with_live_grants(bed, serve):
    bed.listen(22)
    daemon = serve(DOOR)
    assert 'comment "made by knockgate serve"' in table_listing(bed)
    result = knockgate_cli(bed, bed.client, "knock", SERVER_V4, "tcp:7000", "udp:8000",
                           "tcp:9000")
    assert result.returncode == 0, result.stderr
    daemon.wait_for(f"door ssh: opened tcp:22 for {CLIENT_V4}")
    daemon.process.kill()  # kill -9: no teardown, the table stays
    daemon.process.wait()
    restarted = serve(DOOR)
    restarted.wait_for("ready, watching")
    assert bed.can_connect(SERVER_V4, 22), "the grant lives on in the adopted table"
    assert 'comment "made by knockgate serve"' in table_listing(bed)
