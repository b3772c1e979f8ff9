"""Start-up time and memory: knockgate's client commands beside the bare interpreter and
knockd's `knock` client, and its daemon's idle memory beside knockd's and fwknopd's, in one run.

    sudo .venv/bin/python bench/footprint.py [--runs 20] [--json FILE] [--clients-only]
                                             [--src DIR]

Clients. Each command runs ``--runs`` times, the commands taking turns (so a burst of load on
the machine hits them alike), after one warm-up run each:

- the bare interpreter: ``<venv python> -I -c pass``;
- knockd's client: ``/usr/bin/knock 127.0.0.1 7000 8000:udp 9000`` (three knocks);
- ``knockgate knock 127.0.0.1 tcp:7000 udp:8000 tcp:9000`` (the same three knocks);
- ``knockgate open 127.0.0.1 ... --secret-file FILE --open tcp:22`` (one SPA packet);
- ``knockgate open 127.0.0.1 --fwknop ... --open tcp:22`` (one fwknop packet).

knockgate runs as users run it, through the venv's console script (``.venv/bin/knockgate``,
pip's wrapper; ``python -m knockgate`` only where there is none: the table says which), with
PYTHONPATH set to ``--src`` (default: this checkout's src/) and that tree's bytecode compiled
first (into its __pycache__), as pip does when it installs a package. Every packet goes to
127.0.0.1, to ports this script first checks are closed.

Wall time is perf_counter around posix_spawn and wait4. Peak RSS comes from GNU time's ``%M``
(its child's ``ru_maxrss``), in separate runs: the ``ru_maxrss`` that os.wait4 returns to this
script is never below this script's own RSS, because a process's peak includes the memory of
the image it exec()ed from, and a child of a Python process starts as a copy of it (knockd's
``knock``, 1.5 MB under GNU time, reads as 10 MB that way). GNU time is a small C program;
the floor it adds (its own reading for /bin/true) is printed under the table.

Daemons. In a fresh test bed each (tests/support/testbed.py), each daemon starts in the server
namespace; once it logs that it is ready and has idled for ``--settle`` seconds, its VmRSS and
VmHWM are read from /proc/PID/status: ``knockgate serve`` with the sequence door of
bench/knock_latency.py (a) on the kernel engine, (b) on the userspace engine, (c) on the kernel
engine beside ``[spa]``; knockd and fwknopd with bench/_incumbents.py's minimal configs.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import errno
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

import _incumbents as inc
from knock_latency import SEQUENCE_CONFIG, SPA_CONFIG
from tests.support.testbed import TestBed, require_root_tools

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
GNU_TIME = "/usr/bin/time"
KNOCKD_CLIENT = "/usr/bin/knock"
LOOPBACK = "127.0.0.1"
# The ports the clients send to: the sequence of the other benchmarks, and the SPA port.
TCP_PORTS = (7000, 9000)
UDP_PORTS = (8000, 62201)

# Issue 10's targets: wall time as a multiple of the bare interpreter's, peak RSS in MB.
KNOCK_RATIO, KNOCK_RSS_MB, OPEN_RATIO = 3.0, 18.0, 5.0
SEQUENCE_DAEMON_MB, SPA_DAEMON_MB = 20.0, 30.0

@dataclass(frozen=True)
class Client:
    key: str
    label: str
    argv: list[str]
    max_ratio: float | None = None   # of the bare interpreter's median wall time
    max_rss_mb: float | None = None


class Started(NamedTuple):
    process: subprocess.Popen[bytes]
    ready: str         # what the daemon logs once it is ready (a regular expression)
    logs: list[Path]   # where it logs that


Starter = Callable[[TestBed, Path, dict[str, str]], Started]


@dataclass(frozen=True)
class DaemonVariant:
    key: str
    label: str
    start: Starter
    max_rss_mb: float | None = None


# ---------------------------------------------------------------- clients

def knockgate_command() -> tuple[list[str], str]:
    """How users start knockgate: the venv's console script, if pip made one."""
    script = Path(sys.executable).parent / "knockgate"
    if script.exists():
        return [str(script)], f"console script {script}"
    return [sys.executable, "-m", "knockgate"], f"{sys.executable} -m knockgate"


