"""access.conf parsing and fwknopd-style stanza selection (packets from the real client)."""

from __future__ import annotations

import base64
import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from knockgate.compat.fwknop.access import (
    ANY,
    FwknopStanza,
    parse_access_conf,
    select_stanza,
)
from knockgate.compat.fwknop.wire import MsgType, encode
from knockgate.errors import ConfigError, InvalidMessage

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "fwknop"
KEY_B64 = "9tqdu18hZRfu2miX+kwyzWjdF2F0sFcEUZk3zGg4faM="
HMAC_B64 = ("kGCC26sPXa/dnueGlkJB1wniaRAckOmcg6bxdQ+KaxIX7P3wiLeO3npu/HTCVHBn+WJtzwUx/EXGbB0r+"
            "cZeLA==")
OTHER_KEY_B64 = base64.b64encode(b"k" * 32).decode()
KEYS = f"KEY_BASE64 {KEY_B64}\nHMAC_KEY_BASE64 {HMAC_B64}\n"
PATH = "/etc/fwknop/access.conf"


def vector(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def packet(name: str) -> tuple[bytes, float]:
    data = vector(name)
    return data["payload"].encode(), float(data["facts"]["timestamp"])


def parse(text: str):
    return parse_access_conf(text, PATH)


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


# --------------------------------------------------------------------------- parsing


def test_full_stanza():
    access = parse(
        "# comment\n"
        "; also a comment\n"
        "\n"
        "SOURCE: 192.0.2.0/24, 198.51.100.7\n"
        f"{KEYS}"
        "HMAC_DIGEST_TYPE SHA512\n"
        "DESTINATION 10.201.0.1\n"
        "OPEN_PORTS tcp/22, udp/1194\n"
        "RESTRICT_PORTS tcp/23\n"
        "FW_ACCESS_TIMEOUT 60\n"
        "MAX_FW_TIMEOUT 600\n"
        "REQUIRE_SOURCE_ADDRESS Y\n"
        "REQUIRE_USERNAME alice\n"
        "ENABLE_CMD_EXEC y\n"
        "CMD_EXEC_USER nobody\n"
        "CMD_EXEC_GROUP nogroup\n"
        "ENCRYPTION_MODE cbc\n"
        "ACCESS_EXPIRE_EPOCH 1900000000\n"
        "KNOCKGATE_CMD_SHELL Y\n"
    )
    assert access.warnings == ()
    (stanza,) = access.stanzas
    assert stanza.line == 4
    assert stanza.sources == (IPv4Network("192.0.2.0/24"), IPv4Network("198.51.100.7/32"))
    assert stanza.destinations == (IPv4Network("10.201.0.1/32"),)
    assert stanza.key == base64.b64decode(KEY_B64)
    assert stanza.hmac_key == base64.b64decode(HMAC_B64)
    assert stanza.hmac_type == "sha512"
    assert stanza.open_ports == (("tcp", 22), ("udp", 1194))
    assert stanza.restrict_ports == (("tcp", 23),)
    assert (stanza.fw_access_timeout, stanza.max_fw_timeout) == (60, 600)
    assert stanza.require_source_address and stanza.enable_cmd_exec and stanza.cmd_shell
    assert (stanza.require_username, stanza.cmd_exec_user, stanza.cmd_exec_group) == (
        "alice", "nobody", "nogroup")
    assert stanza.expires_at == 1_900_000_000
    assert stanza.line_of("OPEN_PORTS") == 9
    assert stanza.line_of("SOURCE") == 4


def test_defaults():
    (stanza,) = parse(f"SOURCE ANY\n{KEYS}").stanzas
    assert stanza.sources == (ANY,)
    assert stanza.destinations is None
    assert stanza.hmac_type == "sha256"
    assert (stanza.fw_access_timeout, stanza.max_fw_timeout) == (30, 300)
    assert stanza.open_ports is None and stanza.restrict_ports == ()
    assert not (stanza.require_source_address or stanza.enable_cmd_exec or stanza.allow_no_hmac
                or stanza.cmd_shell)
    assert stanza.expires_at is None


def test_keys_are_not_in_repr():
    (stanza,) = parse(f"SOURCE ANY\n{KEYS}").stanzas
    assert KEY_B64 not in repr(stanza) and "key=" not in repr(stanza)


def test_raw_keys_and_several_stanzas():
    access = parse("SOURCE 10.0.0.0/8\nKEY secret passphrase\nHMAC_KEY other passphrase\n\n"
                   f"SOURCE ANY\n{KEYS}")
    first, second = access.stanzas
    assert first.key == b"secret passphrase" and first.hmac_key == b"other passphrase"
    assert (first.line, second.line) == (1, 5)


def test_semicolon_ends_value_like_fwknopd():
    access = parse(f"SOURCE ANY;\n{KEYS}OPEN_PORTS tcp/22; tcp/80\n")
    assert access.stanzas[0].open_ports == (("tcp", 22),)
    assert [w.line for w in access.warnings] == [4]
    assert str(access.warnings[0]).startswith(f"{PATH}:4: warning:")


def test_fw_access_timeout_zero_falls_back_to_default():
    (stanza,) = parse(f"SOURCE ANY\n{KEYS}FW_ACCESS_TIMEOUT 0\n").stanzas
    assert stanza.fw_access_timeout == 30


def test_access_expire_date_is_utc_midnight_with_warning():
    access = parse(f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE 01/02/2030\n")
    assert access.stanzas[0].expires_at == 1_893_542_400
    assert "UTC" in access.warnings[0].message


@pytest.mark.parametrize("line", [
    "GPG_HOME_DIR /root/.gnupg", "GPG_REQUIRE_SIG Y", "CMD_CYCLE_OPEN /bin/true",
    "CMD_CYCLE_CLOSE NONE", "CMD_CYCLE_TIMER 10", "FORCE_NAT 192.168.1.2 22",
    "FORWARD_ALL Y", "CMD_SUDO_EXEC_USER bob", "%include_keys /etc/fwknop/keys.conf",
])
def test_known_unsupported_keys_warn(line):
    access = parse(f"SOURCE ANY\n{KEYS}{line}\n")
    (warning,) = access.warnings
    assert warning.line == 4 and line.split()[0] in warning.message


def test_keys_before_first_source_warn():
    access = parse(f"OPEN_PORTS tcp/22\n%include /etc/fwknop/more.conf\nSOURCE ANY\n{KEYS}")
    assert [w.line for w in access.warnings] == [1, 2]
    assert access.stanzas[0].open_ports is None


def test_allow_no_hmac_opt_in():
    (stanza,) = parse(f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\nKNOCKGATE_ALLOW_NO_HMAC Y\n").stanzas
    assert stanza.hmac_key is None and stanza.allow_no_hmac


def test_debian_default_file_is_refused_with_line():
    error = error_of("#\n# access.conf\n#\nSOURCE              ANY\n"
                     "KEY_BASE64          __CHANGEME__\nHMAC_KEY_BASE64     __CHANGEME__\n")
    assert (error.path, error.line) == (PATH, 5)
    assert "__CHANGEME__" in str(error) and "fwknop --key-gen" in str(error)


@pytest.mark.parametrize(("text", "line", "words"), [
    (f"SOURCE ANY\n{KEYS}BOGUS_KEY 1\n", 4, "unknown"),
    (f"SOURCE ANY\n{KEYS}open_ports tcp/22\n", 4, "OPEN_PORTS"),
    (f"SOURCE ANY\n{KEYS}\x00junk\n", 4, "control"),
    (f"SOURCE ANY\n{KEYS}OPEN_PORTS\n", 4, "no value"),
    (f"SOURCE ANY\n{KEYS}OPEN_PORTS ;\n", 4, "empty"),
    ("SOURCE ANY\nHMAC_KEY_BASE64 " + HMAC_B64 + "\n", 1, "no KEY"),
    (f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\n", 1, "no HMAC"),
    (f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\nKEY x\nHMAC_KEY y\n", 2, "both"),
    ("SOURCE ANY\nKEY_BASE64 not*base64\nHMAC_KEY y\n", 2, "not base64"),
    (f"SOURCE ANY\nKEY_BASE64 {base64.b64encode(b'x' * 33).decode()}\nHMAC_KEY y\n", 2,
     "33 bytes"),
    ("SOURCE ANY\nKEY same\nHMAC_KEY same\n", 3, "equals"),
    (f"SOURCE ANY\n{KEYS}KEY_BASE64 {KEY_B64}\n", 4, "twice"),
    (f"SOURCE ANY\n{KEYS}HMAC_DIGEST_TYPE sha999\n", 4, "HMAC_DIGEST_TYPE"),
    (f"SOURCE ANY\n{KEYS}ENCRYPTION_MODE legacy\n", 4, "ENCRYPTION_MODE"),
    (f"SOURCE ANY\n{KEYS}ENABLE_CMD_SUDO_EXEC Y\n", 4, "SUDO"),
    (f"SOURCE 2001:db8::1\n{KEYS}", 1, "IPv4"),
    (f"SOURCE 10.0.0.300\n{KEYS}", 1, "IPv4"),
    (f"SOURCE ANY\n{KEYS}OPEN_PORTS 22\n", 4, "proto/port"),
    (f"SOURCE ANY\n{KEYS}OPEN_PORTS tcp/0\n", 4, "proto/port"),
    (f"SOURCE ANY\n{KEYS}RESTRICT_PORTS sctp/22\n", 4, "proto/port"),
    (f"SOURCE ANY\n{KEYS}REQUIRE_SOURCE_ADDRESS maybe\n", 4, "Y or N"),
    (f"SOURCE ANY\n{KEYS}FW_ACCESS_TIMEOUT -1\n", 4, "seconds"),
    (f"SOURCE ANY\n{KEYS}MAX_FW_TIMEOUT 0\n", 4, "seconds"),
    (f"SOURCE ANY\n{KEYS}MAX_FW_TIMEOUT 99999999999\n", 4, "seconds"),
    (f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE 2030-01-01\n", 4, "MM/DD/YYYY"),
    (f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE 02/30/2030\n", 4, "not a date"),
    (f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE_EPOCH soon\n", 4, "Unix seconds"),
    (f"SOURCE ANY\n{KEYS}REQUIRE_SOURCE Y\nREQUIRE_SOURCE_ADDRESS Y\n", 4, "both"),
])
def test_errors_name_file_line_and_hint(text, line, words):
    error = error_of(text)
    assert error.path == PATH
    assert error.line == line, str(error)
    assert words in str(error)
    assert error.hint
    assert str(error).startswith(f"{PATH}:{line}: ")


def test_no_stanza_at_all():
    for text in ("", "# nothing\n", "OPEN_PORTS tcp/22\n"):
        error = error_of(text)
        assert "no SOURCE" in str(error) and error.hint


# --------------------------------------------------------------------------- selection

WRONG_KEYS = f"KEY_BASE64 {OTHER_KEY_B64}\nHMAC_KEY_BASE64 {base64.b64encode(b'h' * 64).decode()}\n"


def stanzas(text: str) -> tuple[FwknopStanza, ...]:
    return parse(text).stanzas


def test_first_matching_stanza_with_verifying_keys_wins():
    payload, now = packet("access_sha256")
    chosen = stanzas(f"SOURCE 192.0.2.0/24\n{KEYS}\nSOURCE ANY\n{WRONG_KEYS}\n"
                     f"SOURCE 10.201.0.0/16\n{KEYS}OPEN_PORTS tcp/22\n\nSOURCE ANY\n{KEYS}")
    match = select_stanza(chosen, payload, "10.201.0.2", now)
    assert match.stanza_number == 3 and match.stanza.line == 9
    assert match.allow_ip == IPv4Address("10.201.0.2")
    assert match.open_for == 30
    assert match.request.access == (("tcp", 22),)


def test_hmac_type_comes_from_the_stanza():
    payload, now = packet("access_sha1")
    chosen = stanzas(f"SOURCE ANY\n{KEYS}\nSOURCE ANY\n{KEYS}HMAC_DIGEST_TYPE sha1\n")
    assert select_stanza(chosen, payload, "10.201.0.2", now).stanza_number == 2


def test_zero_allow_ip_becomes_source_unless_required():
    payload, now = packet("source_ip")
    match = select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "198.51.100.20", now)
    assert match.allow_ip == IPv4Address("198.51.100.20")
    assert match.request.allow_ip == IPv4Address("0.0.0.0")
    strict = stanzas(f"SOURCE ANY\n{KEYS}REQUIRE_SOURCE_ADDRESS Y\n")
    with pytest.raises(InvalidMessage):
        select_stanza(strict, payload, "198.51.100.20", now)


def test_require_username():
    payload, now = packet("access_sha256")
    with pytest.raises(InvalidMessage):
        select_stanza(stanzas(f"SOURCE ANY\n{KEYS}REQUIRE_USERNAME root\n"), payload,
                      "10.201.0.2", now)
    ok = stanzas(f"SOURCE ANY\n{KEYS}REQUIRE_USERNAME kgtest\n")
    assert select_stanza(ok, payload, "10.201.0.2", now).request.username == "kgtest"


@pytest.mark.parametrize(("ports", "accepted"), [
    ("OPEN_PORTS tcp/22, udp/1194", True),
    ("OPEN_PORTS tcp/22", False),
    ("RESTRICT_PORTS udp/1194", False),
    ("RESTRICT_PORTS tcp/23", True),
])
def test_open_and_restrict_ports(ports, accepted):
    payload, now = packet("access_sha512_multi")
    chosen = stanzas(f"SOURCE ANY\n{KEYS}HMAC_DIGEST_TYPE sha512\n{ports}\n")
    if accepted:
        assert select_stanza(chosen, payload, "10.201.0.3", now).stanza_number == 1
    else:
        with pytest.raises(InvalidMessage):
            select_stanza(chosen, payload, "10.201.0.3", now)


def test_commands_need_enable_cmd_exec():
    payload, now = packet("command")
    with pytest.raises(InvalidMessage):
        select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "10.201.0.2", now)
    match = select_stanza(stanzas(f"SOURCE ANY\n{KEYS}ENABLE_CMD_EXEC Y\n"), payload,
                          "10.201.0.2", now)
    assert match.request.msg_type is MsgType.COMMAND
    assert match.request.access == "echo hello world"


@pytest.mark.parametrize("name", ["nat_access", "nat_access_timeout", "local_nat"])
def test_nat_requests_refused(name):
    payload, now = packet(name)
    with pytest.raises(InvalidMessage):
        select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "10.201.0.2", now)


def test_client_timeout_capped_by_max_fw_timeout():
    payload, now = packet("client_timeout")  # asks for 600 s
    assert select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "10.201.0.2",
                         now).open_for == 300
    roomy = stanzas(f"SOURCE ANY\n{KEYS}MAX_FW_TIMEOUT 3600\n")
    assert select_stanza(roomy, payload, "10.201.0.2", now).open_for == 600


def test_expired_stanza_skipped():
    payload, now = packet("access_sha256")
    chosen = stanzas(f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE_EPOCH {int(now) - 1}\n")
    with pytest.raises(InvalidMessage):
        select_stanza(chosen, payload, "10.201.0.2", now)


def test_destination_must_match_and_be_known():
    payload, now = packet("access_sha256")
    chosen = stanzas(f"SOURCE ANY\n{KEYS}DESTINATION 10.201.0.1\n")
    assert select_stanza(chosen, payload, "10.201.0.2", now,
                         destination="10.201.0.1").stanza_number == 1
    for destination in (None, "10.201.0.9"):
        with pytest.raises(InvalidMessage):
            select_stanza(chosen, payload, "10.201.0.2", now, destination=destination)


def test_no_hmac_packet_only_through_explicit_opt_in():
    payload, now = packet("no_hmac")
    with pytest.raises(InvalidMessage):
        select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "10.201.0.2", now)
    opted = stanzas(f"SOURCE ANY\nKEY_BASE64 {KEY_B64}\nKNOCKGATE_ALLOW_NO_HMAC Y\n")
    assert select_stanza(opted, payload, "10.201.0.2", now).stanza_number == 1


@pytest.mark.parametrize("source", ["2001:db8::1", "not an address", None, 42])
def test_bad_source_is_invalid_message(source):
    payload, now = packet("access_sha256")
    with pytest.raises(InvalidMessage):
        select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, source, now)


def test_stale_packet_rejected_by_every_stanza():
    payload, now = packet("access_sha256")
    with pytest.raises(InvalidMessage):
        select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "10.201.0.2", now + 121)
    assert select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), payload, "10.201.0.2", now + 121,
                         max_age=200).stanza_number == 1


def test_encoder_output_selects_like_the_real_client():
    key, hmac_key = base64.b64decode(KEY_B64), base64.b64decode(HMAC_B64)
    wire = encode(1_800_000_000, "1234567890123456", b"saltsalt", "alice", "0.0.0.0",
                  (("tcp", 22),), key, hmac_key, "sha256", MsgType.CLIENT_TIMEOUT_ACCESS, 90)
    match = select_stanza(stanzas(f"SOURCE ANY\n{KEYS}"), wire, IPv4Address("192.0.2.1"),
                          1_800_000_000)
    assert (match.allow_ip, match.open_for) == (IPv4Address("192.0.2.1"), 90)
