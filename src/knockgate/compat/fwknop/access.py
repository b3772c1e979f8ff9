"""fwknop's ``access.conf`` → frozen stanzas, and fwknopd's rule for picking one.

No I/O but one lookup: CMD_EXEC_USER / CMD_EXEC_GROUP are resolved in the account database
when the file is parsed, as fwknopd resolves them when it starts (callers may pass their own).

Syntax, as fwknopd 2.6 reads it: one ``NAME value`` per line (a ``:`` after NAME is allowed);
the value ends at the first ``;``; blank lines and lines starting with ``#`` or ``;`` are
skipped; every ``SOURCE`` line starts a new stanza. Names are upper case: fwknopd compares them
case-sensitively and silently ignores ``key``, so we refuse it instead.

Supported: SOURCE, DESTINATION, OPEN_PORTS, RESTRICT_PORTS, KEY, KEY_BASE64, HMAC_KEY,
HMAC_KEY_BASE64, HMAC_DIGEST_TYPE (default sha256), FW_ACCESS_TIMEOUT (default 30),
MAX_FW_TIMEOUT (default 300), ENCRYPTION_MODE (CBC only), REQUIRE_SOURCE_ADDRESS /
REQUIRE_SOURCE, REQUIRE_USERNAME, ENABLE_CMD_EXEC (default N), CMD_EXEC_USER, CMD_EXEC_GROUP
(both user names, as fwknopd reads them; see ``_Stanza._command_identity``),
ACCESS_EXPIRE (MM/DD/YYYY, taken as 00:00 UTC; fwknopd uses local time), ACCESS_EXPIRE_EPOCH.

Known fwknopd keys knockgate does not implement fall in two groups. Those that change what a
stanza grants (CMD_CYCLE_* run a command instead of opening the firewall; FORCE_NAT, FORCE_SNAT and,
when set to anything but N, FORCE_MASQUERADE, DISABLE_DNAT, FORWARD_ALL forward to another host)
close their stanza: it stays in the list, so its OPEN_PORTS stay guarded and stanza numbers match
fwknopd's, but a packet it accepts is refused instead of falling through to a later stanza or
opening the local OPEN_PORTS (``FwknopStanza.closed_by``; the error names the line). Those that
change nothing a verified packet earns (GPG_*: GPG packets never verify here; CMD_SUDO_EXEC_USER /
GROUP without ENABLE_CMD_SUDO_EXEC; %include*) are ignored with a warning.
``ENABLE_CMD_SUDO_EXEC Y`` is an error, since ignoring it would change who runs commands.
Anything else is an error naming the line.

knockgate-only keys. They start with ``KNOCKGATE_`` so they cannot collide with fwknop's, and
fwknopd just logs "Ignoring unknown access parameter" for them, so the file still works there:

``KNOCKGATE_ALLOW_NO_HMAC Y``
    accept packets without an HMAC (fwknop < 2.5 clients) for this stanza. Without it, a stanza
    with no HMAC_KEY / HMAC_KEY_BASE64 is refused when the file is parsed.
``KNOCKGATE_CMD_SHELL Y``
    run ENABLE_CMD_EXEC commands through ``/bin/sh -c``. Without it a command must be split
    into argv (``shlex.split``) and executed without a shell; fwknopd itself uses execvp.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import contextlib
import grp
import pwd
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Network,
    NetmaskValueError,
    ip_address,
)

from knockgate.compat.fwknop.wire import (
    HMAC_TYPES,
    MAX_KEY_LEN,
    NAT_TYPES,
    FwknopRequest,
    MsgType,
    decode,
)
from knockgate.errors import ConfigError, InvalidMessage
from knockgate.model import FWKNOP_ACCESS_PATH, FWKNOP_MAX_AGE

DEFAULT_FW_ACCESS_TIMEOUT = 30
DEFAULT_MAX_FW_TIMEOUT = 300
MAX_TIMEOUT = 2 << 22  # fwknopd's RCHK_MAX_FW_TIMEOUT
ANY = IPv4Network("0.0.0.0/0")
PortList = tuple[tuple[str, int], ...]
# A user name -> (uid, primary gid), None when no such user; and a gid -> its group name.
FindUser = Callable[[str], "tuple[int, int] | None"]
FindGroupName = Callable[[int], "str | None"]

_SUPPORTED = frozenset({
    "SOURCE", "DESTINATION", "OPEN_PORTS", "RESTRICT_PORTS", "KEY", "KEY_BASE64", "HMAC_KEY",
    "HMAC_KEY_BASE64", "HMAC_DIGEST_TYPE", "FW_ACCESS_TIMEOUT", "MAX_FW_TIMEOUT",
    "ENCRYPTION_MODE", "ENABLE_CMD_EXEC", "ENABLE_CMD_SUDO_EXEC", "CMD_EXEC_USER",
    "CMD_EXEC_GROUP", "REQUIRE_USERNAME", "REQUIRE_SOURCE_ADDRESS", "REQUIRE_SOURCE",
    "ACCESS_EXPIRE", "ACCESS_EXPIRE_EPOCH", "KNOCKGATE_ALLOW_NO_HMAC", "KNOCKGATE_CMD_SHELL",
})
_IGNORED = {
    **dict.fromkeys(
        ("GPG_HOME_DIR", "GPG_EXE", "GPG_DECRYPT_ID", "GPG_DECRYPT_PW", "GPG_ALLOW_NO_PW",
         "GPG_REQUIRE_SIG", "GPG_DISABLE_SIG", "GPG_IGNORE_SIG_VERIFY_ERROR", "GPG_REMOTE_ID",
         "GPG_FINGERPRINT_ID"),
        "GPG-encrypted SPA is not supported; only KEY/KEY_BASE64 (Rijndael) packets verify"),
    **dict.fromkeys(
        ("CMD_SUDO_EXEC_USER", "CMD_SUDO_EXEC_GROUP"),
        "sudo execution is not supported (use CMD_EXEC_USER)"),
    **dict.fromkeys(
        ("%include", "%include_folder", "%include_keys"),
        "included files are not read; paste their stanzas or keys into this file"),
}
# What fwknopd does instead of opening the local OPEN_PORTS; knockgate closes such a stanza.
_CLOSING = {
    **dict.fromkeys(
        ("CMD_CYCLE_OPEN", "CMD_CYCLE_CLOSE", "CMD_CYCLE_TIMER"),
        "fwknopd runs the CMD_CYCLE_OPEN command instead of opening a port, and knockgate "
        "does not run command cycles"),
    **dict.fromkeys(
        ("FORCE_NAT", "FORCE_SNAT", "FORCE_MASQUERADE", "DISABLE_DNAT", "FORWARD_ALL"),
        "fwknopd forwards this stanza's packets to another host (NAT), and knockgate does "
        "not forward"),
}
# Y/N switches among them: N asks nothing, so it leaves the stanza open.
_CLOSING_SWITCHES = frozenset({"FORCE_MASQUERADE", "DISABLE_DNAT", "FORWARD_ALL"})
_KNOWN = _SUPPORTED | frozenset(_IGNORED) | frozenset(_CLOSING)
_NAME = re.compile(r"[A-Za-z0-9_%]+")
_BOOLS = {"y": True, "yes": True, "n": False, "no": False}
_PROTOS = ("tcp", "udp", "icmp")
_KEY_GEN_HINT = "generate keys with `fwknop --key-gen` and use the same ones on the clients"


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A note on one line; ``level`` "error" marks a stanza knockgate closed (the file loads)."""

    path: str
    line: int
    message: str
    level: str = "warning"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.level}: {self.message}"


