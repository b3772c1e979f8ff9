"""Chaos: replay captured packets across everything that breaks, and count what wrongly opens.

    sudo .venv/bin/python bench/chaos.py [--rounds 3] [--slow] [--json FILE]

Each scenario runs ``--rounds`` times in a fresh namespace test bed (tests/support/testbed.py),
against `knockgate serve` with an SPA key (tcp:22) and a kernel door (tcp:7000 udp:8000
tcp:9000 -> tcp:22). A round uses one SPA packet from the client's first address, as an
eavesdropper would capture it, then breaks something, then replays the captured bytes from the
client's second address (the packet asks to open for its sender). "Wrongly opened" counts
rounds in which tcp:22 then accepts a connection from that second address, or in which
something else opened that the docs say must not. Scenarios:

- restart: SIGTERM, start again, replay;          - kill: SIGKILL, start again, replay;
- reload: SIGHUP, replay;                          - move: SIGHUP with another state_dir;
- full disk: state_dir on a full 64 KiB tmpfs: a fresh packet must not be granted (its use
  cannot be recorded), then the disk frees up, SIGHUP, replay;
- corrupt: the replay file overwritten with garbage while stopped, start, replay;
- deleted (running): the replay file deleted under the daemon, replay;
- deleted (stopped): the replay file deleted while no daemon runs, start, replay — a documented
  gap (docs/spa-protocol.md): nothing can tell the new daemon what the lost file held;
- stopped: SIGTERM, then a stranger connects to tcp:22 (issue 12 item 1: protection while no
  daemon runs);
- max age (with --slow; a minute a round): max_age 5, the first prune, SIGHUP to max_age 600,
  replay;
- spoofed resets: while the client knocks the kernel door, a "spoofer" sends SYNs carrying the
  client's address to an unrelated port, 50 a second; counts knocks that fail ("wrongly shut",
  issue 12 item 4: a lock-out button).

Every packet stays inside the test bed's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

from tests.e2e.conftest import SECRET, RunningDaemon, sealed, send_raw
from tests.support.testbed import (
    CLIENT_V4,
    CLIENT_V4_OTHER,
    SERVER_V4,
    TestBed,
    inside,
    require_root_tools,
)

from knockgate.core.spa import SpaRequest
from knockgate.io.store import FILE_NAME

SSH = SpaRequest(ports=(("tcp", 22),))
OPENED = "spa: key alice: opened tcp:22 for "
KNOCKS = ((7000, "tcp"), (8000, "udp"), (9000, "tcp"))


class Outcome(NamedTuple):
    attempts: int
    wrongly_opened: int
    wrongly_shut: int = 0


class Round:
    """One fresh test bed: its folder, config and the daemon running now."""

    def __init__(self, bed: TestBed, folder: Path) -> None:
        self.bed = bed
        self.folder = folder
        self.state = folder / "state"
        self.state.mkdir(mode=0o700)
        secret = folder / "alice.key"
        secret.write_text(SECRET + "\n")
        secret.chmod(0o600)
        self.secret = secret
        self.config = folder / "knockgate.toml"
        self.daemon: RunningDaemon | None = None

    def write_config(self, max_age: float = 60, state_dir: Path | None = None) -> None:
        self.config.write_text(f"""
[daemon]
state_dir = "{state_dir or self.state}"

