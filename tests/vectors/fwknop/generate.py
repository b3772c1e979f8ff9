"""Regenerate the fwknop known-answer vectors with the REAL fwknop client.

    python tests/vectors/fwknop/generate.py        # needs Debian's fwknop-client

Every packet is built with ``fwknop --test`` (-T): the client builds the packet and sends
nothing. ``--no-rc-file --no-save-args`` keep it from touching ~/.fwknoprc and ~/.fwknop.run.
The expected values come from the client's own ``-v`` dump, not from knockgate's decoder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Made once with `fwknop --key-gen`; test keys, published on purpose.
KEY_B64 = "9tqdu18hZRfu2miX+kwyzWjdF2F0sFcEUZk3zGg4faM="
HMAC_B64 = (
    "kGCC26sPXa/dnueGlkJB1wniaRAckOmcg6bxdQ+KaxIX7P3wiLeO3npu/HTCVHBn+WJtzwUx/EXGbB0r+cZeLA=="
)
RAW_KEY = "correct horse battery"
RAW_HMAC = "a different hmac passphrase!"

B64_KEYS = ["--key-base64-rijndael", KEY_B64, "--key-base64-hmac", HMAC_B64]
RAW_KEYS = ["--key-rijndael", RAW_KEY, "--key-hmac", RAW_HMAC]

# name: (description, extra fwknop arguments, key style, hmac type or None)
CASES: dict[str, tuple[str, list[str], str, str | None]] = {
    "access_sha256": ("default: HMAC-SHA256, digest SHA256, -a, one port",
                      ["-A", "tcp/22", "-a", "10.201.0.2"], "b64", "sha256"),
    "access_sha1": ("HMAC-SHA1 with a SHA1 inner digest, UDP port",
                    ["-A", "udp/53", "-a", "10.201.0.2", "-m", "sha1"], "b64", "sha1"),
    "access_sha512_multi": ("HMAC-SHA512, SHA512 digest, two ports",
                            ["-A", "tcp/22,udp/1194", "-a", "10.201.0.3", "-m", "sha512"],
                            "b64", "sha512"),
    "access_md5": ("HMAC-MD5 with an MD5 inner digest",
                   ["-A", "tcp/2222", "-a", "192.0.2.7", "-m", "md5"], "b64", "md5"),
    "access_sha384": ("HMAC-SHA384, SHA384 digest",
                      ["-A", "tcp/443", "-a", "198.51.100.9", "-m", "sha384"], "b64", "sha384"),
    "access_sha3_256": ("HMAC-SHA3-256, SHA3-256 digest (same length as SHA256)",
                        ["-A", "tcp/22", "-a", "10.201.0.2", "-m", "sha3_256"], "b64",
                        "sha3_256"),
    "access_sha3_512": ("HMAC-SHA3-512, SHA3-512 digest (same length as SHA512)",
                        ["-A", "tcp/22", "-a", "10.201.0.2", "-m", "sha3_512"], "b64",
                        "sha3_512"),
    "source_ip": ("-s: allow IP 0.0.0.0, the server substitutes the packet source",
                  ["-A", "tcp/22", "-s"], "b64", "sha256"),
    "client_timeout": ("-f 600: message type 3 with a client timeout",
                       ["-A", "tcp/22", "-a", "10.201.0.2", "-f", "600"], "b64", "sha256"),
    "command": ("--server-cmd: message type 0",
                ["-C", "echo hello world", "-a", "10.201.0.2"], "b64", "sha256"),
    "nat_access": ("-N: message type 2 (NAT access)",
                   ["-A", "tcp/22", "-a", "10.201.0.2", "-N", "192.168.1.2,22"], "b64",
                   "sha256"),
    "nat_access_timeout": ("-N with -f: message type 4",
                           ["-A", "tcp/22", "-a", "10.201.0.2", "-N", "192.168.1.2,22",
                            "-f", "120"], "b64", "sha256"),
    "local_nat": ("--nat-local --nat-port: message type 5",
                  ["-A", "tcp/22", "-a", "10.201.0.2", "--nat-local", "--nat-port", "2222"],
                  "b64", "sha256"),
    "raw_keys": ("KEY / HMAC_KEY given as plain strings (--key-rijndael, --key-hmac)",
                 ["-A", "tcp/22", "-a", "10.201.0.2"], "raw", "sha256"),
    "no_hmac": ("no HMAC at all (pre-2.5 style); must be refused unless explicitly allowed",
                ["-A", "tcp/22", "-a", "10.201.0.2"], "b64-nohmac", None),
}

_DUMP = {
    "Random Value": "rand", "Username": "username", "Timestamp": "timestamp",
    "Message Type": "msg_type", "Message String": "message", "Nat Access": "nat_access",
    "Client Timeout": "client_timeout", "Digest Type": "digest_type", "HMAC Type": "hmac_type",
}


def _run(name: str, extra: list[str], style: str, hmac_type: str | None) -> dict[str, object]:
    if style == "raw":
        keys = RAW_KEYS
    elif style == "b64":
        keys = B64_KEYS
    else:
        keys = ["--key-base64-rijndael", KEY_B64]
    argv = ["fwknop", "--no-rc-file", "--no-save-args", "-T", "-v", "-D", "127.0.0.1",
            "-U", "kgtest", *extra, *keys]
    if hmac_type is not None:
        argv += ["--hmac-digest-type", hmac_type]
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "packet"
        out = subprocess.run([*argv, "-B", str(saved)], capture_output=True, text=True,
                             check=True).stdout
        payload = saved.read_text().strip()
    return {"name": name, "argv": argv, "payload": payload, "client": _version(),
            "facts": _facts(out), "key_style": style, "hmac_type": hmac_type,
            "key_base64": KEY_B64, "hmac_key_base64": HMAC_B64 if style == "b64" else None,
            "key": RAW_KEY if style == "raw" else None,
            "hmac_key": RAW_HMAC if style == "raw" else None}


def _facts(dump: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in dump.splitlines():
        label, sep, value = line.partition(":")
        if sep and label.strip() in _DUMP and _DUMP[label.strip()] not in facts:
            facts[_DUMP[label.strip()]] = value.strip()
    return facts


def _version() -> str:
    argv = ["fwknop", "--no-rc-file", "--no-save-args", "--version"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    match = re.search(r"fwknop client ([0-9.]+)", out)
    return f"fwknop {match.group(1)}" if match else "fwknop"


def main() -> int:
    for name, (description, extra, style, hmac_type) in CASES.items():
        vector = {"description": description, **_run(name, extra, style, hmac_type)}
        (HERE / f"{name}.json").write_text(json.dumps(vector, indent=2) + "\n")
        print(f"{name}: {len(vector['payload'])} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
