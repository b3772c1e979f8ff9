"""Hostile configuration text and frames: they parse or raise ConfigError, nothing else."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knockgate.config.load import parse_config
from knockgate.core.kinds import parse_frame
from knockgate.core.kinds.ports import parse_port_spec
from knockgate.errors import ConfigError

FRAME_ALPHABET = "tcpudp:0123456789fsrpauxni,!syackTCP- "
TOML_PIECES = st.sampled_from([
    "[[door]]\n", "[daemon]\n", "[spa]\n", "[[spa.key]]\n", 'name = "a"\n', 'name = 5\n',
    'sequence = ["tcp:1", "udp:2"]\n', 'sequence = ["tcp:99999"]\n', "sequence = []\n",
    'open = ["tcp:22"]\n', 'open = "tcp:22"\n', "timeout = -1\n", "timeout = 1e308\n",
    "open_for = nan\n", 'command = ["/bin/true", "{ip}"]\n', 'command = ["/bin/x", "{"]\n',
    "max_pending = 0\n", 'interfaces = [1]\n', "port = 70000\n", 'secret = "!!"\n',
    'secret_file = "relative"\n', "actions = { 0 = [] }\n", 'sources = ["300.1.1.1/8"]\n',
    "actions = { x = 1 }\n", 'state_dir = "rel"\n', "= \n", "[[\n", '"\n',
    'engine = "kernel"\n', 'engine = "userspace"\n', "penalty = 5\n", 'target = "192.0.2.1"\n',
    'tcp_flags = "s"\n', "shell = true\n", 'command = "/bin/true {ip}"\n', "spa = 1\n",
    # Never the default access path: the host's own fwknop files are not this test's input.
    '[fwknop]\naccess = "/nonexistent/access.conf"\n', "max_age = 0\n",
])


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_config_error(text):
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.toml")


@settings(max_examples=300)
@given(st.lists(TOML_PIECES, max_size=12))
def test_config_shaped_text_parses_or_raises_config_error(pieces):
    try:
        parse_config("".join(pieces), "fuzz.toml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.toml")


@given(st.text(alphabet=FRAME_ALPHABET, max_size=20) | st.text(max_size=20))
def test_frames_parse_or_raise_config_error(text):
    for parse in (parse_frame, parse_port_spec):
        with contextlib.suppress(ConfigError):
            parse(text)


def test_unicode_digits_are_not_ports_or_action_codes():
    for text in ("tcp:²", "²", "udp:٣٣"):
        with pytest.raises(ConfigError):
            parse_frame(text)
    config = '[[spa.key]]\nname = "a"\nsecret = "x"\nactions = { "²" = ["/bin/true"] }\n'
    with pytest.raises(ConfigError):
        parse_config("[spa]\n" + config)
