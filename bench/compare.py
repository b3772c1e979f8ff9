"""Compare knockgate with knockd and fwknopd on the namespace test bed, in one run.

    .venv/bin/python bench/compare.py [--quick] [--json PATH] [--docs docs/benchmarks.md]

For each variant -- knockgate's userspace sequence door, its kernel sequence door (engine =
"kernel"), its SPA, Debian's knockd and Debian's fwknopd -- a fresh namespace pair is built and
the daemon guards tcp:22 (a listener is there, closed to everyone until a knock). Then, idle
and under three bounded floods from the client namespace (random-port SYN noise, a first-knock
SYN flood, garbage UDP at the SPA port; all from spoofed 10.202.0.0/16 sources) at 150 kpps and
at the flooder's maximum, it measures knock-to-open latency the way bench/knock_latency.py does:
per round a fresh client address 10.201.1.X sends the sequence (or the SPA packet), and the
prober (bench/probe.c) times, on the client's wire, the final packet leaving and the first
SYN-ACK from tcp:22 (or --deadline passes: not honoured). The daemon runs on a core of its
own, the client side on the other. Over each scenario it also reads the daemon's CPU time and
peak RSS from /proc. See bench/README.md for the columns.

Every packet stays inside the namespaces (10.201.0.0/16; spoofed sources only in
10.202.0.0/16, routed back into the client namespace, which drops them); floods are bounded by
a packet count and a duration; namespaces and processes are removed even on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

import _incumbents as inc
from _wire import (
    FinalPacket,
    Prober,
    add_client_addresses,
    build_prober,
    on_server_core,
    pin_client,
    server_mac,
)
from knock_latency import SEQUENCE_CONFIG, SPA_CONFIG, connects, sequence_round, spa_round
from tests.support.testbed import SERVER_V4, TestBed, inside, require_root_tools, sh

from knockgate.core.spa import (
    PACKET_SIZE,
    SECRET_SIZE,
    VERSION,
    SpaKey,
    decode_secret,
    generate_secret,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
CLIENT_GATEWAY = "10.201.0.2"   # the client namespace: where replies to 10.202/16 go (and die)
SPOOF_NET = "10.202.0.0"
ROUND_GAP = 0.05                # pause between rounds, as bench/knock_latency.py
TARGET_IDLE_MEDIAN_MS = 0.5
TARGET_FLOOD_P90_MS = 2.0

# (key, label, flooder arguments); every flood comes from random sources in 10.202.0.0/16.
FLOODS = (
    ("syn-noise", "random-port SYN noise", ["--proto", "tcp", "--dport", "0"]),
    ("knock1-syn", "first-knock SYN flood (tcp:7000)", ["--proto", "tcp", "--dport", "7000"]),
    ("spa-garbage", "garbage UDP at udp:62201", ["--proto", "udp", "--dport", "62201"]),
)
RATES = ((150_000, "150k"), (0, "max"))
# Garbage shaped to pass each daemon's cheap checks, so it costs the daemon the most:
# knockgate's BPF prefilter lets through only datagrams of the SPA length with its version byte;
# fwknopd wants 140-1500 bytes of base64 (a real packet is ~204 characters).
GARBAGE_KNOCKGATE = ["--payload", str(PACKET_SIZE), "--payload-kind", "random",
                     "--first-byte", str(VERSION)]
GARBAGE_FWKNOP = ["--payload", "204", "--payload-kind", "base64"]


class NotAvailable(Exception):
    """`knockgate check` refuses the variant's configuration on this build."""


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    flood: list[str] | None = None
    pps: int = 0


def scenarios() -> list[Scenario]:
    out = [Scenario("idle", "idle")]
    for key, label, args in FLOODS:
        for pps, rate in RATES:
            out.append(Scenario(f"{key}@{rate}", f"{label} @ {rate}", args, pps))
    return out


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    pid: int
    prepare: Callable[[str], FinalPacket]
    garbage: list[str]
    logs: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    rounds: int
    deadline: float
    warmup: float
    settle: float


