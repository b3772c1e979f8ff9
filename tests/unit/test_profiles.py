"""client/profiles.py: the client's ~/.config/knockgate/client.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from knockgate.client.profiles import DEFAULT_PROFILES, Profile, load_profile
from knockgate.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def write(home: Path, text: str) -> Path:
    path = home / ".config" / "knockgate" / "client.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error(path: Path, name: str = "box") -> str:
    with pytest.raises(ConfigError) as caught:
        load_profile(name, str(path))
    return str(caught.value)


def test_every_key(home: Path) -> None:
    path = write(home, '[server.box]\nhost = "server.example"\nkey_name = "alice"\n'
                       'secret = "c2VjcmV0"\nopen = ["tcp:22", "udp:53"]\nport = 62202\n'
                       'allow_ip = "203.0.113.7"\n')
    assert load_profile("box", str(path)) == Profile(
        host="server.example", key_name="alice", secret="c2VjcmV0", open=("tcp:22", "udp:53"),
        port=62202, allow_ip="203.0.113.7")


def test_an_action_instead_of_ports(home: Path) -> None:
    path = write(home, "[server.box]\naction = 21\n")
    assert load_profile("box", str(path)) == Profile(action=21)


def test_a_missing_file_is_no_profile(home: Path) -> None:
    assert load_profile("box", str(home / "nowhere.toml")) is None


def test_an_unknown_server_is_no_profile(home: Path) -> None:
    path = write(home, '[server.box]\nhost = "server.example"\n')
    assert load_profile("other", str(path)) is None


def test_a_file_without_servers_is_no_profile(home: Path) -> None:
    assert load_profile("box", str(write(home, "# nothing yet\n"))) is None


def test_the_default_path_and_secret_file_expand_tilde(home: Path) -> None:
    write(home, '[server.box]\nsecret_file = "~/.config/knockgate/alice.key"\n')
    profile = load_profile("box", DEFAULT_PROFILES)
    assert profile is not None
    assert profile.secret_file == str(home / ".config" / "knockgate" / "alice.key")


def test_an_unparsable_file_names_itself(home: Path) -> None:
    path = write(home, "[server.box\n")
    message = error(path)
    assert message.startswith(f"{path}: cannot read client profiles: ")
    assert "(hint: fix the file or pass every option on the command line)" in message


def test_a_server_that_is_not_a_table(home: Path) -> None:
    path = write(home, '[server]\nbox = "server.example"\n')
    assert error(path) == f"{path}: [server.box] must be a table"


def test_an_unknown_key_is_named_with_the_known_ones(home: Path) -> None:
    path = write(home, '[server.box]\nhost = "server.example"\nsecrett = "x"\n')
    assert error(path) == (
        f"{path}: [server.box]: unknown key 'secrett' (hint: known keys: action, allow_ip, "
        "host, key_name, open, port, secret, secret_file)")


@pytest.mark.parametrize(("line", "message"), [
    ("host = 7", "host must be a string"),
    ("key_name = ['alice']", "key_name must be a string"),
    ("secret = true", "secret must be a string"),
    ("allow_ip = 203", "allow_ip must be a string"),
    ("port = '62201'", "port must be a whole number"),
    ("port = 62201.5", "port must be a whole number"),
    ("action = true", "action must be a whole number"),
    ("open = 'tcp:22'", "open must be a list like ['tcp:22']"),
    ("open = [22]", "open must be a list like ['tcp:22']"),
])
def test_a_value_of_the_wrong_type(home: Path, line: str, message: str) -> None:
    path = write(home, f"[server.box]\n{line}\n")
    assert error(path) == f"{path}: [server.box]: {message}"
