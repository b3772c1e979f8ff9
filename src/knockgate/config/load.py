"""TOML configuration → a validated, frozen Config. Every error names FILE:LINE: and a fix.

Each table is read against its options in schema.py: an unknown key is refused with the closest
known one, an absent key takes the option's default, a number must lie in the option's range.
"""

import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, NamedTuple

from knockgate.compat.knockd.conf import KnockdConfig, looks_like_knockd_conf, parse_knockd_conf
from knockgate.config.checks import check_doors_together, check_spa_port, same_sequence_warnings
from knockgate.config.files import (
    check_state_dir,
    check_trusted,
    read_access_conf,
    read_one_time,
    read_secret_file,
)
from knockgate.config.lines import Lines, Where
from knockgate.config.schema import (
    DAEMON,
    DOOR,
    FWKNOP,
    SPA,
    SPA_KEY,
    TOP,
    Config,
    DaemonOptions,
    FwknopConfig,
    Option,
    SpaConfig,
)
from knockgate.core.kinds import parse_frame
from knockgate.core.kinds.ports import is_number, parse_flags, parse_port_spec
from knockgate.core.nft.grants import CLOSED_PORT_SETTINGS
from knockgate.core.nft.kernel_doors import kernel_reason
from knockgate.errors import ConfigError
from knockgate.model import ENGINES, Door, Frame, IPNetwork, OneTimeSource, SpaKeyConfig

MAX_SEQUENCE = 32
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_NAME_HINT = "a letter then up to 31 letters, digits or '_', e.g. "
_PLACEHOLDERS = frozenset({"ip", "door", "key"})
_COMMANDS = ("command", "stop_command", "command_6", "stop_command_6")
# Each placeholder at its longest: an IPv6 address in full, a name of 32 characters.
_LONGEST = {"ip": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "door": "x" * 32, "key": "x" * 32}
_POINTER = 8  # execve(2) counts one pointer per argument and per environment string


def load_config(path: str) -> Config:
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path,
                          hint="pass --config with a readable file") from exc
    check_trusted("the config, which names commands run as root,", path, status)
    text = raw.decode("utf-8", errors="replace")
    if looks_like_knockd_conf(text):
        return _parse_knockd_config(text, path)
    return parse_config(text, path, status)


def _parse_knockd_config(text: str, path: str) -> Config:
    """A knockd.conf is served as the TOML `knockgate import knockd` would write for it. Every
    line an error, a warning or a door names is the knockd.conf line it comes from."""
    from knockgate.compat.knockd.importer import convert_knockd

    knockd = parse_knockd_conf(text, path)
    converted = convert_knockd(knockd)
    try:
        config = parse_config(converted.text, path, same_sequence_fires_both=True)
    except ConfigError as exc:
        ours = exc.path == path  # another file's error keeps its own line
        raise ConfigError(f"{exc.reason} (in the TOML converted from this knockd.conf; run "
                          f"'knockgate import knockd {path}' to see it; the line is this "
                          "file's)", path=exc.path,
                          line=converted.origin(exc.line) if ours else exc.line,
                          hint=exc.hint) from exc
    cited = re.compile(rf"{re.escape(path)}:(\d+): ")

    def in_knockd_lines(warning: str) -> str:
        found = cited.match(warning)
        if found is None:
            return warning
        line = converted.origin(int(found.group(1)))
        return (f"{path}:{line}: " if line else f"{path}: ") + warning[found.end():]

    doors = tuple(door._replace(line=source.line)
                  for door, source in zip(config.doors, knockd.doors, strict=True))
    warnings = (*knockd.warnings, *map(in_knockd_lines, config.warnings),
                *same_sequence_warnings(doors, path), *_log_file_warning(knockd, path))
    return config._replace(doors=doors, warnings=warnings)


def _log_file_warning(knockd: KnockdConfig, path: str) -> tuple[str, ...]:
    """knockd warns and runs when its LogFile cannot be opened; so does `serve` (logging to
    stderr or syslog only), and `check` says so beforehand. Probed without creating it."""
    log_file = knockd.options.log_file
    if log_file is None:
        return ()
    probe, mode = ((log_file, os.W_OK) if os.path.exists(log_file) else
                   (os.path.dirname(os.path.abspath(log_file)), os.W_OK | os.X_OK))
    if os.path.isdir(log_file) or not os.access(probe, mode):
        line = dict(knockd.options.lines).get("LOGFILE")
        return (f"{path}:{line}: warning: cannot open LogFile {log_file}; knockgate runs "
                "and logs to stderr (or syslog with UseSyslog) only, as knockd does",)
    return ()