def clients(folder: Path) -> tuple[list[Client], str]:
    knockgate, how = knockgate_command()
    secret_file = folder / "spa.key"
    secret_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    secret_file.chmod(0o600)
    secret_file.chmod(0o600)
    fwknop_keys = inc.FwknopKeys.generate()
    # A profile file that does not exist: the default one (~/.config) may, on some machines.
    no_profiles = str(folder / "no-client.toml")
    rows = [
        Client("bare", "bare interpreter (`python -I -c pass`)",
               [sys.executable, "-I", "-c", "pass"]),
        Client("knockd-knock", "knockd's `knock`, 3 knocks",
               [KNOCKD_CLIENT, LOOPBACK, "7000", "8000:udp", "9000"]),
        Client("knock", "`knockgate knock`, 3 knocks",
               [*knockgate, "knock", LOOPBACK, "tcp:7000", "udp:8000", "tcp:9000"],
               KNOCK_RATIO, KNOCK_RSS_MB),
        Client("open", "`knockgate open` (SPA)",
               [*knockgate, "open", LOOPBACK, "--key-name", "bench", "--secret-file",
                str(secret_file), "--open", "tcp:22", "--profiles", no_profiles],
               OPEN_RATIO),
        Client("open-fwknop", "`knockgate open --fwknop`",
               [*knockgate, "open", LOOPBACK, "--fwknop", "--key-base64", fwknop_keys.key_b64,
                "--hmac-key-base64", fwknop_keys.hmac_b64, "--open", "tcp:22"]),
    ]
    if not os.access(KNOCKD_CLIENT, os.X_OK):
        rows = [row for row in rows if row.key != "knockd-knock"]
        print(f"footprint: {KNOCKD_CLIENT} is not installed (Debian's knockd): left out",
              file=sys.stderr)
    return rows, how


def check_ports_closed() -> None:
    """Refuse to run if anything listens where the clients send."""
    for port in TCP_PORTS:
        with socket.socket() as probe:
            code = probe.connect_ex((LOOPBACK, port))
        if code != errno.ECONNREFUSED:
            raise SystemExit(f"footprint: tcp:{port} on {LOOPBACK} is not closed: stop what "
                             "listens there first")
    for port in UDP_PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                raise SystemExit(f"footprint: udp:{port} on {LOOPBACK} is in use: stop what "
                                 "listens there first") from None


def _fail(argv: list[str], env: dict[str, str]) -> NoReturn:
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    raise SystemExit(f"footprint: `{' '.join(argv)}` failed (status {done.returncode}): "
                     f"{done.stderr.strip() or done.stdout.strip()}")


