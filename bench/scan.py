"""Do random-order full port scans open a door? knockgate (kernel and userspace engines) and
knockd side by side, on the namespace test bed.

Each daemon guards tcp:22 behind the all-TCP door tcp:7000 tcp:8000 tcp:9000 (a SYN scan
cannot knock a UDP frame, which would make the door trivially scan-proof). Each scan sends one
SYN to every port 1-65535 in a fresh random order from its own client address, then checks
whether tcp:22 accepts that address. Afterwards a correct knock from a fresh address must
still open (otherwise "0 opened" would mean nothing).

    sudo .venv/bin/python bench/scan.py [--scans 20] [--json FILE] [--docs docs/scans.md]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

from tests.support.testbed import SERVER_V4, TestBed, require_root_tools

PORTS = (7000, 8000, 9000)
KNOCKGATE = """
[[door]]
name = "ssh"
sequence = ["tcp:7000", "tcp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 60
engine = "{engine}"
"""
KNOCKD = """
[options]
    LogFile = {folder}/knockd.log
[door]
    Sequence    = 7000,8000,9000
    Seq_Timeout = 5
    TCPFlags    = syn
    Command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
"""


DOCS = """# Port scans against knock doors

Does a full port scan open a door? Each scan sends one SYN to every TCP port 1-65535 in a fresh
random order from its own address, against the door tcp:7000 tcp:8000 tcp:9000 guarding tcp:22
(all TCP, so a SYN scan could complete it), then tries tcp:22 from that address. A correct knock
from a fresh address must open afterwards. Regenerate with
`.venv/bin/python bench/scan.py --docs docs/scans.md --json docs/scans.json` (root; about 90 s).

Run of {date} (same machine as [benchmarks.md](benchmarks.md)):

{table}

knockd only sees its sequence ports, so a scan that happens to hit them in a favourable order
opens it; nothing a scan sends elsewhere counts against it. knockgate resets a source that
touches any other port while knocking: the kernel engine in its own rules; the userspace
engine keeps the first knock in the kernel, which forgets a source that touches another port,
and is told of such sources once they are handed to the daemon.
"""


def scan_from(bed: TestBed, source: str, seed: int) -> float:
    ports = list(range(1, 65536))
    random.Random(seed).shuffle(ports)
    started = time.perf_counter()
    bed.send_syns(ports, source)
    return time.perf_counter() - started


def opened_for(bed: TestBed, source: str) -> bool:
    time.sleep(0.3)  # let the daemon catch up with the scan's tail
    return bed.can_connect(SERVER_V4, 22, source, timeout=0.3)


def start(bed: TestBed, folder: Path, variant: str) -> None:
    if variant == "knockd":
        bed.run(bed.server, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")
        config = folder / "knockd.conf"
        config.write_text(KNOCKD.format(folder=folder))
        bed.spawn(bed.server, ["knockd", "-i", bed.server_if, "-c", str(config)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        return
    config = folder / "knockgate.toml"
    config.write_text(KNOCKGATE.format(engine=variant.split("-")[1]))
    log = folder / "knockgate.log"
    sink = log.open("wb")
    bed.knockgate(bed.server, "serve", "--config", str(config), stderr=sink)
    deadline = time.monotonic() + 10
    while "ready, watching" not in log.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(log.read_text())
        time.sleep(0.05)


def run_variant(variant: str, scans: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder, TestBed() as bed:
        sources = [f"10.201.2.{i}" for i in range(1, scans + 2)]
        for source in sources:
            bed.run(bed.client, "ip", "addr", "add", f"{source}/16", "dev", bed.client_if)
        bed.listen(22)
        start(bed, Path(folder), variant)
        opened, seconds = 0, []
        for index, source in enumerate(sources[:-1]):
            seconds.append(scan_from(bed, source, seed=index))
            opened += opened_for(bed, source)
        final = sources[-1]
        bed.send_syns(PORTS, final)
        knock_opens = opened_for(bed, final)
    return {"variant": variant, "scans": scans, "opened": opened,
            "scan_seconds_median": round(sorted(seconds)[len(seconds) // 2], 2),
            "correct_knock_opens": knock_opens}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--docs", type=Path, help="also write the table as a markdown page")
    args = parser.parse_args()
    reason = require_root_tools()
    if reason or not shutil.which("knockd"):
        print(f"bench: {reason or 'knockd is not installed'}", file=sys.stderr)
        return 1
    results = [run_variant(v, args.scans)
               for v in ("knockgate-kernel", "knockgate-userspace", "knockd")]
    table = "\n".join([
        "| daemon | full random-order scans | doors opened | correct knock then opens |",
        "|---|--:|--:|:-:|",
        *(f"| {r['variant']} | {r['scans']} (median {r['scan_seconds_median']} s each) | "
          f"{r['opened']} | {'yes' if r['correct_knock_opens'] else 'NO'} |" for r in results),
    ])
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.docs:
        args.docs.write_text(DOCS.format(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         table=table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
