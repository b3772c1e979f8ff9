"""A parsed knockd.conf → knockgate's TOML text. Pure: no files, no processes.

``knockgate import knockd FILE`` prints the text; ``knockgate serve --config knockd.conf``
parses it like any knockgate configuration, so what an admin reviews is exactly what runs.

What keeps knockd's meaning, and the comments that say where it cannot:

- knockd without TCPFlags counts every TCP packet to a sequence port, so its ports become
  ``tcp:PORT:i``; with TCPFlags they carry the same words (``tcp:PORT:syn,!ack``).
- knockd hands each command to ``/bin/sh`` after replacing ``%IP%`` textually. A command with
  no shell syntax and an absolute program becomes an argv list (``%IP%`` → ``{ip}``). Any
  other command stays a string and makes the door ``shell = true``: knockgate runs ``/bin/sh
  -c COMMAND knockgate IP DOOR``, so ``%IP%`` becomes ``$1``, quoted for where it stands (see
  :func:`shell_rewrite`).
- knockd's IPv6 fallback (no ``_6`` command → the IPv4 one) and its rule that a stop command
  only ever follows a start command are carried over key by key.
- knockd never drops a packet, so ``[daemon]`` says ``hide_knock_ports = false``: a knock port
  that is also a service stays reachable.
- :func:`convert_knockd` also gives the knockd.conf line behind each TOML line, so messages
  about the TOML name the line the admin wrote.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from knockgate.compat.knockd.conf import (
    KnockdConfig,
    KnockdDoor,
    KnockdOptions,
    KnockPort,
    TcpFlags,
)
from knockgate.core.kinds.ports import flag_words

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_MAX_NAME = 32
_COMMENT_WIDTH = 96
_MIN_TIMEOUT, _MAX_TIMEOUT = 1, 3600  # knockgate's timeout bounds, in whole seconds
_IP = "%IP%"
# Any of these may mean something to /bin/sh, so a command holding one keeps its shell.
# Deliberately broad: '!' and '^' are harmless to dash but not to every /bin/sh, and '{' '}'
# are brace expansion where /bin/sh is bash.
_SHELL_CHARS = frozenset("|&;<>()$`\\\"'*?[]~{}#!^\n")
_BLANKS = re.compile(r"[ \t]+")  # what sh splits words on; str.split() would split more
_POSITIONAL = re.compile(r"\$(?:[0-9@*#]|\{[0-9@*#])")
_OPEN_RULE = re.compile(
    r"(?:/\S*/)?iptables (?P<verb>-[AID]) INPUT(?: \d+)? -s %IP% -p (?P<proto>tcp|udp) "
    r"--dport (?P<port>\d{1,5}) -j ACCEPT")
# The knockd keys each knockgate key is written from, the first one present counting: a
# written-out IPv6 fallback comes from the IPv4 command, command_delay from Cmd_Timeout.
_SOURCE_KEYS = {
    "sequence": ("SEQUENCE",), "one_time_sequences": ("ONE_TIME_SEQUENCES",),
    "tcp_flags": ("TCPFLAGS",), "timeout": ("SEQ_TIMEOUT",), "target": ("TARGET",),
    "command": ("START_COMMAND",), "stop_command": ("STOP_COMMAND",),
    "command_6": ("START_COMMAND_6", "START_COMMAND"),
    "stop_command_6": ("STOP_COMMAND_6", "STOP_COMMAND"),
    "command_delay": ("CMD_TIMEOUT", "STOP_COMMAND_6", "STOP_COMMAND"),
    "interfaces": ("INTERFACE",), "log_file": ("LOGFILE",), "syslog": ("USESYSLOG",),
}
_KEY_LINE = re.compile(r"([a-z0-9_]+) = ")
_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}

# How %IP% is written as $1 in each quoting state of the shell text around it.
_IP_AS = {"cmd": '"$1"', "double": "$1", "backtick": "$1", "single": "'\"$1\"'"}
# ... and right after a backslash. Outside single quotes knockd's backslash escaped the
# address's first character (a digit, hex letter or ':'), which changes nothing, except
# inside double quotes, where the backslash itself stays.
_ESCAPED_IP_AS = {"cmd": '"$1"', "double": "\\\\$1", "backtick": "$1"}


# --------------------------------------------------------------------------- TOML text


def toml_string(text: str) -> str:
    """A TOML basic string. Lone surrogates (undecodable bytes) become U+FFFD: TOML text is
    UTF-8 and has no escape for them."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_array(items: Iterable[str]) -> str:
    return "[" + ", ".join(toml_string(item) for item in items) + "]"


