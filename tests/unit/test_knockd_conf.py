"""knockd.conf parsing, one-time sequence files and format sniffing."""

from __future__ import annotations

import pytest

from knockgate.compat.knockd.conf import (
    KnockdOptions,
    KnockPort,
    TcpFlags,
    looks_like_knockd_conf,
    mark_used,
    next_one_time_sequence,
    parse_knockd_conf,
    parse_sequence,
)
from knockgate.errors import ConfigError
from knockgate.model import TcpFlag

PATH = "/etc/knockd.conf"

# Debian's shipped /etc/knockd.conf (knockd 0.8-2), verbatim.
DEBIAN_DEFAULT = """\
[options]
\tUseSyslog

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[openHTTPS]
\tsequence    = 12345,54321,24680,13579
\tseq_timeout = 5
\tcommand     = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%
\ttcpflags    = syn
"""

# knockd(1) example #3/#4: start/stop commands, one-time sequences, _6 variants.
MAN_EXAMPLE = """\
[options]
\tlogfile = /var/log/knockd.log
\tpidfile = /run/knockd.pid
\tinterface = eth0

[opencloseSMTP]
\tone_time_sequences = /etc/knockd/smtp_sequences
\tseq_timeout        = 15
\ttcpflags           = fin,!ack
\tstart_command      = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tstart_command_6    = /usr/sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tcmd_timeout        = 5
\tstop_command       = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tstop_command_6     = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tTarget             = 192.0.2.10
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_knockd_conf(text, PATH)
    return info.value


def test_debian_default():
    config = parse_knockd_conf(DEBIAN_DEFAULT, PATH)
    assert config.options == KnockdOptions(use_syslog=True, line=1, lines=(("USESYSLOG", 2),))
    assert [door.name for door in config.doors] == ["openSSH", "closeSSH", "openHTTPS"]
    ssh = config.doors[0]
    assert ssh.line == 4
    assert ssh.sequence == (KnockPort(7000), KnockPort(8000), KnockPort(9000))
    assert ssh.seq_timeout == 5
    assert ssh.tcp_flags == TcpFlags(TcpFlag.SYN, TcpFlag.SYN, "syn")
    assert ssh.start_command == "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
    assert ssh.stop_command is None and ssh.cmd_timeout == 10
    assert ssh.line_of("command") == 7 and ssh.line_of("Start_Command") == 7
    assert ssh.line_of("sequence") == 5


def test_man_page_example():
    config = parse_knockd_conf(MAN_EXAMPLE, PATH)
    assert config.options == KnockdOptions(False, "/var/log/knockd.log", "/run/knockd.pid",
                                           "eth0", 1, (("LOGFILE", 2), ("PIDFILE", 3),
                                                       ("INTERFACE", 4)))
    (door,) = config.doors
    assert door.sequence == ()
    assert door.one_time_sequences == "/etc/knockd/smtp_sequences"
    assert door.seq_timeout == 15 and door.cmd_timeout == 5
    assert door.tcp_flags.mask == TcpFlag.FIN | TcpFlag.ACK
    assert door.tcp_flags.value == TcpFlag.FIN
    assert door.tcp_flags.matches(TcpFlag.FIN) and not door.tcp_flags.matches(
        TcpFlag.FIN | TcpFlag.ACK)
    assert door.start_command_6.startswith("/usr/sbin/ip6tables -A")
    assert door.stop_command.startswith("/usr/sbin/iptables -D")
    assert door.stop_command_6.startswith("/usr/sbin/ip6tables -D")
    assert door.target == "192.0.2.10"


def test_defaults_and_aliases():
    config = parse_knockd_conf(
        "[d]\nSEQUENCE = 1:udp, 2:TCP ,3\nTimeout = 7\nCommand_6 = echo %IP%\n", PATH)
    (door,) = config.doors
    assert door.sequence == (KnockPort(1, "udp"), KnockPort(2, "tcp"), KnockPort(3, "tcp"))
    assert door.seq_timeout == 7
    assert door.start_command_6 == "echo %IP%"
    assert door.tcp_flags == TcpFlags()
    assert door.tcp_flags.matches(0x3F)
    assert config.options == KnockdOptions()


def test_defaults_without_overrides():
    (door,) = parse_knockd_conf("[d]\nsequence=7000\n").doors
    assert (door.seq_timeout, door.cmd_timeout) == (25, 10)


def test_use_syslog_is_global_even_inside_a_door():
    config = parse_knockd_conf("[d]\nsequence = 1\nUseSyslog\n", PATH)
    assert config.options.use_syslog


def test_commands_kept_raw():
    command = "/bin/sh -c 'echo \"%IP%\" >> /tmp/x; true' # not a comment to knockd"
    (door,) = parse_knockd_conf(f"[d]\nsequence=1\ncommand = {command}\n").doors
    assert door.start_command == command


def test_thirty_two_ports_allowed():
    ports = ",".join(str(1000 + i) for i in range(32))
    (door,) = parse_knockd_conf(f"[d]\nsequence={ports}\n").doors
    assert len(door.sequence) == 32


@pytest.mark.parametrize(("text", "line", "words"), [
    ("sequence = 1\n", 1, "outside any section"),
    ("[]\n", 1, "empty section"),
    ("[d]\nsequence = 1\nbogus = 2\n", 3, "unknown key BOGUS"),
    ("[d]\nsequence = 1\ninterface = eth0\n", 3, "[options]"),
    ("[options]\nsequence = 1\n", 2, "unknown key SEQUENCE"),
    ("[Options]\nlogfile = /x\n[d]\nsequence=1\n", 2, "unknown key LOGFILE"),
    ("[options]\nUseSyslog = yes\n", 2, "UseSyslog"),
    ("[d]\nsequence\n", 2, "not 'Key = value'"),
    ("[d]\nsequence = 1,70000\n", 2, "1-65535"),
    ("[d]\nsequence = 1,0\n", 2, "1-65535"),
    ("[d]\nsequence = 1,abc\n", 2, "1-65535"),
    ("[d]\nsequence = 1,,2\n", 2, "1-65535"),
    ("[d]\nsequence = 1:sctp\n", 2, "tcp or udp"),
    ("[d]\nsequence = 1:udp:x\n", 2, "tcp or udp"),
    ("[d]\nsequence = " + ",".join(["1"] * 33) + "\n", 2, "more than 32"),
    ("[d]\nsequence =\n", 2, "empty knock sequence"),
    ("[d]\nseq_timeout = 5\n", 1, "empty knock sequence"),
    ("[d]\nsequence = 1\nseq_timeout = soon\n", 3, "whole seconds"),
    ("[d]\nsequence = 1\ncmd_timeout = -1\n", 3, "whole seconds"),
    ("[d]\nsequence = 1\ntcpflags = syn, bogus\n", 3, "unknown TCP flag"),
    ("[d]\nsequence = 1\ntcpflags = syn,!syn\n", 3, "twice"),
    ("[d]\nsequence = 1\nsequence = 2\n", 3, "twice"),
    ("[d]\nsequence = 1\ncommand = a\nstart_command = b\n", 4, "twice"),
    ("[d]\nsequence = 1\n[d]\nsequence = 2\n", 3, "defined twice"),
    ("[options]\nLogFile = /a\n[options]\nPidFile = /p\nPidFile = /q\n", 5, "twice"),
    ("[d]\nsequence = 1\none_time_sequences = /x\n", 3, "both"),
    ("[d]\none_time_sequences =\n", 2, "file path"),
    ("[d]\nsequence = 1\x00\n", 2, "control character"),
])
def test_errors_name_file_line_and_hint(text, line, words):
    error = error_of(text)
    assert (error.path, error.line) == (PATH, line), str(error)
    assert words in str(error)
    assert error.hint
    assert str(error).startswith(f"{PATH}:{line}: ")


def test_second_options_section_continues_the_first_last_value_wins():
    # knockd has one set of options: a later [options] adds to it and a key set again
    # replaces the earlier value (checked against the real knockd in test_knockd_tolerance).
    config = parse_knockd_conf("[options]\nLogFile = /first\nInterface = eth1\n"
                               "[d]\nsequence = 1\n"
                               "[options]\nLogFile = /second\nPidFile = /pid\n", PATH)
    assert (config.options.log_file, config.options.interface, config.options.pid_file) == (
        "/second", "eth1", "/pid")
    assert dict(config.options.lines)["LOGFILE"] == 7
    assert config.options.line == 1
    assert [door.name for door in config.doors] == ["d"]
    assert config.warnings == (
        f"{PATH}:6: warning: a second [options] section (first at line 1) continues the "
        "first, as in knockd",
        f"{PATH}:7: warning: LogFile given again (first at line 2); this later value "
        "replaces it, as in knockd",
    )


def test_one_options_section_has_no_warning():
    assert parse_knockd_conf(DEBIAN_DEFAULT, PATH).warnings == ()


def test_tcpflags_tolerates_spaces_and_case():
    (door,) = parse_knockd_conf("[d]\nsequence=1\nTCPFlags = SYN, !ack\n").doors
    assert (door.tcp_flags.mask, door.tcp_flags.value) == (TcpFlag.SYN | TcpFlag.ACK,
                                                           TcpFlag.SYN)


def test_parse_sequence_public():
    assert parse_sequence("7000,8000:udp") == (KnockPort(7000), KnockPort(8000, "udp"))
    assert str(KnockPort(8000, "udp")) == "8000:udp"
    with pytest.raises(ValueError):
        parse_sequence("x")


# --------------------------------------------------------------------------- one-time sequences

OTS = " 7001,7002\n# a comment\n\n 99999,1\n 7101,7102:udp\n7201,7202\n"


def test_next_one_time_sequence_and_knockd_edit():
    first = next_one_time_sequence(OTS)
    assert first.sequence == (KnockPort(7001), KnockPort(7002))
    assert (first.line, first.offset, first.mark) == (1, 0, b"#")
    text = mark_used(OTS, first)
    assert text.startswith("#7001,7002\n")
    second = next_one_time_sequence(text)
    # The unparsable '99999,1' line is skipped; the edit targets the used line itself
    # (knockd 0.8 writes its '#' over the bad line instead — observed on Debian's knockd).
    assert (second.line, second.sequence) == (5, (KnockPort(7101), KnockPort(7102, "udp")))
    assert OTS.encode()[second.offset:second.offset + 5] == b" 7101"
    text = mark_used(text, second)
    assert "\n 99999,1\n#7101,7102:udp\n" in text
    third = next_one_time_sequence(text)
    assert third.line == 6
    text = mark_used(text, third)
    assert text.endswith("#201,7202\n")  # knockd's man page warns: lead each line with a space
    assert next_one_time_sequence(text) is None


def test_one_time_offsets_are_bytes():
    text = "# café\n 5,6\n"
    found = next_one_time_sequence(text)
    assert found.offset == len("# café\n".encode())
    assert mark_used(text, found) == "# café\n#5,6\n"


def test_one_time_crlf_and_empty():
    assert next_one_time_sequence("") is None
    assert next_one_time_sequence("#1,2\n\n   \n") is None
    found = next_one_time_sequence("#1\r\n 3,4\r\n")
    assert (found.line, found.offset) == (2, 4)


# --------------------------------------------------------------------------- sniffing


def test_looks_like_knockd_conf():
    assert looks_like_knockd_conf(DEBIAN_DEFAULT)
    assert looks_like_knockd_conf(MAN_EXAMPLE)
    assert looks_like_knockd_conf("[door]\nSequence = 1,2,3\n")
    assert looks_like_knockd_conf("[options]\n  UseSyslog\n")


@pytest.mark.parametrize("text", [
    '[[door]]\nname = "ssh"\nsequence = ["tcp:7000"]\n',
    '[daemon]\ninterfaces = ["eth0"]\n\n[[door]]\nname = "x"\n',
    '[door]\nsequence = ["tcp:7000", "udp:8000"]\n',
    "",
    "just some text\n",
    "SOURCE ANY\nKEY_BASE64 abc\n",
])
def test_does_not_look_like_knockd_conf(text):
    assert not looks_like_knockd_conf(text)


def test_lines_of_keys_with_crlf_and_comments_after_values():
    """Each key's line is the line the admin wrote: CRLF ends count as one line each, and a
    bare UseSyslog (any section, the first one) is recorded for [options]."""
    text = ("# top\r\n[d]\r\n  UseSyslog\r\n\r\n  sequence = 7000  \r\n"
            "  command = /bin/true # why\r\n[options]\r\n  LogFile = /var/log/k.log\r\n"
            "  UseSyslog\r\n")
    config = parse_knockd_conf(text, PATH)
    (door,) = config.doors
    assert (door.line, door.line_of("sequence"), door.line_of("Start_Command")) == (2, 5, 6)
    assert door.line_of("seq_timeout") == 2  # not written: the section's line
    assert door.start_command == "/bin/true # why"  # kept whole: /bin/sh skips the comment
    assert config.options == KnockdOptions(True, "/var/log/k.log", line=7,
                                           lines=(("LOGFILE", 8), ("USESYSLOG", 3)))
