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
    expiry_warnings,
    parse_access_conf,
    select_stanza,
)
from knockgate.compat.fwknop.wire import MsgType, encode
from knockgate.config.load import load_config
from knockgate.config.schema import FwknopConfig
from knockgate.daemon.fwknop import FwknopService
from knockgate.errors import ConfigError, InvalidMessage
from knockgate.model import Packet
from tests.unit.test_replay import DictStore

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
        "CMD_EXEC_GROUP daemon\n"
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
        "alice", "nobody", "daemon")
    assert (stanza.run_as_user, stanza.run_as_group) == ("nobody", "daemon")
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
    "GPG_HOME_DIR /root/.gnupg", "GPG_REQUIRE_SIG Y", "GPG_DECRYPT_ID ABCD1234",
    "CMD_SUDO_EXEC_USER bob", "%include_keys /etc/fwknop/keys.conf",
    "FORCE_MASQUERADE N", "DISABLE_DNAT no", "FORWARD_ALL n",
])
def test_unsupported_keys_that_change_no_grant_warn_and_leave_the_stanza_open(line):
    access = parse(f"SOURCE ANY\n{KEYS}{line}\n")
    assert access.stanzas[0].closed_by is None
    assert [(w.line, w.level) for w in access.warnings] in ([(4, "warning")], [])
    assert all(line.split()[0] in w.message for w in access.warnings)


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


# --------------------------------------------------------------------------- closed stanzas

CLOSING = ["CMD_CYCLE_OPEN /usr/bin/systemctl start sshd", "CMD_CYCLE_CLOSE NONE",
           "CMD_CYCLE_TIMER 10", "FORCE_NAT 192.0.2.9 22", "FORCE_SNAT 192.0.2.10",
           "FORCE_MASQUERADE Y", "DISABLE_DNAT Y", "FORWARD_ALL Y", "FORWARD_ALL maybe"]


def handled(text: str, name: str = "access_sha256", source: str = "10.201.0.2"):
    """What the daemon's fwknop service grants for the vector ``name`` (None: nothing)."""
    payload, now = packet(name)
    service = FwknopService(FwknopConfig(parse(text)), DictStore(), now)
    grant = service.handle(Packet(IPv4Address(source), IPv4Address("10.201.0.1"), "udp",
                                  40000, 62201, 0, payload), now)
    return grant, service


@pytest.mark.parametrize("line", CLOSING)
def test_a_stanza_asking_what_knockgate_does_not_do_is_closed_with_an_error_line(line):
    access = parse(f"SOURCE ANY\n{KEYS}OPEN_PORTS tcp/22\n{line}\n")
    (stanza,) = access.stanzas
    name = line.split()[0]
    assert stanza.closed_by is not None and stanza.closed_by.startswith(f"{name} (line 5)")
    (error,) = access.warnings
    assert (error.line, error.level) == (5, "error")
    assert str(error).startswith(f"{PATH}:5: error: stanza 1 (SOURCE line 1) is closed: {name}")
    assert stanza.open_ports == (("tcp", 22),), "its ports stay guarded"


@pytest.mark.parametrize("line", CLOSING)
def test_a_packet_the_closed_stanza_accepts_opens_nothing(line, caplog):
    bait = f"\nSOURCE ANY\n{KEYS}OPEN_PORTS tcp/22\n"  # same keys: must not catch it instead
    text = f"SOURCE ANY\n{KEYS}OPEN_PORTS tcp/22\n{line}\n{bait}"
    payload, now = packet("access_sha256")
    assert select_stanza(stanzas(text), payload, "10.201.0.2", now).stanza_number == 1
    grant, service = handled(text)
    assert grant is None
    assert service.rejected == 0, "it authenticated: refused with a warning, not as garbage"
    refusal = caplog.records[-1].getMessage()
    assert "stanza 1, packet from 10.201.0.2 refused: the stanza is closed" in refusal
    assert line.split()[0] in refusal


def test_a_closed_stanza_refuses_commands_too():
    text = f"SOURCE ANY\n{KEYS}ENABLE_CMD_EXEC Y\nCMD_CYCLE_OPEN /bin/true\nCMD_CYCLE_CLOSE NONE\n"
    assert handled(text, "command")[0] is None


def test_a_closed_stanza_that_does_not_accept_the_packet_lets_later_stanzas_try():
    # fwknopd moves on when a stanza's keys do not verify; so does knockgate.
    grant, _ = handled(f"SOURCE ANY\n{WRONG_KEYS}FORCE_NAT 192.0.2.9 22\n\n"
                       f"SOURCE ANY\n{KEYS}OPEN_PORTS tcp/22\n")
    assert grant is not None and grant.key.startswith("fwknop stanza 2")