@dataclass(frozen=True, slots=True)
class FwknopStanza:
    """One access.conf stanza. ``line`` is its SOURCE line; ``lines`` maps NAME → line."""

    line: int
    sources: tuple[IPv4Network, ...]
    key: bytes = field(repr=False)
    hmac_key: bytes | None = field(repr=False)
    hmac_type: str = "sha256"
    destinations: tuple[IPv4Network, ...] | None = None
    open_ports: PortList | None = None
    restrict_ports: PortList = ()
    fw_access_timeout: int = DEFAULT_FW_ACCESS_TIMEOUT
    max_fw_timeout: int = DEFAULT_MAX_FW_TIMEOUT
    require_source_address: bool = False
    require_username: str | None = None
    enable_cmd_exec: bool = False
    cmd_exec_user: str | None = None
    cmd_exec_group: str | None = None
    # Who commands run as, resolved at load as fwknopd does (``_Stanza._command_identity``):
    # user and group names for the process, None for "stay as the daemon" (root).
    run_as_user: str | None = None
    run_as_group: str | None = None
    expires_at: int | None = None
    allow_no_hmac: bool = False
    cmd_shell: bool = False
    # Why every packet this stanza accepts is refused (a setting knockgate does not implement).
    closed_by: str | None = None
    lines: tuple[tuple[str, int], ...] = field(default=(), repr=False)

    def matches_source(self, address: IPv4Address) -> bool:
        return any(address in net for net in self.sources)

    def matches_destination(self, address: IPv4Address | None) -> bool:
        if self.destinations is None:
            return True
        # A stanza restricted to destinations cannot match when the caller does not know it.
        return address is not None and any(address in net for net in self.destinations)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now > self.expires_at

    def line_of(self, name: str) -> int:
        return dict(self.lines).get(name, self.line)