def comment_text(text: str) -> str:
    """User text made safe inside a ``#`` comment: one line, printable."""
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


# --------------------------------------------------------------------------- commands


def argv_of(command: str) -> list[str] | None:
    """The argv a shell-free knockgate would run for ``command``, or None if it needs /bin/sh.

    Conservative: any character a shell might interpret, or a program that is not an
    absolute path (the shell would search PATH), keeps the shell.
    """
    words = [word for word in _BLANKS.split(command.replace(_IP, "\0")) if word]
    if not words or not words[0].startswith("/"):
        return None
    if any(ch in _SHELL_CHARS or not (ch.isprintable() or ch == "\0") for ch in "".join(words)):
        return None
    # '{' and '}' never get here (they force the shell); escaping them keeps that safe anyway.
    return [word.replace("{", "{{").replace("}", "}}").replace("\0", "{ip}") for word in words]


@dataclass(frozen=True, slots=True)
class ShellText:
    text: str
    warnings: tuple[str, ...] = ()


def shell_rewrite(command: str) -> ShellText:
    """Rewrite knockd's textual ``%IP%`` as the positional parameter ``$1``.

    Tracks the quoting around each ``%IP%`` (single and double quotes, backslashes, ``$(...)``
    and backticks) so the result expands to the address exactly where knockd's text did.
    Inside single quotes the quotes are closed around ``"$1"``, which splices the address in
    as knockd did; that case and others worth a second look come back as warnings.
    """
    scanner = _Scanner(command)
    text = scanner.run()
    return ShellText(text, tuple(_shell_warnings(command, scanner)))


class _Scanner:
    def __init__(self, command: str) -> None:
        self.command = command
        self.stack = ["cmd"]
        self.out: list[str] = []
        self.in_single = False

    def run(self) -> str:
        command, index = self.command, 0
        while index < len(command):
            index = self._step(index)
        return "".join(self.out)

    def _step(self, index: int) -> int:
        command, state = self.command, self.stack[-1]
        if command.startswith(_IP, index):
            self.out.append(_IP_AS[state])
            self.in_single |= state == "single"
            return index + len(_IP)
        if command[index] == "\\" and state != "single":
            if command.startswith(_IP, index + 1):
                self.out.append(_ESCAPED_IP_AS[state])
                return index + 1 + len(_IP)
            self.out.append(command[index:index + 2])
            return index + 2
        two = command[index:index + 2]
        self.out.append(two if two == "$(" else command[index])
        self._transition(two if two == "$(" else command[index])
        return index + len(self.out[-1])

    def _transition(self, token: str) -> None:
        state, stack = self.stack[-1], self.stack
        if state == "single":
            if token == "'":
                stack.pop()
        elif token == "$(":
            stack.append("cmd")
        elif token == "`":
            if state == "backtick":
                stack.pop()
            else:
                stack.append("backtick")
        elif state == "double":
            if token == '"':
                stack.pop()
        elif token in ("'", '"'):
            stack.append("single" if token == "'" else "double")
        elif token == ")" and state == "cmd" and len(stack) > 1:
            stack.pop()


def _shell_warnings(command: str, scanner: _Scanner) -> Iterator[str]:
    if scanner.in_single:
        yield ("%IP% stood inside single quotes, where $1 would not expand; the quotes are "
               "closed around it ('\"$1\"'), as knockd's text substitution did. Check it.")
    if _POSITIONAL.search(command):
        yield ("the command uses $1, $@ or similar, which were empty under knockd and now hold "
               "the address and door name")
    if scanner.stack != ["cmd"]:
        yield "unbalanced quotes or $( ); /bin/sh refuses it, as it did under knockd"