def test_closing_keys_before_the_first_source_are_ignored_and_twice_is_an_error():
    access = parse(f"FORCE_NAT 192.0.2.9 22\nSOURCE ANY\n{KEYS}OPEN_PORTS tcp/22\n")
    assert access.stanzas[0].closed_by is None and access.warnings[0].line == 1
    error = error_of(f"SOURCE ANY\n{KEYS}FORCE_NAT 192.0.2.9 22\nFORCE_NAT 192.0.2.9 23\n")
    assert error.line == 5 and "twice" in str(error)


# --------------------------------------------------------------------------- expiry


def test_an_expired_stanza_matches_nothing_and_the_next_one_works():
    payload, now = packet("access_sha256")
    yesterday = int(now) - 86400
    access = parse(f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE_EPOCH {yesterday}\nOPEN_PORTS tcp/22\n\n"
                   f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE_EPOCH {int(now) + 86400}\n"
                   "OPEN_PORTS tcp/22\n")
    (warning,) = expiry_warnings(access, now)
    assert warning.line == 4 and "stanza 1 (SOURCE line 1) expired at" in warning.message
    assert select_stanza(access.stanzas, payload, "10.201.0.2", now).stanza_number == 2
    assert expiry_warnings(access, yesterday) == ()


def test_expiry_is_reported_at_the_access_expire_line_in_utc():
    access = parse(f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE 01/02/2030\n")
    (warning,) = expiry_warnings(access, 1_893_542_401)
    assert warning.line == 4 and "2030-01-02 00:00 UTC" in warning.message


def write_config(tmp_path: Path, access_text: str) -> str:
    access = tmp_path / "access.conf"
    access.write_text(access_text)
    access.chmod(0o600)
    config = tmp_path / "knockgate.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\n\n'
                      f'[fwknop]\naccess = "{access}"\n')
    return str(config)


@pytest.mark.parametrize("grants_nothing", ["ACCESS_EXPIRE_EPOCH 1000000000",
                                            "FORCE_NAT 192.0.2.9 22"])
def test_loading_accepts_a_stanza_that_grants_nothing_without_open_ports(tmp_path,
                                                                         grants_nothing):
    config = load_config(write_config(tmp_path, f"SOURCE ANY\n{KEYS}{grants_nothing}\n\n"
                                                f"SOURCE ANY\n{KEYS}OPEN_PORTS tcp/22\n"))
    assert config.fwknop is not None and len(config.fwknop.access.stanzas) == 2
    assert any(":4: " in warning for warning in config.warnings)


def test_loading_still_needs_open_ports_in_a_stanza_expiring_later(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, f"SOURCE ANY\n{KEYS}ACCESS_EXPIRE 12/31/2099\n"))
    assert "OPEN_PORTS" in str(info.value) and info.value.line == 1


# --- CMD_EXEC_USER / CMD_EXEC_GROUP: fwknopd's lookup rules ----------------------------------


def run_as(extra: str, **lookups) -> tuple[str | None, str | None]:
    (stanza,) = parse_access_conf(f"SOURCE ANY\n{KEYS}ENABLE_CMD_EXEC Y\n{extra}",
                                  "/etc/fwknop/access.conf", **lookups).stanzas
    return stanza.run_as_user, stanza.run_as_group


@pytest.mark.parametrize(("extra", "expected"), [
    ("", (None, None)),
    ("CMD_EXEC_USER nobody\n", ("nobody", "nogroup")),  # the user's own group
    ("CMD_EXEC_USER daemon\n", ("daemon", "daemon")),
    ("CMD_EXEC_USER daemon\nCMD_EXEC_GROUP nobody\n", ("daemon", "nogroup")),  # a user name
    ("CMD_EXEC_USER nobody\nCMD_EXEC_GROUP root\n", ("nobody", "nogroup")),  # gid 0: own group
    ("CMD_EXEC_USER root\n", (None, None)),
])
def test_command_identity_on_this_debian_system(extra, expected):
    assert run_as(extra) == expected


@pytest.mark.parametrize("extra", ["CMD_EXEC_GROUP nobody\n",
                                   "CMD_EXEC_USER root\nCMD_EXEC_GROUP daemon\n"])
def test_a_group_without_an_unprivileged_user_runs_as_root_with_a_warning(extra):
    access = parse_access_conf(f"SOURCE ANY\n{KEYS}{extra}")
    assert (access.stanzas[0].run_as_user, access.stanzas[0].run_as_group) == (None, None)
    (warning,) = access.warnings
    assert "CMD_EXEC_GROUP has no effect" in warning.message
    assert warning.line == 4 + extra.count("\n") - 1


