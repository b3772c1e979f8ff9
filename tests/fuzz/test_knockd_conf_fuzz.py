"""Hostile input for the knockd.conf parser and the one-time sequence helpers.

Any text either parses or raises ConfigError naming the file; the pure helpers never raise.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knockgate.compat.knockd.conf import (
    MAX_SEQUENCE,
    KnockdConfig,
    looks_like_knockd_conf,
    mark_used,
    next_one_time_sequence,
    parse_knockd_conf,
)
from knockgate.errors import ConfigError

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_KEYS = ["sequence", "Sequence", "SEQ_TIMEOUT", "timeout", "tcpflags", "command",
         "start_command", "Start_Command_6", "stop_command", "STOP_COMMAND_6", "cmd_timeout",
         "target", "one_time_sequences", "logfile", "PidFile", "interface", "UseSyslog",
         "bogus", ""]
_VALUES = st.one_of(
    st.sampled_from(["7000,8000,9000", "1:udp,2:tcp", "0", "70000", "1,,2", "abc", "syn",
                     "syn,!ack", "fin, !ack", "SYN,!SYN", "bogus", "5", "-1", "",
                     "/sbin/iptables -A INPUT -s %IP% -j ACCEPT", "/tmp/ots", "eth0",
                     ",".join(["1"] * 33)]),
    st.text(max_size=30),
)
_LINE = st.one_of(
    st.tuples(st.sampled_from(_KEYS), st.sampled_from(["=", " = ", "\t=\t", ""]), _VALUES)
    .map("".join),
    st.sampled_from(["[options]", "[Options]", "[openSSH]", "[]", "[x", "# comment", ""]),
    st.text(max_size=40),
)


def parse_or_reject(text: str) -> KnockdConfig | None:
    try:
        return parse_knockd_conf(text, "fuzz.conf")
    except ConfigError as error:
        assert str(error).startswith("fuzz.conf")
        return None


@FUZZ
@given(st.text(max_size=600))
def test_any_text(text):
    parse_or_reject(text)
    looks_like_knockd_conf(text)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes(raw):
    text = raw.decode("utf-8", "surrogateescape")
    parse_or_reject(text)
    looks_like_knockd_conf(text)


@FUZZ
@given(st.lists(_LINE, max_size=30))
def test_structured(lines):
    config = parse_or_reject("\n".join(lines))
    if config is None:
        return
    for door in config.doors:
        assert door.sequence or door.one_time_sequences
        assert len(door.sequence) <= MAX_SEQUENCE
        assert all(1 <= knock.port <= 65535 for knock in door.sequence)
        assert all(knock.protocol in ("tcp", "udp") for knock in door.sequence)
        assert door.tcp_flags.value & ~door.tcp_flags.mask == 0


_OTS_LINE = st.one_of(
    st.lists(st.tuples(st.integers(0, 70000), st.sampled_from(["", ":udp", ":tcp", ":x"])),
             min_size=1, max_size=5)
    .map(lambda knocks: ",".join(f"{port}{proto}" for port, proto in knocks)),
    st.sampled_from(["", "#", "# used", "   ", "\r"]),
    st.text(max_size=20),
).flatmap(lambda line: st.sampled_from([line, " " + line, "\t" + line]))


@FUZZ
@given(st.lists(_OTS_LINE, max_size=15))
def test_one_time_sequences_are_used_up_in_order(lines):
    text = "\n".join(lines)
    seen: list[int] = []
    for _ in range(len(lines) + 1):
        found = next_one_time_sequence(text)
        if found is None:
            break
        assert found.line not in seen and (not seen or found.line > seen[-1])
        seen.append(found.line)
        edited = mark_used(text, found)
        assert len(edited.encode("utf-8", "surrogateescape")) == len(
            text.encode("utf-8", "surrogateescape"))
        text = edited
    else:
        raise AssertionError("one-time sequences never ran out")


@FUZZ
@given(st.text(alphabet=string.printable + "é\u2028\x00", max_size=300))
def test_one_time_sequences_any_text(text):
    found = next_one_time_sequence(text)
    if found is not None:
        edited = mark_used(text, found)
        assert edited.split("\n")[found.line - 1].startswith("#")
        later = next_one_time_sequence(edited)
        assert later is None or later.line > found.line
