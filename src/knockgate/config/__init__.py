"""TOML configuration → a validated, frozen Config. Every error names FILE:LINE: and a fix."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import stat
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from knockgate.compat.fwknop.access import DEFAULT_PATH as FWKNOP_ACCESS_PATH
from knockgate.compat.fwknop.access import FwknopAccess, parse_access_conf
from knockgate.compat.fwknop.wire import DEFAULT_MAX_AGE as FWKNOP_MAX_AGE
from knockgate.compat.knockd.conf import (
    looks_like_knockd_conf,
    next_one_time_sequence,
    parse_knockd_conf,
)
from knockgate.config.schema import DEFAULT_STATE_DIR
from knockgate.core.engine import DEFAULT_MAX_PENDING
from knockgate.core.kinds import format_frame, parse_frame
from knockgate.core.kinds.ports import is_number as _is_number
from knockgate.core.kinds.ports import parse_flags, parse_port_spec
from knockgate.core.nft.first_stage import first_stage_summary
from knockgate.core.nft.kernel_doors import DEFAULT_LOG_GROUP, kernel_reason
from knockgate.core.spa import MAX_ACTION, SpaKey, decode_secret, make_keyring
from knockgate.errors import ConfigError
from knockgate.model import (
    ALL_FLAGS,
    DEFAULT_SPA_PORT,
    Door,
    Frame,
    OneTimeSource,
    PortSpec,
    TcpFlag,
)

IPNetwork = IPv4Network | IPv6Network
ENGINES = ("kernel", "userspace")
MAX_SEQUENCE = 32
MAX_OPEN_FOR = 7 * 24 * 3600
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_PLACEHOLDERS = frozenset({"ip", "door", "key"})

_DAEMON_KEYS = {
    "interfaces": "network interfaces to watch (default: every non-loopback one)",
    "max_pending": "sources remembered at their first knock, per door",
    "command_timeout": "seconds a command may run before it is killed",
    "hide_knock_ports": "drop packets to knock ports so they look like any closed port",
    "state_dir": "where the SPA replay cache lives (default /var/lib/knockgate)",
    "log_file": "also append the log to this file",
    "syslog": "log to syslog instead of stderr",
    "engine": "default engine of doors: 'kernel' where a door can run there, or 'userspace'",
    "nflog_group": "NFLOG group through which kernel doors report openings",
}
_SPA_KEYS = {
    "port": "UDP port SPA packets are sent to (default 62201)",
    "max_age": "seconds a packet stays valid, the allowed clock skew (default 60)",
    "key": "the [[spa.key]] tables, one per user",
}
_SPA_KEY_KEYS = {
    "name": "the key's name, which the client sends as --key-name",
    "secret": "base64 of 32 bytes, from 'knockgate keygen'",
    "secret_file": "a file holding the base64 secret, readable by root only",
    "open": "ports this key may open, e.g. ['tcp:22']",
    "open_for": "seconds new connections are accepted",
    "actions": "action codes this key may ask for, e.g. { 21 = ['/usr/bin/x', '{ip}'] }",
    "sources": "networks the packet may come from, e.g. ['192.0.2.0/24']",
    "allow_nat": "let the packet name another address than its source (clients behind NAT)",
}
_DOOR_KEYS = {
    "name": "a short identifier, e.g. 'ssh'",
    "sequence": "the knock frames, e.g. ['tcp:7000', 'udp:8000']",
    "timeout": "seconds to complete the sequence, counted from the first knock",
    "open": "ports that open for the knocker, e.g. ['tcp:22']",
    "open_for": "seconds new connections are accepted",
    "command": "argv run on opening, e.g. ['/usr/bin/logger', 'knock from {ip}']",
    "stop_command": "argv run command_delay seconds after command",
    "command_delay": "seconds between command and stop_command",
    "command_6": "like command, run instead of it for IPv6 sources",
    "stop_command_6": "like stop_command, run instead of it for IPv6 sources",
    "target": "only knocks addressed to this address count (knockd's Target)",
    "one_time_sequences": "a knockd One_Time_Sequences file used instead of sequence",
    "tcp_flags": "flags for TCP knocks read from one_time_sequences, e.g. 'syn,!ack'",
    "shell": "run commands written as strings through /bin/sh; the address is $1",
    "engine": "'kernel' (nftables matches the knocks) or 'userspace' (the daemon does)",
    "penalty": "seconds a source that breaks the sequence or scans is ignored (kernel engine)",
}


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    interfaces: tuple[str, ...] = ()
    max_pending: int = DEFAULT_MAX_PENDING
    command_timeout: float = 10.0
    hide_knock_ports: bool = True
    state_dir: str = DEFAULT_STATE_DIR
    log_file: str | None = None
    syslog: bool = False
    engine: str = "kernel"
    nflog_group: int = DEFAULT_LOG_GROUP


@dataclass(frozen=True, slots=True)
class SpaKeyConfig:
    """One SPA user: the key and what it may do."""

    key: SpaKey
    open: tuple[PortSpec, ...]
    open_for: float
    actions: Mapping[int, tuple[str, ...]]
    sources: tuple[IPNetwork, ...]
    allow_nat: bool
    line: int


@dataclass(frozen=True, slots=True)
class SpaConfig:
    port: int
    max_age: float
    keys: tuple[SpaKeyConfig, ...]

    def by_name(self) -> dict[str, SpaKeyConfig]:
        return {entry.key.name: entry for entry in self.keys}


@dataclass(frozen=True, slots=True)
class FwknopConfig:
    """fwknop-compatible SPA: the stanzas of an fwknop access.conf, on a UDP port."""

    access: FwknopAccess
    port: int
    max_age: float

    def protected_ports(self) -> tuple[PortSpec, ...]:
        return tuple(sorted({PortSpec(proto, port) for stanza in self.access.stanzas
                             for proto, port in stanza.open_ports or ()
                             if proto in ("tcp", "udp")}, key=lambda s: (s.proto, s.port)))


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    doors: tuple[Door, ...]
    options: DaemonOptions
    spa: SpaConfig | None = None
    fwknop: FwknopConfig | None = None
    warnings: tuple[str, ...] = ()

    @property
    def hidden_ports(self) -> list[PortSpec]:
        """Knock and SPA ports, dropped so they look like every other closed port."""
        if not self.options.hide_knock_ports:
            return []
        ports = {PortSpec(f.proto, f.port) for d in self.doors for f in d.sequence}
        ports |= {PortSpec("udp", c.port) for c in (self.spa, self.fwknop) if c is not None}
        return sorted(ports)

    @property
    def grant_ports(self) -> list[PortSpec]:
        """Every port an SPA key or fwknop stanza may open: per-port grant sets guard these."""
        ports: set[PortSpec] = set()
        if self.spa is not None:
            ports |= {spec for entry in self.spa.keys for spec in entry.open}
        if self.fwknop is not None:
            ports |= set(self.fwknop.protected_ports())
        return sorted(ports)


class _Lines:
    """Finds the line of a table or key, which tomllib does not report."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"']+)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self._tables: dict[tuple[str, int], int] = {}
        self._keys: dict[tuple[str, int, str], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = header.group(2).strip("\"'")
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else 0
                counts[table] = index
                self._tables.setdefault((table, index), number)
                continue
            key = self._KEY.match(line)
            if key:
                self._keys.setdefault((table, index, key.group(1).strip("\"'")), number)

    def of(self, table: str, index: int = 0, key: str | None = None) -> int | None:
        if key is not None and (table, index, key) in self._keys:
            return self._keys[(table, index, key)]
        if key is not None and not table and (key, 0) in self._tables:
            return self._tables[(key, 0)]  # a top-level key written as a [table] header
        return self._tables.get((table, index))


@dataclass(frozen=True, slots=True)
class _Where:
    path: str
    lines: _Lines
    table: str
    index: int = 0

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        line = self.lines.of(self.table, self.index, key)
        return ConfigError(message, path=self.path, line=line, hint=hint)


def load_config(path: str) -> Config:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path,
                          hint="pass --config with a readable file") from exc
    text = raw.decode("utf-8", errors="replace")
    if looks_like_knockd_conf(text):
        return _parse_knockd_config(text, path)
    return parse_config(text, path)


