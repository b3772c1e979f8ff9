"""cli.run: the one place errors become exit codes (modelled on httpie's
tests/test_exit_status.py). Failures that would need root are raised by a patched subcommand."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from knockgate.cli import ExitCode, run
from knockgate.errors import (
    CaptureError,
    CommandError,
    ConfigError,
    FirewallError,
    InvalidMessage,
    KnockgateError,
)

GOOD = '[[door]]\nname = "ssh"\nsequence = ["tcp:7000", "udp:8000"]\nopen = ["tcp:22"]\n'
BAD_PORT_ON_LINE_3 = '[[door]]\nname = "ssh"\nsequence = ["tcp:70000"]\nopen = ["tcp:22"]\n'


class Result(NamedTuple):
    code: int | str | None
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def invoke(*argv: str) -> Result:
        try:
            code: int | str | None = run(list(argv))
        except SystemExit as exc:  # argparse exits on its own: usage errors, --version
            code = exc.code
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return invoke


@pytest.fixture(autouse=True)
def _keep_the_logger() -> Iterator[None]:
    """``serve`` points the knockgate logger at this test's stderr: put it back after."""
    logger = logging.getLogger("knockgate")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "knockgate.toml"
    path.write_text(text)
    return str(path)


def serve_raises(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[object]:
    """Make the daemon fail with ``error`` once it is given a loaded config."""
    configs: list[object] = []

    def serve(config: object, interfaces: tuple[str, ...]) -> None:
        configs.append(config)
        raise error

    monkeypatch.setattr("knockgate.daemon.main.serve", serve)
    return configs


# --- 0 ----------------------------------------------------------------------------------------


def test_check_of_a_good_config_exits_0(cli, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = cli("check", "--config", path)
    assert result.code == ExitCode.OK == 0
    assert result.stdout.endswith(f"{path}: OK, 1 door(s)\n")
    assert result.stderr == ""


def test_keygen_exits_0_with_a_secret(cli) -> None:
    result = cli("keygen")
    assert result.code == ExitCode.OK
    assert len(base64.b64decode(result.stdout.strip(), validate=True)) == 32


def test_serve_that_returns_exits_0(cli, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[object] = []
    monkeypatch.setattr("knockgate.daemon.main.serve",
                        lambda config, interfaces: served.append((config, interfaces)))
    assert cli("serve", "--config", write(tmp_path, GOOD), "-i", "veth0").code == 0
    ((config, interfaces),) = served
    assert [door.name for door in config.doors] == ["ssh"]
    assert interfaces == ("veth0",)


# --- 2: usage --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    (),
    ("unlock",),
    ("serve", "--bogus"),
    ("knock", "192.0.2.1"),
    ("knock", "192.0.2.1", "tcp:1", "--delay", "soon"),
    ("import", "fwknopd", "access.conf"),
], ids=["no-command", "unknown-command", "unknown-option", "no-frames", "bad-number",
        "bad-choice"])
def test_usage_errors_exit_2(cli, argv: tuple[str, ...]) -> None:
    result = cli(*argv)
    assert result.code == ExitCode.USAGE == 2
    assert result.stdout == ""
    assert "usage: knockgate" in result.stderr


# --- 3: configuration ------------------------------------------------------------------------


def test_check_of_a_bad_config_exits_3_with_file_and_line(cli, tmp_path: Path) -> None:
    path = write(tmp_path, BAD_PORT_ON_LINE_3)
    result = cli("check", "--config", path)
    assert result.code == ExitCode.CONFIG == 3
    assert result.stderr.startswith(f"{path}:3: ")
    assert "out of range" in result.stderr
    assert result.stdout == ""


def test_serve_with_a_bad_config_exits_3_before_the_daemon_starts(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = serve_raises(monkeypatch, AssertionError("the daemon must not start"))
    path = write(tmp_path, BAD_PORT_ON_LINE_3)
    result = cli("serve", "--config", path)
    assert result.code == ExitCode.CONFIG
    assert result.stderr.startswith(f"{path}:3: ")
    assert configs == []


def test_a_missing_config_exits_3_naming_the_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = cli("check", "--config", str(path))
    assert result.code == ExitCode.CONFIG
    assert result.stderr == (f"{path}: cannot read: No such file or directory "
                             "(hint: pass --config with a readable file)\n")


def test_a_bad_frame_on_the_command_line_exits_3(cli) -> None:
    result = cli("knock", "192.0.2.1", "tcp:70000")
    assert result.code == ExitCode.CONFIG
    assert "out of range" in result.stderr


def test_import_of_a_missing_file_exits_3(cli, tmp_path: Path) -> None:
    path = tmp_path / "knockd.conf"
    result = cli("import", "knockd", str(path))
    assert result.code == ExitCode.CONFIG
    assert result.stderr == f"{path}: cannot read: No such file or directory\n"


# --- 4, 5, 1: the daemon's and clients' failures ---------------------------------------------


@pytest.mark.parametrize(("error", "code"), [
    (FirewallError("nft: Operation not permitted"), ExitCode.FIREWALL),
    (CaptureError("cannot open a packet socket: Operation not permitted"), ExitCode.CAPTURE),
    (CommandError("cannot start /usr/sbin/iptables"), ExitCode.FAILURE),
    (InvalidMessage("stale"), ExitCode.FAILURE),
    (KnockgateError("another daemon serves this network namespace"), ExitCode.FAILURE),
], ids=["firewall", "capture", "command", "invalid-message", "knockgate"])
def test_daemon_errors_map_to_their_exit_codes(cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               error: KnockgateError, code: ExitCode) -> None:
    configs = serve_raises(monkeypatch, error)
    result = cli("serve", "--config", write(tmp_path, GOOD))
    assert result.code == code
    assert result.stderr.endswith(f"knockgate serve: error: {error}\n")
    assert len(configs) == 1


def test_the_exit_codes_are_distinct_and_stable() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 130]


def test_a_capture_error_listing_interfaces_exits_5(cli,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def list_interfaces() -> list[tuple[int, str]]:
        raise CaptureError("cannot read interfaces: Operation not permitted")

    monkeypatch.setattr("knockgate.io.capture.list_interfaces", list_interfaces)
    result = cli("interfaces")
    assert result.code == ExitCode.CAPTURE == 5
    assert result.stderr == (
        "knockgate interfaces: error: cannot read interfaces: Operation not permitted\n")


def test_open_without_a_key_name_exits_1(cli, tmp_path: Path) -> None:
    result = cli("open", "192.0.2.1", "--profiles", str(tmp_path / "none.toml"),
                       "--open", "tcp:22")
    assert result.code == ExitCode.FAILURE == 1
    assert result.stderr == (
        "knockgate open: error: no key name: pass --key-name NAME (or use a profile)\n")


def test_a_config_error_raised_by_the_daemon_still_exits_3(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_raises(monkeypatch, ConfigError("state_dir /tmp is world-writable", hint="chmod o-w"))
    result = cli("serve", "--config", write(tmp_path, GOOD))
    assert result.code == ExitCode.CONFIG
    assert result.stderr == "state_dir /tmp is world-writable (hint: chmod o-w)\n"


# --- 130 --------------------------------------------------------------------------------------


def test_ctrl_c_in_the_daemon_exits_130(cli, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    serve_raises(monkeypatch, KeyboardInterrupt())
    result = cli("serve", "--config", write(tmp_path, GOOD))
    assert result.code == ExitCode.INTERRUPTED == 130
    assert result.stderr == ""


class FakeNftables:
    """io/nft.Nftables for `up` and `down`, without root: records what they asked for."""

    def __init__(self, foreign: bool, calls: list[str]) -> None:
        self.foreign, self.calls = foreign, calls

    def close(self) -> None:
        self.calls.append("close")

    def refuse_foreign_table(self) -> None:
        if self.foreign:
            raise FirewallError("a table inet knockgate exists that knockgate did not make")

    def input_chains(self) -> list[object]:
        return []

    def existing_sets(self) -> set[str]:
        return set()

    def apply(self, commands: str) -> None:
        self.calls.append(commands)

    def remove_table(self) -> None:
        self.calls.append("remove")


@pytest.fixture
def fake_nft(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []

    def install(foreign: bool = False) -> list[str]:
        monkeypatch.setattr("knockgate.io.nft.Nftables", lambda: FakeNftables(foreign, calls))
        monkeypatch.setattr("knockgate.io.instance.claim_namespace",
                            lambda: contextlib.nullcontext())
        return calls
    return install


def test_up_installs_the_table_without_knock_rules_and_exits_0(cli, tmp_path: Path,
                                                                fake_nft) -> None:
    calls = fake_nft()
    result = cli("up", "--config", write(tmp_path, GOOD))
    assert result.code == ExitCode.OK, result.stderr
    (applied,) = [call for call in calls if call.startswith("add table")]
    assert "tcp dport { 22, 7000 } reject" in applied and "log" not in applied
    assert calls[-1] == "close"


def test_up_with_a_bad_config_exits_3_and_touches_no_firewall(cli, tmp_path: Path,
                                                               fake_nft) -> None:
    calls = fake_nft()
    path = write(tmp_path, BAD_PORT_ON_LINE_3)
    result = cli("up", "--config", path, "--state-dir", str(tmp_path / "nothing-saved"))
    assert result.code == ExitCode.CONFIG
    note, error = result.stderr.splitlines()
    assert note.startswith("knockgate up: NOTHING INSTALLED: no table saved")
    assert error.startswith(f"{path}:3:")
    assert calls == ["close"]


def test_up_with_a_bad_config_installs_the_saved_table_and_still_exits_3(
        cli, tmp_path: Path, fake_nft) -> None:
    calls = fake_nft()
    saved = tmp_path / "table.nft"
    saved.write_text("add table inet knockgate\n")
    saved.chmod(0o600)
    path = write(tmp_path, BAD_PORT_ON_LINE_3)
    result = cli("up", "--config", path, "--state-dir", str(tmp_path))
    assert result.code == ExitCode.CONFIG
    assert f"installed instead the table the daemon saved in {saved}" in result.stderr
    assert calls == ["add table inet knockgate\n", "close"]


@pytest.mark.parametrize("mode", [0o644, 0o620])
def test_up_refuses_a_saved_table_others_may_read_or_write(cli, tmp_path: Path, fake_nft,
                                                           mode: int) -> None:
    calls = fake_nft()
    saved = tmp_path / "table.nft"
    saved.write_text("add table inet knockgate\n")
    saved.chmod(mode)
    result = cli("up", "--config", write(tmp_path, BAD_PORT_ON_LINE_3), "--state-dir",
                 str(tmp_path))
    assert result.code == ExitCode.CONFIG
    assert "NOTHING INSTALLED: the saved table was refused" in result.stderr
    assert "chmod 600" in result.stderr
    assert calls == ["close"]


@pytest.mark.parametrize("argv", [("down",), ("up", "--config", "CONFIG")])
def test_up_and_down_refuse_a_foreign_table_with_exit_4(cli, tmp_path: Path, fake_nft,
                                                         argv: tuple[str, ...]) -> None:
    calls = fake_nft(foreign=True)
    result = cli(*(write(tmp_path, GOOD) if word == "CONFIG" else word for word in argv))
    assert result.code == ExitCode.FIREWALL == 4
    assert "did not make" in result.stderr
    assert calls == ["close"]


def test_down_removes_the_table_and_exits_0(cli, fake_nft) -> None:
    calls = fake_nft()
    result = cli("down")
    assert result.code == ExitCode.OK, result.stderr
    assert calls == ["remove", "close"]
    assert "reachable by everyone" in result.stdout