@dataclass(frozen=True, slots=True)
class FwknopAccess:
    path: str
    stanzas: tuple[FwknopStanza, ...]
    warnings: tuple[ConfigWarning, ...]


@dataclass(frozen=True, slots=True)
class FwknopMatch:
    """The stanza that accepted a packet, as fwknopd would pick it.

    ``allow_ip`` is the address to open for (the packet's source when the client sent
    ``0.0.0.0``); ``open_for`` the seconds to keep it open (the client's timeout capped at
    MAX_FW_TIMEOUT, else FW_ACCESS_TIMEOUT). ``stanza_number`` counts from 1 like fwknopd's logs.
    """

    stanza: FwknopStanza
    stanza_number: int
    request: FwknopRequest
    allow_ip: IPv4Address
    open_for: int


# --------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class _Draft:
    """One stanza while its lines are read: NAME → (value, line)."""

    line: int
    values: dict[str, tuple[str, int]] = field(default_factory=dict)


class _Parser:
    def __init__(self, path: str, find_user: FindUser, find_group_name: FindGroupName) -> None:
        self.path = path
        self.find_user = find_user
        self.find_group_name = find_group_name
        self.drafts: list[_Draft] = []
        self.warnings: list[ConfigWarning] = []

    def error(self, message: str, line: int, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, line=line, hint=hint)

    def warn(self, message: str, line: int) -> None:
        self.warnings.append(ConfigWarning(self.path, line, message))

    def feed(self, number: int, raw: str) -> None:
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            return
        if any(ord(ch) < 0x20 and ch != "\t" for ch in stripped) or "\x7f" in stripped:
            raise self.error("control character in line", number,
                             "remove it; access.conf is plain text")
        name, value = self._split(number, stripped)
        self._check_name(number, name)
        if name == "SOURCE":
            self.drafts.append(_Draft(number))
        if name in _IGNORED:
            self.warn(f"{name} ignored: {_IGNORED[name]}", number)
            return
        if not self.drafts:
            self.warn(f"{name} before the first SOURCE line is ignored (fwknopd ignores it too)",
                      number)
            return
        draft = self.drafts[-1]
        if name in draft.values and name != "SOURCE":
            raise self.error(f"{name} given twice in the stanza starting at line {draft.line}",
                             number, f"keep one {name} line per stanza")
        draft.values[name] = (value, number)

    def _split(self, number: int, stripped: str) -> tuple[str, str]:
        match = re.fullmatch(r"(\S+)\s+(.*)", stripped)
        if match is None:
            raise self.error(f"{stripped[:40]!r} has no value", number, "write NAME VALUE")
        name, rest = match.group(1), match.group(2)
        if name.endswith(":"):
            name = name[:-1]
        value, semicolon, dropped = rest.partition(";")
        value = value.rstrip()
        if not value:
            raise self.error(f"{name} has an empty value", number, "write NAME VALUE")
        if semicolon and dropped.strip():
            self.warn(f"text after ';' in {name} is ignored (fwknopd ends values at ';')",
                      number)
        return name, value

    def _check_name(self, number: int, name: str) -> None:
        if name in _KNOWN:
            return
        canonical = next((known for known in _KNOWN if known.lower() == name.lower()), None)
        if canonical is not None:
            raise self.error(f"{name} must be written {canonical}", number,
                             f"fwknopd matches names case-sensitively and ignores {name!r}")
        shown = name if _NAME.fullmatch(name) and len(name) <= 40 else repr(name[:40])
        raise self.error(f"unknown access.conf key {shown}", number,
                         "see `man fwknopd` for the keys; knockgate's own are KNOCKGATE_*")


