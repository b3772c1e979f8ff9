"""Client profiles: ~/.config/knockgate/client.toml, so `knockgate open myserver` is enough.

    [server.myserver]
    host = "server.example"
    key_name = "alice"
    secret_file = "~/.config/knockgate/alice.key"   # or secret = "base64..."
    open = ["tcp:22"]                               # or action = 21
    port = 62201
    allow_ip = "203.0.113.7"                        # only behind NAT (the key needs allow_nat)

A file holding a secret (a key file, or this file with an inline ``secret``) that others may
read or change gets a warning on stderr, by the rule the daemon applies (config/files.py).
"""

import os
import sys
from typing import Any, NamedTuple

from knockgate.client import DEFAULT_PROFILES
from knockgate.errors import ConfigError

_KEYS = {"host", "key_name", "secret", "secret_file", "open", "action", "port", "allow_ip"}


class Profile(NamedTuple):
    """One [server.NAME] table. A NamedTuple, not a frozen dataclass: making the dataclass
    took ~0.7 ms of every `knockgate open` (and no ``from __future__ import annotations`` in
    this module: see model.py for what string annotations cost a NamedTuple)."""

    host: str | None = None
    key_name: str | None = None
    secret: str | None = None
    secret_file: str | None = None
    open: tuple[str, ...] = ()
    action: int | None = None
    port: int | None = None
    allow_ip: str | None = None


def load_profile(name: str, path: str = DEFAULT_PROFILES) -> Profile | None:
    """The profile called ``name``, or None if the file or the profile does not exist."""
    file = os.path.expanduser(path)
    if not os.path.exists(file):
        return None
    # Imported here, and os.path rather than pathlib: most runs have no profile file, and
    # importing tomllib and pathlib took ~2.5 and ~3 ms of every `knockgate open`.
    import tomllib

    try:
        with open(file, encoding="utf-8") as handle:
            data = tomllib.loads(handle.read())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read client profiles: {exc}", path=file,
                          hint="fix the file or pass every option on the command line") from exc
    servers = data.get("server", {})
    raw = servers.get(name) if isinstance(servers, dict) else None
    if raw is None:
        return None
    if isinstance(raw, dict) and "secret" in raw:
        warn_if_exposed(file, os.stat(file))
    return _profile(raw, file, name)


def read_secret_file(path: str) -> str:
    """The text of a file holding a secret, with a warning if others may read or change it.
    Only a warning: the key is the user's to protect, and the server judges its own copy."""
    try:
        with open(path, encoding="ascii") as handle:
            warn_if_exposed(path, os.fstat(handle.fileno()))
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret: {exc}", path=path) from exc


def warn_if_exposed(path: str, status: os.stat_result) -> None:
    # The daemon's own rule; imported only when a file is read, as the server side's modules
    # stay out of the client (test_client.py checks what each command imports).
    from knockgate.config.files import distrust

    problem = distrust(path, status, os.geteuid(), secret=True)
    if problem is not None:
        print(f"knockgate open: warning: {path} holds a secret and {problem.reason}; anyone who "
              f"can read it can open your doors (hint: {problem.hint})", file=sys.stderr)


def _profile(raw: Any, path: str, name: str) -> Profile:
    if not isinstance(raw, dict):
        raise ConfigError(f"[server.{name}] must be a table", path=path)
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"[server.{name}]: unknown key {sorted(unknown)[0]!r}", path=path,
                          hint="known keys: " + ", ".join(sorted(_KEYS)))
    opens = raw.get("open", [])
    if not isinstance(opens, list) or not all(isinstance(item, str) for item in opens):
        raise ConfigError(f"[server.{name}]: open must be a list like ['tcp:22']", path=path)
    secret_file = raw.get("secret_file")
    return Profile(
        host=_text(raw, "host", path, name), key_name=_text(raw, "key_name", path, name),
        secret=_text(raw, "secret", path, name),
        secret_file=os.path.expanduser(secret_file) if isinstance(secret_file, str) else None,
        open=tuple(opens), action=_integer(raw, "action", path, name),
        port=_integer(raw, "port", path, name), allow_ip=_text(raw, "allow_ip", path, name),
    )


def _text(raw: dict[str, Any], key: str, path: str, name: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"[server.{name}]: {key} must be a string", path=path)
    return value


def _integer(raw: dict[str, Any], key: str, path: str, name: str) -> int | None:
    value = raw.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"[server.{name}]: {key} must be a whole number", path=path)
    return value
