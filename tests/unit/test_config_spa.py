"""[spa] and [fwknop]: what a valid table becomes. Refusals are in test_config_errors.py."""

from __future__ import annotations

import base64
from ipaddress import ip_network
from pathlib import Path

import pytest

from knockgate.config.describe import describe
from knockgate.config.load import parse_config
from knockgate.core.spa import key_id_for
from knockgate.errors import ConfigError
from knockgate.model import PortSpec

ALICE = b"a" * 32
BOB = b"b" * 32


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def secret_file(directory: Path, secret: bytes, mode: int = 0o600) -> Path:
    path = directory / "key"
    path.write_text(b64(secret) + "\n")
    path.chmod(mode)
    return path


def test_keys_with_secret_and_secret_file(tmp_path):
    bob_file = secret_file(tmp_path, BOB)
    config = parse_config(f"""\
[spa]
port = 40000
max_age = 30

[[spa.key]]
name = "alice"
secret = "{b64(ALICE)}"
open = ["tcp:22", "udp:1194"]
open_for = 15
actions = {{ 21 = ["/usr/bin/logger", "{{key}} from {{ip}}"] }}
sources = ["192.0.2.0/24", "2001:db8::1"]
allow_nat = true

[[spa.key]]
name = "bob"
secret_file = "{bob_file}"
actions = {{ 7 = ["/bin/true"] }}
""", "k.toml")
    spa = config.spa
    assert spa is not None and config.doors == ()
    assert (spa.port, spa.max_age) == (40000, 30.0)
    alice, bob = spa.keys
    assert (alice.key.name, alice.key.secret, alice.key.key_id) == ("alice", ALICE,
                                                                    key_id_for("alice"))
    assert alice.open == (PortSpec("tcp", 22), PortSpec("udp", 1194))
    assert alice.open_for == 15.0
    assert alice.actions == {21: ("/usr/bin/logger", "{key} from {ip}")}
    assert alice.sources == (ip_network("192.0.2.0/24"), ip_network("2001:db8::1/128"))
    assert alice.allow_nat is True and alice.line == 5
    assert (bob.key.secret, bob.open, bob.actions, bob.line) == (BOB, (), {7: ("/bin/true",)}, 14)
    assert spa.by_name() == {"alice": alice, "bob": bob}
    assert describe(config)[0] == "spa on udp:40000, packets valid for 30s"


def test_key_defaults():
    config = parse_config(f'[spa]\n[[spa.key]]\nname="a"\nsecret="{b64(ALICE)}"\n'
                          'open=["tcp:22"]\n')
    assert config.spa is not None
    (key,) = config.spa.keys
    assert (config.spa.port, config.spa.max_age) == (62201, 60.0)
    assert (key.open_for, key.actions, key.sources, key.allow_nat) == (30.0, {}, (), False)


def test_secret_file_readable_by_its_owner_only_is_accepted(tmp_path):
    path = secret_file(tmp_path, ALICE, 0o400)
    config = parse_config(f'[spa]\n[[spa.key]]\nname="a"\nsecret_file="{path}"\n'
                          'open=["tcp:22"]\n')
    assert config.spa is not None and config.spa.keys[0].key.secret == ALICE


@pytest.mark.parametrize("mode", [0o604, 0o640, 0o620, 0o602, 0o644])
def test_secret_file_that_others_may_read_or_write_is_refused(tmp_path, mode):
    path = secret_file(tmp_path, ALICE, mode)
    with pytest.raises(ConfigError) as info:
        parse_config(f'[spa]\n[[spa.key]]\nname="a"\nsecret_file="{path}"\nopen=["tcp:22"]\n',
                     "k.toml")
    assert info.value.line == 4 and "readable or writable by others" in info.value.reason
    assert info.value.hint == f"chmod 600 {path}"


ACCESS = f"""\
SOURCE 192.0.2.0/24
KEY_BASE64 {b64(ALICE)}
HMAC_KEY_BASE64 {base64.b64encode(b"h" * 64).decode()}
OPEN_PORTS tcp/22, udp/1194
FW_ACCESS_TIMEOUT 45
"""


def test_fwknop_reads_the_access_conf_it_names(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(ACCESS)
    access.chmod(0o600)
    config = parse_config(f'[fwknop]\naccess = "{access}"\nport = 40001\nmax_age = 90\n')
    fwknop = config.fwknop
    assert fwknop is not None and config.doors == () and config.spa is None
    assert (fwknop.access.path, fwknop.port, fwknop.max_age) == (str(access), 40001, 90.0)
    (stanza,) = fwknop.access.stanzas
    assert stanza.line == 1 and stanza.fw_access_timeout == 45
    assert fwknop.protected_ports() == (PortSpec("tcp", 22), PortSpec("udp", 1194))
    assert describe(config)[0] == (f"fwknop SPA on udp:40001 from {access}, packets valid "
                                   "for 90s")


def test_fwknop_defaults_are_fwknopds(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(ACCESS)
    access.chmod(0o600)
    config = parse_config(f'[fwknop]\naccess = "{access}"\n')
    assert config.fwknop is not None
    assert (config.fwknop.port, config.fwknop.max_age) == (62201, 120.0)


def test_fwknop_without_hmac_is_accepted_with_a_warning(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(f"SOURCE ANY\nKEY_BASE64 {b64(ALICE)}\nOPEN_PORTS tcp/22\n"
                      "KNOCKGATE_ALLOW_NO_HMAC Y\n")
    access.chmod(0o600)
    config = parse_config(f'[fwknop]\naccess = "{access}"\n')
    assert f"{access}:1: warning: this stanza accepts packets without an HMAC " \
           "(KNOCKGATE_ALLOW_NO_HMAC)" in config.warnings


def test_fwknop_and_spa_may_share_a_port(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(ACCESS)
    access.chmod(0o600)
    config = parse_config(f'[fwknop]\naccess = "{access}"\n'
                          f'[spa]\n[[spa.key]]\nname="a"\nsecret="{b64(ALICE)}"\n'
                          'open=["tcp:22"]\n')
    assert config.fwknop is not None and config.spa is not None
    assert config.fwknop.port == config.spa.port == 62201


def test_check_shows_a_closed_fwknop_stanza_as_opening_nothing(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(f"SOURCE ANY\nKEY_BASE64 {b64(ALICE)}\nOPEN_PORTS tcp/22\n"
                      "KNOCKGATE_ALLOW_NO_HMAC Y\nFORCE_NAT 192.0.2.9 22\n\n"
                      f"SOURCE ANY\nKEY_BASE64 {b64(ALICE)}\nOPEN_PORTS tcp/443\n"
                      "KNOCKGATE_ALLOW_NO_HMAC Y\n")
    access.chmod(0o600)
    lines = describe(parse_config(f'[fwknop]\naccess = "{access}"\n'))
    closed = [line for line in lines if line.startswith("  stanza 1 ")]
    assert closed and "closed, opens nothing: FORCE_NAT" in closed[0], lines
    assert any(line.startswith("  stanza 2 ") and "may open tcp:443" in line for line in lines)