def wall_ms(argv: list[str], env: dict[str, str]) -> float:
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    started = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=quiet)
    _, status, _ = os.wait4(pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        _fail(argv, env)
    return elapsed


def peak_rss_kb(argv: list[str], env: dict[str, str], report: Path) -> int:
    done = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(report), *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        _fail(argv, env)
    return int(report.read_text().split()[-1])


def spread(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": statistics.median(samples), "p90": ordered[int(0.9 * (len(samples) - 1))]}


def measure_clients(rows: list[Client], runs: int, env: dict[str, str],
                    folder: Path) -> dict[str, dict[str, object]]:
    report = folder / "time.out"
    for row in rows:  # warm-up: page cache, and a failing command stops us here
        wall_ms(row.argv, env)
    walls: dict[str, list[float]] = {row.key: [] for row in rows}
    rss: dict[str, list[float]] = {row.key: [] for row in rows}
    for index in range(runs):
        print(f"footprint: client round {index + 1}/{runs}", file=sys.stderr, end="\r")
        for row in rows:
            walls[row.key].append(wall_ms(row.argv, env))
        for row in rows:
            rss[row.key].append(peak_rss_kb(row.argv, env, report) / 1024)
    print(file=sys.stderr)
    bare = statistics.median(walls["bare"])
    results: dict[str, dict[str, object]] = {}
    for row in rows:
        wall, peak = spread(walls[row.key]), spread(rss[row.key])
        ratio = wall["median"] / bare
        verdicts = []
        if row.max_ratio is not None:
            verdicts.append(ratio <= row.max_ratio)
        if row.max_rss_mb is not None:
            verdicts.append(peak["median"] <= row.max_rss_mb)
        results[row.key] = {
            "label": row.label, "argv": row.argv,
            "wall_ms": wall, "ratio_to_bare": ratio, "peak_rss_mb": peak,
            "target": {"max_ratio": row.max_ratio, "max_rss_mb": row.max_rss_mb},
            "pass": all(verdicts) if verdicts else None,
            "samples": {"wall_ms": walls[row.key], "peak_rss_mb": rss[row.key]},
        }
    return results


# ---------------------------------------------------------------- daemons

def _knockgate_daemon(engine: str, spa: bool = False) -> Starter:
    """The door of the latency benchmark (bench/knock_latency.py), with its SPA key or not."""
    def start(bed: TestBed, folder: Path, env: dict[str, str]) -> Started:
        secret = base64.b64encode(os.urandom(32)).decode()
        config = folder / "knockgate.toml"
        config.write_text((SPA_CONFIG.format(folder=folder, secret=secret) if spa else "")
                          + SEQUENCE_CONFIG.format(engine=engine))
        config.chmod(0o600)  # it may hold a secret: knockgate refuses it readable
        log = folder / "knockgate.log"
        with log.open("wb") as sink:
            process = bed.knockgate(bed.server, "serve", "--config", str(config),
                                    stdout=sink, stderr=subprocess.STDOUT, env=env)
        return Started(process, r"ready, watching", [log])
    return start


def _knockd(bed: TestBed, folder: Path, _: dict[str, str]) -> Started:
    conf = inc.knockd_files(folder, bed.server_if)
    out = folder / "knockd.out"
    with out.open("wb") as sink:
        process = bed.spawn(bed.server, inc.knockd_argv(conf, bed.server_if),
                            stdout=sink, stderr=subprocess.STDOUT)
    return Started(process, r"listening on", [folder / "knockd.log", out])


def _fwknopd(bed: TestBed, folder: Path, _: dict[str, str]) -> Started:
    conf, access = inc.fwknopd_files(folder, bed.server_if, inc.FwknopKeys.generate())
    out = folder / "fwknopd.out"
    with out.open("wb") as sink:
        process = bed.spawn(bed.server, inc.fwknopd_argv(conf, access, bed.server_if),
                            stdout=sink, stderr=subprocess.STDOUT)
    return Started(process, r"[Ss]niffing interface", [out])


DAEMONS = (
    DaemonVariant("knockgate-sequence", "`knockgate serve`, a sequence door (kernel engine)",
                  _knockgate_daemon("kernel"), SEQUENCE_DAEMON_MB),
    DaemonVariant("knockgate-userspace", "`knockgate serve`, a userspace sequence door",
                  _knockgate_daemon("userspace"), SEQUENCE_DAEMON_MB),
    DaemonVariant("knockgate-spa", "`knockgate serve`, a sequence door and `[spa]`",
                  _knockgate_daemon("kernel", spa=True), SPA_DAEMON_MB),
    DaemonVariant("knockd", "knockd (Debian), one door", _knockd),
    DaemonVariant("fwknopd", "fwknopd (Debian), one access stanza", _fwknopd),
)


def wait_ready(started: Started, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and started.process.poll() is None:
        for log in started.logs:
            if log.exists() and re.search(started.ready, log.read_text(errors="replace")):
                return
        time.sleep(0.05)
    text = " | ".join(log.read_text(errors="replace").strip()
                      for log in started.logs if log.exists())
    raise RuntimeError(f"not ready ({started.ready!r} never logged): {text or '(no output)'}")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid``. `ip netns exec` has exec()ed the daemon in its place."""
    exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    if exe == "ip":
        raise RuntimeError("the daemon has not replaced `ip netns exec` yet")
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return fields


def measure_daemon(variant: DaemonVariant, settle: float, env: dict[str, str]
                   ) -> dict[str, object]:
    print(f"footprint: {variant.label}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder, TestBed() as bed:
        started = variant.start(bed, Path(folder), env)
        wait_ready(started)
        time.sleep(settle)
        if started.process.poll() is not None:
            raise RuntimeError(f"{variant.label} exited (status {started.process.returncode})")
        memory = memory_mb(started.process.pid)
    verdict = None if variant.max_rss_mb is None else memory["VmRSS"] <= variant.max_rss_mb
    return {"label": variant.label, "vm_rss_mb": memory["VmRSS"],
            "vm_hwm_mb": memory["VmHWM"], "target_max_rss_mb": variant.max_rss_mb,
            "pass": verdict}


# ---------------------------------------------------------------- report

def _verdict(passed: object) -> str:
    return "" if passed is None else "PASS" if passed else "FAIL"


def _target(entry: dict[str, object]) -> str:
    target = entry["target"]
    assert isinstance(target, dict)
    parts = []
    if target["max_ratio"] is not None:
        parts.append(f"≤ {target['max_ratio']:g}× bare")
    if target["max_rss_mb"] is not None:
        parts.append(f"≤ {target['max_rss_mb']:g} MB")
    return ", ".join(parts)


def client_table(results: dict[str, dict[str, object]]) -> list[str]:
    lines = ["| command | wall median ms | wall p90 ms | × bare | peak RSS median MB | "
             "peak RSS p90 MB | target | |",
             "|---|--:|--:|--:|--:|--:|---|---|"]
    for entry in results.values():
        wall, rss = entry["wall_ms"], entry["peak_rss_mb"]
        assert isinstance(wall, dict) and isinstance(rss, dict)
        lines.append(f"| {entry['label']} | {wall['median']:.1f} | {wall['p90']:.1f} | "
                     f"{entry['ratio_to_bare']:.2f} | {rss['median']:.1f} | {rss['p90']:.1f} | "
                     f"{_target(entry)} | {_verdict(entry['pass'])} |")
    return lines


def daemon_table(results: dict[str, dict[str, object]]) -> list[str]:
    lines = ["| daemon, idle | VmRSS MB | VmHWM MB | target | |", "|---|--:|--:|---|---|"]
    for entry in results.values():
        target = entry["target_max_rss_mb"]
        lines.append(f"| {entry['label']} | {entry['vm_rss_mb']:.1f} | "
                     f"{entry['vm_hwm_mb']:.1f} | "
                     f"{'' if target is None else f'VmRSS ≤ {target:g} MB'} | "
                     f"{_verdict(entry['pass'])} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each client command")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds a daemon idles after 'ready' before it is read")
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the knockgate tree to measure (default: this checkout's src/)")
    parser.add_argument("--clients-only", action="store_true", help="skip the daemons")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    args = parser.parse_args()
    if not os.access(GNU_TIME, os.X_OK):
        print(f"footprint: needs GNU time ({GNU_TIME}, Debian's 'time')", file=sys.stderr)
        return 1
    reason = None if args.clients_only else require_root_tools()
    if reason:
        print(f"footprint: the daemons' part {reason} (or pass --clients-only)",
              file=sys.stderr)
        return 1
    check_ports_closed()
    src = args.src.resolve()
    compileall.compile_dir(src, quiet=1)  # as pip compiles a package it installs
    env = dict(os.environ, PYTHONPATH=str(src))
    with tempfile.TemporaryDirectory() as folder:
        rows, how = clients(Path(folder))
        client_results = measure_clients(rows, args.runs, env, Path(folder))
        floor = peak_rss_kb(["/bin/true"], env, Path(folder) / "time.out") / 1024
    daemon_results = {} if args.clients_only else {
        variant.key: measure_daemon(variant, args.settle, env) for variant in DAEMONS}

    print(f"knockgate from {src}, started through the {how}; {args.runs} runs each, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("\n".join(client_table(client_results)))
    print(f"\nWall: spawn to exit. Peak RSS: GNU time's %M; its floor (/bin/true) is "
          f"{floor:.1f} MB.")
    if daemon_results:
        print()
        print("\n".join(daemon_table(daemon_results)))
    if args.json:
        args.json.write_text(json.dumps({
            "src": str(src), "knockgate_started_by": how, "runs": args.runs,
            "rss_floor_mb": floor, "clients": client_results, "daemons": daemon_results,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