def parse_access_conf(text: str, path: str = FWKNOP_ACCESS_PATH, *,
                      find_user: FindUser | None = None,
                      find_group_name: FindGroupName | None = None) -> FwknopAccess:
    """Parse access.conf text. Raises ConfigError (path, line, hint) on anything wrong.

    ``find_user`` / ``find_group_name`` resolve CMD_EXEC_USER / CMD_EXEC_GROUP; by default
    the system's account database (passwd, group), as fwknopd reads it when it starts.
    """
    parser = _Parser(path, find_user or _system_user, find_group_name or _system_group_name)
    for number, raw in enumerate(text.split("\n"), start=1):
        parser.feed(number, raw)
    if not parser.drafts:
        raise ConfigError("no SOURCE stanza", path=path, line=None,
                          hint="start each stanza with e.g. 'SOURCE ANY'")
    stanzas = tuple(_Stanza(parser, draft, number).build()
                    for number, draft in enumerate(parser.drafts, start=1))
    return FwknopAccess(path, stanzas, tuple(parser.warnings))


def expiry_warnings(access: FwknopAccess, now: float) -> tuple[ConfigWarning, ...]:
    """One warning per stanza already expired at ``now``: it matches no packet (fwknopd skips
    it too), while every other stanza keeps working."""
    return tuple(
        ConfigWarning(access.path, stanza.line_of(_expiry_key(stanza)),
                      f"stanza {number} (SOURCE line {stanza.line}) expired at "
                      f"{_utc(stanza.expires_at or 0)}: it matches no packet")
        for number, stanza in enumerate(access.stanzas, start=1) if stanza.expired(now))


def _expiry_key(stanza: FwknopStanza) -> str:
    return "ACCESS_EXPIRE" if "ACCESS_EXPIRE" in dict(stanza.lines) else "ACCESS_EXPIRE_EPOCH"


def _utc(epoch: int) -> str:
    year, month, day, hour, minute = time.gmtime(epoch)[:5]
    return f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d} UTC"


