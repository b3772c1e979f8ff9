"""knockd's ``knockd.conf`` → frozen values. Pure: the caller reads the files.

The grammar is knockd 0.8's (checked against Debian's knockd 0.8): lines are trimmed; blank
lines and lines starting with ``#`` are skipped; ``[name]`` opens a section; ``[options]``
(lower case, as knockd compares it) holds UseSyslog, LogFile, PidFile, Interface; any other
section is a door. Directives are ``Key = value`` with case-insensitive keys, except a bare
``UseSyslog``, which knockd accepts in any section. An unknown key is an error, as in knockd.

Door keys: Sequence (``port[:tcp|udp]``, comma separated, at most 32), One_Time_Sequences (a
file; only its path is kept), Seq_Timeout / Timeout (default 25), TCPFlags (``syn,!ack``),
Start_Command / Command, Start_Command_6 / Command_6, Stop_Command, Stop_Command_6,
Cmd_Timeout (default 10), Target. knockd 0.8 has no per-door Interface; it is refused with a
hint to move it to ``[options]``.

Stricter than knockd, on purpose: a port that is not a number 1-65535 (knockd's ``atoi`` turns
``abc`` into port 0), a key given twice in a section (knockd keeps the last one silently), and a
door with both Sequence and One_Time_Sequences (knockd uses whichever comes last) are errors.

As tolerant as knockd, with a warning: a second ``[options]`` section continues the first (knockd
has one set of options), and a key it sets again replaces the earlier value, as in knockd.

Commands are kept as the raw shell strings knockd would hand to ``/bin/sh`` with ``%IP%`` still
in them; how to run them is the integrator's decision.

:func:`next_one_time_sequence` reads a One_Time_Sequences file's text and returns the next
usable sequence plus the one-byte edit that marks it used the way knockd does: a ``#`` written
over the first character of that line. (knockd itself can aim that ``#`` at the wrong line
when an unparsable line precedes the used one; the edit here always targets the used line.)
"""

from __future__ import annotations

import re
from typing import NamedTuple

from knockgate.errors import ConfigError
from knockgate.model import Frame, TcpFlag

DEFAULT_PATH = "/etc/knockd.conf"
DEFAULT_SEQ_TIMEOUT = 25
DEFAULT_CMD_TIMEOUT = 10
MAX_SEQUENCE = 32  # knockd's SEQ_MAX
MAX_SECONDS = 7 * 24 * 3600

_OPTION_KEYS = ("LOGFILE", "PIDFILE", "INTERFACE")
_DOOR_KEYS = {
    "SEQUENCE": "SEQUENCE", "ONE_TIME_SEQUENCES": "ONE_TIME_SEQUENCES",
    "SEQ_TIMEOUT": "SEQ_TIMEOUT", "TIMEOUT": "SEQ_TIMEOUT",
    "TCPFLAGS": "TCPFLAGS", "START_COMMAND": "START_COMMAND", "COMMAND": "START_COMMAND",
    "START_COMMAND_6": "START_COMMAND_6", "COMMAND_6": "START_COMMAND_6",
    "STOP_COMMAND": "STOP_COMMAND", "STOP_COMMAND_6": "STOP_COMMAND_6",
    "CMD_TIMEOUT": "CMD_TIMEOUT", "TARGET": "TARGET",
}
_FLAGS = {str(flag.name): flag for flag in TcpFlag}
_SEQUENCE_HINT = "write e.g. 'Sequence = 7000,8000:udp,9000:tcp' (ports 1-65535, at most 32)"


class KnockPort(NamedTuple):
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.port}:{self.protocol}"


class TcpFlags(NamedTuple):
    """knockd's TCPFlags: packets match when ``flags & mask == value``; others are ignored."""

    mask: int = 0
    value: int = 0
    text: str = ""

    def matches(self, flags: int) -> bool:
        return flags & self.mask == self.value


class KnockdDoor(NamedTuple):
    """One door section. ``line`` is its ``[name]`` line; ``lines`` maps KEY → line."""

    name: str
    line: int
    sequence: tuple[KnockPort, ...] = ()
    one_time_sequences: str | None = None
    seq_timeout: int = DEFAULT_SEQ_TIMEOUT
    tcp_flags: TcpFlags = TcpFlags()
    start_command: str | None = None
    start_command_6: str | None = None
    stop_command: str | None = None
    stop_command_6: str | None = None
    cmd_timeout: int = DEFAULT_CMD_TIMEOUT
    target: str | None = None
    lines: tuple[tuple[str, int], ...] = ()

    def line_of(self, key: str) -> int:
        """Line of ``key`` (any spelling or alias knockd accepts), else the section line."""
        canonical = _DOOR_KEYS.get(key.upper(), key.upper())
        return dict(self.lines).get(canonical, self.line)