@pytest.mark.parametrize(("extra", "line", "name"), [
    ("CMD_EXEC_USER no-such-user-kg\n", 5, "CMD_EXEC_USER 'no-such-user-kg' is not a user"),
    ("CMD_EXEC_USER nobody\nCMD_EXEC_GROUP nogroup\n", 6,  # a group, not a user
     "CMD_EXEC_GROUP 'nogroup' is not a user (fwknopd reads it as a user name"),
    ("CMD_EXEC_GROUP no-such-user-kg\n", 5, "CMD_EXEC_GROUP 'no-such-user-kg'"),  # checked anyway
    ("CMD_EXEC_USER ROOT\n", 5, "CMD_EXEC_USER 'ROOT' is not a user"),  # names are exact
    ("CMD_EXEC_USER " + "x" * 300 + "\n", 5, "CMD_EXEC_USER 'xxxx"),
])
def test_unknown_accounts_are_refused_at_load(extra, line, name):
    with pytest.raises(ConfigError) as caught:
        run_as(extra)
    assert (caught.value.path, caught.value.line) == ("/etc/fwknop/access.conf", line)
    assert name in str(caught.value) and "x" * 41 not in str(caught.value)
    assert "e.g." in str(caught.value)


def fake_user(name: str) -> tuple[int, int] | None:
    return {"rootless": (1500, 1500), "toor": (0, 0), "orphan": (1600, 4242)}.get(name)


def fake_group(gid: int) -> str | None:
    return {1500: "rootless"}.get(gid)


def test_a_user_named_like_root_is_refused_not_run_as_root():
    with pytest.raises(ConfigError, match="starts with 'root'") as caught:
        run_as("CMD_EXEC_USER rootless\n", find_user=fake_user, find_group_name=fake_group)
    assert caught.value.line == 5


def test_uid_0_keeps_root_and_a_group_without_a_name_is_refused():
    assert run_as("CMD_EXEC_USER toor\n", find_user=fake_user,
                  find_group_name=fake_group) == (None, None)
    with pytest.raises(ConfigError, match="group id 4242") as caught:
        run_as("CMD_EXEC_USER orphan\n", find_user=fake_user, find_group_name=fake_group)
    assert caught.value.line == 5


def test_the_accounts_are_looked_up_even_without_enable_cmd_exec():
    with pytest.raises(ConfigError, match="not a user"):
        parse_access_conf(f"SOURCE ANY\n{KEYS}CMD_EXEC_USER no-such-user-kg\n")


# --- a command's words: fwknopd runs at most 28 ---------------------------------------------


def command_grant(command: str, extra: str = ""):
    """What the daemon's fwknop service grants for a command packet (None: nothing)."""
    key, hmac_key = base64.b64decode(KEY_B64), base64.b64decode(HMAC_B64)
    now = 1_800_000_000
    wire = encode(now, "1234567890123456", b"saltsalt", "alice", "10.201.0.2", command, key,
                  hmac_key, msg_type=MsgType.COMMAND)
    text = f"SOURCE ANY\n{KEYS}ENABLE_CMD_EXEC Y\nCMD_EXEC_USER nobody\n{extra}"
    service = FwknopService(FwknopConfig(parse(text)), DictStore(), now)
    return service.handle(Packet(IPv4Address("10.201.0.2"), IPv4Address("10.201.0.1"), "udp",
                                 40000, 62201, 0, wire), now)


@pytest.mark.parametrize("shell", ["", "KNOCKGATE_CMD_SHELL Y\n"])
def test_a_command_of_28_words_runs_and_29_are_refused(shell, caplog):
    grant = command_grant("/bin/echo" + " w" * 27, shell)
    assert grant is not None and (grant.user, grant.group) == ("nobody", "nogroup")
    assert command_grant("/bin/echo" + " w" * 28, shell) is None
    assert "command has 29 words; fwknopd runs at most 28" in caplog.text


def test_leading_trailing_and_repeated_spaces_are_not_words():
    grant = command_grant("   /bin/echo" + "   w" * 27 + "    ")
    assert grant is not None and len(grant.command) == 28


def test_quotes_do_not_join_words_when_counting(caplog):
    # fwknopd does not read quotes: "'w w'" is two of its words, so 29 here.
    assert command_grant("/bin/echo 'w" + " w" * 27 + "'") is None
    assert "command has 29 words" in caplog.text