class _Stanza:
    """Turns one draft into a FwknopStanza, naming the offending line on every error."""

    def __init__(self, parser: _Parser, draft: _Draft, number: int) -> None:
        self.parser = parser
        self.draft = draft
        self.number = number

    def get(self, name: str) -> tuple[str, int] | None:
        return self.draft.values.get(name)

    def error(self, message: str, line: int, hint: str | None = None) -> ConfigError:
        return self.parser.error(message, line, hint)

    def build(self) -> FwknopStanza:
        key = self._key()
        allow_no_hmac = self._bool("KNOCKGATE_ALLOW_NO_HMAC", default=False)
        hmac_key = self._hmac_key(key, allow_no_hmac)
        enable_cmd_exec = self._bool("ENABLE_CMD_EXEC", default=False)
        self._refuse_sudo()
        run_as_user, run_as_group = self._command_identity()
        return FwknopStanza(
            line=self.draft.line,
            sources=self._networks("SOURCE"),
            destinations=self._networks("DESTINATION") if self.get("DESTINATION") else None,
            key=key,
            hmac_key=hmac_key,
            hmac_type=self._hmac_type(hmac_key),
            open_ports=self._ports("OPEN_PORTS") if self.get("OPEN_PORTS") else None,
            restrict_ports=self._ports("RESTRICT_PORTS") if self.get("RESTRICT_PORTS") else (),
            fw_access_timeout=self._fw_access_timeout(),
            max_fw_timeout=self._seconds("MAX_FW_TIMEOUT", DEFAULT_MAX_FW_TIMEOUT, minimum=1),
            require_source_address=self._require_source(),
            require_username=self._text("REQUIRE_USERNAME"),
            enable_cmd_exec=enable_cmd_exec,
            cmd_exec_user=self._text("CMD_EXEC_USER"),
            cmd_exec_group=self._text("CMD_EXEC_GROUP"),
            run_as_user=run_as_user,
            run_as_group=run_as_group,
            expires_at=self._expires_at(),
            allow_no_hmac=allow_no_hmac,
            cmd_shell=self._cmd_shell(enable_cmd_exec),
            closed_by=self._closed_by(),
            lines=tuple((name, line) for name, (_, line) in self.draft.values.items()),
        )

    # keys -----------------------------------------------------------------

    def _key(self) -> bytes:
        self._check_mode()
        key = self._one_of("KEY", "KEY_BASE64")
        if key is None:
            raise self.error("stanza has no KEY or KEY_BASE64", self.draft.line,
                             f"GPG stanzas are not supported; {_KEY_GEN_HINT}")
        if not 1 <= len(key) <= MAX_KEY_LEN:
            line = self.draft.values.get("KEY", self.draft.values.get("KEY_BASE64", ("", 0)))[1]
            raise self.error(f"encryption key is {len(key)} bytes; fwknop uses 1-{MAX_KEY_LEN}",
                             line, _KEY_GEN_HINT)
        return key

    def _hmac_key(self, key: bytes, allow_no_hmac: bool) -> bytes | None:
        hmac_key = self._one_of("HMAC_KEY", "HMAC_KEY_BASE64")
        if hmac_key is None and not allow_no_hmac:
            raise self.error("stanza has no HMAC_KEY or HMAC_KEY_BASE64", self.draft.line,
                             "unauthenticated SPA is refused by default: add HMAC_KEY_BASE64 "
                             "(`fwknop --key-gen`), or KNOCKGATE_ALLOW_NO_HMAC Y to accept "
                             "legacy packets knowingly")
        if hmac_key is not None and hmac_key == key:
            name = "HMAC_KEY" if self.get("HMAC_KEY") else "HMAC_KEY_BASE64"
            line = self.draft.values[name][1]
            raise self.error("the HMAC key equals the encryption key", line, _KEY_GEN_HINT)
        return hmac_key

    def _one_of(self, plain: str, b64: str) -> bytes | None:
        raw, encoded = self.get(plain), self.get(b64)
        if raw and encoded:
            raise self.error(f"both {plain} and {b64} given", encoded[1], "keep one of them")
        if raw:
            self._not_placeholder(plain, raw)
            return raw[0].encode("utf-8")
        if encoded:
            self._not_placeholder(b64, encoded)
            return self._b64(b64, encoded)
        return None

    def _not_placeholder(self, name: str, entry: tuple[str, int]) -> None:
        if entry[0].upper() == "__CHANGEME__":
            raise self.error(f"{name} is still __CHANGEME__", entry[1], _KEY_GEN_HINT)

    def _b64(self, name: str, entry: tuple[str, int]) -> bytes:
        text = entry[0].rstrip("=")
        if not re.fullmatch(r"[A-Za-z0-9+/]+", text) or len(text) % 4 == 1:
            raise self.error(f"{name} is not base64", entry[1], _KEY_GEN_HINT)
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise self.error(f"{name} is not base64", entry[1], _KEY_GEN_HINT) from None

    def _hmac_type(self, hmac_key: bytes | None) -> str:
        entry = self.get("HMAC_DIGEST_TYPE")
        if entry is None:
            return "sha256"
        name = entry[0].lower().replace("-", "_")
        if name not in HMAC_TYPES:
            raise self.error(f"HMAC_DIGEST_TYPE {entry[0]!r} is not supported", entry[1],
                             f"use one of {', '.join(sorted(HMAC_TYPES))}")
        if hmac_key is None:
            self.parser.warn("HMAC_DIGEST_TYPE has no effect without an HMAC key", entry[1])
        return name

    def _check_mode(self) -> None:
        entry = self.get("ENCRYPTION_MODE")
        if entry is not None and entry[0].upper() != "CBC":
            raise self.error(f"ENCRYPTION_MODE {entry[0]} is not supported", entry[1],
                             "knockgate speaks fwknop's default CBC mode only; remove the line "
                             "and drop -M from the clients")

    def _refuse_sudo(self) -> None:
        entry = self.get("ENABLE_CMD_SUDO_EXEC")
        if entry is not None and self._bool("ENABLE_CMD_SUDO_EXEC", default=False):
            raise self.error("ENABLE_CMD_SUDO_EXEC is not supported", entry[1],
                             "use CMD_EXEC_USER / CMD_EXEC_GROUP to run commands unprivileged")

    def _closed_by(self) -> str | None:
        """Why the stanza must refuse what it accepts, reported once as an error line."""
        asked = [(name, line) for name, (value, line) in self.draft.values.items()
                 if name in _CLOSING
                 and not (name in _CLOSING_SWITCHES and _BOOLS.get(value.lower()) is False)]
        if not asked:
            return None
        name, line = asked[0]
        reason = f"{name} (line {line}): {_CLOSING[name]}"
        self.parser.warnings.append(ConfigWarning(
            self.parser.path, line,
            f"stanza {self.number} (SOURCE line {self.draft.line}) is closed: {reason}; every "
            "packet it accepts is refused, the other stanzas work (remove the line to open "
            "its OPEN_PORTS locally instead)", level="error"))
        return reason

    def _command_identity(self) -> tuple[str | None, str | None]:
        """fwknopd's rules for who runs a command, checked at load as fwknopd checks them.

        Both CMD_EXEC_USER and CMD_EXEC_GROUP name *users* (getpwnam): the group is that
        user's primary group, so ``CMD_EXEC_GROUP nobody`` means nobody's group (nogroup on
        Debian) and a name only /etc/group knows stops fwknopd from starting. Without a
        group, or when the group resolves to gid 0, a non-root user runs in its own primary
        group. Without a user, or with root, fwknopd runs the command as itself and ignores
        the group. It tests "root" on the first four letters only, so it would run a user
        such as ``rootless`` as root: that is refused here rather than copied.
        """
        user, group = self.get("CMD_EXEC_USER"), self.get("CMD_EXEC_GROUP")
        found_user = self._account("CMD_EXEC_USER", user) if user else None
        found_group = self._account("CMD_EXEC_GROUP", group) if group else None
        if user is None or user[0] == "root":
            if group is not None:
                self.parser.warn("CMD_EXEC_GROUP has no effect without a CMD_EXEC_USER other "
                                 "than root: commands run as root, as fwknopd runs them",
                                 group[1])
            return None, None
        assert found_user is not None
        uid, primary_gid = found_user
        if user[0][:4].lower() == "root":
            raise self.error(f"CMD_EXEC_USER {user[0]!r} starts with 'root': fwknopd would run "
                             "its commands as root", user[1],
                             "use an account whose name does not start with 'root', or write "
                             "CMD_EXEC_USER root if root is meant")
        gid = found_group[1] if found_group else 0
        if uid != 0 and gid == 0:
            gid = primary_gid
        return (user[0] if uid else None), (self._group_name(gid, group or user) if gid else None)

    def _account(self, name: str, entry: tuple[str, int]) -> tuple[int, int]:
        found = self.parser.find_user(entry[0])
        if found is None:
            what = "user" if name == "CMD_EXEC_USER" else "user (fwknopd reads it as a user name " \
                "and takes that user's group)"
            raise self.error(f"{name} {entry[0][:40]!r} is not a {what} on this system",
                             entry[1], f"create the account or name an existing user, e.g. "
                             f"'{name} nobody' (fwknopd refuses to start here too)")
        return found

    def _group_name(self, gid: int, entry: tuple[str, int]) -> str:
        name = self.parser.find_group_name(gid)
        if name is None:
            raise self.error(f"group id {gid} (of {entry[0][:40]!r}) has no entry in the group "
                             "database", entry[1], f"add group {gid} to /etc/group")
        return name

    # addresses and ports --------------------------------------------------

    def _networks(self, name: str) -> tuple[IPv4Network, ...]:
        value, line = self.draft.values[name]
        if value.upper() == "ANY":
            return (ANY,)
        items = [item for item in re.split(r"[,\s]+", value) if item]
        if not items:
            raise self.error(f"{name} is empty", line, "write ANY or e.g. 192.0.2.0/24")
        return tuple(self._network(name, item, line) for item in items)

    def _network(self, name: str, item: str, line: int) -> IPv4Network:
        if item.upper() == "ANY":
            return ANY
        try:
            return IPv4Network(item, strict=False)
        except (AddressValueError, NetmaskValueError, ValueError):
            raise self.error(f"{name} entry {item[:60]!r} is not an IPv4 address or network",
                             line, "fwknop is IPv4-only: write ANY, 192.0.2.7 or "
                             "192.0.2.0/24, comma separated") from None

    def _ports(self, name: str) -> PortList:
        value, line = self.draft.values[name]
        items = [item.strip() for item in value.split(",")]
        return tuple(self._port(name, item, line) for item in items)

    def _port(self, name: str, item: str, line: int) -> tuple[str, int]:
        proto, sep, port = item.partition("/")
        proto = proto.strip().lower()
        port = port.strip()
        if not sep or proto not in _PROTOS or not port.isdigit() or not port.isascii() \
                or not 1 <= int(port) <= 65535:
            raise self.error(f"{name} entry {item[:40]!r} is not proto/port", line,
                             "write e.g. 'tcp/22, udp/1194' (tcp, udp or icmp; ports 1-65535)")
        return proto, int(port)

    # scalars --------------------------------------------------------------

    def _bool(self, name: str, *, default: bool) -> bool:
        entry = self.get(name)
        if entry is None:
            return default
        value = _BOOLS.get(entry[0].lower())
        if value is None:
            raise self.error(f"{name} must be Y or N, not {entry[0][:20]!r}", entry[1],
                             f"write '{name} Y' or '{name} N'")
        return value

    def _text(self, name: str) -> str | None:
        entry = self.get(name)
        return None if entry is None else entry[0]

    def _seconds(self, name: str, default: int, *, minimum: int) -> int:
        entry = self.get(name)
        if entry is None:
            return default
        if not entry[0].isdigit() or not entry[0].isascii() \
                or not minimum <= int(entry[0]) <= MAX_TIMEOUT:
            raise self.error(f"{name} must be a whole number of seconds, "
                             f"{minimum}-{MAX_TIMEOUT}", entry[1], f"e.g. '{name} {default}'")
        return int(entry[0])

    def _fw_access_timeout(self) -> int:
        # fwknopd treats 0 as "not set" and falls back to its global default.
        seconds = self._seconds("FW_ACCESS_TIMEOUT", DEFAULT_FW_ACCESS_TIMEOUT, minimum=0)
        return seconds or DEFAULT_FW_ACCESS_TIMEOUT

    def _require_source(self) -> bool:
        if self.get("REQUIRE_SOURCE_ADDRESS") and self.get("REQUIRE_SOURCE"):
            raise self.error("both REQUIRE_SOURCE_ADDRESS and REQUIRE_SOURCE given",
                             self.draft.values["REQUIRE_SOURCE"][1], "keep one of them")
        name = "REQUIRE_SOURCE" if self.get("REQUIRE_SOURCE") else "REQUIRE_SOURCE_ADDRESS"
        return self._bool(name, default=False)

    def _expires_at(self) -> int | None:
        date, epoch = self.get("ACCESS_EXPIRE"), self.get("ACCESS_EXPIRE_EPOCH")
        if date and epoch:
            raise self.error("both ACCESS_EXPIRE and ACCESS_EXPIRE_EPOCH given", epoch[1],
                             "keep one of them")
        if epoch:
            if not epoch[0].isdigit() or not epoch[0].isascii() or len(epoch[0]) > 12:
                raise self.error("ACCESS_EXPIRE_EPOCH must be Unix seconds", epoch[1],
                                 "e.g. 'ACCESS_EXPIRE_EPOCH 1893456000'")
            return int(epoch[0])
        if date:
            return self._expire_date(*date)
        return None

    def _expire_date(self, value: str, line: int) -> int:
        match = re.fullmatch(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})", value)
        if match is None:
            raise self.error(f"ACCESS_EXPIRE {value[:20]!r} is not MM/DD/YYYY", line,
                             "e.g. 'ACCESS_EXPIRE 12/31/2030'")
        month, day, year = (int(part) for part in match.groups())
        try:
            days_ok = 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
        except (ValueError, calendar.IllegalMonthError):
            days_ok = False
        if not days_ok or year < 1970:
            raise self.error(f"ACCESS_EXPIRE {value!r} is not a date", line,
                             "e.g. 'ACCESS_EXPIRE 12/31/2030'")
        self.parser.warn("ACCESS_EXPIRE is taken as 00:00 UTC (fwknopd uses local time)", line)
        return calendar.timegm((year, month, day, 0, 0, 0))

    def _cmd_shell(self, enable_cmd_exec: bool) -> bool:
        shell = self._bool("KNOCKGATE_CMD_SHELL", default=False)
        if shell and not enable_cmd_exec:
            self.parser.warn("KNOCKGATE_CMD_SHELL has no effect without ENABLE_CMD_EXEC Y",
                             self.draft.values["KNOCKGATE_CMD_SHELL"][1])
        return shell