class KnockdOptions(NamedTuple):
    """``line`` is the ``[options]`` line (None without one); ``lines`` maps KEY → line,
    USESYSLOG included (knockd takes a bare UseSyslog in any section)."""

    use_syslog: bool = False
    log_file: str | None = None
    pid_file: str | None = None
    interface: str | None = None
    line: int | None = None
    lines: tuple[tuple[str, int], ...] = ()


class KnockdConfig(NamedTuple):
    """``warnings``: ``FILE:LINE: warning: …`` for what knockd accepts but may surprise."""

    path: str
    options: KnockdOptions
    doors: tuple[KnockdDoor, ...]
    warnings: tuple[str, ...] = ()


class OneTimeSequence(NamedTuple):
    """The next unused line of a One_Time_Sequences file and how to mark it used.

    Write ``mark`` at byte ``offset`` of the file (opened r+b, no truncation): that is the
    ``#`` knockd writes over the line's first character. ``line`` counts from 1.
    """

    sequence: tuple[KnockPort, ...]
    line: int
    offset: int
    mark: bytes = b"#"


# --------------------------------------------------------------------------- sequences


class _SequenceError(ValueError):
    pass


def parse_sequence(text: str) -> tuple[KnockPort, ...]:
    """Parse ``7000,8000:udp,9000:tcp``. Raises ValueError with a short reason."""
    items = text.split(",")
    if len(items) > MAX_SEQUENCE:
        raise _SequenceError(f"more than {MAX_SEQUENCE} ports in the sequence")
    return tuple(_parse_knock(item) for item in items)


def _parse_knock(item: str) -> KnockPort:
    port_text, _, proto_text = item.partition(":")
    port_text = port_text.strip()
    proto = proto_text.strip().lower() or "tcp"
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _SequenceError(f"port {port_text[:20]!r} is not a number 1-65535")
    if proto not in ("tcp", "udp"):
        raise _SequenceError(f"protocol {proto_text.strip()[:20]!r} is not tcp or udp")
    return KnockPort(int(port_text), proto)


def next_one_time_sequence(text: str) -> OneTimeSequence | None:
    """The first usable sequence in a One_Time_Sequences file's text, or None when used up.

    Like knockd, blank lines, lines starting with ``#`` (after trimming) and lines that do not
    parse are skipped. ``offset`` is in bytes of the text encoded as UTF-8 with
    ``surrogateescape``, which is the file's own bytes if it was decoded that way.
    """
    offset = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            try:
                return OneTimeSequence(parse_sequence(stripped), number, offset)
            except _SequenceError:
                pass
        offset += len(raw.encode("utf-8", "surrogateescape")) + 1
    return None


def one_time_frames(text: str, mask: int, value: int
                    ) -> tuple[tuple[Frame, ...], int | None]:
    """The next unused sequence of a One_Time_Sequences file's text as frames (TCP knocks get
    the flags ``mask``/``value``), and where its line starts; ((), None) when used up."""
    found = next_one_time_sequence(text)
    if found is None:
        return (), None
    return tuple(Frame("udp", knock.port) if knock.protocol == "udp"
                 else Frame("tcp", knock.port, mask, value) for knock in found.sequence), \
        found.offset


def mark_used(text: str, used: OneTimeSequence) -> str:
    """The text after knockd's edit: ``#`` over the first character of the used line."""
    data = text.encode("utf-8", "surrogateescape")
    edited = data[:used.offset] + used.mark + data[used.offset + len(used.mark):]
    return edited.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- config


def looks_like_knockd_conf(text: str) -> bool:
    """True if ``text`` reads like a knockd.conf rather than knockgate's TOML.

    A knockd.conf has ``[options]`` or a section with ``sequence =`` / ``one_time_sequences =``
    lines, and no TOML array tables (``[[door]]``) or quoted TOML values.
    """
    saw_options = saw_sequence = False
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("[["):
            return False
        if line == "[options]":
            saw_options = True
        key, eq, value = line.partition("=")
        if eq and key.strip().lower() in ("sequence", "one_time_sequences"):
            if value.strip().startswith(("[", '"', "'")):
                return False
            saw_sequence = True
    return saw_options or saw_sequence


