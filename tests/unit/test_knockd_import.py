"""knockd.conf → knockgate TOML: valid TOML always, knockd's meaning kept or called out."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from knockgate.compat.knockd.conf import KnockdConfig, parse_knockd_conf
from knockgate.compat.knockd.importer import (
    argv_of,
    comment_text,
    convert_knockd,
    door_names,
    knockd_to_toml,
    shell_rewrite,
    toml_array,
    toml_string,
)
from knockgate.config.describe import describe
from knockgate.config.load import load_config, parse_config
from knockgate.config.schema import Config
from knockgate.errors import ConfigError
from knockgate.model import TcpFlag
from tests.unit.test_knockd_conf import DEBIAN_DEFAULT, MAN_EXAMPLE

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.filter_too_much])
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")

# The example from the seeds (a German knockd talk): a SYN-only door whose command starts sshd.
SEED_EXAMPLE = """\
[startSSH]
  sequence = 42000,23000,1337
  seq_timeout = 5
  command = /etc/init.d/sshd start
  tcpflags = syn
"""

MIXED = """\
[options]
\tInterface = enp3s0
\tLogFile = /var/log/knockd.log
\tUseSyslog

[udp-door]
\tsequence = 2222:udp,3333:udp,4444
\tcommand = /usr/bin/logger knocked %IP%
\tcommand_6 = /usr/bin/logger knocked6 %IP%