def _system_user(name: str) -> tuple[int, int] | None:
    with contextlib.suppress(KeyError):  # no such user
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    return None


def _system_group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


# --------------------------------------------------------------------------- selection


def select_stanza(stanzas: Iterable[FwknopStanza], payload: bytes, source: object, now: float,
                  *, destination: object = None,
                  max_age: float = FWKNOP_MAX_AGE) -> FwknopMatch:
    """Pick the stanza that accepts ``payload`` from ``source``, in file order, as fwknopd does.

    A stanza is skipped when its SOURCE (or DESTINATION) does not match, it has expired, its
    keys do not verify the packet, or the verified request breaks its rules
    (REQUIRE_SOURCE_ADDRESS with 0.0.0.0, REQUIRE_USERNAME, commands without ENABLE_CMD_EXEC,
    RESTRICT_PORTS / OPEN_PORTS). NAT requests (types 2, 4, 5, 6) are never accepted: knockgate
    does no forwarding. The first stanza left wins, a closed one (``closed_by``) too: fwknopd
    would have served the packet there, so the caller refuses it rather than let a later stanza
    grant something else. If none is left, InvalidMessage.
    Replay checking (``request.replay_digest``) stays with the caller.
    """
    src = _ipv4(source)
    dst = None if destination is None else _ipv4(destination)
    reasons: list[str] = []
    for number, stanza in enumerate(stanzas, start=1):
        try:
            return _try_stanza(stanza, number, payload, src, dst, now, max_age)
        except InvalidMessage as exc:
            reasons.append(f"stanza {number}: {exc.reason}")
    raise InvalidMessage("; ".join(reasons) or "no stanzas")


