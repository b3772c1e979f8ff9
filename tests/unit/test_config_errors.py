"""Every configuration error names FILE:LINE: and a hint: one case per error path of config/."""

from __future__ import annotations

import base64
import errno
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from knockgate.config.files import read_one_time
from knockgate.config.load import exec_size, load_config, parse_config
from knockgate.errors import ConfigError
from knockgate.model import ALL_FLAGS, TcpFlag

SECRET = base64.b64encode(b"s" * 32).decode()
# Lines 1-4; a case's extra key lands on line 5.
DOOR = '[[door]]\nname="a"\nsequence=["tcp:1","tcp:2"]\nopen=["tcp:22"]\n'
# Lines 1-5; a case's extra key lands on line 6.
SPA = f'[spa]\n[[spa.key]]\nname="alice"\nsecret="{SECRET}"\nopen=["tcp:22"]\n'
SPA_KEY = '[spa]\n[[spa.key]]\nname="alice"\nopen=["tcp:22"]\n'  # lines 1-4, no secret yet
HMAC = base64.b64encode(b"h" * 64).decode()
FWKNOP_KEYS = f"KEY_BASE64 {SECRET}\nHMAC_KEY_BASE64 {HMAC}\n"

# Arguments that fit ARG_MAX as written (14 bytes each with NUL and pointer) and do not once
# {ip} is a full IPv6 address (48 bytes) or {key} a 32-character name (41 bytes).
_ARG_MAX = os.sysconf("SC_ARG_MAX")
IPS_OVER_ARG_MAX = ", ".join(['"/bin/echo"'] + ['"{ip}"'] * (_ARG_MAX // 48 + 1))
KEYS_OVER_ARG_MAX = ", ".join(['"/bin/echo"'] + ['"{key}"'] * (_ARG_MAX // 41 + 1))

# (config text, file the error names, its line, words of the reason, words of the hint).
# "{d}" is a directory holding the files of FILES.
CASES = {
    # the top level and TOML itself
    "unknown table": ("[deamon]\n", "k.toml", 1, "unknown key 'deamon'",
                      "did you mean 'daemon'?"),
    "unknown key, nothing close": ("zzz = 1\n", "k.toml", 1, "unknown key 'zzz'",
                                   "known keys: daemon, door, spa, fwknop"),
    "door not an array": ("door = 1\n", "k.toml", 1, "'door' must be an array of tables",
                          "write [[door]] headers"),
    "daemon not a table": ("daemon = 1\n", "k.toml", 1, "[daemon] must be a table",
                           "write a [daemon] header"),
    "bad TOML": ('[[door]]\nname="a\n', "k.toml", 2, "not valid TOML", "check quotes"),
    "TOML ends early": ("[[door]]\nsequence = [1,", "k.toml", 2, "not valid TOML",
                        "check quotes"),
    "nothing configured": ("[daemon]\n", "k.toml", None, "no door and no SPA key",
                           "add a [[door]] table"),
    # [daemon]
    "interfaces": (f'[daemon]\ninterfaces=[1]\n{DOOR}', "k.toml", 2,
                   "interfaces must be a list of names", "e.g. ['eth0']"),
    "not a whole number": (f"[daemon]\nmax_pending=1.5\n{DOOR}", "k.toml", 2,
                           "max_pending must be a whole number", "e.g. max_pending = 192"),
    "not a number": (f'[daemon]\ncommand_timeout="x"\n{DOOR}', "k.toml", 2,
                     "command_timeout must be a number", "e.g. command_timeout = 10.0"),
    "number too small": (f"[daemon]\ncommand_timeout=0\n{DOOR}", "k.toml", 2,
                         "command_timeout = 0 is out of range", "use 0.1 to 3600"),
    "not a boolean": (f"[daemon]\nhide_knock_ports=1\n{DOOR}", "k.toml", 2,
                      "hide_knock_ports must be true or false", "e.g. hide_knock_ports = true"),
    "relative path": (f'[daemon]\nstate_dir="rel"\n{DOOR}', "k.toml", 2,
                      "state_dir must be an absolute path",
                      "e.g. state_dir = '/var/lib/knockgate'"),
    "path not a string": (f"[daemon]\nlog_file=1\n{DOOR}", "k.toml", 2,
                          "log_file must be an absolute path", "e.g. log_file = '/"),
    "unknown engine": (f'[daemon]\nengine="gpu"\n{DOOR}', "k.toml", 2, "engine 'gpu' is unknown",
                       "use 'kernel' or 'userspace'"),
    "nflog group": (f"[daemon]\nnflog_group=0\n{DOOR}", "k.toml", 2, "out of range",
                    "use 1 to 65535"),
    # [[door]]
    "door not a table": ("door = [1]\n", "k.toml", 1, "each door must be a table",
                         "write [[door]]"),
    "unknown door key": (f"{DOOR}opn=1\n", "k.toml", 5, "unknown key 'opn'",
                         "did you mean 'open'?"),
    "door name": ('[[door]]\nname="a b"\nsequence=["tcp:1"]\nopen=["tcp:22"]\n', "k.toml", 2,
                  "door name 'a b' is missing or invalid", "e.g. 'ssh'"),
    "no door name": ('[[door]]\nsequence=["tcp:1"]\nopen=["tcp:22"]\n', "k.toml", 1,
                     "door name None is missing", "a letter then up to 31"),
    "empty sequence": ('[[door]]\nname="a"\nsequence=[]\nopen=["tcp:22"]\n', "k.toml", 3,
                       "sequence is missing or empty", "the knock frames"),
    "sequence a string": ('[[door]]\nname="a"\nsequence="tcp:1"\nopen=["tcp:22"]\n', "k.toml",
                          3, "sequence must be a list of strings", "the knock frames"),
    "bad frame": ('[[door]]\nname="a"\nsequence=["tcp:1:q"]\nopen=["tcp:22"]\n', "k.toml", 3,
                  "unknown TCP flag letter 'q'", "tportknockd letters"),
    "long sequence": ('[[door]]\nname="a"\nsequence=[' + ",".join(['"tcp:1"'] * 33)
                      + ']\nopen=["tcp:22"]\n', "k.toml", 3, "sequence has 33 knocks",
                      "use at most 32"),
    "bad open": ('[[door]]\nname="a"\nsequence=["tcp:1"]\nopen=["tcp:0"]\n', "k.toml", 4,
                 "out of range", "1-65535"),
    "number a string": (f'{DOOR}timeout="5"\n', "k.toml", 5, "timeout must be a number",
                        "e.g. timeout = 10.0"),
    "open_for": (f"{DOOR}open_for=0\n", "k.toml", 5, "open_for = 0 is out of range",
                 "use 1 to 604800"),
    "command_delay": (f"{DOOR}command_delay=-1\n", "k.toml", 5, "out of range",
                      "use 0 to 604800"),
    "target": (f'{DOOR}target="x"\n', "k.toml", 5, "target 'x' is not an IP address",
               "e.g. target = '192.0.2.1'"),
    "opens nothing": ('[[door]]\nname="a"\nsequence=["tcp:1"]\n', "k.toml", 1,
                      "door 'a' neither opens ports nor runs a command",
                      "add open = ['tcp:22'] or command"),
    "command string": (f'{DOOR}command="rm -rf /"\n', "k.toml", 5,
                       "command is a string; commands are argv lists, never run by a shell",
                       "write command = ['rm', '-rf', '/']"),
    "empty shell command": (f'{DOOR}shell=true\ncommand=" "\n', "k.toml", 6, "command is empty",
                            "write the command, or leave the key out"),
    "shell not a boolean": (f"{DOOR}shell=1\n", "k.toml", 5, "shell must be true or false",
                            "e.g. shell = false"),
    "command not strings": (f"{DOOR}command=[1]\n", "k.toml", 5,
                            "command must be a list of non-empty strings",
                            "e.g. ['/usr/bin/logger'"),
    "lone brace": (f'{DOOR}command=["/bin/x","{{"]\n', "k.toml", 5, "command: '{':",
                   "write '{{' for a literal brace"),
    "unknown placeholder": (f'{DOOR}stop_command=["/bin/x","{{host}}"]\n', "k.toml", 5,
                            "stop_command: unknown placeholder {host}",
                            "use {ip}, {door} or {key}"),
    "relative program": (f'{DOOR}command_6=["x"]\n', "k.toml", 5,
                         "command_6[0] 'x' is not an absolute path", "full path"),
    "unknown door engine": (f'{DOOR}engine="gpu"\n', "k.toml", 5, "engine 'gpu' is unknown",
                            "use 'kernel' or 'userspace'"),
    "kernel refused": (f'{DOOR}target="10.0.0.1"\nengine="kernel"\n', "k.toml", 6,
                       "door 'a' cannot run in the kernel: it has a target",
                       "remove engine = 'kernel'"),
    "penalty without kernel": (f'{DOOR}engine="userspace"\npenalty=5\n', "k.toml", 6,
                               "door 'a': penalty needs the kernel engine (engine is set on "
                               "the door)", "remove penalty or let the door run in the kernel"),
    "negative penalty": (f"{DOOR}penalty=-1\n", "k.toml", 5, "penalty = -1 is out of range",
                         "use 0 to 604800"),
    # one-time sequences
    "sequence and one-time": (f'{DOOR}one_time_sequences="{{d}}/once"\n', "k.toml", 3,
                              "door 'a' has both sequence and one_time_sequences",
                              "keep one of the two"),
    "one-time unreadable": ('[[door]]\nname="a"\nopen=["tcp:22"]\n'
                            'one_time_sequences="{d}/missing"\n', "k.toml", 4,
                            "cannot read one_time_sequences {d}/missing",
                            "one sequence per line"),
    "one-time relative": ('[[door]]\nname="a"\nopen=["tcp:22"]\none_time_sequences="once"\n',
                          "k.toml", 4, "one_time_sequences must be an absolute path",
                          "e.g. one_time_sequences = '/"),
    "one-time writable by others": ('[[door]]\nname="a"\nopen=["tcp:22"]\n'
                                    'one_time_sequences="{d}/once-open"\n', "k.toml", 4,
                                    "one_time_sequences {d}/once-open is writable by others "
                                    "(mode -rw-rw-rw-)", "chmod go-w {d}/once-open"),
    # commands the kernel would refuse (E2BIG), counted with {ip} as a full IPv6 address
    "argument over MAX_ARG_STRLEN": (f'{DOOR}command=["/bin/echo", "{"x" * 131072}"]\n',
                                     "k.toml", 5, "command: an argument is 131073 bytes",
                                     "move the long part into a script"),
    "placeholder pushes an argument over": (
        f'{DOOR}command=["/bin/echo", "{"x" * 131040}{{ip}}"]\n', "k.toml", 5,
        "command: an argument is 131080 bytes with its placeholders at their longest",
        "shorten it"),
    "argv over ARG_MAX": (f"{DOOR}stop_command=[{IPS_OVER_ARG_MAX}]\n", "k.toml", 5,
                          "stop_command: the command and the environment are",
                          "move the long part into a script"),
    "shell command over MAX_ARG_STRLEN": (f'{DOOR}shell=true\ncommand="{"x" * 131072}"\n',
                                          "k.toml", 6, "(MAX_ARG_STRLEN)", "shorten it"),
    "action over ARG_MAX": (f"{SPA}actions={{21=[{KEYS_OVER_ARG_MAX}]}}\n", "k.toml", 6,
                            "(ARG_MAX)", "shorten it"),
    "tcp_flags alone": (f'{DOOR}tcp_flags="s"\n', "k.toml", 5,
                        "tcp_flags only applies to one_time_sequences",
                        "write the flags into each frame"),
    "tcp_flags not a string": ('[[door]]\nname="a"\nopen=["tcp:22"]\n'
                               'one_time_sequences="{d}/once"\ntcp_flags=1\n', "k.toml", 5,
                               "tcp_flags must be a string", "e.g. 'syn,!ack'"),
    "tcp_flags bad": ('[[door]]\nname="a"\nopen=["tcp:22"]\n'
                      'one_time_sequences="{d}/once"\ntcp_flags="q"\n', "k.toml", 5,
                      "unknown TCP flag letter 'q'", "tportknockd letters"),
    # checks across doors
    "door twice": (DOOR + DOOR, "k.toml", 5, "door 'a' is defined twice",
                   "the first is on line 1; rename one"),
    "prefix": (DOOR + '[[door]]\nname="b"\nsequence=["tcp:1","tcp:2","tcp:3"]\nopen=["tcp:22"]\n',
               "k.toml", 1, "door 'a': its sequence is a prefix of door 'b''s",
               "make the sequences differ"),
    "knock port opens": ('[[door]]\nname="a"\nsequence=["tcp:22"]\nopen=["tcp:22"]\n', "k.toml",
                         1, "door 'a' opens tcp:22, which door 'a' knocks on",
                         "a knock port cannot also be a protected port"),
    "SPA port is a knock port": ('[[door]]\nname="a"\nsequence=["udp:9000","tcp:1"]\n'
                                 f'open=["tcp:22"]\n[spa]\nport=9000\n{SPA[6:]}', "k.toml", 6,
                                 "the SPA port udp:9000 is also a knock or protected port",
                                 "choose another [spa] port"),
    # [spa]
    "spa not a table": ("spa = 1\n", "k.toml", 1, "[spa] must be a table",
                        "write a [spa] header"),
    "spa without keys": ("[spa]\nport=62201\n", "k.toml", 1, "[spa] has no [[spa.key]]",
                         "add one per user"),
    "unknown spa key": (f"[spa]\nprot=1\n{SPA[6:]}", "k.toml", 2, "unknown key 'prot'",
                        "did you mean 'port'?"),
    "spa port": (f"[spa]\nport=70000\n{SPA[6:]}", "k.toml", 2, "port = 70000 is out of range",
                 "use 1 to 65535"),
    "spa port not whole": (f"[spa]\nport=1.5\n{SPA[6:]}", "k.toml", 2,
                           "port must be a whole number", "e.g. port = 62201"),
    "max_age": (f"[spa]\nmax_age=0\n{SPA[6:]}", "k.toml", 2, "max_age = 0 is out of range",
                "use 1 to 3600"),
    "spa key not a table": ("[spa]\nkey=[1]\n", "k.toml", 2, "each SPA key must be a table",
                            "write [[spa.key]]"),
    "spa key name": (SPA.replace('"alice"', '"1x"'), "k.toml", 3,
                     "SPA key name '1x' is missing or invalid", "e.g. 'alice'"),
    "unknown key of a key": (f"{SPA}secrte=1\n", "k.toml", 6, "unknown key 'secrte'",
                             "did you mean 'secret'?"),
    "key opens nothing": (SPA.replace('open=["tcp:22"]\n', ""), "k.toml", 2,
                          "SPA key 'alice' may neither open ports nor run actions",
                          "add open = ['tcp:22'] or actions"),
    "key opens bad port": (SPA.replace("tcp:22", "tcp:99999"), "k.toml", 5, "out of range",
                           "1-65535"),
    "key twice": (SPA + SPA[6:], "k.toml", 2, "SPA key 'alice' is defined twice",
                  "key names must be unique"),
    "no secret": (SPA_KEY, "k.toml", 2, "give exactly one of secret and secret_file",
                  "secret_file = '/etc/knockgate/NAME.key'"),
    "secret and secret_file": (f'{SPA}secret_file="{{d}}/secret"\n', "k.toml", 2,
                               "give exactly one of secret and secret_file",
                               "keeps it out of this file"),
    "secret not a string": (f"{SPA_KEY}secret=5\n", "k.toml", 5, "secret must be a string",
                            "write the base64 line from 'knockgate keygen' in quotes"),
    "secret not base64": (f'{SPA_KEY}secret="!!"\n', "k.toml", 5,
                          "the SPA secret is not valid base64", "knockgate keygen"),
    "secret short": (f'{SPA_KEY}secret="YWJj"\n', "k.toml", 5,
                     "the SPA secret decodes to 3 bytes, not 32", "knockgate keygen"),
    "secret_file relative": (f'{SPA_KEY}secret_file="alice.key"\n', "k.toml", 5,
                             "secret_file must be an absolute path",
                             "e.g. secret_file = '/etc/knockgate/NAME.key'"),
    "secret_file missing": (f'{SPA_KEY}secret_file="{{d}}/missing"\n', "k.toml", 5,
                            "cannot read secret_file {d}/missing", "one base64 line"),
    "secret_file bad content": (f'{SPA_KEY}secret_file="{{d}}/not-base64"\n', "k.toml", 5,
                                "the SPA secret is not valid base64", "knockgate keygen"),
    "secret_file world-readable": (f'{SPA_KEY}secret_file="{{d}}/world"\n', "k.toml", 5,
                                   "secret_file {d}/world is readable or writable by others "
                                   "(mode -rw-r--r--)", "chmod 600 {d}/world"),
    "secret_file group-readable": (f'{SPA_KEY}secret_file="{{d}}/group"\n', "k.toml", 5,
                                   "secret_file {d}/group is readable or writable by others "
                                   "(mode -rw-r-----)", "chmod 600 {d}/group"),
    "open_for of a key": (f"{SPA}open_for=0\n", "k.toml", 6, "open_for = 0 is out of range",
                          "use 1 to 604800"),
    "allow_nat": (f"{SPA}allow_nat=1\n", "k.toml", 6, "allow_nat must be true or false",
                  "e.g. allow_nat = false"),
    "actions not a table": (f"{SPA}actions=1\n", "k.toml", 6, "actions must be a table",
                            "action codes this key may ask for"),
    "action code": (f'{SPA}actions={{0=["/bin/true"]}}\n', "k.toml", 6,
                    "action code '0' is not 1..255", "action codes this key may ask for"),
    "action code not a number": (f'{SPA}actions={{x=["/bin/true"]}}\n', "k.toml", 6,
                                 "action code 'x' is not 1..255", "action codes"),
    "action argv": (f'{SPA}actions={{21=["true"]}}\n', "k.toml", 6,
                    "actions[0] 'true' is not an absolute path", "full path"),
    "sources not networks": (f"{SPA}sources=[1]\n", "k.toml", 6,
                             "sources must be a list of networks", "e.g. ['192.0.2.0/24']"),
    "bad source": (f'{SPA}sources=["300.1.1.1/8"]\n', "k.toml", 6,
                   "does not appear to be an IPv4 or IPv6 network", "e.g. ['192.0.2.0/24']"),
    # [fwknop]
    "fwknop not a table": ("fwknop = 1\n", "k.toml", 1, "[fwknop] must be a table",
                           "write a [fwknop] header"),
    "unknown fwknop key": ('[fwknop]\naccess="{d}/access.conf"\nacess=1\n', "k.toml", 3,
                           "unknown key 'acess'", "did you mean 'access'?"),
    "access relative": ('[fwknop]\naccess="access.conf"\n', "k.toml", 2,
                        "access must be an absolute path",
                        "e.g. access = '/etc/fwknop/access.conf'"),
    "access readable by others": ('[fwknop]\naccess="{d}/access-world.conf"\n', "k.toml", 2,
                                  "access {d}/access-world.conf is readable or writable by "
                                  "others (mode -rw-r--r--)", "chmod 600 {d}/access-world.conf"),
    "access unreadable": ('[fwknop]\naccess="{d}/missing"\n', "k.toml", 2,
                          "cannot read {d}/missing", "point access at fwknop's access.conf"),
    "access without OPEN_PORTS": ('[fwknop]\naccess="{d}/no-ports.conf"\n',
                                  "{d}/no-ports.conf", 2,
                                  "knockgate needs OPEN_PORTS in every stanza",
                                  "add e.g. 'OPEN_PORTS tcp/22' to this stanza"),
    "access.conf error": ('[fwknop]\naccess="{d}/bad.conf"\n', "{d}/bad.conf", 4,
                          "unknown access.conf key", "man fwknopd"),
    "access.conf empty": ('[fwknop]\naccess="{d}/empty.conf"\n', "{d}/empty.conf", None,
                          "no SOURCE stanza", "SOURCE ANY"),
    "fwknop port": ('[fwknop]\naccess="{d}/access.conf"\nport=0\n', "k.toml", 3,
                    "port = 0 is out of range", "use 1 to 65535"),
    "fwknop max_age": ('[fwknop]\naccess="{d}/access.conf"\nmax_age="x"\n', "k.toml", 3,
                       "max_age must be a number", "e.g. max_age = 120.0"),
}
FILES = {
    "once": ("7000,8000:udp,9000\n", 0o600),
    "secret": (SECRET + "\n", 0o600),
    "not-base64": ("!!\n", 0o600),
    "world": (SECRET + "\n", 0o644),
    "group": (SECRET + "\n", 0o640),
    "access.conf": (f"SOURCE ANY\n{FWKNOP_KEYS}OPEN_PORTS tcp/22\n", 0o600),
    "no-ports.conf": (f"# no OPEN_PORTS\nSOURCE ANY\n{FWKNOP_KEYS}", 0o600),
    "bad.conf": (f"SOURCE ANY\n{FWKNOP_KEYS}OPEN_PORT tcp/22\n", 0o600),
    "empty.conf": ("# nothing\n", 0o600),
    "once-open": ("7000,8000:udp,9000\n", 0o666),
    "access-world.conf": (f"SOURCE ANY\n{FWKNOP_KEYS}OPEN_PORTS tcp/22\n", 0o644),
}


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name, (text, mode) in FILES.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(mode)
    return tmp_path


@pytest.mark.parametrize(("text", "path", "line", "reason", "hint"), list(CASES.values()),
                         ids=list(CASES))
def test_error_names_file_line_and_hint(files, text, path, line, reason, hint):
    def filled(template: str) -> str:
        return template.replace("{d}", str(files))

    with pytest.raises(ConfigError) as info:
        parse_config(filled(text), "k.toml")
    error = info.value
    assert (error.path, error.line) == (filled(path), line)
    assert filled(reason) in error.reason
    assert error.hint is not None and filled(hint) in error.hint
    where = f"{filled(path)}:{line}: " if line else f"{filled(path)}: "
    assert str(error) == f"{where}{error.reason} (hint: {error.hint})"


def test_knockd_conf_that_converts_to_a_bad_config_says_so(tmp_path):
    path = tmp_path / "knockd.conf"
    path.write_text("[options]\n  logfile = /var/log/knockd.log\n"
                    "[a]\n  sequence = 7000,8000\n  command = /bin/true\n"
                    "[b]\n  sequence = 7000,8000,9000\n  command = /bin/true\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    error = info.value
    assert error.path == str(path)
    assert "prefix of door 'b'" in error.reason
    assert f"in the TOML converted from this knockd.conf; run 'knockgate import knockd {path}'" \
        in error.reason
    assert error.hint is not None and "make the sequences differ" in error.hint


def test_one_time_file_gone_when_the_daemon_rereads_it(tmp_path):
    """io/onetime.py rereads the file with no config around: the error names the file."""
    missing = str(tmp_path / "once")
    with pytest.raises(ConfigError) as info:
        read_one_time(missing, ALL_FLAGS, int(TcpFlag.SYN))
    assert (info.value.path, info.value.line) == (missing, None)
    assert f"cannot read one_time_sequences {missing}" in info.value.reason


NOBODY = pwd.getpwnam("nobody").pw_uid
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to nobody needs root")


@NEEDS_ROOT
def test_a_secret_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "nobodys"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    os.chown(path, NOBODY, -1)
    with pytest.raises(ConfigError) as info:
        parse_config(f'{SPA_KEY}secret_file="{path}"\n', "k.toml")
    assert str(info.value) == (f"k.toml:5: secret_file {path} is owned by uid {NOBODY}, not "
                               f"root (hint: chown root {path})")


# The file itself (load_config): the config names commands run as root, and may hold secrets.

def config_file(tmp_path: Path, text: str, mode: int, uid: int | None = None) -> Path:
    path = tmp_path / "k.toml"
    path.write_text(text)
    if uid is not None:
        os.chown(path, uid, -1)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("mode", "uid", "reason", "hint"), [
    (0o666, None, "is writable by others (mode -rw-rw-rw-)", "chmod go-w {path}"),
    (0o664, None, "is writable by others (mode -rw-rw-r--)", "chmod go-w {path}"),
    pytest.param(0o644, NOBODY, f"is owned by uid {NOBODY}, not root", "chown root {path}",
                 marks=NEEDS_ROOT),
])
def test_a_config_others_may_write_is_refused(tmp_path, mode, uid, reason, hint):
    path = config_file(tmp_path, DOOR, mode, uid)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (f"{path}: the config, which names commands run as root, "
                               f"{reason} (hint: {hint.format(path=path)})")


def test_a_knockd_conf_others_may_write_is_refused_too(tmp_path):
    path = config_file(tmp_path, "[options]\n[a]\n  sequence = 7000,8000\n"
                       "  command = /bin/true\n", 0o646)
    with pytest.raises(ConfigError, match="writable by others"):
        load_config(str(path))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_an_inline_secret_in_a_config_others_may_read_is_refused(tmp_path, mode):
    path = config_file(tmp_path, SPA, mode)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert (info.value.path, info.value.line) == (str(path), 4)
    assert info.value.reason == (f"{path}, which holds an inline secret, is readable or "
                                 f"writable by others (mode {stat.filemode(0o100000 | mode)})")
    assert info.value.hint == f"chmod 600 {path}"


def test_a_config_only_root_may_write_is_accepted_and_with_a_secret_only_root_may_read(tmp_path):
    assert load_config(str(config_file(tmp_path, DOOR, 0o644))).doors
    assert load_config(str(config_file(tmp_path, SPA, 0o600))).spa is not None


def test_a_symlinked_config_is_judged_by_its_target(tmp_path):
    target = config_file(tmp_path, DOOR, 0o666)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=f"^{link}: the config.*writable by others"):
        load_config(str(link))


# state_dir: what the daemon's replay store will use, judged the same by check and serve.

def spa_with_state_dir(state_dir: Path) -> str:
    return f'[daemon]\nstate_dir="{state_dir}"\n{SPA}'  # state_dir on line 2


@pytest.mark.parametrize("kind", ["missing", "a directory", "a symlink to a directory"])
def test_a_usable_state_dir_is_accepted(tmp_path, kind):
    state = tmp_path / "state"
    if kind != "missing":
        (tmp_path / "real").mkdir(mode=0o700)
        (tmp_path / "real" / "replay.sqlite3").write_text("")
        if kind == "a directory":
            (tmp_path / "real").rename(state)
        else:
            state.symlink_to(tmp_path / "real")
    assert parse_config(spa_with_state_dir(state), "k.toml").spa is not None


def _state_world_writable(d: Path) -> tuple[str, str]:
    (d / "state").mkdir()
    (d / "state").chmod(0o777)
    return "state_dir {state} is writable by others (mode drwxrwxrwx)", "chmod go-w {state}"


def _state_symlink_to_tmp(d: Path) -> tuple[str, str]:
    (d / "shared").mkdir()
    (d / "shared").chmod(0o1777)
    (d / "state").symlink_to(d / "shared")
    return "state_dir {state} is writable by others (mode drwxrwxrwt)", "chmod go-w {state}"


def _state_dangling_symlink(d: Path) -> tuple[str, str]:
    (d / "state").symlink_to(d / "gone")
    return "state_dir {state} is a symlink to {d}/gone, which does not exist", \
        "mkdir -m 700 {d}/gone"


def _state_a_file(d: Path) -> tuple[str, str]:
    (d / "state").write_text("")
    return "state_dir {state} is not a directory", "point state_dir at a directory"


def _state_under_a_file(d: Path) -> tuple[str, str]:
    (d / "file").write_text("")
    (d / "state").symlink_to(d / "file" / "state")
    return "cannot use state_dir {state}: Not a directory", "a directory the daemon can create"


def _state_of_another_user(d: Path) -> tuple[str, str]:
    (d / "state").mkdir(mode=0o700)
    os.chown(d / "state", NOBODY, -1)
    return f"state_dir {{state}} is owned by uid {NOBODY}, not root", "chown root {state}"


def _state_replay_cache_of_another_user(d: Path) -> tuple[str, str]:
    (d / "state").mkdir(mode=0o700)
    (d / "state" / "replay.sqlite3").write_text("")
    os.chown(d / "state" / "replay.sqlite3", NOBODY, -1)
    return f"{{state}}/replay.sqlite3 in state_dir is owned by uid {NOBODY}", \
        "chown root {state}/replay.sqlite3"


def _state_replay_cache_writable(d: Path) -> tuple[str, str]:
    (d / "state").mkdir(mode=0o700)
    (d / "state" / "replay.sqlite3-wal").write_text("")
    (d / "state" / "replay.sqlite3-wal").chmod(0o662)
    return "{state}/replay.sqlite3-wal in state_dir is writable by others (mode -rw-rw--w-)", \
        "chmod go-w {state}/replay.sqlite3-wal"


@pytest.mark.parametrize("make", [
    _state_world_writable, _state_symlink_to_tmp, _state_dangling_symlink, _state_a_file,
    _state_under_a_file, pytest.param(_state_of_another_user, marks=NEEDS_ROOT),
    pytest.param(_state_replay_cache_of_another_user, marks=NEEDS_ROOT),
    _state_replay_cache_writable])
def test_a_state_dir_the_daemon_must_not_trust_is_refused_at_its_line(tmp_path, make):
    reason, hint = make(tmp_path)
    state = tmp_path / "state"
    with pytest.raises(ConfigError) as info:
        parse_config(spa_with_state_dir(state), "k.toml")
    assert (info.value.path, info.value.line) == ("k.toml", 2)
    assert reason.format(state=state, d=tmp_path) in info.value.reason
    assert info.value.hint is not None and hint.format(state=state, d=tmp_path) in info.value.hint


def test_state_dir_is_not_judged_without_spa_which_alone_uses_it(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o777)
    assert parse_config(f'[daemon]\nstate_dir="{tmp_path / "state"}"\n{DOOR}').doors


# The ARG_MAX check's arithmetic: what execve(2) counts, and where its limit lies.

def test_exec_size_counts_each_string_its_nul_and_its_pointer_with_placeholders_at_longest():
    # "/bin/echo" 9+1+8 and its path again, 9+1; {ip} a full IPv6 address, 39+1+8; "A=b"
    # 3+1+8; "{{k}}" is "{k}".
    assert exec_size(["/bin/echo", "{ip}"], ["A=b"]) == (28 + 48 + 12, 40)
    assert exec_size(["/bin/echo", "{door}-{key}", "{{k}}"], []) == (28 + 74 + 12, 66)
    assert exec_size([], []) == (0, 0)


def argv_of_size(total: int) -> list[str]:
    """A /bin/true argv that execve(2) counts as exactly ``total`` bytes (no environment)."""
    argv, left = ["/bin/true"], total - 28
    while left > 100_009 + 9:
        argv.append("a" * 100_000)
        left -= 100_009
    return [*argv, "a" * (left - 9)]


def test_a_command_exactly_at_arg_max_passes_and_one_byte_more_is_refused(monkeypatch):
    monkeypatch.setattr(os, "environ", {})  # the environment counts: leave it out here
    limit = os.sysconf("SC_ARG_MAX")
    fits, too_long = argv_of_size(limit), argv_of_size(limit + 1)
    assert exec_size(fits, [])[0] == limit
    # What the check depends on: the kernel draws the line at exactly this byte.
    subprocess.run(fits, env={}, check=True)
    with pytest.raises(OSError) as refused:
        subprocess.run(too_long, env={}, check=True)
    assert refused.value.errno == errno.E2BIG

    def config(argv: list[str]) -> str:
        return DOOR + "command = [" + ", ".join(f'"{arg}"' for arg in argv) + "]\n"

    assert parse_config(config(fits)).doors[0].command
    with pytest.raises(ConfigError) as info:
        parse_config(config(too_long), "k.toml")
    assert (info.value.line, info.value.reason) == (5, (
        f"command: the command and the environment are {limit + 1} bytes with the "
        f"placeholders at their longest; the kernel takes at most {limit} (ARG_MAX)"))


def test_one_argument_at_the_kernels_bound_passes_and_one_byte_more_is_refused():
    bound = 32 * os.sysconf("SC_PAGE_SIZE") - 1  # MAX_ARG_STRLEN counts the NUL
    subprocess.run(["/bin/true", "a" * bound], env={}, check=True)
    with pytest.raises(OSError) as refused:
        subprocess.run(["/bin/true", "a" * (bound + 1)], env={}, check=True)
    assert refused.value.errno == errno.E2BIG
    assert parse_config(f'{DOOR}command = ["/bin/true", "{"a" * bound}"]\n').doors
    with pytest.raises(ConfigError, match=f"an argument is {bound + 2} bytes"):
        parse_config(f'{DOOR}command = ["/bin/true", "{"a" * (bound + 1)}"]\n')