[web]
\tsequence = 5000,6000
\tseq_timeout = 9
\ttcpflags = syn,!ack
\tstart_command = iptables -I INPUT -s %IP% -p tcp --dport 443 -j ACCEPT
\tstop_command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 443 -j ACCEPT
\tcmd_timeout = 30
\ttarget = 192.0.2.7
"""


def convert(text: str, path: str = "/etc/knockd.conf") -> str:
    return knockd_to_toml(parse_knockd_conf(text, path))


def prose(text: str) -> str:
    """The TOML text with wrapped comment lines joined, for looking up phrases."""
    return re.sub(r"\n#   +", " ", text)


def doors_of(text: str) -> list[dict]:
    return tomllib.loads(convert(text))["door"]


# --------------------------------------------------------------------------- whole files


def test_debian_default():
    text = convert(DEBIAN_DEFAULT)
    data = tomllib.loads(text)
    # knockd never drops a packet: knock ports stay as reachable as they were (issue 11).
    assert data["daemon"] == {"syslog": True, "hide_knock_ports": False}
    assert [door["name"] for door in data["door"]] == ["openSSH", "closeSSH", "openHTTPS"]
    ssh = data["door"][0]
    assert ssh["sequence"] == ["tcp:7000:syn", "tcp:8000:syn", "tcp:9000:syn"]
    assert ssh["timeout"] == 5
    assert ssh["command"] == ["/sbin/iptables", "-A", "INPUT", "-s", "{ip}", "-p", "tcp",
                              "--dport", "22", "-j", "ACCEPT"]
    assert "shell" not in ssh and "stop_command" not in ssh and "command_delay" not in ssh
    assert text.startswith("# knockgate configuration converted from knockd's /etc/knockd.conf")
    assert '# interfaces = ["eth0"]' in text  # knockd's default, offered but not imposed
    assert "open_for" in text.split("[daemon]")[0]  # the header explains open / open_for


def test_seed_example():
    (door,) = doors_of(SEED_EXAMPLE)
    assert door == {"name": "startSSH", "timeout": 5,
                    "sequence": ["tcp:42000:syn", "tcp:23000:syn", "tcp:1337:syn"],
                    "command": ["/etc/init.d/sshd", "start"]}


def test_man_page_example_one_time_sequences_and_six():
    text = convert(MAN_EXAMPLE)
    data = tomllib.loads(text)
    assert data["daemon"] == {"interfaces": ["eth0"], "log_file": "/var/log/knockd.log",
                              "hide_knock_ports": False}
    assert "PidFile /run/knockd.pid is not carried over" in prose(text)
    (door,) = data["door"]
    assert door["one_time_sequences"] == "/etc/knockd/smtp_sequences"
    assert door["tcp_flags"] == "fin,!ack"
    assert "sequence" not in door
    assert door["target"] == "192.0.2.10"
    assert (door["timeout"], door["command_delay"]) == (15, 5)
    assert door["command_6"][0] == "/usr/sbin/ip6tables" and "{ip}" in door["command_6"]
    assert door["stop_command_6"][:3] == ["/usr/sbin/ip6tables", "-D", "INPUT"]
    # start -A and stop -D for one port: the commented-out knockgate way is offered
    assert '# open = ["tcp:25"]' in text and "# open_for = 5" in text


def test_mixed_udp_flags_shell_target_options():
    text = convert(MIXED)
    data = tomllib.loads(text)
    assert data["daemon"] == {"interfaces": ["enp3s0"], "log_file": "/var/log/knockd.log",
                              "syslog": True, "hide_knock_ports": False}
    udp, web = data["door"]
    assert udp["name"] == "udp_door"
    assert "knockd's [udp-door] is not a knockgate name" in prose(text)
    assert udp["sequence"] == ["udp:2222", "udp:3333", "tcp:4444:i"]
    assert "a plain 'tcp:PORT' in knockgate means a SYN only" in prose(text)
    assert udp["command_6"] == ["/usr/bin/logger", "knocked6", "{ip}"]
    assert "stop_command_6" not in udp
    assert web["sequence"] == ["tcp:5000:syn,!ack", "tcp:6000:syn,!ack"]
    assert web["shell"] is True  # a bare 'iptables' is found through PATH by /bin/sh
    assert web["command"] == 'iptables -I INPUT -s "$1" -p tcp --dport 443 -j ACCEPT'
    assert web["stop_command"][0] == "/sbin/iptables"  # no shell needed: stays an argv list
    assert (web["command_delay"], web["target"], web["timeout"]) == (30, "192.0.2.7", 9)
    assert '# open = ["tcp:443"]' in text


def test_udp_only_door_has_no_flags_note():
    text = convert("[u]\nsequence = 1:udp,2:udp\ncommand = /bin/true\n")
    assert "TCPFlags" not in text and ":i" not in text


def test_one_time_sequences_without_tcpflags_ignore_flags():
    (door,) = doors_of("[o]\none_time_sequences = /etc/knockd/o\ncommand = /bin/true\n")
    assert door["tcp_flags"] == "i"


def test_flags_always_written_as_words():
    everything = "fin,syn,rst,psh,ack,urg"
    (door,) = doors_of(f"[d]\nsequence=1\ntcpflags = {everything.upper()}\ncommand=/bin/true\n")
    assert door["sequence"] == [f"tcp:1:{everything}"]  # not tportknockd's letter 'x'
    (door,) = doors_of("[d]\nsequence=1\ntcpflags = !ack , SYN\ncommand=/bin/true\n")
    assert door["sequence"] == ["tcp:1:syn,!ack"]


@pytest.mark.parametrize(("seconds", "expected"), [(0, 1), (25, 25), (3600, 3600),
                                                   (86400, 3600)])
def test_timeout_kept_within_knockgate_bounds(seconds, expected):
    (door,) = doors_of(f"[d]\nsequence=1\nseq_timeout={seconds}\ncommand=/bin/true\n")
    assert door["timeout"] == expected


# --------------------------------------------------------------------------- commands


def test_no_command_means_only_a_log_line():
    text = convert("[d]\nsequence = 1\nstop_command = /bin/false\n")
    (door,) = tomllib.loads(text)["door"]
    assert door["command"] == ["/bin/true"] and "stop_command" not in door
    assert "only logged the knock" in prose(text) and "never runs a stop command" in prose(text)


def test_ipv6_fallbacks_spelled_out_as_knockd_runs_them():
    (door,) = doors_of("[d]\nsequence=1\ncommand = /a %IP%\nstop_command = /b %IP%\n"
                       "command_6 = /a6 %IP%\n")
    assert door["command_6"] == ["/a6", "{ip}"]
    assert door["stop_command_6"] == ["/b", "{ip}"]  # knockd's key-by-key fallback
    (door,) = doors_of("[d]\nsequence=1\ncommand = /a\nstop_command_6 = /b6\n")
    assert (door["command_6"], door["stop_command_6"]) == (["/a"], ["/b6"])
    assert "stop_command" not in door


def test_ipv6_only_door():
    (door,) = doors_of("[d]\nsequence=1\ncommand_6 = /a6\nstop_command = /b\n")
    assert "command" not in door and "stop_command" not in door  # IPv4 runs nothing in knockd
    assert (door["command_6"], door["stop_command_6"]) == (["/a6"], ["/b"])


@pytest.mark.parametrize(("command", "argv"), [
    ("/sbin/iptables -A INPUT -s %IP% -j ACCEPT",
     ["/sbin/iptables", "-A", "INPUT", "-s", "{ip}", "-j", "ACCEPT"]),
    ("/usr/bin/logger  knock\tfrom %IP%!", None),
    ("/usr/bin/logger knock from %IP%", ["/usr/bin/logger", "knock", "from", "{ip}"]),
    ("/x --src=%IP%/32 100%", ["/x", "--src={ip}/32", "100%"]),
    ("/x a,b:c@d+e", ["/x", "a,b:c@d+e"]),
    ("/usr/bin/ключ %IP%", ["/usr/bin/ключ", "{ip}"]),
    ("iptables -A INPUT -s %IP% -j ACCEPT", None),       # PATH lookup: the shell's job
    ("./local %IP%", None),
    ("%IP%", None),
    ("/bin/echo %IP% > /tmp/log", None),
    ("/bin/echo %IP% >> /tmp/log", None),
    ("/bin/a | /bin/b", None),
    ("/bin/a; /bin/b", None),
    ("/bin/a && /bin/b", None),
    ("/bin/a &", None),
    ("/bin/echo $HOME", None),
    ("/bin/echo `id`", None),
    ("/bin/echo $(id)", None),
    ("/bin/echo 'quoted word'", None),
    ('/bin/echo "quoted"', None),
    ("/bin/echo back\\slash", None),
    ("/bin/ls *.conf", None),
    ("/bin/ls ?", None),
    ("/bin/ls [ab]", None),
    ("/bin/ls ~", None),
    ("/bin/echo {a,b}", None),
    ("/bin/echo a # comment", None),
    ("/bin/echo (x)", None),
    ("/bin/echo a\u00a0b", None),                       # not a blank to sh, nor printable
    ("/bin/echo a\u2028b", None),
])
def test_argv_only_without_any_shell_syntax(command, argv):
    assert argv_of(command) == argv


@pytest.mark.parametrize(("command", "expected"), [
    ("iptables -s %IP%", 'iptables -s "$1"'),
    ('echo "from %IP% now"', 'echo "from $1 now"'),
    ("echo '%IP%'", "echo ''\"$1\"''"),
    ("echo x%IP%y%IP%", 'echo x"$1"y"$1"'),
    ("echo $(host %IP%)", 'echo $(host "$1")'),
    ("echo \"$(host '%IP%')\"", "echo \"$(host ''\"$1\"'')\""),
    ("echo `host %IP%`", "echo `host $1`"),
    ("echo \\%IP%", 'echo "$1"'),
    ('echo "\\%IP%"', 'echo "\\\\$1"'),
    ("echo 100% %IP", "echo 100% %IP"),
])
def test_shell_rewrite(command, expected):
    assert shell_rewrite(command).text == expected


def test_shell_rewrite_warnings():
    assert not shell_rewrite('echo "%IP%" $HOME').warnings
    (single,) = shell_rewrite("sh -c 'echo %IP%'").warnings
    assert "single quotes" in single
    (positional,) = shell_rewrite("echo %IP% $1").warnings
    assert "$1" in positional
    assert any("unbalanced" in w for w in shell_rewrite("echo '%IP%").warnings)


def test_shell_door_warning_is_a_comment_above_the_command():
    text = convert("[d]\nsequence=1\ncommand = /bin/sh -c 'logger %IP%'\n")
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("command = "))
    assert lines[index - 1].startswith("#") and "WARNING (command)" in "\n".join(lines[:index])
    (door,) = tomllib.loads(text)["door"]
    assert door["shell"] is True and door["command"] == "/bin/sh -c 'logger '\"$1\"''"


# Pieces of knockd commands; the converted command must print what knockd's printed.
FRAGMENTS = [
    "%IP%", "'%IP%'", '"%IP%"', "x%IP%y", "'a %IP% b'", '"a %IP% b"', "$(printf %s %IP%)",
    "\"$(printf %s '%IP%')\"", "`printf %s %IP%`", "\\%IP%", '"\\%IP%"', "'\\%IP%'",
    "\"'%IP%'\"", "'\"%IP%\"'", '$(printf %s "%IP%")', "%IP%%IP%", "a\\ %IP%", "${x:-%IP%}",
    '"${x:-%IP%}"', "'${x:-%IP%}'", "$(sh -c 'printf %s %IP%')", "\"$(sh -c 'printf %s %IP%')\"",
    "$(sh -c \"printf '%s' %IP%\")", "plain", "'it''s'", '"$HOME"', "\\'", "100%",
]


def run_knockd_way(command: str, ip: str) -> str:
    """What knockd runs: %IP% pasted into the text, then /bin/sh -c."""
    return subprocess.run(["/bin/sh", "-c", command.replace("%IP%", ip)], capture_output=True,
                          text=True, check=False, env={"HOME": "/home/x"}).stdout


def run_knockgate_way(command: str, ip: str) -> str:
    """What knockgate runs for a door with shell = true."""
    return subprocess.run(["/bin/sh", "-c", shell_rewrite(command).text, "knockgate", ip, "d"],
                          capture_output=True, text=True, check=False,
                          env={"HOME": "/home/x"}).stdout


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4),
       st.sampled_from(["10.201.0.2", "fd00:201::2", "192.0.2.255"]))
def test_shell_rewrite_runs_like_knockd(fragments, ip):
    command = "printf '<%s>' " + " ".join(fragments)
    assert run_knockgate_way(command, ip) == run_knockd_way(command, ip)


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_each_fragment_runs_like_knockd(fragment):
    command = "printf '<%s>' " + fragment
    assert run_knockgate_way(command, "10.1.2.3") == run_knockd_way(command, "10.1.2.3")


def test_open_suggestion_needs_a_matching_pair():
    pair = ("[d]\nsequence=1\ncommand = /usr/sbin/iptables -I INPUT -s %IP% -p udp --dport 53 "
            "-j ACCEPT\nstop_command = /usr/sbin/iptables -D INPUT -s %IP% -p udp --dport 53 "
            "-j ACCEPT\ncmd_timeout = 20\n")
    text = convert(pair)
    assert '# open = ["udp:53"]' in text and "# open_for = 20" in text
    assert "# open" not in convert(pair.replace("--dport 53 -j ACCEPT\ncmd", "--dport 54 -j "
                                                                            "ACCEPT\ncmd"))
    assert "# open =" not in convert(DEBIAN_DEFAULT)  # openSSH has no stop command


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(("names", "expected"), [
    (["ssh", "web_2"], ["ssh", "web_2"]),
    (["open ssh!"], ["open_ssh"]),
    (["open-ssh", "open_ssh"], ["open_ssh_2", "open_ssh"]),   # the valid name keeps its name
    (["a-b", "a.b", "a b"], ["a_b", "a_b_2", "a_b_3"]),
    (["22"], ["door_22"]),
    (["_x"], ["x"]),
    (["ключ"], ["door_"]),
    (["ключ", "ключ2"], ["door_", "door_2"]),
    (["x" * 40, "x" * 41], ["x" * 32, "x" * 30 + "_2"]),
    (["", "!"], ["door_", "door__2"]),
])
def test_door_names(names, expected):
    assert door_names(names) == expected


# --------------------------------------------------------------------------- TOML quoting


@pytest.mark.parametrize("text", ['a"b', "a\\b", 'x\\"y', "'''", '"""', "line\nbreak",
                                  "tab\there", "\x00\x01\x1f\x7f", "ключ 😀", "\u2028\u0085",
                                  "\\u0041", "#", "[[door]]"])