def _ipv4(address: object) -> IPv4Address:
    try:
        parsed = address if isinstance(address, IPv4Address) else ip_address(str(address))
    except ValueError as exc:
        raise InvalidMessage("address is not IPv4") from exc
    if not isinstance(parsed, IPv4Address):
        raise InvalidMessage("fwknop is IPv4-only")
    return parsed


def _try_stanza(stanza: FwknopStanza, number: int, payload: bytes, source: IPv4Address,
                destination: IPv4Address | None, now: float, max_age: float) -> FwknopMatch:
    if not stanza.matches_source(source) or not stanza.matches_destination(destination):
        raise InvalidMessage("address does not match")
    if stanza.expired(now):
        raise InvalidMessage("stanza expired")
    request = decode(payload, key=stanza.key, hmac_key=stanza.hmac_key,
                     hmac_type=stanza.hmac_type, now=now, max_age=max_age,
                     allow_no_hmac=stanza.allow_no_hmac)
    allow_ip = _allow_ip(stanza, request, source)
    if stanza.require_username is not None and request.username != stanza.require_username:
        raise InvalidMessage("username not allowed")
    if request.msg_type in NAT_TYPES:
        raise InvalidMessage("NAT access not supported")
    if request.msg_type is MsgType.COMMAND:
        if not stanza.enable_cmd_exec:
            raise InvalidMessage("commands not enabled")
    elif not _ports_allowed(stanza, request.access):
        raise InvalidMessage("ports not allowed")
    return FwknopMatch(stanza, number, request, allow_ip, _open_for(stanza, request))


def _allow_ip(stanza: FwknopStanza, request: FwknopRequest,
              source: IPv4Address) -> IPv4Address:
    if request.allow_ip != IPv4Address(0):
        return request.allow_ip
    if stanza.require_source_address:
        raise InvalidMessage("0.0.0.0 while REQUIRE_SOURCE_ADDRESS")
    return source


def _ports_allowed(stanza: FwknopStanza, access: object) -> bool:
    if not isinstance(access, tuple):
        return False
    wanted = set(access)
    if wanted & set(stanza.restrict_ports):
        return False
    return stanza.open_ports is None or wanted <= set(stanza.open_ports)


def _open_for(stanza: FwknopStanza, request: FwknopRequest) -> int:
    # fwknopd's set_timeout(): a client timeout > 0 wins, capped at MAX_FW_TIMEOUT.
    if request.client_timeout:
        return min(request.client_timeout, stanza.max_fw_timeout)
    return stanza.fw_access_timeout