def parse_knockd_conf(text: str, path: str = DEFAULT_PATH) -> KnockdConfig:
    """Parse knockd.conf text. Raises ConfigError (path, line, hint) on anything knockd or
    knockgate would refuse."""
    parser = _Parser(path)
    for number, raw in enumerate(text.split("\n"), start=1):
        parser.feed(number, raw)
    return parser.finish()


class _Section:
    __slots__ = ("line", "name", "values")

    def __init__(self, name: str, line: int) -> None:
        self.name = name
        self.line = line
        self.values: dict[str, tuple[str, int]] = {}


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.options: _Section | None = None
        self.options_reopened: int = 0  # line of the latest [options] header after the first
        self.warnings: list[str] = []
        self.use_syslog_line: int | None = None
        self.current: _Section | None = None
        self.doors: list[_Section] = []

    def error(self, message: str, line: int | None, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, line=line, hint=hint)

    def warn(self, number: int, message: str) -> None:
        self.warnings.append(f"{self.path}:{number}: warning: {message}")

    def feed(self, number: int, raw: str) -> None:
        line = raw.strip()
        if not line or line.startswith("#"):
            return
        if any(ord(ch) < 0x20 and ch != "\t" for ch in line) or "\x7f" in line:
            raise self.error("control character in line", number, "knockd.conf is plain text")
        if line.startswith("[") and line.endswith("]"):
            self._section(number, line[1:-1])
        else:
            self._directive(number, line)

    def _section(self, number: int, name: str) -> None:
        if not name:
            raise self.error("empty section name", number, "write [options] or [doorname]")
        if name == "options":
            if self.options is not None:
                self.warn(number, f"a second [options] section (first at line "
                          f"{self.options.line}) continues the first, as in knockd")
                self.options_reopened = number
                self.current = self.options
                return
            self.options = self.current = _Section(name, number)
            return
        if any(door.name == name for door in self.doors):
            raise self.error(f"door [{name}] defined twice", number, "give each door its own "
                             "name")
        self.current = _Section(name, number)
        self.doors.append(self.current)

    def _directive(self, number: int, line: str) -> None:
        if self.current is None:
            raise self.error("directive outside any section", number,
                             "put it under [options] or a [door] section")
        key_text, eq, value = line.partition("=")
        key = key_text.strip().upper()
        if not eq:
            if key != "USESYSLOG":
                raise self.error(f"{line[:40]!r} is not 'Key = value'", number,
                                 "write e.g. 'Sequence = 7000,8000,9000'")
            self.use_syslog_line = self.use_syslog_line or number
            return
        if key == "USESYSLOG":
            raise self.error("UseSyslog takes no value", number,
                             "write UseSyslog alone on its line (knockd rejects 'UseSyslog = …')")
        self._store(number, key, value.strip())

    def _store(self, number: int, key: str, value: str) -> None:
        section = self.current
        assert section is not None
        if section is self.options:
            canonical = key if key in _OPTION_KEYS else None
            hint = "[options] takes UseSyslog, LogFile, PidFile and Interface"
        else:
            canonical = _DOOR_KEYS.get(key)
            hint = ("Interface belongs in [options]" if key == "INTERFACE" else
                    "door keys: Sequence, One_Time_Sequences, Seq_Timeout, TCPFlags, "
                    "Start_Command, Stop_Command, Cmd_Timeout, the _6 commands, Target")
        if canonical is None:
            shown = key if re.fullmatch(r"[A-Z0-9_]{1,40}", key) else repr(key[:40])
            raise self.error(f"unknown key {shown} in [{section.name}]", number, hint)
        if canonical in section.values:
            first = section.values[canonical][1]
            if section is self.options and first < self.options_reopened:
                self.warn(number, f"{_knockd_spelling(key)} given again (first at line {first}); "
                          "this later value replaces it, as in knockd")
                section.values[canonical] = (value, number)
                return
            raise self.error(f"{key} given twice in [{section.name}] (first at line {first})",
                             number, "keep one; knockd would silently use the last")
        section.values[canonical] = (value, number)

    def finish(self) -> KnockdConfig:
        options = self._options()
        doors = tuple(_build_door(self, section) for section in self.doors)
        return KnockdConfig(self.path, options, doors, tuple(self.warnings))

    def _options(self) -> KnockdOptions:
        syslog = self.use_syslog_line
        syslog_lines = (("USESYSLOG", syslog),) if syslog else ()
        if self.options is None:
            return KnockdOptions(use_syslog=bool(syslog), lines=syslog_lines)
        values = {key: value for key, (value, _) in self.options.values.items()}
        lines = tuple((key, line) for key, (_, line) in self.options.values.items())
        return KnockdOptions(use_syslog=bool(syslog), log_file=values.get("LOGFILE") or None,
                             pid_file=values.get("PIDFILE") or None,
                             interface=values.get("INTERFACE") or None,
                             line=self.options.line, lines=lines + syslog_lines)