def parse_config(text: str, path: str = "<config>", status: os.stat_result | None = None,
                 same_sequence_fires_both: bool = False) -> Config:
    """``status``: the file's, when ``text`` was read from ``path``, so that an inline secret
    in a file others may read is refused. ``same_sequence_fires_both``: for a served
    knockd.conf, doors with equal sequences are accepted (knockd opens them all)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(exc, path, text) from exc
    lines = Lines(text)
    top = Where(path, lines, "")
    _reject_unknown(data, TOP, top)
    options = _parse_options(data.get("daemon", {}), Where(path, lines, "daemon"))
    raw_doors = data.get("door", [])
    if not isinstance(raw_doors, list):
        raise top.error("door", "'door' must be an array of tables", "write [[door]] headers")
    doors = tuple(_parse_door(raw, Where(path, lines, "door", index), options.engine)
                  for index, raw in enumerate(raw_doors))
    spa_where = Where(path, lines, "spa")
    spa = _parse_spa(data["spa"], spa_where, status) if "spa" in data else None
    fwknop = _parse_fwknop(data["fwknop"], Where(path, lines, "fwknop")) \
        if "fwknop" in data else None
    if spa is not None or fwknop is not None:  # only they open the replay cache
        check_state_dir(options.state_dir, Where(path, lines, "daemon"))
    if not doors and spa is None and fwknop is None:
        raise ConfigError("no door and no SPA key is configured", path=path,
                          hint="add a [[door]] table with name, sequence and open, "
                          "or an [[spa.key]], or [fwknop]")
    check_doors_together(doors, path, same_sequence_fires_both)
    if spa is not None:
        check_spa_port(spa, doors, spa_where)
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


def _reject_unknown(raw: Mapping[str, Any], options: Mapping[str, Option], where: Where) -> None:
    for key in raw:
        if key not in options:
            import difflib  # only for this error: difflib (with heapq) held ~0.4 MB of the daemon

            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(options)
            raise where.error(key, f"unknown key {key!r}", hint)


class _Table(NamedTuple):
    """One TOML table being read: its values, its options (schema.py) and where it is written."""

    raw: Mapping[str, Any]
    options: Mapping[str, Option]
    where: Where

    @classmethod
    def read(cls, raw: Any, options: Mapping[str, Option], where: Where, not_a_table: str,
             hint: str | None = None) -> "_Table":
        """``raw`` checked to be a table of known keys; ``not_a_table`` is the error if not."""
        if not isinstance(raw, dict):
            raise where.error(None, not_a_table, hint)
        _reject_unknown(raw, options, where)
        return cls(raw, options, where)

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        return self.where.error(key, message, hint)

    def number(self, key: str) -> Any:
        option = self.options[key]
        value = self.raw.get(key, option.default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"{key} must be a number", f"e.g. {key} = {option.default}")
        if option.whole and not isinstance(value, int):
            raise self.error(key, f"{key} must be a whole number",
                             f"e.g. {key} = {option.default}")
        if not option.low <= value <= option.high:
            raise self.error(key, f"{key} = {value} is out of range",
                             f"use {option.low} to {option.high}")
        return int(value) if option.whole else float(value)

    def boolean(self, key: str) -> bool:
        value = self.raw.get(key, self.options[key].default)
        if not isinstance(value, bool):
            raise self.error(key, f"{key} must be true or false",
                             f"e.g. {key} = {str(self.options[key].default).lower()}")
        return value

    def absolute_path(self, key: str) -> Any:
        default = self.options[key].default
        value = self.raw.get(key, default)
        if value is default:
            return value
        if not isinstance(value, str) or not value.startswith("/"):
            raise self.error(key, f"{key} must be an absolute path",
                             f"e.g. {key} = {default or '/var/lib/knockgate/file'!r}")
        return value

    def items(self, key: str, parse: Callable[[str], Any], required: bool = False) -> list[Any]:
        """A list of strings, each parsed; a parse error is reported at this key."""
        items = self.raw.get(key, [])
        hint = self.options[key].help
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise self.error(key, f"{key} must be a list of strings", hint)
        if required and not items:
            raise self.error(key, f"{key} is missing or empty", hint)
        parsed = []
        for item in items:
            try:
                parsed.append(parse(item))
            except ConfigError as exc:
                raise self.error(key, exc.reason, exc.hint) from exc
        return parsed

    def name(self, what: str, example: str) -> str:
        name = self.raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.error("name", f"{what} name {name!r} is missing or invalid",
                             f"{_NAME_HINT}{example!r}")
        return name

    def engine(self) -> str | None:
        value = self.raw.get("engine")
        if value is not None and value not in ENGINES:
            raise self.error("engine", f"engine {value!r} is unknown",
                             "use 'kernel' or 'userspace'")
        return value


def _parse_options(raw: Any, where: Where) -> DaemonOptions:
    table = _Table.read(raw, DAEMON, where, "[daemon] must be a table",
                        "write a [daemon] header with the options below it")
    interfaces = raw.get("interfaces", [])
    if not isinstance(interfaces, list) or not all(isinstance(i, str) and i for i in interfaces):
        raise table.error("interfaces", "interfaces must be a list of names", "e.g. ['eth0']")
    return DaemonOptions(
        interfaces=tuple(interfaces),
        max_pending=table.number("max_pending"),
        command_timeout=table.number("command_timeout"),
        hide_knock_ports=table.boolean("hide_knock_ports"),
        closed_ports=_closed_ports(table),
        state_dir=table.absolute_path("state_dir"),
        log_file=table.absolute_path("log_file"),
        syslog=table.boolean("syslog"),
        engine=table.engine() or DAEMON["engine"].default,
        nflog_group=table.number("nflog_group"),
    )


def _closed_ports(table: _Table) -> str:
    value = table.raw.get("closed_ports", DAEMON["closed_ports"].default)
    if value not in CLOSED_PORT_SETTINGS:
        raise table.error("closed_ports", f"closed_ports {value!r} is unknown",
                          "use 'auto', 'reject' or 'drop'")
    return str(value)


def _parse_door(raw: Any, where: Where, default_engine: str) -> Door:
    table = _Table.read(raw, DOOR, where, "each door must be a table", "write [[door]]")
    name = table.name("door", "ssh")
    one_time = _parse_one_time(table)
    sequence = _door_sequence(table, name, one_time)
    shell = table.boolean("shell")
    commands = {key: _command(table, key, shell) for key in _COMMANDS}
    opens = tuple(table.items("open", parse_port_spec))
    if not opens and not (commands["command"] or commands["command_6"]):
        raise table.error(None, f"door {name!r} neither opens ports nor runs a command",
                          "add open = ['tcp:22'] or command = [...]")
    door = Door(
        name=name,
        sequence=sequence,
        timeout=table.number("timeout"),
        open=opens,
        open_for=table.number("open_for"),
        command_delay=table.number("command_delay"),
        line=where.line() or 0,
        target=_parse_target(table),
        one_time=one_time,
        shell=shell,
        command=commands["command"],
        stop_command=commands["stop_command"],
        command_6=commands["command_6"],
        stop_command_6=commands["stop_command_6"],
    )
    return _choose_engine(door, table, default_engine)


def _choose_engine(door: Door, table: _Table, default: str) -> Door:
    """An explicit engine is honoured or refused; the default falls back to userspace with
    the reason kept for `knockgate check`."""
    asked = table.engine()
    penalty = table.number("penalty")
    reason = kernel_reason(door)
    if asked == "kernel" and reason:
        raise table.error("engine", f"door {door.name!r} cannot run in the kernel: {reason}",
                          "remove engine = 'kernel'")
    engine = asked or default
    if engine == "kernel" and reason:
        engine, why = "userspace", f"the kernel cannot run it: {reason}"
    elif asked:
        why = "engine is set on the door"
    else:
        why = f"the default engine is {default}"
    if penalty and engine != "kernel":
        raise table.error("penalty", f"door {door.name!r}: penalty needs the kernel engine "
                          f"({why})", "remove penalty or let the door run in the kernel")
    return door._replace(engine=engine, engine_reason=why, penalty=penalty)


def _door_sequence(table: _Table, name: str, one_time: OneTimeSource | None
                   ) -> tuple[Frame, ...]:
    if one_time is not None:
        if "sequence" in table.raw:
            raise table.error("sequence", f"door {name!r} has both sequence and "
                              "one_time_sequences", "keep one of the two")
        return read_one_time(one_time.path, one_time.flags_mask, one_time.flags_value,
                             table.where)[0]
    sequence = tuple(table.items("sequence", parse_frame, required=True))
    if len(sequence) > MAX_SEQUENCE:
        raise table.error("sequence", f"door {name!r}: sequence has {len(sequence)} knocks",
                          f"use at most {MAX_SEQUENCE}")
    return sequence


def _parse_one_time(table: _Table) -> OneTimeSource | None:
    path = table.absolute_path("one_time_sequences")
    if path is None:
        if "tcp_flags" in table.raw:
            raise table.error("tcp_flags", "tcp_flags only applies to one_time_sequences",
                              "write the flags into each frame, e.g. 'tcp:7000:syn,!ack'")
        return None
    flags_text = table.raw.get("tcp_flags", DOOR["tcp_flags"].default)
    if not isinstance(flags_text, str):
        raise table.error("tcp_flags", "tcp_flags must be a string", "e.g. 'syn,!ack'")
    try:
        mask, value = parse_flags(flags_text)
    except ConfigError as exc:
        raise table.error("tcp_flags", exc.reason, exc.hint) from exc
    offset = read_one_time(path, mask, value, table.where)[1]
    return OneTimeSource(path, mask, value, offset)


def _parse_target(table: _Table) -> IPv4Address | IPv6Address | None:
    value = table.raw.get("target")
    if value is None:
        return None
    try:
        return ip_address(value) if isinstance(value, str) else ip_address("bad")
    except ValueError as exc:
        raise table.error("target", f"target {value!r} is not an IP address",
                          "e.g. target = '192.0.2.1'") from exc


def _command(table: _Table, key: str, shell: bool) -> tuple[str, ...]:
    value = table.raw.get(key, [])
    if shell and isinstance(value, str):
        if not value.strip():
            raise table.error(key, f"{key} is empty", "write the command, or leave the key out")
        # /bin/sh gets the address and door as $1 and $2, never pasted into the script.
        argv = ("/bin/sh", "-c", value.replace("{", "{{").replace("}", "}}"), "knockgate",
                "{ip}", "{door}")
        _check_exec_size(argv, key, table.where)
        return argv
    return _argv(value, key, table.where)


def _argv(value: Any, key: str, where: Where) -> tuple[str, ...]:
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
    _check_exec_size(value, key, where)
    return tuple(value)


def exec_size(argv: Sequence[str], environment: Sequence[str]) -> tuple[int, int]:
    """What execve(2) counts against ARG_MAX for ``argv`` (placeholders at their longest) run
    with ``environment`` ("NAME=value" strings): every string with its NUL and a pointer to
    it, and the program's path (argv[0]) once more with its NUL, as the kernel copies it too;
    and the longest single argument with its NUL, which the kernel bounds on its own."""
    expanded = [arg.format_map(_LONGEST).encode() for arg in argv]
    strings = [*expanded, *(entry.encode() for entry in environment)]
    program = len(expanded[0]) + 1 if expanded else 0
    return (program + sum(len(s) + 1 + _POINTER for s in strings),
            max((len(arg) + 1 for arg in expanded), default=0))


def _check_exec_size(argv: Sequence[str], key: str, where: Where) -> None:
    """Refuse a command the kernel would refuse (E2BIG) whatever address it runs for. It runs
    with the daemon's environment, which counts too: this process's stands in for it."""
    if not argv:  # most doors leave most commands out; the environment costs ~10 us to read
        return
    environment = [f"{name}={value}" for name, value in os.environ.items()]
    total, longest = exec_size(argv, environment)
    hint = "shorten it, or move the long part into a script the command runs"
    longest_allowed = 32 * os.sysconf("SC_PAGE_SIZE")  # the kernel's MAX_ARG_STRLEN
    if longest > longest_allowed:
        raise where.error(key, f"{key}: an argument is {longest} bytes with its placeholders at "
                          f"their longest; the kernel takes at most {longest_allowed} "
                          "(MAX_ARG_STRLEN)", hint)
    limit = os.sysconf("SC_ARG_MAX")
    if total > limit:
        raise where.error(key, f"{key}: the command and the environment are {total} bytes with "
                          f"the placeholders at their longest; the kernel takes at most {limit} "
                          "(ARG_MAX)", hint)


def _check_placeholders(arg: str, key: str, where: Where) -> None:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(arg) if field is not None]
    except ValueError as exc:
        raise where.error(key, f"{key}: {arg!r}: {exc}", "write '{{' for a literal brace") from exc
    for field in fields:
        if field not in _PLACEHOLDERS:
            raise where.error(key, f"{key}: unknown placeholder {{{field}}} in {arg!r}",
                              "use {ip}, {door} or {key}; write '{{' for a literal brace")


def _parse_spa(raw: Any, where: Where, status: os.stat_result | None) -> SpaConfig:
    from knockgate.core.spa import make_keyring  # SPA crypto only for SPA configs

    table = _Table.read(raw, SPA, where, "[spa] must be a table",
                        "write a [spa] header, then [[spa.key]] tables")
    raw_keys = raw.get("key", [])
    if not isinstance(raw_keys, list) or not raw_keys:
        raise table.error("key", "[spa] has no [[spa.key]]", "add one per user, with name, "
                          "secret_file and open")
    keys = tuple(_parse_spa_key(entry, Where(where.path, where.lines, "spa.key", index),
                                status) for index, entry in enumerate(raw_keys))
    try:
        make_keyring(entry.key for entry in keys)
    except ConfigError as exc:  # a name given twice: reported at the first key
        raise Where(where.path, where.lines, "spa.key").error(None, exc.reason, exc.hint) \
            from exc
    return SpaConfig(port=table.number("port"), max_age=table.number("max_age"), keys=keys)


def _parse_spa_key(raw: Any, where: Where, status: os.stat_result | None) -> SpaKeyConfig:
    from knockgate.core.spa import SpaKey

    table = _Table.read(raw, SPA_KEY, where, "each SPA key must be a table",
                        "write [[spa.key]]")
    name = table.name("SPA key", "alice")
    opens = tuple(table.items("open", parse_port_spec))
    actions = _parse_actions(table)
    if not opens and not actions:
        raise table.error(None, f"SPA key {name!r} may neither open ports nor run actions",
                          "add open = ['tcp:22'] or actions = { 21 = [...] }")
    # _NAME and decode_secret have checked what SpaKey checks: it raises nothing here.
    key = SpaKey(name, _read_secret(table, status))
    return SpaKeyConfig(
        key=key, open=opens, open_for=table.number("open_for"), actions=actions,
        sources=_parse_sources(table), allow_nat=table.boolean("allow_nat"),
        line=where.line() or 0,
    )


def _read_secret(table: _Table, status: os.stat_result | None) -> bytes:
    from knockgate.core.spa import decode_secret

    if ("secret" in table.raw) == ("secret_file" in table.raw):
        raise table.error(None, "give exactly one of secret and secret_file",
                          "secret_file = '/etc/knockgate/NAME.key' keeps it out of this file")
    if "secret_file" in table.raw:
        key, text = "secret_file", read_secret_file(table.raw["secret_file"], table.where)
    else:
        key, text = "secret", table.raw["secret"]
        if status is not None:
            path = table.where.path
            check_trusted(f"{path}, which holds an inline secret,", path, status, secret=True,
                          where=table.where, key=key)
        if not isinstance(text, str):
            raise table.error(key, "secret must be a string",
                              "write the base64 line from 'knockgate keygen' in quotes")
    try:
        return decode_secret(text)
    except ConfigError as exc:
        raise table.error(key, exc.reason, exc.hint) from exc


def _parse_actions(table: _Table) -> dict[int, tuple[str, ...]]:
    from knockgate.core.spa import MAX_ACTION

    actions_table = table.raw.get("actions", {})
    hint = table.options["actions"].help
    if not isinstance(actions_table, dict):
        raise table.error("actions", "actions must be a table", hint)
    actions: dict[int, tuple[str, ...]] = {}
    for code_text, argv in actions_table.items():
        if not is_number(code_text) or not 1 <= int(code_text) <= MAX_ACTION:
            raise table.error("actions", f"action code {code_text!r} is not 1..{MAX_ACTION}",
                              hint)
        actions[int(code_text)] = _argv(argv, "actions", table.where)
    return actions


def _parse_sources(table: _Table) -> tuple[IPNetwork, ...]:
    items = table.raw.get("sources", [])
    hint = table.options["sources"].help
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise table.error("sources", "sources must be a list of networks", hint)
    try:
        return tuple(ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise table.error("sources", str(exc), hint) from exc


def _parse_fwknop(raw: Any, where: Where) -> FwknopConfig:
    table = _Table.read(raw, FWKNOP, where, "[fwknop] must be a table",
                        "write a [fwknop] header with access = '/etc/fwknop/access.conf'")
    return FwknopConfig(
        access=read_access_conf(table.absolute_path("access"), where),
        port=table.number("port"),
        max_age=table.number("max_age"),
    )