def test_toml_string_round_trips(text):
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text
    assert tomllib.loads(f"k = {toml_array([text, text])}")["k"] == [text, text]


@given(st.text())
def test_toml_string_round_trips_any_text(text):
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_undecodable_bytes_become_replacement_characters():
    broken = b"/opt/\xff/x".decode("utf-8", "surrogateescape")
    text = f"k = {toml_string(broken)}"
    text.encode()  # printable as UTF-8
    assert tomllib.loads(text)["k"] == "/opt/\ufffd/x"


@given(st.text())
def test_comment_text_stays_one_comment(text):
    assert tomllib.loads(f"# {comment_text(text)}\nk = 1\n") == {"k": 1}


def test_hostile_path_and_names_stay_comments():
    config = parse_knockd_conf('[a"b\\c]\nsequence=1\ncommand=/x "%IP%" \\ \'\n'
                               "[\u00e9t\u00e9 \u2028]\nsequence=2\ncommand=/x\n",
                               'k"nock\nd.conf\\')
    data = tomllib.loads(knockd_to_toml(config))
    assert [door["name"] for door in data["door"]] == ["a_b_c", "t"]
    assert data["door"][0]["command"] == '/x "$1" \\ \''


# --------------------------------------------------------------------------- properties

_COMMANDS = st.one_of(
    st.none(),
    st.text(max_size=50),
    st.sampled_from(["/sbin/iptables -A INPUT -s %IP% -j ACCEPT", "logger %IP%",
                     "/bin/sh -c 'echo %IP% >> /tmp/x'", '/x "{ip}" {}', "/x {door}",
                     "/x %IP%}{", "echo ${HOME} %IP%", "/x a\\b \"c\"", "/x 'unbalanced"]),
)
_DOOR = st.fixed_dictionaries({
    "name": st.text(min_size=1, max_size=40),
    "sequence": st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["", ":udp", ":TCP"])),
                         min_size=1, max_size=32),
    "tcpflags": st.sampled_from([None, "syn", "syn,!ack", "FIN, !ack ,urg", "!syn"]),
    "seq_timeout": st.one_of(st.none(), st.integers(0, 7 * 24 * 3600)),
    "cmd_timeout": st.one_of(st.none(), st.integers(0, 7 * 24 * 3600)),
    "start_command": _COMMANDS, "start_command_6": _COMMANDS,
    "stop_command": _COMMANDS, "stop_command_6": _COMMANDS,
    "target": st.one_of(st.none(), st.sampled_from(["192.0.2.1", "2001:db8::1"])),
    "one_time_sequences": st.one_of(st.none(), st.none(), st.text(min_size=1, max_size=30)),
})
_OPTIONS = st.lists(st.sampled_from(["UseSyslog", "logfile = /var/log/k\"d.log",
                                     "interface = eth0", "pidfile = /run/k.pid"]),
                    unique=True, max_size=4)


