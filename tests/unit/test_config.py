import pytest

from knockgate.config.describe import describe
from knockgate.config.load import load_config, parse_config
from knockgate.errors import ConfigError
from knockgate.model import PortSpec

GOOD = """\
[daemon]
interfaces = ["eth0"]
max_pending = 1000

[[door]]
name = "ssh"
sequence = ["tcp:7000", "udp:8000", "tcp:9000:syn,!ack"]
timeout = 5
open = ["tcp:22"]
open_for = 30
command = ["/usr/bin/logger", "{door} opened for {ip}"]
stop_command = ["/usr/bin/logger", "{door} closed for {ip}"]
command_delay = 30
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "k.toml")
    return info.value


def test_good_config():
    config = parse_config(GOOD, "k.toml")
    (door,) = config.doors
    assert door.name == "ssh" and door.timeout == 5 and door.open == (PortSpec("tcp", 22),)
    assert door.command == ("/usr/bin/logger", "{door} opened for {ip}")
    assert door.line == 5
    assert config.options.interfaces == ("eth0",) and config.options.max_pending == 1000
    assert "knock tcp:7000 udp:8000 tcp:9000:syn,!ack" in describe(config)[0]


def test_defaults():
    config = parse_config('[[door]]\nname="a"\nsequence=["tcp:1","tcp:2"]\nopen=["tcp:22"]\n')
    door = config.doors[0]
    assert (door.timeout, door.open_for, door.command) == (10.0, 30.0, ())
    assert config.options.hide_knock_ports is True


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\nopn=1\n', 5,
         ["unknown key 'opn'", "did you mean 'open'"]),
        ('[[door]]\nname="a"\nsequence=["tcp:70000"]\nopen=["tcp:22"]\n', 3,
         ["out of range", "1-65535"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:0"]\n', 4, ["out of range"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1:q"]\nopen=["tcp:22"]\n', 3, ["flag letter"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\n'
         '[[door]]\nname="a"\nsequence=["tcp:2"]\nopen=["tcp:22"]\n', 5,
         ["defined twice", "line 1"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1","tcp:2"]\nopen=["tcp:22"]\n'
         '[[door]]\nname="b"\nsequence=["tcp:1","tcp:2","tcp:3"]\nopen=["tcp:22"]\n', 1,
         ["prefix of door 'b'"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\ntimeout="5"\n', 5,
         ["timeout must be a number"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\nopen_for=0\n', 5,
         ["out of range"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\ncommand="rm -rf /"\n', 5,
         ["never run by a shell"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\ncommand=["/bin/x","{host}"]\n',
         5, ["unknown placeholder {host}"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\ncommand=["x"]\n', 5,
         ["absolute path"]),
        ('[[door]]\nname="a b"\nsequence=["tcp:1"]\nopen=["tcp:22"]\n', 2, ["invalid"]),
        ('[[door]]\nname="a"\nsequence=[]\nopen=["tcp:22"]\n', 3, ["missing or empty"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"]\n', 1, ["neither opens ports"]),
        ('[[door]]\nname="a"\nsequence=["tcp:22"]\nopen=["tcp:22"]\n', 1, ["knocks on"]),
        ('[daemon]\nmax_pending=0\n[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:2"]\n', 2,
         ["out of range"]),
        ('[deamon]\n', 1, ["unknown key 'deamon'", "did you mean 'daemon'"]),
        ('[[door]]\nname="a"\nsequence=["tcp:1"\n', 3, ["not valid TOML"]),
        ("", None, ["no door"]),
    ],
)
def test_errors_name_file_line_and_hint(text, line, words):
    error = error_of(text)
    assert error.path == "k.toml"
    assert error.line == line
    message = str(error)
    assert message.startswith(f"k.toml:{line}: " if line else "k.toml: ")
    for word in words:
        assert word in message


def test_every_error_has_a_hint():
    assert error_of('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:22"]\nx=1\n').hint


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.toml"))
    assert "missing.toml" in str(info.value)
    assert (info.value.path, info.value.line) == (str(tmp_path / "missing.toml"), None)
    assert info.value.hint == "pass --config with a readable file"


def test_config_is_frozen():
    config = parse_config(GOOD)
    with pytest.raises(AttributeError):
        config.doors = ()  # type: ignore[misc]
