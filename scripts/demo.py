"""knockgate live demo: a daemon guards tcp:22 in one namespace; a client knocks from another."""

from __future__ import annotations

import sys
import tempfile
import time
from ipaddress import ip_address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test bed

from tests.support.testbed import CLIENT_V4_OTHER, SERVER_V4, TestBed, inside, require_root_tools

from knockgate.client.knock import knock
from knockgate.core.kinds import parse_frame

FRAMES = ("tcp:7000", "udp:8000", "tcp:9000")
CONFIG = """\
[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000"]
timeout = 5
open = ["tcp:22"]
open_for = 3
"""


def say(text: str) -> None:
    print(text, flush=True)


def state(bed: TestBed, source: str | None = None) -> str:
    return "OPEN" if bed.can_connect(SERVER_V4, 22, source, timeout=0.3) else "closed"


def wait_for_ready(log: Path) -> None:
    deadline = time.monotonic() + 10
    while "ready, watching" not in log.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"daemon did not start:\n{log.read_text()}")
        time.sleep(0.05)


def main() -> int:
    reason = require_root_tools()
    if reason:
        say(f"demo: {reason}; run it as root on Debian")
        return 1
    with tempfile.TemporaryDirectory() as folder, TestBed() as bed:
        config, log = Path(folder, "knockgate.toml"), Path(folder, "daemon.log")
        config.write_text(CONFIG)
        say(f"namespaces: server {bed.server} ({SERVER_V4}), client {bed.client}")
        say(f"config:\n{CONFIG}")
        bed.listen(22)
        with log.open("wb") as sink:
            daemon = bed.knockgate(bed.server, "serve", "--config", str(config), stderr=sink)
            wait_for_ready(log)
            say(f"before the knock, tcp:22 from the client is {state(bed)}")
            say(f"client: knockgate knock {SERVER_V4} tcp:7000 udp:8000 tcp:9000")
            # The same calls the CLI makes, in-process, so the clock starts at the final knock.
            with inside(bed.client):
                knock(ip_address(SERVER_V4), [parse_frame(f) for f in FRAMES[:-1]])
                knock_done = time.perf_counter()
                knock(ip_address(SERVER_V4), [parse_frame(FRAMES[-1])])
            opened = bed.wait_until_open(SERVER_V4, 22, probe_timeout=0.0002, since=knock_done)
            if opened is None:
                say("the door did NOT open; daemon log follows")
                say(log.read_text())
                return 1
            say(f"tcp:22 accepted a connection {opened * 1000:.2f} ms after the final knock was "
                "sent")
            say(f"from the knocker it is {state(bed)}; from {CLIENT_V4_OTHER} (same host, "
                f"other address) it is {state(bed, CLIENT_V4_OTHER)}")
            say(bed.run(bed.server, "nft", "list", "set", "inet", "knockgate", "ssh_v4").stdout)
            while bed.can_connect(SERVER_V4, 22, timeout=0.05):
                time.sleep(0.1)
            say(f"{time.perf_counter() - knock_done:.1f} s after the knock tcp:22 is "
                f"{state(bed)} again (open_for = 3)")
            daemon.terminate()
            daemon.wait(5)
            say(f"after SIGTERM tcp:22 is still {state(bed)}: the daemon left its table "
                "without knock rules, so nothing opens while it is down:")
            say(bed.run(bed.server, "nft", "list", "chain", "inet", "knockgate", "input").stdout)
            bed.run(bed.server, sys.executable, "-m", "knockgate", "down")
            say(f"after `knockgate down` (an explicit act) tcp:22 is {state(bed)}")
        say("daemon log:\n" + log.read_text())
    say("namespaces deleted; demo done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