def door_text(door: dict) -> str:
    lines = [f"[{door['name']}]"]
    if door["one_time_sequences"] is None:
        lines.append("sequence = " + ",".join(f"{port}{proto}" for port, proto in door["sequence"]))
    lines += [f"{key} = {value}" for key, value in door.items()
              if key not in ("name", "sequence") and value is not None]
    return "\n".join(lines)


def parsed_or_nothing(text: str) -> KnockdConfig:
    try:
        return parse_knockd_conf(text, "/etc/knockd.conf")
    except ConfigError:
        assume(False)
        raise


@FUZZ
@given(_OPTIONS, st.lists(_DOOR, min_size=1, max_size=4))
def test_any_parsable_knockd_conf_gives_valid_toml(options, doors):
    text = "\n".join(["[options]", *options, *map(door_text, doors)])
    config = parsed_or_nothing(text)
    data = tomllib.loads(knockd_to_toml(config))
    names = [door["name"] for door in data["door"]]
    assert len(names) == len(config.doors) == len(set(names))
    assert all(NAME.fullmatch(name) for name in names)
    for door, source in zip(data["door"], config.doors, strict=True):
        if source.one_time_sequences is None:
            assert len(door["sequence"]) == len(source.sequence)
        else:
            assert door["one_time_sequences"] == source.one_time_sequences
            assert "sequence" not in door
        commands = [value for key, value in door.items() if "command" in key and
                    key != "command_delay"]
        assert commands, "a door must run something"
        assert door.get("shell", False) == any(isinstance(value, str) for value in commands)


