"""schema.py: one default per option, shared with the model; the Config value's derived ports;
the layering (core/ never imports config/, the schema imports no parser)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

import knockgate
from knockgate.config import schema
from knockgate.config.load import parse_config
from knockgate.config.schema import DaemonOptions, FwknopConfig, Option, SpaConfig
from knockgate.core.kinds import parse_frame
from knockgate.model import Door, PortSpec, SpaKeyConfig

SECRET = base64.b64encode(b"s" * 32).decode()


def test_a_door_left_to_its_defaults_is_the_models_door():
    (door,) = parse_config('[[door]]\nname="a"\nsequence=["tcp:1","tcp:2"]\n'
                           'command=["/bin/true"]\n').doors
    model = Door(name="a", sequence=(parse_frame("tcp:1"), parse_frame("tcp:2")),
                 command=("/bin/true",))
    assert door == model._replace(line=1, engine_reason=door.engine_reason)
    assert (door.command_delay, door.engine) == (10.0, "kernel")


def test_daemon_spa_and_key_left_to_their_defaults_are_the_value_types_defaults(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(f"SOURCE ANY\nKEY_BASE64 {SECRET}\nOPEN_PORTS tcp/22\n"
                      "KNOCKGATE_ALLOW_NO_HMAC Y\n")
    access.chmod(0o600)
    config = parse_config(f'[spa]\n[[spa.key]]\nname="a"\nsecret="{SECRET}"\nopen=["tcp:22"]\n'
                          f'[fwknop]\naccess="{access}"\n')
    assert config.options == DaemonOptions()
    assert config.spa is not None and config.fwknop is not None
    (key,) = config.spa.keys
    assert key == SpaKeyConfig(key.key, open=(PortSpec("tcp", 22),), line=2)
    assert config.spa == SpaConfig(keys=(key,))
    assert config.fwknop == FwknopConfig(config.fwknop.access)


def test_the_daemons_default_engine_is_a_doors_default_engine():
    assert DaemonOptions().engine == schema.DOOR["engine"].default == "kernel"


def test_a_default_is_declared_once():
    with pytest.raises(TypeError, match="declare it once"):
        schema._table(Door, Option("timeout", "seconds", default=5.0))


def test_every_option_has_help():
    for table in (schema.TOP, schema.DAEMON, schema.DOOR, schema.SPA, schema.SPA_KEY,
                  schema.FWKNOP):
        for option in table.values():
            assert option.help, option.key


# Knock ports in no order, shared across doors and with the other protocol.
CONFIG = """\
[[door]]
name = "web"
sequence = ["udp:9000", "tcp:7000", "udp:800", "tcp:9000"]
open = ["tcp:443"]
[[door]]
name = "vpn"
sequence = ["tcp:10000", "udp:9000", "tcp:7001"]
open = ["udp:1194", "tcp:22"]
"""


def test_hidden_ports_are_the_knock_ports_sorted():
    config = parse_config(CONFIG)
    assert config.hidden_ports == [PortSpec("tcp", 7000), PortSpec("tcp", 7001),
                                   PortSpec("tcp", 9000), PortSpec("tcp", 10000),
                                   PortSpec("udp", 800), PortSpec("udp", 9000)]


def test_hidden_ports_include_the_spa_ports_unless_knock_ports_are_left_visible(tmp_path):
    access = tmp_path / "access.conf"
    access.write_text(f"SOURCE ANY\nKEY_BASE64 {SECRET}\nOPEN_PORTS tcp/443, udp/53, tcp/22\n"
                      "KNOCKGATE_ALLOW_NO_HMAC Y\n")
    access.chmod(0o600)
    spa = (f'[spa]\nport=40000\n[[spa.key]]\nname="a"\nsecret="{SECRET}"\n'
           'open=["tcp:2022", "tcp:22"]\n')
    fwknop = f'[fwknop]\naccess="{access}"\nport=30000\n'
    config = parse_config(CONFIG + spa + fwknop)
    assert config.hidden_ports == [*parse_config(CONFIG).hidden_ports,
                                   PortSpec("udp", 30000), PortSpec("udp", 40000)]
    assert config.grant_ports == [PortSpec("tcp", 22), PortSpec("tcp", 443),
                                  PortSpec("tcp", 2022), PortSpec("udp", 53)]
    visible = parse_config("[daemon]\nhide_knock_ports = false\n" + CONFIG + spa + fwknop)
    assert visible.hidden_ports == []
    assert visible.grant_ports == config.grant_ports


def test_grant_ports_without_spa_are_none():
    assert parse_config(CONFIG).grant_ports == []


def imported_after(statement: str) -> set[str]:
    """The knockgate and cryptography modules a fresh interpreter holds after ``statement``."""
    source = str(Path(knockgate.__file__).parents[1])  # this knockgate, not an installed one
    probe = (f"import sys\nsys.path.insert(0, {source!r})\n{statement}\n"
             "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in "
             "('knockgate', 'cryptography')))")
    result = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_importing_the_schema_imports_no_parser_and_no_crypto():
    modules = imported_after("import knockgate.config.schema")
    assert "knockgate.config.schema" in modules
    assert {m for m in modules if m.startswith("knockgate.config")} == {
        "knockgate.config", "knockgate.config.schema"}
    assert not any(m.startswith("cryptography") for m in modules)


def test_core_never_imports_config():
    modules = imported_after(
        "import importlib, pkgutil, knockgate.core\n"
        "for info in pkgutil.walk_packages(knockgate.core.__path__, 'knockgate.core.'):\n"
        "    importlib.import_module(info.name)")
    assert "knockgate.core.spa_policy" in modules
    assert not any(m.startswith("knockgate.config") for m in modules)
