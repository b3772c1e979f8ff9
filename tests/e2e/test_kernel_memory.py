"""What kernel doors cost the kernel, measured: the daemon installs many doors in the test bed's
server namespace and /proc/meminfo's SUnreclaim (where nftables' hash set buckets live) is read
before and after. The meter is host-wide, so the bound has room for other tests' noise; before
sets were sized by need each door cost about 4 MiB."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.e2e.conftest import knockgate_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from kernel_memory import door_config, meminfo_kib

DOORS = 200
PER_DOOR_KIB = 64


def test_idle_kernel_doors_cost_at_most_64_kib_each(bed, serve):
    time.sleep(1.0)  # let earlier tests' namespaces free their memory
    before = meminfo_kib("SUnreclaim")
    started = time.monotonic()
    daemon = serve(door_config(DOORS))
    ready = time.monotonic() - started
    time.sleep(0.5)
    grown = meminfo_kib("SUnreclaim") - before
    sets = bed.run(bed.server, "nft", "list", "sets", "inet").stdout
    assert sets.count("-stage1_v4") == DOORS, "the daemon installed every door"
    assert grown <= DOORS * PER_DOOR_KIB, f"{grown / DOORS:.0f} KiB per door"
    assert ready < 5.0, f"{DOORS} doors took {ready:.1f} s to be ready"
    daemon.stop()


def test_check_refuses_what_the_kernel_cannot_hold(bed, tmp_path):
    config = tmp_path / "many.toml"
    config.write_text(door_config(2000, "[daemon]\nmax_pending = 1000000\n"))
    result = knockgate_cli(bed, bed.server, "check", "--config", str(config))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "of kernel memory, over the budget" in result.stderr
    fits = tmp_path / "fits.toml"
    fits.write_text(door_config(20))
    result = knockgate_cli(bed, bed.server, "check", "--config", str(fits))
    assert result.returncode == 0, result.stderr
    assert "kernel memory: " in result.stdout