@FUZZ
@given(_OPTIONS, _DOOR.filter(lambda door: door["one_time_sequences"] is None))
def test_knockgate_accepts_any_single_converted_door(options, door):
    config = parsed_or_nothing("\n".join(["[options]", *options, door_text(door)]))
    parsed = parse_config(knockd_to_toml(config), "/etc/knockd.conf")
    (result,) = parsed.doors
    assert len(result.sequence) == len(door["sequence"])
    assert result.command or result.command_6


# --------------------------------------------------------------------------- knockgate accepts


@pytest.mark.parametrize("sample", [DEBIAN_DEFAULT, SEED_EXAMPLE, MIXED])
def test_knockgate_accepts_the_samples(sample):
    config = parse_config(convert(sample), "/etc/knockd.conf")
    assert len(config.doors) == len(parse_knockd_conf(sample).doors)


def test_knockgate_accepts_the_man_page_example(tmp_path: Path):
    sequences = tmp_path / "smtp_sequences"
    sequences.write_text("#used\n2001,2002:udp,2003\n")
    text = MAN_EXAMPLE.replace("/etc/knockd/smtp_sequences", str(sequences))
    config = parse_config(convert(text), "/etc/knockd.conf")
    (door,) = config.doors
    assert [(f.proto, f.port) for f in door.sequence] == [("tcp", 2001), ("udp", 2002),
                                                          ("tcp", 2003)]
    assert (door.sequence[0].flags_mask, door.sequence[0].flags_value) == (
        TcpFlag.FIN | TcpFlag.ACK, TcpFlag.FIN)
    assert door.command_6[0] == "/usr/sbin/ip6tables" and door.command_delay == 5
    assert str(door.target) == "192.0.2.10"