# --------------------------------------------------------------------------- doors


@dataclass(frozen=True, slots=True)
class _Commands:
    """A door's commands as knockd runs them; None where knockd runs nothing."""

    command: str | None = None
    stop_command: str | None = None
    command_6: str | None = None
    stop_command_6: str | None = None

    def present(self) -> list[tuple[str, str]]:
        pairs = (("command", self.command), ("stop_command", self.stop_command),
                 ("command_6", self.command_6), ("stop_command_6", self.stop_command_6))
        return [(key, value) for key, value in pairs if value is not None]

    @property
    def stops(self) -> bool:
        return self.stop_command is not None or self.stop_command_6 is not None


def _effective_commands(door: KnockdDoor, notes: list[str]) -> _Commands:
    start, start_6 = door.start_command, door.start_command_6 or door.start_command
    if start is None and start_6 is None:
        if door.stop_command or door.stop_command_6:
            notes.append("knockd never runs a stop command without a start command; dropped")
        notes.append("knockd ran no command for this door (it only logged the knock); "
                     "/bin/true stands in, as a door must open ports or run a command")
        return _Commands(command="/bin/true")
    if door.stop_command and start is None:
        notes.append("knockd never runs Stop_Command for IPv4 without a Start_Command; dropped")
    v4 = _Commands(start, door.stop_command if start else None)
    if door.start_command_6 is None and door.stop_command_6 is None:
        return v4  # knockgate, like knockd, then runs the IPv4 commands for IPv6 sources too
    # knockgate takes the _6 commands as a pair; knockd falls back key by key, so spell the
    # fallbacks out.
    stop_6 = door.stop_command_6 or door.stop_command
    if (door.start_command_6 is None and start_6) or (door.stop_command_6 is None and stop_6):
        notes.append("for IPv6, knockd falls back to the IPv4 command of a missing _6 key; "
                     "those fallbacks are written out as _6 commands")
    return _Commands(v4.command, v4.stop_command, start_6, stop_6 if start_6 else None)


def _command_lines(commands: _Commands, notes: list[str]) -> list[str]:
    present = commands.present()
    argvs = {key: argv_of(value) for key, value in present}
    if all(argv is not None for argv in argvs.values()):
        notes.append("commands run directly, without /bin/sh (they use no shell syntax); "
                     "%IP% became {ip}")
        return [f"{key} = {toml_array(argvs[key] or [])}" for key, _ in present]
    notes.append("some commands need /bin/sh, as under knockd: shell = true runs a command "
                 "written as a string as /bin/sh -c COMMAND knockgate IP DOOR, so %IP% became "
                 "$1 there; commands without shell syntax are argv lists, %IP% became {ip}")
    lines = ["shell = true"]
    for key, value in present:
        argv = argvs[key]
        if argv is not None:
            lines.append(f"{key} = {toml_array(argv)}")
            continue
        rewritten = shell_rewrite(value)
        for warning in rewritten.warnings:
            lines += _wrapped(f"WARNING ({key}): {warning}", "# ", "#   ")
        lines.append(f"{key} = {toml_string(rewritten.text)}")
    return lines


def _tcp_flags(door: KnockdDoor) -> str:
    return flag_words(door.tcp_flags.mask, door.tcp_flags.value) if door.tcp_flags.mask \
        else "i"


def _sequence_lines(door: KnockdDoor, notes: list[str]) -> list[str]:
    flags = _tcp_flags(door)
    if door.one_time_sequences is not None:
        tcp = True
        lines = [f"one_time_sequences = {toml_string(door.one_time_sequences)}",
                 f"tcp_flags = {toml_string(flags)}"]
    else:
        tcp = any(knock.protocol == "tcp" for knock in door.sequence)
        frames = [f"udp:{knock.port}" if knock.protocol == "udp" else f"tcp:{knock.port}:{flags}"
                  for knock in door.sequence]
        lines = [f"sequence = {toml_array(frames)}"]
    if tcp and flags == "i":
        notes.append("knockd had no TCPFlags, so any TCP packet to a sequence port counted; "
                     "':i' keeps that (a plain 'tcp:PORT' in knockgate means a SYN only)")
    elif tcp:
        notes.append(f"TCPFlags = {comment_text(door.tcp_flags.text)} became ':{flags}' on "
                     "each TCP knock (same meaning: listed flags set, '!' flags clear, others "
                     "free; other packets are ignored)")
    return lines


