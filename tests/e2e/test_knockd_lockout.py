"""A served knockd.conf changes nothing that knockd would leave reachable: knockd never drops a
packet, so a knock port that is also a live service (``sequence = 7000,22,9000``, a Minecraft
port...) must stay open to everyone while knockgate serves that file."""

from __future__ import annotations

from tests.e2e.conftest import knockgate_cli, need_tool
from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, SERVER_V4

# Port 22 and 25565 are knock ports and, at the same time, services someone listens on.
LIVE_KNOCK_PORTS = """\
[options]
    LogFile = {log}

[openSSH]
    sequence    = 7000,22,9000
    seq_timeout = 5
    command     = /usr/bin/touch {opened}

[minecraft]
    sequence = 25565,8000:udp
    command  = /usr/bin/logger knocked %IP%
"""


def test_knock_ports_that_are_live_services_stay_reachable(bed, serve, tmp_path):
    bed.listen(22)
    bed.listen(25565)
    opened = tmp_path / "opened"
    daemon = serve(LIVE_KNOCK_PORTS.format(log=tmp_path / "kg.log", opened=opened))
    # A stranger who never knocks reaches both services, from either client address.
    for source in (CLIENT_V4, CLIENT_V4_OTHER):
        assert bed.can_connect(SERVER_V4, 22, source=source), daemon.log
        assert bed.can_connect(SERVER_V4, 25565, source=source), daemon.log
    # ... and the door still opens for a knocker whose sequence runs through the service.
    result = bed.run(bed.client, need_tool("knock"), SERVER_V4, "7000", "22", "9000")
    assert result.returncode == 0, result.stderr
    daemon.wait_for("/usr/bin/touch exited 0")
    assert opened.exists()
    assert bed.can_connect(SERVER_V4, 22, source=CLIENT_V4_OTHER)


def test_check_says_knock_ports_stay_reachable(bed, tmp_path):
    conf = tmp_path / "knockd.conf"
    conf.write_text(LIVE_KNOCK_PORTS.format(log=tmp_path / "kg.log", opened=tmp_path / "o"))
    checked = knockgate_cli(bed, bed.server, "check", "--config", str(conf))
    assert checked.returncode == 0, checked.stderr
    (line,) = [line for line in checked.stdout.splitlines() if "hide_knock_ports" in line]
    assert "not hidden" in line and "tcp:22" in line and "tcp:25565" in line


# Messages name lines of the knockd.conf the admin wrote (CRLF line ends, comments after values),
# not of the TOML it is converted to.
LINES = ("# knockd.conf\r\n[options]\r\n  UseSyslog\r\n[web]\r\n  sequence = 5000,6000\r\n"
         "  command = /usr/bin/logger opened %IP%   # a comment /bin/sh skips\r\n")


def test_check_and_serve_name_the_knockd_lines(bed, tmp_path):
    conf = tmp_path / "knockd.conf"
    conf.write_bytes(LINES.encode())
    checked = knockgate_cli(bed, bed.server, "check", "--config", str(conf))
    assert checked.returncode == 0, checked.stderr
    assert "door web (line 4):" in checked.stdout
    assert f"{conf}:4: warning: door 'web' runs its commands through /bin/sh" in checked.stderr
    conf.write_bytes((LINES + "  target = not-an-address\r\n").encode())
    refused = knockgate_cli(bed, bed.server, "serve", "--config", str(conf))
    assert refused.returncode == 3, refused.stderr
    assert f"{conf}:7: " in refused.stderr and "target" in refused.stderr