def test_knockgate_runs_shell_commands_with_the_address_as_dollar_one():
    config = parse_config(convert(MIXED), "/etc/knockd.conf")
    web = config.doors[1]
    assert web.shell and web.command[:2] == ("/bin/sh", "-c")
    assert web.command[3:] == ("knockgate", "{ip}", "{door}")
    (knock,) = {(f.flags_mask, f.flags_value) for f in web.sequence}
    assert knock == (TcpFlag.SYN | TcpFlag.ACK, TcpFlag.SYN)
    udp = config.doors[0]
    assert (udp.sequence[2].flags_mask, udp.sequence[2].flags_value) == (0, 0)  # not SYN-only


# --------------------------------------------------------------------------- reachability


def test_knock_ports_are_not_hidden_and_check_says_so():
    """knockd never drops a packet: a knock port that is also a service stays reachable."""
    text = convert("[ssh]\nsequence = 22,25565:udp\ncommand = /bin/true\n")
    assert "hide_knock_ports = false" in text
    assert "knockd never drops a packet" in prose(text)
    config = parse_config(text, "/etc/knockd.conf")
    assert config.hidden_ports == []
    (line,) = [line for line in describe(config, host_bytes=1 << 34)
               if "hide_knock_ports" in line]
    assert line.startswith("knock ports not hidden") and "tcp:22, udp:25565" in line


def test_check_is_silent_about_hidden_knock_ports():
    config = parse_config('[[door]]\nname = "a"\nsequence = ["tcp:7000"]\nopen = ["tcp:22"]\n')
    assert not any("hide_knock_ports" in line for line in describe(config, host_bytes=1 << 34))


# --------------------------------------------------------------------------- line numbers
# Every line a message names is a line of the knockd.conf the admin wrote, never one of the
# TOML it is converted to (which is three times longer).