def _timeout_line(door: KnockdDoor, notes: list[str]) -> str:
    timeout = min(max(door.seq_timeout, _MIN_TIMEOUT), _MAX_TIMEOUT)
    if timeout != door.seq_timeout:
        notes.append(f"knockd's Seq_Timeout {door.seq_timeout} is outside knockgate's "
                     f"{_MIN_TIMEOUT}-{_MAX_TIMEOUT} s; using {timeout}")
    return f"timeout = {timeout}"


def _open_suggestion(door: KnockdDoor) -> list[str]:
    start = _OPEN_RULE.fullmatch((door.start_command or "").strip())
    stop = _OPEN_RULE.fullmatch((door.stop_command or "").strip())
    if start is None or stop is None or start["verb"] == "-D" or stop["verb"] != "-D":
        return []
    spec = f"{start['proto']}:{int(start['port'])}"
    if f"{stop['proto']}:{int(stop['port'])}" != spec or not 1 <= int(start["port"]) <= 65535:
        return []
    return ["# knockgate can do what these iptables commands do, in the kernel and faster:",
            "# replace command and stop_command (and any _6 twins) with",
            f"# open = {toml_array([spec])}",
            f"# open_for = {door.cmd_timeout}   # knockd's Cmd_Timeout"]


def _door_lines(door: KnockdDoor, name: str, same_as: KnockdDoor | None = None) -> list[str]:
    """``same_as``: an earlier door with the same sequence, which knockd opens on the same
    knock."""
    notes: list[str] = []
    if same_as is not None:
        notes.append(f"knockd opens this door and [{comment_text(same_as.name)}] (line "
                     f"{same_as.line}) on the same knock, and so does a served knockd.conf; "
                     "knockgate's own TOML refuses two doors with one sequence: give one "
                     "another sequence, or put both doors' commands in one")
    if name != door.name:
        notes.append(f"knockd's [{comment_text(door.name)}] is not a knockgate name (a letter, "
                     f"then up to 31 letters, digits or '_'); renamed {name}")
    body = [f"name = {toml_string(name)}", *_sequence_lines(door, notes),
            _timeout_line(door, notes)]
    if door.target is not None:
        body.append(f"target = {toml_string(door.target)}")
    commands = _effective_commands(door, notes)
    body.extend(_command_lines(commands, notes))
    if commands.stops:
        body.append(f"command_delay = {door.cmd_timeout}")
    body.extend(_open_suggestion(door))
    head = [f"# from knockd's [{comment_text(door.name)}] (line {door.line})"]
    for note in notes:
        head += _wrapped(note, "# - ", "#   ")
    return [*head, "[[door]]", *body]