[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 2

[spa]
max_age = {max_age}

[[spa.key]]
name = "alice"
secret_file = "{self.secret}"
open = ["tcp:22"]
open_for = 30
""")
        self.config.chmod(0o600)

    def start(self) -> RunningDaemon:
        self.daemon = RunningDaemon(self.bed, self.config)
        self.daemon.wait_for("ready, watching", timeout=15)
        return self.daemon

    def stop(self, signum: int = signal.SIGTERM) -> None:
        assert self.daemon is not None
        self.daemon.signal(signum)
        self.daemon.process.wait(10)

    def reload(self) -> None:
        assert self.daemon is not None
        mark = self.daemon.mark()
        self.daemon.signal(signal.SIGHUP)
        self.daemon.wait_for("reloaded spa on udp:62201", after=mark)

    def use(self, packet: bytes) -> None:
        """The packet's first, legitimate use: it opens for the client's first address."""
        assert self.daemon is not None
        mark = self.daemon.mark()
        send_raw(self.bed, packet, source=CLIENT_V4)
        self.daemon.wait_for(OPENED + CLIENT_V4, after=mark)

    def replay_opens(self, packet: bytes) -> bool:
        """Replay ``packet`` from the second address: True if it opened tcp:22 for it. The
        daemon's line about the packet (opened or refused) proves it was handled first."""
        assert self.daemon is not None
        mark = self.daemon.mark()
        send_raw(self.bed, packet, source=CLIENT_V4_OTHER)
        self.daemon.wait_for(f"{CLIENT_V4_OTHER} ", after=mark)
        return self.bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)

    def close(self) -> None:
        if self.daemon is not None and self.daemon.process.poll() is None:
            self.daemon.process.kill()
            self.daemon.process.wait()


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextlib.contextmanager
def full_tmpfs(at: Path) -> Iterator[Path]:
    """``at`` as a 64 KiB tmpfs, filled; yields the filler file (delete it to free space)."""
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(at))
    try:
        filler = at / "filler"
        with open(filler, "wb", buffering=0) as out:
            for chunk in (4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        out.write(b"\0" * chunk)
        yield filler
    finally:
        sh("umount", "-l", str(at))


def restart_after(signum: int) -> Callable[[Round], bool]:
    def scenario(run: Round) -> bool:
        packet = sealed(SSH)
        run.use(packet)
        run.stop(signum)
        run.start()
        return run.replay_opens(packet)
    return scenario


def reload_scenario(run: Round) -> bool:
    packet = sealed(SSH)
    run.use(packet)
    run.reload()
    return run.replay_opens(packet)


def move_state_dir(run: Round) -> bool:
    packet = sealed(SSH)
    run.use(packet)
    run.write_config(state_dir=run.folder / "moved")
    run.reload()
    return run.replay_opens(packet)


def full_disk(run: Round) -> bool:
    run.stop()
    with full_tmpfs(run.state) as filler:
        run.start()
        fresh = sealed(SSH)
        assert run.daemon is not None
        mark = run.daemon.mark()
        send_raw(run.bed, fresh, source=CLIENT_V4)
        line = run.daemon.wait_for(f"{CLIENT_V4} ", after=mark)
        granted_unrecorded = OPENED in line
        filler.unlink()
        run.reload()
        return granted_unrecorded or run.replay_opens(fresh)


def corrupt(run: Round) -> bool:
    packet = sealed(SSH)
    run.use(packet)
    run.stop()
    (run.state / FILE_NAME).write_bytes(os.urandom(8192))
    with contextlib.suppress(FileNotFoundError):
        (run.state / f"{FILE_NAME}-wal").unlink()
    run.start()
    return run.replay_opens(packet)


def delete_replay_files(state: Path) -> None:
    for name in (FILE_NAME, f"{FILE_NAME}-wal"):
        with contextlib.suppress(FileNotFoundError):
            (state / name).unlink()


def deleted_running(run: Round) -> bool:
    packet = sealed(SSH)
    run.use(packet)
    delete_replay_files(run.state)
    return run.replay_opens(packet)


def deleted_stopped(run: Round) -> bool:
    packet = sealed(SSH)
    run.use(packet)
    run.stop()
    delete_replay_files(run.state)
    run.start()
    return run.replay_opens(packet)


def stopped(run: Round) -> bool:
    run.stop()
    return run.bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)


