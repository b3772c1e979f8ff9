"""Configuration writers and command lines for the incumbents bench/compare.py measures:
Debian's knockd 0.8 and fwknopd 2.6.10, each guarding tcp:22 in the server namespace.

Both are run with their defaults except what a namespace needs (interface, file locations);
nothing here tunes them (fwknopd keeps its 100 ms PCAP_LOOP_SLEEP, knockd its pcap timeout).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

IPTABLES = "/usr/sbin/iptables"

# The default-drop rule both incumbents open holes in (iptables-nft, inside the server namespace).
DROP_SSH = (IPTABLES, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")

KNOCKD_CONF = """\
[options]
    LogFile = {folder}/knockd.log
    PidFile = {folder}/knockd.pid
    Interface = {iface}

[bench]
    Sequence    = 7000:tcp,8000:udp,9000:tcp
    Seq_Timeout = 5
    TCPFlags    = syn
    Command     = {iptables} -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
"""

FWKNOPD_CONF = """\
PCAP_INTF                   {iface};
FWKNOP_RUN_DIR              {folder}/run;
FWKNOP_PID_FILE             {folder}/run/fwknopd.pid;
DIGEST_FILE                 {folder}/run/digest.cache;
FIREWALL_EXE                {iptables};
"""

ACCESS_CONF = """\
SOURCE              ANY
KEY_BASE64          {key}
HMAC_KEY_BASE64     {hmac}
FW_ACCESS_TIMEOUT   60
"""


def knockd_files(folder: Path, iface: str) -> Path:
    """Write knockd.conf for the bench door (tcp:7000 udp:8000 tcp:9000 -> tcp:22)."""
    conf = folder / "knockd.conf"
    conf.write_text(KNOCKD_CONF.format(folder=folder, iface=iface, iptables=IPTABLES))
    return conf


def knockd_argv(conf: Path, iface: str) -> list[str]:
    # No -d: knockd stays in the foreground. No -v/-D: those print a line per captured
    # packet, which would be a handicap under a flood; the LogFile still records openings.
    return ["/usr/sbin/knockd", "-i", iface, "-c", str(conf)]


@dataclass(frozen=True)
class FwknopKeys:
    key_b64: str   # 32-byte Rijndael key, as `fwknop --key-gen` makes
    hmac_b64: str  # 64-byte HMAC-SHA256 key

    @classmethod
    def generate(cls) -> FwknopKeys:
        return cls(base64.b64encode(os.urandom(32)).decode(),
                   base64.b64encode(os.urandom(64)).decode())


def fwknopd_files(folder: Path, iface: str, keys: FwknopKeys) -> tuple[Path, Path]:
    """Write a minimal fwknopd.conf and access.conf (AES-CBC + HMAC-SHA256, one stanza)."""
    (folder / "run").mkdir(mode=0o700, exist_ok=True)
    conf, access = folder / "fwknopd.conf", folder / "access.conf"
    conf.write_text(FWKNOPD_CONF.format(folder=folder, iface=iface, iptables=IPTABLES))
    access.write_text(ACCESS_CONF.format(key=keys.key_b64, hmac=keys.hmac_b64))
    for path in (conf, access):
        path.chmod(0o600)  # fwknopd warns about (and may refuse) readable key files
    return conf, access


def fwknopd_argv(conf: Path, access: Path, iface: str) -> list[str]:
    return ["/usr/sbin/fwknopd", "-f", "-c", str(conf), "-a", str(access), "-i", iface]


def fwknop_packet_argv(keys: FwknopKeys, allow: str, server: str, out: Path) -> list[str]:
    """The real fwknop client, building (not sending) one access packet for ``allow``."""
    return ["/usr/bin/fwknop", "--no-rc-file", "--no-save-args", "-A", "tcp/22",
            "-a", allow, "-D", server, "--use-hmac",
            "--key-base64-rijndael", keys.key_b64, "--key-base64-hmac", keys.hmac_b64,
            "-T", "-B", str(out)]