def _wrapped(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, _COMMENT_WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


# --------------------------------------------------------------------------- names


def door_names(names: Sequence[str]) -> list[str]:
    """Valid knockgate names, unique, one per knockd section name, valid ones unchanged."""
    chosen: dict[int, str] = {}
    for index, name in enumerate(names):
        if _NAME.fullmatch(name) and name not in chosen.values():
            chosen[index] = name
    for index, name in enumerate(names):
        if index not in chosen:
            chosen[index] = _unique(_sanitise(name), set(chosen.values()))
    return [chosen[index] for index in range(len(names))]


def _sanitise(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    if not cleaned[:1].isalpha():
        cleaned = "door_" + cleaned
    return cleaned[:_MAX_NAME]


def _unique(base: str, taken: set[str]) -> str:
    name, number = base, 2
    while name in taken:
        suffix = f"_{number}"
        name, number = base[:_MAX_NAME - len(suffix)] + suffix, number + 1
    return name


# --------------------------------------------------------------------------- whole file


def _header(path: str) -> list[str]:
    return [
        f"# knockgate configuration converted from knockd's {comment_text(path)}",
        "# (knockgate import knockd). The comments above each door say where its meaning",
        "# differs from knockd's; review them before relying on it.",
        "#",
        "# These doors still open the firewall with knockd's own commands (iptables ...).",
        "# knockgate can do that itself: replace a door's commands with",
        '#   open = ["tcp:22"]   # what opens, for the knocking address only',
        "#   open_for = 30       # seconds; the kernel closes it, even if the daemon dies",
        "# which opens in about a millisecond, without a shell or an iptables process.",
    ]


def _daemon_lines(options: KnockdOptions) -> list[str]:
    lines = ["[daemon]"]
    if options.interface is not None:
        lines.append(f"interfaces = {toml_array([options.interface])}")
    else:
        lines += ["# knockd watched eth0 unless Interface or its -i option said otherwise;",
                  "# knockgate watches every interface but loopback. To keep knockd's:",
                  '# interfaces = ["eth0"]']
    lines += ["# knockd never drops a packet, so a knock port that is also a service (ssh on 22,",
              "# a game server...) stays reachable; knockgate's default would close knock ports.",
              "# Set true only if nothing listens on any knock port: they then look closed.",
              "hide_knock_ports = false"]
    if options.log_file is not None:
        lines.append(f"log_file = {toml_string(options.log_file)}")
    if options.use_syslog:
        lines.append("syslog = true")
    if options.pid_file is not None:
        lines.append(f"# PidFile {comment_text(options.pid_file)} is not carried over: "
                     "knockgate serve stays in the foreground")
    return lines


class Converted(NamedTuple):
    """The TOML for a knockd.conf, and for each of its lines the knockd.conf line it comes
    from (None for the importer's own header and blank lines), so that messages about the
    TOML can name the line the admin wrote."""

    text: str
    origins: tuple[int | None, ...]

    def origin(self, line: int | None) -> int | None:
        """The knockd.conf line behind TOML line ``line`` (counted from 1), if any."""
        return self.origins[line - 1] if line is not None and 0 < line <= len(self.origins) \
            else None


def _origins(lines: Sequence[str], section: int | None, keys: Mapping[str, int]
             ) -> list[int | None]:
    """Each line's knockd.conf line: a ``key = value`` line's source key if it was written,
    else the section's (comments and ``[[door]]`` describe the whole section)."""
    found: list[int | None] = []
    for line in lines:
        key = _KEY_LINE.match(line)
        sources = _SOURCE_KEYS.get(key.group(1), ()) if key else ()
        found.append(next((keys[source] for source in sources if source in keys), section))
    return found


def convert_knockd(config: KnockdConfig) -> Converted:
    """knockgate TOML for a parsed knockd.conf (always valid TOML, whatever the strings),
    with the knockd.conf line of each TOML line."""
    options = config.options
    daemon = _daemon_lines(options)
    header = _header(config.path)
    for warning in config.warnings:
        header += _wrapped(comment_text(warning), "# ", "#   ")
    lines = [*header, "", *daemon]
    origins = [None] * (len(lines) - len(daemon)) + _origins(daemon, options.line,
                                                              dict(options.lines))
    names = door_names([door.name for door in config.doors])
    # Doors knock alike when their ports and, for TCP knocks, their TCPFlags are the same.
    first_with: dict[tuple[tuple[KnockPort, ...], TcpFlags | None], KnockdDoor] = {}
    for door, name in zip(config.doors, names, strict=True):
        tcp = any(knock.protocol == "tcp" for knock in door.sequence)
        alike = (door.sequence, door.tcp_flags if tcp else None)
        earlier = first_with.setdefault(alike, door) if door.sequence else door
        block = _door_lines(door, name, None if earlier is door else earlier)
        lines += ["", *block]
        origins += [None, *_origins(block, door.line, dict(door.lines))]
    return Converted("\n".join(lines) + "\n", tuple(origins))


def knockd_to_toml(config: KnockdConfig) -> str:
    """knockgate TOML for a parsed knockd.conf; always valid TOML, whatever the strings."""
    return convert_knockd(config).text

