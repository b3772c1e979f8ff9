import pytest

from knockgate.core.kinds import format_frame, parse_frame
from knockgate.core.kinds.ports import parse_flags, parse_port_spec
from knockgate.errors import FrameError
from knockgate.model import ALL_FLAGS, Frame, PortSpec, TcpFlag

F, S, R, P, A, U = (TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.PSH, TcpFlag.ACK, TcpFlag.URG)


def test_bare_tcp_means_exactly_syn():
    frame = parse_frame("tcp:7000")
    assert frame == Frame("tcp", 7000, ALL_FLAGS, S)
    assert frame.matches("tcp", 7000, S)
    assert not frame.matches("tcp", 7000, S | A)
    assert not frame.matches("udp", 7000, S)
    assert not frame.matches("tcp", 7001, S)


def test_ecn_bits_do_not_spoil_a_syn():
    assert parse_frame("tcp:7000").matches("tcp", 7000, S | 0x40 | 0x80)


def test_udp():
    assert parse_frame("udp:8000") == Frame("udp", 8000)
    assert parse_frame("UDP:8000").matches("udp", 8000, 0)


@pytest.mark.parametrize(
    ("letters", "value"),
    [("f", F), ("s", S), ("frap", F | R | A | P), ("up", U | P), ("x", ALL_FLAGS), ("n", 0)],
)
def test_tportknockd_letters_are_exact(letters, value):
    mask, got = parse_flags(letters)
    assert (mask, got) == (ALL_FLAGS, value)


def test_ignore_letter_matches_anything():
    frame = parse_frame("tcp:543:i")
    assert all(frame.matches("tcp", 543, flags) for flags in range(256))


def test_knockd_words():
    frame = parse_frame("tcp:7000:syn,!ack")
    assert frame.matches("tcp", 7000, S)
    assert frame.matches("tcp", 7000, S | P)  # unlisted flags are free
    assert not frame.matches("tcp", 7000, S | A)
    assert not frame.matches("tcp", 7000, A)


def test_fin_word_wins_over_letters():
    assert parse_flags("fin") == (F, F)


def test_knockd_client_syntax():
    assert parse_frame("7000") == parse_frame("tcp:7000")
    assert parse_frame("7000:tcp") == parse_frame("tcp:7000")
    assert parse_frame("8000:udp") == parse_frame("udp:8000")


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "bad frame ''"), ("tcp", "bad frame 'tcp'"), ("tcp:", "port '' is not a number"),
     ("tcp:0", "port 0 is out of range"), ("tcp:65536", "port 65536 is out of range"),
     ("tcp:-1", "port '-1' is not a number"), ("tcp:abc", "port 'abc' is not a number"),
     ("icmp:1", "bad frame 'icmp:1'"), ("udp:80:s", "bad frame 'udp:80:s': UDP has no flags"),
     ("tcp:80:q", "unknown TCP flag letter 'q' in 'q'"),
     ("tcp:80:ss", "TCP flag letter 's' given twice"),
     ("tcp:80:syn,syn", "TCP flag 'syn' given twice"),
     ("tcp:80:syn,bogus", "unknown TCP flag 'bogus'"), ("tcp:80:s:x", "bad frame 'tcp:80:s:x'"),
     ("80:sctp", "bad frame '80:sctp'"), ("tcp:80:", "empty TCP flags"),
     ("tcp: 80", "port ' 80' is not a number")],
)
def test_bad_frames_raise_frame_error(text, reason):
    with pytest.raises(FrameError) as info:
        parse_frame(text)
    assert info.value.reason == reason
    assert info.value.hint


@pytest.mark.parametrize(
    "text", ["tcp:7000", "udp:8000", "tcp:1:i", "tcp:2:x", "tcp:3:n", "tcp:4:frap",
             "tcp:5:syn,!ack", "tcp:6:!rst"],
)
def test_format_round_trips(text):
    assert parse_frame(format_frame(parse_frame(text))) == parse_frame(text)


def test_port_spec():
    assert parse_port_spec("tcp:22") == PortSpec("tcp", 22)
    assert str(parse_port_spec("udp:1194")) == "udp:1194"
    for bad in ("tcp:22:s", "22", "icmp:1", "tcp:99999"):
        with pytest.raises(FrameError):
            parse_port_spec(bad)