@dataclass(frozen=True)
class Tools:
    """The compiled helpers, built once per run."""

    flooder: Path
    prober: Path


# ---------------------------------------------------------------- /proc readings

def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime + stime, cutime + cstime) of ``pid``, in clock ticks (all threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def daemon_pid(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """The real daemon's pid: `ip netns exec` execs it in place; wait until it has."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited at once (status {process.returncode})")
        try:
            exe = os.path.basename(os.readlink(f"/proc/{process.pid}/exe"))
        except OSError:
            exe = "ip"
        if exe != "ip":
            return process.pid
        time.sleep(0.01)
    raise RuntimeError("the daemon did not start")


def settle(pid: int, limit: float) -> bool:
    """Wait (at most ``limit`` s) until the daemon uses < 5 % of a core: no backlog left."""
    tick = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + limit
    before, at = cpu_ticks(pid)[0], time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.2)
        now_ticks, now = cpu_ticks(pid)[0], time.monotonic()
        if (now_ticks - before) / tick / (now - at) < 0.05:
            return True
        before, at = now_ticks, now
    return False


# ---------------------------------------------------------------- the variants

def _wait_for(pattern: str, files: list[Path], process: subprocess.Popen[bytes],
              timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for path in files:
            if path.exists() and re.search(pattern, path.read_text(errors="replace")):
                return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"not ready ({pattern!r} never logged): " + _tail(files))


def _tail(files: list[Path], lines: int = 8) -> str:
    text = []
    for path in files:
        if path.exists():
            text += path.read_text(errors="replace").splitlines()[-lines:]
    return " | ".join(text) or "(no output)"


def start_knockgate(bed: TestBed, folder: Path, kind: str) -> Daemon:
    config = folder / "knockgate.toml"
    if kind == "spa":
        secret = generate_secret(os.urandom(SECRET_SIZE))
        config.write_text(SPA_CONFIG.format(folder=folder, secret=secret))
        config.chmod(0o600)  # it holds a secret: knockgate refuses it readable
        prepare = spa_round(SpaKey("bench", decode_secret(secret)))
    else:
        config.write_text(SEQUENCE_CONFIG.format(engine=kind))
        prepare = sequence_round
    check = sh(PYTHON, "-m", "knockgate", "check", "--config", str(config), check=False)
    if check.returncode != 0:
        lines = (check.stderr.strip() or check.stdout.strip()).splitlines()
        reason = lines[-1].replace(f"{config}:", "line ") if lines else "?"
        raise NotAvailable(f"`knockgate check` rejects the config: {reason.split(' (hint:')[0]}")
    log = folder / "knockgate.log"
    with log.open("wb") as sink:
        process = bed.knockgate(bed.server, "serve", "--config", str(config),
                                stdout=sink, stderr=subprocess.STDOUT,
                                preexec_fn=on_server_core())
    pid = daemon_pid(process)
    _wait_for(r"ready", [log], process)
    return Daemon(process, pid, prepare, GARBAGE_KNOCKGATE, [log])


def start_knockd(bed: TestBed, folder: Path) -> Daemon:
    bed.run(bed.server, *inc.DROP_SSH)
    conf = inc.knockd_files(folder, bed.server_if)
    out = folder / "knockd.out"
    with out.open("wb") as sink:
        process = bed.spawn(bed.server, inc.knockd_argv(conf, bed.server_if),
                            stdout=sink, stderr=subprocess.STDOUT,
                            preexec_fn=on_server_core())
    pid = daemon_pid(process)
    logs = [folder / "knockd.log", out]
    _wait_for(r"listening on", logs, process)
    # knockd's own client sends the same frames (a non-blocking connect, a 1-byte datagram).
    return Daemon(process, pid, sequence_round, GARBAGE_FWKNOP, logs)


def start_fwknopd(bed: TestBed, folder: Path) -> Daemon:
    bed.run(bed.server, *inc.DROP_SSH)
    keys = inc.FwknopKeys.generate()
    conf, access = inc.fwknopd_files(folder, bed.server_if, keys)
    out = folder / "fwknopd.out"
    with out.open("wb") as sink:
        process = bed.spawn(bed.server, inc.fwknopd_argv(conf, access, bed.server_if),
                            stdout=sink, stderr=subprocess.STDOUT,
                            preexec_fn=on_server_core())
    pid = daemon_pid(process)
    _wait_for(r"[Ss]niffing interface", [out], process)
    packet_file = folder / "spa.packet"

    def prepare(source: str) -> FinalPacket:
        packet_file.unlink(missing_ok=True)
        made = subprocess.run(inc.fwknop_packet_argv(keys, source, SERVER_V4, packet_file),
                              capture_output=True, text=True)
        if made.returncode != 0 or not packet_file.exists():
            raise RuntimeError(f"fwknop client failed: {made.stderr.strip()}")
        return FinalPacket("udp", 62201, packet_file.read_bytes().strip())

    return Daemon(process, pid, prepare, GARBAGE_FWKNOP, [out])


VARIANTS: dict[str, tuple[str, Callable[[TestBed, Path], Daemon]]] = {
    "knockgate-user": ("knockgate, userspace sequence",
                       lambda bed, folder: start_knockgate(bed, folder, "userspace")),
    "knockgate-kernel": ("knockgate, kernel sequence",
                         lambda bed, folder: start_knockgate(bed, folder, "kernel")),
    "knockgate-spa": ("knockgate, SPA", lambda bed, folder: start_knockgate(bed, folder, "spa")),
    "knockd": ("knockd 0.8 (Debian)", start_knockd),
    "fwknopd": ("fwknopd 2.6.10 (Debian)", start_fwknopd),
}


# ---------------------------------------------------------------- measuring

def source_address(index: int) -> str:
    return f"10.201.{1 + index // 250}.{1 + index % 250}"


def add_sources(bed: TestBed, count: int) -> list[str]:
    sources = [source_address(i) for i in range(count)]
    add_client_addresses(bed, sources)
    return sources


def link_info(bed: TestBed, namespace: str, iface: str) -> dict[str, object]:
    out = sh("ip", "-n", namespace, "-s", "-j", "link", "show", iface).stdout
    return json.loads(out)[0]


def rx_packets(bed: TestBed) -> int:
    return int(link_info(bed, bed.server, bed.server_if)["stats64"]["rx"]["packets"])


def veth_drops(bed: TestBed) -> int:
    """Packets the veth pair dropped so far, either way (a full receive backlog)."""
    return sum(int(link_info(bed, namespace, iface)["stats64"][way]["dropped"])
               for namespace, iface in ((bed.client, bed.client_if), (bed.server, bed.server_if))
               for way in ("rx", "tx"))


def conntrack_drops(bed: TestBed) -> int:
    """Packets the server's conntrack dropped so far (table full, or an insert that failed):
    such a packet never reaches any daemon or ruleset. 0 where conntrack is not loaded."""
    table = sh("ip", "netns", "exec", bed.server, "cat", "/proc/net/stat/nf_conntrack",
               check=False).stdout
    rows = [line.split() for line in table.splitlines()]
    if len(rows) < 2:
        return 0
    columns = rows[0]
    return sum(int(row[columns.index(name)], 16) for row in rows[1:]
               for name in ("drop", "insert_failed") if name in columns)


def one_round(prober: Prober, prepare: Callable[[str], FinalPacket], source: str,
              deadline: float) -> float | None:
    """ms from the final packet to an accepted connection from ``source``; None if never."""
    result = prober.round(source, prepare(source), deadline)
    time.sleep(ROUND_GAP)
    return result


def assert_closed(bed: TestBed, source: str) -> None:
    with inside(bed.client):
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            if connects(source, 0.002):
                raise RuntimeError("tcp:22 accepts before any knock: the guard is not closed")


def stats(samples: list[float | None]) -> dict[str, object]:
    """Median and p90 over all rounds, a round not honoured counting as infinitely slow
    (p90 index as in bench/knock_latency.py); also the same over honoured rounds only."""
    ordered = sorted(s if s is not None else float("inf") for s in samples)
    honoured = sorted(s for s in samples if s is not None)
    n = len(ordered)

    def clean(value: float) -> float | None:
        return None if value == float("inf") else round(value, 3)

    return {
        "rounds": n,
        "honoured": len(honoured),
        "median_ms": clean(ordered[(n - 1) // 2] if n % 2 else
                           (ordered[n // 2 - 1] + ordered[n // 2]) / 2),
        "p90_ms": clean(ordered[int(0.9 * (n - 1))]),
        "honoured_median_ms": round(statistics.median(honoured), 3) if honoured else None,
        "max_honoured_ms": round(honoured[-1], 3) if honoured else None,
        "samples_ms": [None if s is None else round(s, 3) for s in samples],
    }


def run_scenario(bed: TestBed, daemon: Daemon, scenario: Scenario, sources: list[str],
                 opts: Options, tools: Tools) -> dict[str, object]:
    settled = settle(daemon.pid, opts.settle)
    tick = os.sysconf("SC_CLK_TCK")
    flood_seconds = opts.warmup + len(sources) * (opts.deadline + ROUND_GAP + 0.1) + 10
    cpu0, rx0, t0 = cpu_ticks(daemon.pid), rx_packets(bed), time.monotonic()
    dropped0, veth0 = conntrack_drops(bed), veth_drops(bed)
    flood = None
    flood_report: dict[str, object] | None = None
    if scenario.flood is not None:
        argv = flood_argv(tools.flooder, bed, scenario.pps, flood_seconds, scenario.flood,
                          daemon.garbage)
        flood = bed.spawn(bed.client, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(opts.warmup)
        if flood.poll() is not None:
            raise RuntimeError(f"flooder failed: {flood.stderr.read().decode().strip()}")
    try:
        with inside(bed.client), Prober(tools.prober, bed) as prober:
            samples = [one_round(prober, daemon.prepare, s, opts.deadline) for s in sources]
    finally:
        if flood is not None:
            flood.send_signal(signal.SIGINT)
            out, err = flood.communicate(timeout=10)
            lines = out.decode().strip().splitlines()
            flood_report = json.loads(lines[-1]) if lines else {"error": err.decode()}
    t1 = time.monotonic()
    cpu1 = cpu_ticks(daemon.pid)
    rx1 = rx_packets(bed)
    wall = t1 - t0
    result: dict[str, object] = {
        "scenario": scenario.key,
        "label": scenario.label,
        "target_pps": scenario.pps if scenario.flood is not None else None,
        **stats(samples),
        "cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / tick / wall, 1),
        "children_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / tick / wall, 1),
        "peak_rss_mb": peak_rss_mb(daemon.pid),
        "seconds": round(wall, 2),
        "server_rx_pps": round((rx1 - rx0) / wall),
        "server_conntrack_drops": conntrack_drops(bed) - dropped0,
        "veth_drops": veth_drops(bed) - veth0,
        "settled_before": settled,
    }
    if flood_report is not None:
        result["flood"] = flood_report
        result["flood_pps"] = flood_report.get("pps")
        result["flood_covered_rounds"] = flood_report.get("stopped_by") == "signal"
    return result


def flood_argv(flooder: Path, bed: TestBed, pps: int, seconds: float, kind: list[str],
               garbage: list[str]) -> list[str]:
    count = int((pps or 2_000_000) * seconds)  # bounded twice: a packet count and a duration
    argv = [str(flooder), "--iface", bed.client_if, "--dst-mac", server_mac(bed),
            "--dst", SERVER_V4, "--src-net", SPOOF_NET, "--pps", str(pps),
            "--count", str(count), "--seconds", f"{seconds:.1f}", *kind]
    return argv + garbage if "udp" in kind else argv


def prepare_bed(bed: TestBed) -> None:
    """Route the spoofed sources' replies back into the client namespace."""
    bed.run(bed.server, "ip", "route", "add", f"{SPOOF_NET}/16", "via", CLIENT_GATEWAY)


def calibrate(flooder: Path, seconds: float) -> dict[str, object]:
    """The flooder's maximum against a bare server namespace (no daemon, no firewall)."""
    result: dict[str, object] = {}
    with TestBed() as bed:
        prepare_bed(bed)
        bed.listen(22)
        for key, _, kind in FLOODS:
            argv = flood_argv(flooder, bed, 0, seconds, kind, GARBAGE_FWKNOP)
            out = bed.run(bed.client, *argv).stdout
            result[key] = json.loads(out.strip().splitlines()[-1])["pps"]
    return result


def run_variant(name: str, opts: Options, tools: Tools, chosen: list[Scenario],
                keep_logs: Path | None = None) -> dict[str, object]:
    label, start = VARIANTS[name]
    result: dict[str, object] = {"variant": name, "label": label, "status": "ok",
                                 "scenarios": []}
    folder = Path(tempfile.mkdtemp(prefix=f"kg-compare-{name}-"))
    folder.chmod(0o700)
    bed = TestBed()
    daemon = None
    try:
        bed.open()
        prepare_bed(bed)
        sources = add_sources(bed, 1 + len(chosen) * opts.rounds)
        bed.listen(22)
        daemon = start(bed, folder)
        assert_closed(bed, sources[0])
        for i, scenario in enumerate(chosen):
            if daemon.process.poll() is not None:
                raise RuntimeError(f"the daemon died (status {daemon.process.returncode}): "
                                   + _tail(daemon.logs))
            mine = sources[1 + i * opts.rounds: 1 + (i + 1) * opts.rounds]
            row = run_scenario(bed, daemon, scenario, mine, opts, tools)
            result["scenarios"].append(row)  # type: ignore[union-attr]
            progress(name, row, opts.deadline)
        result["peak_rss_mb"] = peak_rss_mb(daemon.pid)
    except NotAvailable as exc:
        result.update(status="not available", reason=str(exc))
        print(f"  {name}: not available: {exc}", file=sys.stderr)
    except Exception as exc:  # one broken variant must not cost the others
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        print(f"  {name}: FAILED: {exc}", file=sys.stderr)
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.process.terminate()
            try:
                daemon.process.wait(5)
                result["exit"] = daemon.process.returncode
            except subprocess.TimeoutExpired:  # knockd can deadlock on SIGTERM under load
                daemon.process.kill()
                daemon.process.wait()
                result["exit"] = "killed after 5 s without exiting on SIGTERM"
        bed.close()
        if keep_logs is not None:
            for path in folder.glob("*"):
                if path.suffix in (".log", ".out", ".toml", ".conf") and path.is_file():
                    keep_logs.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, keep_logs / f"{name}-{path.name}")
        shutil.rmtree(folder, ignore_errors=True)
    return result


def progress(name: str, row: dict[str, object], deadline: float) -> None:
    flood = f" flood {row['flood_pps']:,.0f} pps" if row.get("flood_pps") is not None else ""
    print(f"  {name:17} {row['label']:44} {row['honoured']}/{row['rounds']} "
          f"median {fmt_ms(row['median_ms'], deadline)} p90 {fmt_ms(row['p90_ms'], deadline)} ms "
          f"cpu {row['cpu_pct']}%{flood}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- reporting

def fmt_ms(value: object, deadline: float | None = None) -> str:
    if value is None:
        return f"> {deadline * 1000:.0f}" if deadline else "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"  # type: ignore[operator]


def meets_target(row: dict[str, object]) -> bool:
    if row["scenario"] == "idle":
        return row["median_ms"] is not None and row["median_ms"] <= TARGET_IDLE_MEDIAN_MS  # type: ignore[operator]
    return (row["honoured"] == row["rounds"] and row["p90_ms"] is not None
            and row["p90_ms"] <= TARGET_FLOOD_P90_MS)  # type: ignore[operator]


def markdown_table(report: dict[str, object]) -> str:
    deadline = report["options"]["deadline"]  # type: ignore[index]
    lines = ["| daemon | scenario | flood sent (pps) | honoured | median ms | p90 ms "
             "| target | CPU % (+children) | peak RSS MB |",
             "|---|---|--:|--:|--:|--:|:-:|--:|--:|"]
    for variant in report["variants"]:  # type: ignore[union-attr]
        if variant["status"] != "ok" and not variant["scenarios"]:
            lines.append(f"| {variant['label']} | {variant['status']}: "
                         f"{variant.get('reason', '')} | | | | | | | |")
            continue
        for row in variant["scenarios"]:
            pps = row.get("flood_pps")
            flood = "-" if pps is None else f"{pps:,.0f}"
            if row.get("flood_covered_rounds") is False:
                flood += " (ended early)"
            rss = row["peak_rss_mb"]
            lines.append(
                f"| {variant['label']} | {row['label']} | {flood} "
                f"| {row['honoured']}/{row['rounds']} "
                f"| {fmt_ms(row['median_ms'], deadline)} | {fmt_ms(row['p90_ms'], deadline)} "
                f"| {'yes' if meets_target(row) else 'no'} "
                f"| {row['cpu_pct']:.1f} (+{row['children_cpu_pct']:.1f}) "
                f"| {'-' if rss is None else f'{rss:.1f}'} |")
        if variant["status"] != "ok":
            lines.append(f"| {variant['label']} | {variant['status']}: "
                         f"{variant.get('reason', '')} | | | | | | | |")
    return "\n".join(lines)


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except OSError:
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def machine() -> dict[str, object]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pretty = "?"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"')
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": pretty,
        "python": platform.python_version(),
        "knockgate_commit": commit + ("+uncommitted changes" if dirty else ""),
        "knockd": _first_line(["/usr/sbin/knockd", "-V"]),
        "fwknopd": _first_line(["/usr/sbin/fwknopd", "-V"]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def docs_page(report: dict[str, object], table: str) -> str:
    m = report["machine"]
    o = report["options"]
    return f"""# Benchmarks

Knock-to-open latency, CPU and memory of knockgate, knockd and fwknopd, each guarding tcp:22
on the namespace test bed, idle and under floods. What each column means, and how the numbers
are taken: [bench/README.md](../bench/README.md). Regenerate this page with

```sh
.venv/bin/python bench/compare.py --docs docs/benchmarks.md      # full run, about 5 minutes
```

Latest run: {report['started']}, `{' '.join(report['command'])}`
({o['rounds']} rounds per scenario, a round not opened within {o['deadline']:g} s is not
honoured; took {report['seconds']:.0f} s).

Flooder maximum, packets/s: {flooder_summary(report)}.

Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, Linux {m['kernel']},
Python {m['python']}; {m['knockd']}; {m['fwknopd']}; knockgate {m['knockgate_commit']};
load average at start {', '.join(map(str, m['load_average_at_start']))}.

Targets: idle median ≤ {TARGET_IDLE_MEDIAN_MS} ms; under every flood {o['rounds']}/{o['rounds']}
honoured with p90 ≤ {TARGET_FLOOD_P90_MS} ms.

{table}
"""


def flooder_summary(report: dict[str, object]) -> str:
    """The flooder's maximum per flood: against a bare server, and as achieved in the run."""
    bare = report.get("flooder_calibration") or {}
    parts = []
    for key, label, _ in FLOODS:
        seen = [row["flood_pps"] for v in report["variants"]  # type: ignore[union-attr]
                for row in v["scenarios"] if row["scenario"] == f"{key}@max"
                and row.get("flood_pps")]
        text = f"{label}: "
        if key in bare:  # type: ignore[operator]
            text += f"{bare[key]:,.0f} against a bare server namespace"  # type: ignore[index]
        if seen:
            text += (", " if key in bare else "") + (  # type: ignore[operator]
                f"{min(seen):,.0f}–{max(seen):,.0f} with the daemons running")
        parts.append(text)
    return "; ".join(parts)


def build_flooder(folder: Path) -> Path:
    binary = folder / "flood"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(BENCH / "flood.c")],
                   check=True, capture_output=True, text=True)
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds per scenario and shorter warm-ups (about 2 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 20, quick 5)")
    parser.add_argument("--deadline", type=float, default=1.0,
                        help="seconds a round may take before it counts as not honoured")
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS),
                        help="run only this variant (repeatable)")
    parser.add_argument("--scenario", action="append", choices=[s.key for s in scenarios()],
                        help="run only this scenario (repeatable)")
    parser.add_argument("--json", type=Path, default=Path("/tmp/knockgate-compare.json"),
                        help="where to write the full results (default %(default)s)")
    parser.add_argument("--docs", type=Path, help="also write the markdown page here, "
                        "e.g. docs/benchmarks.md")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy each daemon's configuration and log here (they contain "
                        "the run's keys)")
    args = parser.parse_args()
    reason = require_root_tools()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    for tool in ("gcc", "/usr/sbin/knockd", "/usr/sbin/fwknopd", "/usr/bin/fwknop",
                 inc.IPTABLES):
        if not shutil.which(tool):
            print(f"bench: needs {tool} (scripts/setup installs it)", file=sys.stderr)
            return 1
    opts = Options(rounds=args.rounds or (5 if args.quick else 20), deadline=args.deadline,
                   warmup=0.3 if args.quick else 0.5, settle=3.0 if args.quick else 5.0)
    chosen = [s for s in scenarios() if not args.scenario or s.key in args.scenario]
    names = args.only or list(VARIANTS)

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": ["bench/compare.py", *sys.argv[1:]],
        "machine": machine(),
        "options": {"rounds": opts.rounds, "deadline": opts.deadline, "warmup": opts.warmup,
                    "round_gap": ROUND_GAP, "timing": "kernel timestamps on the client's wire",
                    "cpus": "daemon on a core of its own"},
        "variants": [],
    }
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="kg-compare-") as build:
            tools = Tools(build_flooder(Path(build)), build_prober(Path(build)))
            pin_client()
            if any(s.flood for s in chosen):
                print("flooder calibration (bare server, no daemon):", file=sys.stderr)
                report["flooder_calibration"] = calibrate(tools.flooder,
                                                          0.5 if args.quick else 1.0)
                print(f"  {report['flooder_calibration']}", file=sys.stderr, flush=True)
            for name in names:
                print(f"{VARIANTS[name][0]}:", file=sys.stderr, flush=True)
                report["variants"].append(  # type: ignore[union-attr]
                    run_variant(name, opts, tools, chosen, args.keep_logs))
    except KeyboardInterrupt:
        print("bench: interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    report["seconds"] = round(time.monotonic() - began, 1)
    table = markdown_table(report)
    print(table)
    print(f"\nflooder maximum, pps: {flooder_summary(report)}\n"
          f"took {report['seconds']} s; JSON: {args.json}")
    args.json.write_text(json.dumps(report, indent=2))
    if args.docs:
        args.docs.write_text(docs_page(report, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
