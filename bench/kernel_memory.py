"""What kernel doors cost the kernel: N doors in a namespace, the kernel's unreclaimable memory
before and after the daemon installs them, the time until it is ready, and the time
`knockgate check` takes over the same file.

    PYTHONPATH=src .venv/bin/python bench/kernel_memory.py [--doors 100 1000] [--check 10000]

Each door has three knocks on ports of its own (tcp, udp, tcp) and opens tcp:22 for 30 s,
with the daemon's defaults otherwise. Memory is /proc/meminfo's SUnreclaim, which counts the
buckets nftables' hash sets allocate (kmalloc; VmallocUsed is read too in case a table grows
past what kmalloc serves). The meter is host-wide: run it on a quiet machine, the figures of
one run include whatever else the host allocated meanwhile. Sends no packets.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

from tests.support.testbed import TestBed, require_root_tools

FIRST_PORT = 10000
READY = b"ready, watching"


def door_config(doors: int, extra: str = "") -> str:
    """``doors`` kernel doors with three knocks each, on ports no other door uses."""
    parts = [extra]
    for number in range(doors):
        port = FIRST_PORT + 3 * number
        parts.append(f'[[door]]\nname = "d{number}"\n'
                     f'sequence = ["tcp:{port}", "udp:{port + 1}", "tcp:{port + 2}"]\n'
                     'timeout = 5\nopen = ["tcp:22"]\nopen_for = 30\nengine = "kernel"\n')
    return "\n".join(parts)


def meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0])
    raise KeyError(field)


def settle() -> None:
    """Let freed kernel memory of earlier runs (namespaces, tables: RCU and workqueues) go."""
    time.sleep(2.0)


def measure_start(doors: int, workdir: Path) -> dict[str, float]:
    config = workdir / f"doors-{doors}.toml"
    config.write_text(door_config(doors))
    with TestBed() as bed:
        settle()
        before = meminfo_kib("SUnreclaim"), meminfo_kib("VmallocUsed")
        started = time.monotonic()
        daemon = bed.knockgate(bed.server, "serve", "--config", str(config),
                               stderr=subprocess.PIPE)
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if READY in line:
                break
        else:
            raise SystemExit(f"the daemon with {doors} doors exited before it was ready")
        ready = time.monotonic() - started
        time.sleep(1.0)
        after = meminfo_kib("SUnreclaim"), meminfo_kib("VmallocUsed")
        daemon.terminate()
        daemon.wait(30)
    slab, vmalloc = after[0] - before[0], after[1] - before[1]
    return {"doors": doors, "ready_s": ready, "sunreclaim_kib": slab, "vmalloc_kib": vmalloc,
            "per_door_kib": (slab + vmalloc) / doors}


def measure_check(doors: int, workdir: Path) -> tuple[float, int]:
    config = workdir / f"check-{doors}.toml"
    config.write_text(door_config(doors))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "knockgate", "check", "--config", str(config)],
                            capture_output=True, text=True, check=False)
    return time.monotonic() - started, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doors", type=int, nargs="*", default=[100, 1000],
                        help="door counts the daemon is started with (default 100 1000)")
    parser.add_argument("--check", type=int, nargs="*", default=[100, 1000, 10000],
                        help="door counts `knockgate check` is timed on (default 100 1000 10000)")
    args = parser.parse_args()
    if args.doors:
        missing = require_root_tools()
        if missing:
            raise SystemExit(missing)
    with tempfile.TemporaryDirectory() as workdir:
        for doors in args.check:
            seconds, code = measure_check(doors, Path(workdir))
            print(f"check  {doors:6} doors: {seconds:6.2f} s, exit {code}", flush=True)
        for doors in args.doors:
            row = measure_start(doors, Path(workdir))
            print(f"serve  {doors:6} doors: ready in {row['ready_s']:5.2f} s, kernel memory "
                  f"+{row['sunreclaim_kib'] / 1024:8.1f} MiB SUnreclaim "
                  f"+{row['vmalloc_kib'] / 1024:6.1f} MiB vmalloc, "
                  f"{row['per_door_kib']:7.1f} KiB per door", flush=True)


if __name__ == "__main__":
    main()