def _parse_knockd_config(text: str, path: str) -> Config:
    """A knockd.conf is served as the TOML `knockgate import knockd` would write for it."""
    from knockgate.compat.knockd.importer import knockd_to_toml

    converted = knockd_to_toml(parse_knockd_conf(text, path))
    try:
        return parse_config(converted, path)
    except ConfigError as exc:
        raise ConfigError(f"{exc.reason} (in the TOML converted from this knockd.conf; run "
                          f"'knockgate import knockd {path}' to see it)", path=path,
                          hint=exc.hint) from exc


def parse_config(text: str, path: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(exc, path, text) from exc
    lines = _Lines(text)
    top = _Where(path, lines, "")
    _reject_unknown(data, {"daemon": "daemon options", "door": "a [[door]] table",
                           "spa": "single packet authorization",
                           "fwknop": "fwknop-compatible SPA from an access.conf"}, top)
    options = _parse_options(data.get("daemon", {}), _Where(path, lines, "daemon"))
    raw_doors = data.get("door", [])
    if not isinstance(raw_doors, list):
        raise top.error("door", "'door' must be an array of tables", "write [[door]] headers")
    doors = tuple(
        _choose_engine(_parse_door(raw, _Where(path, lines, "door", index)), raw,
                       _Where(path, lines, "door", index), options.engine)
        for index, raw in enumerate(raw_doors)
    )
    spa = _parse_spa(data["spa"], path, lines) if "spa" in data else None
    fwknop = _parse_fwknop(data["fwknop"], _Where(path, lines, "fwknop")) \
        if "fwknop" in data else None
    if not doors and spa is None and fwknop is None:
        raise ConfigError("no door and no SPA key is configured", path=path,
                          hint="add a [[door]] table with name, sequence and open, "
                          "or an [[spa.key]], or [fwknop]")
    _check_doors_together(doors, path)
    if spa is not None:
        _check_spa_port(spa, doors, path, lines)
    warnings = tuple(f"{path}:{door.line}: warning: door {door.name!r} runs its commands "
                     "through /bin/sh (shell = true); argv lists need no shell"
                     for door in doors if door.shell)
    if fwknop is not None:
        warnings += tuple(str(w) for w in fwknop.access.warnings)
        warnings += tuple(f"{fwknop.access.path}:{st.line}: warning: this stanza accepts "
                          "packets without an HMAC (KNOCKGATE_ALLOW_NO_HMAC)"
                          for st in fwknop.access.stanzas if st.allow_no_hmac)
    return Config(path=path, doors=doors, options=options, spa=spa, fwknop=fwknop,
                  warnings=warnings)


_FWKNOP_KEYS = {
    "access": "path of an fwknop access.conf (default /etc/fwknop/access.conf)",
    "port": "UDP port fwknop clients send to (default 62201)",
    "max_age": "seconds a packet stays valid (fwknopd: 120)",
}


def _parse_fwknop(raw: Any, where: _Where) -> FwknopConfig:
    if not isinstance(raw, dict):
        raise where.error(None, "[fwknop] must be a table")
    _reject_unknown(raw, _FWKNOP_KEYS, where)
    path = _absolute_path(raw, "access", FWKNOP_ACCESS_PATH, where)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            access = parse_access_conf(handle.read(), path)
    except OSError as exc:
        raise where.error("access", f"cannot read {path}: {exc.strerror}",
                          "point access at fwknop's access.conf") from exc
    if not access.stanzas:
        raise ConfigError("no SOURCE stanza", path=path, line=1,
                          hint="an access.conf needs at least one SOURCE line")
    for stanza in access.stanzas:
        if not stanza.open_ports:
            raise ConfigError(
                "knockgate needs OPEN_PORTS in every stanza: it guards exactly those ports "
                "(fwknopd relies on your own default-drop firewall instead)", path=path,
                line=stanza.line, hint="add e.g. 'OPEN_PORTS tcp/22' to this stanza")
    return FwknopConfig(
        access=access,
        port=_number(raw, "port", DEFAULT_SPA_PORT, where, 1, 65535, int),
        max_age=_number(raw, "max_age", FWKNOP_MAX_AGE, where, 1, 3600),
    )


def _toml_error(exc: tomllib.TOMLDecodeError, path: str, text: str) -> ConfigError:
    message = str(exc)
    match = re.search(r"\((?:at line (\d+), column \d+|at end of document)\)", message)
    if match is None:
        line, reason = None, message
    else:
        line = int(match.group(1)) if match.group(1) else max(1, len(text.splitlines()))
        reason = message[: match.start()].strip()
    return ConfigError(f"not valid TOML: {reason}", path=path, line=line,
                       hint="check quotes, brackets and commas on that line")


def _reject_unknown(table: Mapping[str, Any], known: Mapping[str, str], where: _Where) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
            raise where.error(key, f"unknown key {key!r}", hint)


def _parse_options(raw: Any, where: _Where) -> DaemonOptions:
    if not isinstance(raw, dict):
        raise where.error(None, "[daemon] must be a table")
    _reject_unknown(raw, _DAEMON_KEYS, where)
    interfaces = raw.get("interfaces", [])
    if not isinstance(interfaces, list) or not all(isinstance(i, str) and i for i in interfaces):
        raise where.error("interfaces", "interfaces must be a list of names", "e.g. ['eth0']")
    return DaemonOptions(
        interfaces=tuple(interfaces),
        max_pending=_number(raw, "max_pending", DEFAULT_MAX_PENDING, where, 1, 10_000_000, int),
        command_timeout=_number(raw, "command_timeout", 10.0, where, 0.1, 3600),
        hide_knock_ports=_boolean(raw, "hide_knock_ports", True, where),
        state_dir=_absolute_path(raw, "state_dir", DEFAULT_STATE_DIR, where),
        log_file=_absolute_path(raw, "log_file", None, where),
        syslog=_boolean(raw, "syslog", False, where),
        engine=_engine_name(raw, where) or "kernel",
        nflog_group=_number(raw, "nflog_group", DEFAULT_LOG_GROUP, where, 1, 65535, int),
    )


def _engine_name(raw: Mapping[str, Any], where: _Where) -> str | None:
    value = raw.get("engine")
    if value is not None and value not in ENGINES:
        raise where.error("engine", f"engine {value!r} is unknown",
                          "use 'kernel' or 'userspace'")
    return value


def _absolute_path(raw: Mapping[str, Any], key: str, default: Any, where: _Where) -> Any:
    value = raw.get(key, default)
    if value is default:
        return value
    if not isinstance(value, str) or not value.startswith("/"):
        raise where.error(key, f"{key} must be an absolute path",
                          f"e.g. {key} = {default or '/var/lib/knockgate/file'!r}")
    return value


def _parse_door(raw: Any, where: _Where) -> Door:
    if not isinstance(raw, dict):
        raise where.error(None, "each door must be a table", "write [[door]]")
    _reject_unknown(raw, _DOOR_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise where.error("name", f"door name {name!r} is missing or invalid",
                          "a letter then up to 31 letters, digits or '_', e.g. 'ssh'")
    one_time = _parse_one_time(raw, where)
    sequence = _door_sequence(raw, where, name, one_time)
    shell = _boolean(raw, "shell", False, where)
    commands = {key: _command(raw, key, where, shell)
                for key in ("command", "stop_command", "command_6", "stop_command_6")}
    opens = tuple(_parse_items(raw, "open", where, parse_port_spec, required=False))
    if not opens and not (commands["command"] or commands["command_6"]):
        raise where.error(None, f"door {name!r} neither opens ports nor runs a command",
                          "add open = ['tcp:22'] or command = [...]")
    return Door(
        name=name,
        sequence=sequence,
        timeout=_number(raw, "timeout", 10.0, where, 0.1, 3600),
        open=opens,
        open_for=_number(raw, "open_for", 30.0, where, 1, MAX_OPEN_FOR),
        command_delay=_number(raw, "command_delay", 10.0, where, 0, MAX_OPEN_FOR),
        line=where.lines.of("door", where.index) or 0,
        target=_parse_target(raw, where),
        one_time=one_time,
        shell=shell,
        command=commands["command"],
        stop_command=commands["stop_command"],
        command_6=commands["command_6"],
        stop_command_6=commands["stop_command_6"],
    )


def _choose_engine(door: Door, raw: Mapping[str, Any], where: _Where, default: str) -> Door:
    """An explicit engine is honoured or refused; the default falls back to userspace with
    the reason kept for `knockgate check`."""
    asked = _engine_name(raw, where) if isinstance(raw, dict) else None
    penalty = _number(raw, "penalty", 0.0, where, 0, MAX_OPEN_FOR)
    reason = kernel_reason(door)
    if asked == "kernel" and reason:
        raise where.error("engine", f"door {door.name!r} cannot run in the kernel: {reason}",
                          "remove engine = 'kernel'")
    engine = asked or default
    if engine == "kernel" and reason:
        engine, why = "userspace", f"the kernel cannot run it: {reason}"
    elif asked:
        why = "engine is set on the door"
    else:
        why = f"the default engine is {default}"
    if penalty and engine != "kernel":
        raise where.error("penalty", f"door {door.name!r}: penalty needs the kernel engine "
                          f"({why})", "remove penalty or let the door run in the kernel")
    return dataclasses.replace(door, engine=engine, engine_reason=why, penalty=penalty)


def _door_sequence(raw: Mapping[str, Any], where: _Where, name: str,
                   one_time: OneTimeSource | None) -> tuple[Frame, ...]:
    if one_time is not None:
        if "sequence" in raw:
            raise where.error("sequence", f"door {name!r} has both sequence and "
                              "one_time_sequences", "keep one of the two")
        return read_one_time(one_time.path, one_time.flags_mask, one_time.flags_value,
                             where)[0]
    sequence = tuple(_parse_items(raw, "sequence", where, parse_frame, required=True))
    if len(sequence) > MAX_SEQUENCE:
        raise where.error("sequence", f"door {name!r}: sequence has {len(sequence)} knocks",
                          f"use at most {MAX_SEQUENCE}")
    return sequence


def _parse_one_time(raw: Mapping[str, Any], where: _Where) -> OneTimeSource | None:
    path = _absolute_path(raw, "one_time_sequences", None, where)
    flags_text = raw.get("tcp_flags")
    if path is None:
        if flags_text is not None:
            raise where.error("tcp_flags", "tcp_flags only applies to one_time_sequences",
                              "write the flags into each frame, e.g. 'tcp:7000:syn,!ack'")
        return None
    if flags_text is None:
        mask, value = ALL_FLAGS, int(TcpFlag.SYN)
    elif isinstance(flags_text, str):
        try:
            mask, value = parse_flags(flags_text)
        except ConfigError as exc:
            raise where.error("tcp_flags", exc.reason, exc.hint) from exc
    else:
        raise where.error("tcp_flags", "tcp_flags must be a string", "e.g. 'syn,!ack'")
    offset = read_one_time(path, mask, value, where)[1]
    return OneTimeSource(path, mask, value, offset)


def read_one_time(path: str, mask: int, value: int, where: _Where | None = None
                  ) -> tuple[tuple[Frame, ...], int | None]:
    """The file's next unused sequence and where its line starts; ((), None) when used up."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except OSError as exc:
        message = f"cannot read one_time_sequences {path}: {exc.strerror}"
        if where is None:
            raise ConfigError(message, path=path) from exc
        raise where.error("one_time_sequences", message,
                          "one sequence per line, e.g. 7000,8000:udp,9000") from exc
    found = next_one_time_sequence(text)
    if found is None:
        return (), None
    frames = tuple(Frame("udp", knock.port) if knock.protocol == "udp"
                   else Frame("tcp", knock.port, mask, value) for knock in found.sequence)
    return frames, found.offset


def _parse_target(raw: Mapping[str, Any], where: _Where) -> IPv4Address | IPv6Address | None:
    value = raw.get("target")
    if value is None:
        return None
    try:
        return ip_address(value) if isinstance(value, str) else ip_address("bad")
    except ValueError as exc:
        raise where.error("target", f"target {value!r} is not an IP address",
                          "e.g. target = '192.0.2.1'") from exc


def _command(raw: Mapping[str, Any], key: str, where: _Where, shell: bool) -> tuple[str, ...]:
    value = raw.get(key)
    if shell and isinstance(value, str):
        if not value.strip():
            raise where.error(key, f"{key} is empty")
        # /bin/sh gets the address and door as $1 and $2, never pasted into the script.
        return ("/bin/sh", "-c", value.replace("{", "{{").replace("}", "}}"), "knockgate",
                "{ip}", "{door}")
    return _argv(raw, key, where)


def _parse_items(raw: Mapping[str, Any], key: str, where: _Where,
                 parse: Callable[[str], Any], required: bool,
                 keys: Mapping[str, str] = _DOOR_KEYS) -> list[Any]:
    items = raw.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise where.error(key, f"{key} must be a list of strings", keys[key])
    if required and not items:
        raise where.error(key, f"{key} is missing or empty", keys[key])
    parsed = []
    for item in items:
        try:
            parsed.append(parse(item))
        except ConfigError as exc:
            raise where.error(key, exc.reason, exc.hint) from exc
    return parsed


def _argv(raw: Mapping[str, Any], key: str, where: _Where) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        raise where.error(key, f"{key} is a string; commands are argv lists, never run by a shell",
                          f"write {key} = {value.split()!r}, or set shell = true to run it "
                          "through /bin/sh with the address as $1")
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        raise where.error(key, f"{key} must be a list of non-empty strings",
                          "e.g. ['/usr/bin/logger', 'opened for {ip}']")
    for arg in value:
        _check_placeholders(arg, key, where)
    if value and not value[0].startswith("/"):
        raise where.error(key, f"{key}[0] {value[0]!r} is not an absolute path",
                          "name the program by its full path, e.g. '/usr/bin/logger'")
    return tuple(value)


def _check_placeholders(arg: str, key: str, where: _Where) -> None:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(arg) if field is not None]
    except ValueError as exc:
        raise where.error(key, f"{key}: {arg!r}: {exc}", "write '{{' for a literal brace") from exc
    for field in fields:
        if field not in _PLACEHOLDERS:
            raise where.error(key, f"{key}: unknown placeholder {{{field}}} in {arg!r}",
                              "use {ip}, {door} or {key}; write '{{' for a literal brace")


def _number(raw: Mapping[str, Any], key: str, default: float, where: _Where,
            low: float, high: float, kind: type = float) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.error(key, f"{key} must be a number", f"e.g. {key} = {default}")
    if kind is int and not isinstance(value, int):
        raise where.error(key, f"{key} must be a whole number", f"e.g. {key} = {default}")
    if not low <= value <= high:
        raise where.error(key, f"{key} = {value} is out of range", f"use {low} to {high}")
    return kind(value)


def _boolean(raw: Mapping[str, Any], key: str, default: bool, where: _Where) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise where.error(key, f"{key} must be true or false")
    return value


def _check_doors_together(doors: tuple[Door, ...], path: str) -> None:
    seen: dict[str, Door] = {}
    for door in doors:
        if door.name in seen:
            raise ConfigError(f"door {door.name!r} is defined twice", path=path, line=door.line,
                              hint=f"the first is on line {seen[door.name].line}; rename one")
        seen[door.name] = door
    for door in doors:
        for other in doors:
            if other is not door and door.sequence and _is_prefix(door.sequence,
                                                                  other.sequence):
                raise ConfigError(
                    f"door {door.name!r}: its sequence is a prefix of door {other.name!r}'s",
                    path=path, line=door.line,
                    hint=f"knocking {other.name!r} would also open {door.name!r}; "
                    "make the sequences differ",
                )
    _check_ports_disjoint(doors, path)


def _is_prefix(short: tuple[Frame, ...], long: tuple[Frame, ...]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def _check_ports_disjoint(doors: tuple[Door, ...], path: str) -> None:
    knocked = {(f.proto, f.port): door for door in doors for f in door.sequence}
    for door in doors:
        for spec in door.open:
            owner = knocked.get((spec.proto, spec.port))
            if owner is not None:
                raise ConfigError(
                    f"door {door.name!r} opens {spec}, which door {owner.name!r} knocks on",
                    path=path, line=door.line, hint="a knock port cannot also be a protected port",
                )


def _parse_spa(raw: Any, path: str, lines: _Lines) -> SpaConfig:
    where = _Where(path, lines, "spa")
    if not isinstance(raw, dict):
        raise where.error(None, "[spa] must be a table")
    _reject_unknown(raw, _SPA_KEYS, where)
    raw_keys = raw.get("key", [])
    if not isinstance(raw_keys, list) or not raw_keys:
        raise where.error("key", "[spa] has no [[spa.key]]", "add one per user, with name, "
                          "secret_file and open")
    keys = tuple(_parse_spa_key(entry, _Where(path, lines, "spa.key", index))
                 for index, entry in enumerate(raw_keys))
    try:
        make_keyring(entry.key for entry in keys)
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=path, line=lines.of("spa.key", 0), hint=exc.hint) \
            from exc
    return SpaConfig(
        port=_number(raw, "port", DEFAULT_SPA_PORT, where, 1, 65535, int),
        max_age=_number(raw, "max_age", 60.0, where, 1, 3600),
        keys=keys,
    )


def _parse_spa_key(raw: Any, where: _Where) -> SpaKeyConfig:
    if not isinstance(raw, dict):
        raise where.error(None, "each SPA key must be a table", "write [[spa.key]]")
    _reject_unknown(raw, _SPA_KEY_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise where.error("name", f"SPA key name {name!r} is missing or invalid",
                          "a letter then up to 31 letters, digits or '_', e.g. 'alice'")
    opens = tuple(_parse_items(raw, "open", where, parse_port_spec, required=False,
                               keys=_SPA_KEY_KEYS))
    actions = _parse_actions(raw, where)
    if not opens and not actions:
        raise where.error(None, f"SPA key {name!r} may neither open ports nor run actions",
                          "add open = ['tcp:22'] or actions = { 21 = [...] }")
    try:
        key = SpaKey(name, _read_secret(raw, where))
    except ValueError as exc:
        raise where.error("secret", str(exc), "generate one with 'knockgate keygen'") from exc
    return SpaKeyConfig(
        key=key, open=opens,
        open_for=_number(raw, "open_for", 30.0, where, 1, MAX_OPEN_FOR),
        actions=actions, sources=_parse_sources(raw, where),
        allow_nat=_boolean(raw, "allow_nat", False, where),
        line=where.lines.of(where.table, where.index) or 0,
    )


def _read_secret(raw: Mapping[str, Any], where: _Where) -> bytes:
    if ("secret" in raw) == ("secret_file" in raw):
        raise where.error(None, "give exactly one of secret and secret_file",
                          "secret_file = '/etc/knockgate/NAME.key' keeps it out of this file")
    if "secret" in raw:
        text, key = raw["secret"], "secret"
    else:
        key = "secret_file"
        text = _read_secret_file(raw["secret_file"], where)
    if not isinstance(text, str):
        raise where.error(key, f"{key} must be a string")
    try:
        return decode_secret(text)
    except ConfigError as exc:
        raise where.error(key, exc.reason, exc.hint) from exc


def _read_secret_file(file: Any, where: _Where) -> str:
    if not isinstance(file, str) or not file.startswith("/"):
        raise where.error("secret_file", "secret_file must be an absolute path")
    try:
        with open(file, encoding="ascii") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("secret_file", f"cannot read secret_file {file}: {exc}",
                          "the file holds one base64 line from 'knockgate keygen'") from exc
    if mode & 0o077:
        raise where.error("secret_file", f"secret_file {file} is readable or writable by others "
                          f"(mode {stat.filemode(mode)})", f"chmod 600 {file}")
    return text


def _parse_actions(raw: Mapping[str, Any], where: _Where) -> dict[int, tuple[str, ...]]:
    table = raw.get("actions", {})
    if not isinstance(table, dict):
        raise where.error("actions", "actions must be a table", _SPA_KEY_KEYS["actions"])
    actions: dict[int, tuple[str, ...]] = {}
    for code_text, argv in table.items():
        if not _is_number(code_text) or not 1 <= int(code_text) <= MAX_ACTION:
            raise where.error("actions", f"action code {code_text!r} is not 1..{MAX_ACTION}",
                              _SPA_KEY_KEYS["actions"])
        actions[int(code_text)] = _argv({"actions": argv}, "actions", where)
    return actions


def _parse_sources(raw: Mapping[str, Any], where: _Where) -> tuple[IPNetwork, ...]:
    items = raw.get("sources", [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise where.error("sources", "sources must be a list of networks",
                          _SPA_KEY_KEYS["sources"])
    try:
        return tuple(ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise where.error("sources", str(exc), _SPA_KEY_KEYS["sources"]) from exc


def _check_spa_port(spa: SpaConfig, doors: tuple[Door, ...], path: str, lines: _Lines) -> None:
    used = {(f.proto, f.port) for door in doors for f in door.sequence}
    used |= {(s.proto, s.port) for door in doors for s in door.open}
    used |= {(s.proto, s.port) for entry in spa.keys for s in entry.open}
    if ("udp", spa.port) in used:  # sharing with [fwknop] is fine: the formats differ
        raise ConfigError(f"the SPA port udp:{spa.port} is also a knock or protected port",
                          path=path, line=lines.of("spa", 0, "port") or lines.of("spa"),
                          hint="choose another [spa] port")


def describe(config: Config) -> list[str]:
    """Human-readable summary for `knockgate check`."""
    lines = []
    for door in config.doors:
        knocks = " ".join(format_frame(f) for f in door.sequence) or "(one-time sequences used up)"
        opens = ", ".join(str(p) for p in door.open) or "nothing"
        lines.append(f"door {door.name} (line {door.line}): knock {knocks} within "
                     f"{door.timeout:g}s -> open {opens} for {door.open_for:g}s")
        lines.append(f"  engine {door.engine}: {door.engine_reason}"
                     + (f"; penalty {door.penalty:g}s" if door.penalty else ""))
        if door.engine == "userspace":
            lines.append(f"  {first_stage_summary(door)}")
        if door.command:
            lines.append(f"  runs {list(door.command)}")
        if door.stop_command:
            lines.append(f"  then after {door.command_delay:g}s {list(door.stop_command)}")
    if config.fwknop is not None:
        fw = config.fwknop
        lines.append(f"fwknop SPA on udp:{fw.port} from {fw.access.path}, packets valid for "
                     f"{fw.max_age:g}s")
        for number, stanza in enumerate(fw.access.stanzas, start=1):
            ports = ", ".join(f"{proto}:{port}" for proto, port in stanza.open_ports or ())
            hmac = stanza.hmac_type if stanza.hmac_key else "NONE"
            lines.append(f"  stanza {number} (line {stanza.line}): SOURCE "
                         f"{', '.join(map(str, stanza.sources))} may open {ports} for "
                         f"{stanza.fw_access_timeout}s (client may ask up to "
                         f"{stanza.max_fw_timeout}s), HMAC {hmac}"
                         + (", commands allowed" if stanza.enable_cmd_exec else ""))
    if config.spa is not None:
        lines.append(f"spa on udp:{config.spa.port}, packets valid for {config.spa.max_age:g}s")
        for entry in config.spa.keys:
            opens = ", ".join(str(p) for p in entry.open) or "nothing"
            lines.append(f"  key {entry.key.name} (line {entry.line}): may open {opens} for "
                         f"{entry.open_for:g}s" + (f", actions {sorted(entry.actions)}"
                                                   if entry.actions else "")
                         + (f", from {', '.join(map(str, entry.sources))}" if entry.sources
                            else "") + (", NAT allowed" if entry.allow_nat else ""))
    return lines


def protected_ports(doors: tuple[Door, ...]) -> frozenset[PortSpec]:
    return frozenset(spec for door in doors for spec in door.open)