def raised_max_age(run: Round) -> bool:
    run.stop()
    run.write_config(max_age=5)
    run.start()
    packet = sealed(SSH, skew=-4)  # as old as max_age 5 allows: pruned at the first tick
    run.use(packet)
    time.sleep(64)  # the daemon prunes every 60 s
    run.write_config(max_age=600)
    run.reload()
    return run.replay_opens(packet)


def knock(bed: TestBed) -> None:
    with inside(bed.client):
        for port, proto in KNOCKS:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.setblocking(False)
                sock.bind((CLIENT_V4, 0))
                if proto == "udp":
                    sock.sendto(b"\0", (SERVER_V4, port))
                else:
                    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                        sock.connect((SERVER_V4, port))
            time.sleep(0.3)  # a client typing the knocks by hand, slowly


def spoofed_resets(run: Round, knocks: int = 5) -> Outcome:
    """A spoofer who knows only the client's address sends SYNs from it to tcp:5555, 50 a
    second, while the client knocks: how many of the client's knocks fail."""
    stop = threading.Event()

    def spoof() -> None:
        while not stop.is_set():
            run.bed.send_syns([5555], source=CLIENT_V4)
            time.sleep(0.02)

    spoofer = threading.Thread(target=spoof, daemon=True)
    spoofer.start()
    failed = 0
    try:
        for _ in range(knocks):
            knock(run.bed)
            if run.bed.wait_until_open(SERVER_V4, 22, source=CLIENT_V4, deadline=1.0) is None:
                failed += 1
            time.sleep(2.2)  # the grant (open_for 2) expires before the next try
    finally:
        stop.set()
        spoofer.join()
    return Outcome(knocks, 0, failed)


SCENARIOS: list[tuple[str, Callable[[Round], bool], bool]] = [
    ("restart (SIGTERM)", restart_after(signal.SIGTERM), False),
    ("restart (SIGKILL)", restart_after(signal.SIGKILL), False),
    ("reload (SIGHUP)", reload_scenario, False),
    ("reload to another state_dir", move_state_dir, False),
    ("full disk, then freed and SIGHUP", full_disk, False),
    ("replay file corrupted while stopped", corrupt, False),
    ("replay file deleted while running", deleted_running, False),
    ("replay file deleted while stopped", deleted_stopped, False),
    ("protected port while no daemon runs", stopped, False),
    ("reload raising max_age after a prune", raised_max_age, True),
]


def run_rounds(rounds: int, body: Callable[[Round], Outcome]) -> Outcome:
    total = Outcome(0, 0, 0)
    for _ in range(rounds):
        with TestBed() as bed, tempfile.TemporaryDirectory(prefix="kg-chaos-") as folder:
            bed.listen(22)
            run = Round(bed, Path(folder))
            run.write_config()
            run.start()
            try:
                outcome = body(run)
            finally:
                run.close()
        total = Outcome(*(a + b for a, b in zip(total, outcome, strict=True)))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow", action="store_true", help="also the one-minute scenarios")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reason = require_root_tools()
    if reason:
        sys.exit(f"chaos: {reason}")
    results: dict[str, Outcome] = {}
    for name, scenario, slow in SCENARIOS:
        if slow and not args.slow:
            continue
        print(f"chaos: {name}", file=sys.stderr)
        results[name] = run_rounds(args.rounds, lambda run, s=scenario: Outcome(1, int(s(run))))
    print("chaos: spoofed resets against a kernel door", file=sys.stderr)
    results["spoofed resets, 50 SYN/s with the client's address"] = run_rounds(
        1, spoofed_resets)
    print("| scenario | attempts | wrongly opened | wrongly shut |")
    print("|---|--:|--:|--:|")
    for name, outcome in results.items():
        print(f"| {name} | {outcome.attempts} | {outcome.wrongly_opened} | "
              f"{outcome.wrongly_shut} |")
    if args.json:
        args.json.write_text(json.dumps({name: o._asdict() for name, o in results.items()},
                                        indent=2))


if __name__ == "__main__":
    main()