def _knockd_spelling(key: str) -> str:
    """knockd's spelling of an [options] key, for messages."""
    return {"LOGFILE": "LogFile", "PIDFILE": "PidFile", "INTERFACE": "Interface"}[key]


def _build_door(parser: _Parser, section: _Section) -> KnockdDoor:
    values = section.values
    sequence = _door_sequence(parser, section)
    return KnockdDoor(
        name=section.name,
        line=section.line,
        sequence=sequence,
        one_time_sequences=_value(values, "ONE_TIME_SEQUENCES"),
        seq_timeout=_seconds(parser, values, "SEQ_TIMEOUT", DEFAULT_SEQ_TIMEOUT),
        tcp_flags=_tcp_flags(parser, values),
        start_command=_value(values, "START_COMMAND"),
        start_command_6=_value(values, "START_COMMAND_6"),
        stop_command=_value(values, "STOP_COMMAND"),
        stop_command_6=_value(values, "STOP_COMMAND_6"),
        cmd_timeout=_seconds(parser, values, "CMD_TIMEOUT", DEFAULT_CMD_TIMEOUT),
        target=_value(values, "TARGET"),
        lines=tuple((key, line) for key, (_, line) in values.items()),
    )


def _value(values: dict[str, tuple[str, int]], key: str) -> str | None:
    entry = values.get(key)
    return entry[0] if entry and entry[0] else None


def _door_sequence(parser: _Parser, section: _Section) -> tuple[KnockPort, ...]:
    seq, ots = section.values.get("SEQUENCE"), section.values.get("ONE_TIME_SEQUENCES")
    if seq and ots:
        raise parser.error(f"[{section.name}] has both Sequence and One_Time_Sequences",
                           max(seq[1], ots[1]), "keep one; knockd uses whichever comes last")
    if ots:
        if not ots[0]:
            raise parser.error("One_Time_Sequences needs a file path", ots[1],
                               "e.g. 'One_Time_Sequences = /etc/knockd/ssh_sequences'")
        return ()
    if not seq or not seq[0]:
        raise parser.error(f"[{section.name}] has an empty knock sequence",
                           seq[1] if seq else section.line, _SEQUENCE_HINT)
    try:
        return parse_sequence(seq[0])
    except _SequenceError as exc:
        raise parser.error(f"Sequence: {exc}", seq[1], _SEQUENCE_HINT) from None


def _seconds(parser: _Parser, values: dict[str, tuple[str, int]], key: str,
             default: int) -> int:
    entry = values.get(key)
    if entry is None:
        return default
    text, line = entry
    if not text.isascii() or not text.isdigit() or int(text) > MAX_SECONDS:
        raise parser.error(f"{key.title()} must be whole seconds, 0-{MAX_SECONDS}", line,
                           f"e.g. '{key.title()} = {default}'")
    return int(text)


def _tcp_flags(parser: _Parser, values: dict[str, tuple[str, int]]) -> TcpFlags:
    entry = values.get("TCPFLAGS")
    if entry is None:
        return TcpFlags()
    text, line = entry
    mask = value = 0
    for raw in text.split(","):
        word = raw.strip().upper()
        flag = _FLAGS.get(word.removeprefix("!"))
        if flag is None:
            raise parser.error(f"unknown TCP flag {raw.strip()[:20]!r}", line,
                               "use fin, syn, rst, psh, ack, urg, each optionally with '!', "
                               "comma separated: 'TCPFlags = syn,!ack'")
        if mask & flag:
            raise parser.error(f"TCP flag {word.removeprefix('!').lower()} given twice", line,
                               "name each flag once")
        mask |= flag
        if not word.startswith("!"):
            value |= flag
    return TcpFlags(int(mask), int(value), text)