SHELL_DOORS = """\
# a comment first
[options]
  UseSyslog
[web]
  sequence = 5000,6000
  command = /usr/bin/logger opened %IP%   # comments after values reach /bin/sh
[mail]

  sequence = 7000:udp,8000
  seq_timeout = 9
  start_command = echo %IP% >> /tmp/mail
"""


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def served(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "knockd.conf"
    path.write_bytes(text.encode())
    path.chmod(0o600)
    return load_config(str(path))


def load_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        served(tmp_path, text)
    return caught.value


@pytest.mark.parametrize("newline", [str, crlf], ids=["lf", "crlf"])
@pytest.mark.parametrize(("text", "lines"), [(DEBIAN_DEFAULT, {"openSSH": 4, "closeSSH": 10,
                                                                "openHTTPS": 16}),
                                              (SEED_EXAMPLE, {"startSSH": 1}),
                                              (MIXED, {"udp_door": 6, "web": 11}),
                                              (SHELL_DOORS, {"web": 4, "mail": 7})])
def test_check_names_the_knockd_lines_of_doors(tmp_path, newline, text, lines):
    config = served(tmp_path, newline(text))
    assert {door.name: door.line for door in config.doors} == lines
    described = [line for line in describe(config, host_bytes=1 << 34) if line.startswith("door")]
    assert described == [line for line in described
                         if f"door {line.split()[1]} (line {lines[line.split()[1]]})" in line]
    assert len(described) == len(lines)


@pytest.mark.parametrize("newline", [str, crlf], ids=["lf", "crlf"])
def test_warnings_name_the_knockd_lines(tmp_path, newline):
    config = served(tmp_path, newline(SHELL_DOORS))
    path = str(tmp_path / "knockd.conf")
    assert [warning.split(" warning: ")[0] for warning in config.warnings] == [
        f"{path}:4:", f"{path}:7:"]


def test_man_page_example_door_line(tmp_path: Path):
    sequences = tmp_path / "smtp_sequences"
    sequences.write_text("2001,2002:udp,2003\n")
    config = served(tmp_path, MAN_EXAMPLE.replace("/etc/knockd/smtp_sequences", str(sequences)))
    assert [door.line for door in config.doors] == [6]


@pytest.mark.parametrize("newline", [str, crlf], ids=["lf", "crlf"])
@pytest.mark.parametrize(("text", "line", "reason"), [
    # knockgate refuses what its TOML cannot take: at the knockd key behind the TOML key
    ("[options]\n  UseSyslog\n\n[a]\n  sequence = 7000\n  Target = not-an-address  # x\n",
     6, "target"),
    ("[a]\n  one_time_sequences = /nonexistent/knockgate/otp\n", 2,
     "cannot read one_time_sequences"),
    ("[a]\n  sequence = 7000,8000\n\n# the longer door\n[b]\n  sequence = 7000,8000,9000\n",
     1, "prefix"),
])
def test_errors_name_the_knockd_lines(tmp_path, newline, text, line, reason):
    error = load_error(tmp_path, newline(text))
    assert (error.path, error.line) == (str(tmp_path / "knockd.conf"), line), error
    assert reason in error.reason.lower()
    assert "knockgate import knockd" in error.reason


def test_kernel_memory_error_names_the_first_doors_knockd_line(tmp_path):
    config = served(tmp_path, SHELL_DOORS)
    with pytest.raises(ConfigError) as caught:
        describe(config, host_bytes=1 << 10)
    assert caught.value.line == 4


def test_each_toml_key_comes_from_its_knockd_key():
    converted = convert_knockd(parse_knockd_conf(MAN_EXAMPLE))
    origin = {line.split(" = ")[0]: converted.origin(number)
              for number, line in enumerate(converted.text.splitlines(), start=1)
              if " = " in line and not line.startswith("#")}
    assert origin == {"interfaces": 4, "log_file": 2, "hide_knock_ports": 1, "name": 6,
                      "one_time_sequences": 7, "tcp_flags": 9, "timeout": 8, "target": 15,
                      "command": 10, "stop_command": 13, "command_6": 11,
                      "stop_command_6": 14, "command_delay": 12}
    # The IPv6 fallbacks knockd would run come from the IPv4 keys.
    text = "[a]\n sequence = 1\n start_command = /bin/a %IP%\n stop_command_6 = /bin/b\n"
    converted = convert_knockd(parse_knockd_conf(text))
    found = {line.split(" = ")[0]: converted.origin(number)
             for number, line in enumerate(converted.text.splitlines(), start=1)
             if line.startswith(("command", "stop_command"))}
    assert found == {"command": 3, "command_6": 3, "stop_command_6": 4, "command_delay": 4}
    assert converted.origin(0) is None and converted.origin(10_000) is None
    assert converted.origin(1) is None  # the importer's own header


# --------------------------------------------------------------------------- what knockd tolerates

SAME_SEQUENCE = """\
[options]
\tLogFile = {log}

[openSSH]
\tsequence = 7000,8000
\tcommand = /bin/true

[openWeb]
\tsequence = 7000,8000
\tcommand = /bin/false
"""


def test_doors_with_one_sequence_both_served_with_a_warning_naming_both_lines(tmp_path):
    config = served(tmp_path, SAME_SEQUENCE.format(log=tmp_path / "k.log"))
    assert [(door.name, door.line) for door in config.doors] == [("openSSH", 4), ("openWeb", 8)]
    assert [w for w in config.warnings if "same sequence" in w] == [
        f"{tmp_path}/knockd.conf:8: warning: door 'openWeb' has the same sequence as door "
        "'openSSH' (line 4): one knock opens both, as knockd does"]


def test_a_strict_prefix_is_still_refused_beside_doors_with_one_sequence(tmp_path):
    text = SAME_SEQUENCE.format(log=tmp_path / "k.log") + "[longer]\nsequence = 7000,8000,9\n"
    with pytest.raises(ConfigError, match="door 'openSSH': its sequence is a prefix of door "
                                          "'longer''s"):
        served(tmp_path, text)


def test_knockgate_toml_still_refuses_doors_with_one_sequence(tmp_path):
    toml = convert(SAME_SEQUENCE.format(log=tmp_path / "k.log"))
    with pytest.raises(ConfigError, match="prefix of door"):
        parse_config(toml, "k.toml")
    # and the import says so above the second door
    assert ("knockd opens this door and [openSSH] (line 4) on the same knock, and so does a "
            "served knockd.conf; knockgate's own TOML refuses two doors with one sequence"
            ) in prose(toml)


def test_import_notes_no_shared_sequence_when_tcpflags_differ():
    text = "[a]\nsequence = 1,2\n[b]\nsequence = 1,2\ntcpflags = syn\n"
    assert "same knock" not in convert(text)
    assert "same knock" in convert("[a]\nsequence = 1:udp\n[b]\nsequence = 1:udp\n"
                                   "tcpflags = syn\n")


def test_second_options_section_warnings_reach_check_and_the_import(tmp_path):
    text = (f"[options]\nLogFile = {tmp_path}/first.log\n[d]\nsequence = 1\n"
            f"[options]\nLogFile = {tmp_path}/second.log\n")
    config = served(tmp_path, text)
    assert config.options.log_file == f"{tmp_path}/second.log"
    assert [w.split(": warning: ")[0] for w in config.warnings] == [
        f"{tmp_path}/knockd.conf:5", f"{tmp_path}/knockd.conf:6"]
    assert "# " + config.warnings[0] in prose(convert(text, f"{tmp_path}/knockd.conf"))


@pytest.mark.parametrize("log_file", ["/nonexistent-knockgate-dir/k.log", "{tmp}",
                                      "/etc/passwd/k.log"],
                         ids=["missing-dir", "a-directory", "under-a-file"])
def test_unopenable_log_file_is_a_warning_at_its_line(tmp_path, log_file):
    log_file = log_file.format(tmp=tmp_path)
    config = served(tmp_path, f"[options]\n\n  LogFile = {log_file}\n[d]\nsequence = 1\n")
    assert config.warnings == (
        f"{tmp_path}/knockd.conf:3: warning: cannot open LogFile {log_file}; knockgate runs and "
        "logs to stderr (or syslog with UseSyslog) only, as knockd does",)


def test_openable_log_file_gives_no_warning_and_is_not_created_by_check(tmp_path):
    config = served(tmp_path, f"[options]\nLogFile = {tmp_path}/k.log\n[d]\nsequence = 1\n")
    assert config.warnings == ()
    assert not (tmp_path / "k.log").exists()


def test_serve_logging_survives_an_unopenable_log_file(capsys):
    import logging

    from knockgate.cli import _setup_logging

    _setup_logging(False, False, "/nonexistent-knockgate-dir/k.log")
    logging.getLogger("knockgate.test").info("still logging")
    err = capsys.readouterr().err
    assert "WARNING cannot open log file /nonexistent-knockgate-dir/k.log: No such file or " \
           "directory; logging to stderr only" in err
    assert "still logging" in err
