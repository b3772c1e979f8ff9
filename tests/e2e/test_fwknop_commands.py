"""fwknop command messages (`fwknop -C`) run as fwknopd runs them: CMD_EXEC_USER and
CMD_EXEC_GROUP are resolved at load with fwknopd's lookup rules (both are user names; the group
is that user's primary group), an unknown one stops the daemon from starting, and a command of
more words than fwknopd accepts is refused."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.e2e.conftest import knockgate_cli, need_tool
from tests.support.testbed import CLIENT_V4, SERVER_V4

KEY = base64.b64encode(bytes(range(32))).decode()
HMAC = base64.b64encode(bytes(range(100, 164))).decode()


def access_conf(tmp_path: Path, extra: str) -> str:
    access = tmp_path / "access.conf"
    access.write_text(f"SOURCE ANY\nKEY_BASE64 {KEY}\nHMAC_KEY_BASE64 {HMAC}\n"
                      f"OPEN_PORTS tcp/22\nENABLE_CMD_EXEC Y\n{extra}")
    access.chmod(0o600)
    return f'[daemon]\nstate_dir = "{tmp_path}/state"\n\n[fwknop]\naccess = "{access}"\n'


def send_command(bed, command: str) -> None:
    tool = need_tool("fwknop")
    result = bed.run(bed.client, tool, "--no-rc-file", "--no-save-args", "-C", command,
                     "-D", SERVER_V4, "-a", CLIENT_V4, "--use-hmac", "--key-base64-rijndael",
                     KEY, "--key-base64-hmac", HMAC, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cmd_exec_group_names_a_user_whose_group_the_command_runs_in(bed, serve, tmp_path):
    # fwknopd: CMD_EXEC_GROUP is looked up as a user; nobody's group is nogroup on Debian.
    daemon = serve(access_conf(tmp_path, "CMD_EXEC_USER daemon\nCMD_EXEC_GROUP nobody\n"))
    send_command(bed, "/usr/bin/id")
    ran = daemon.wait_for("/usr/bin/id exited", timeout=10)
    assert "exited 0: uid=1(daemon) gid=65534(nogroup)" in ran, daemon.log


def test_cmd_exec_user_alone_runs_in_that_users_group(bed, serve, tmp_path):
    daemon = serve(access_conf(tmp_path, "CMD_EXEC_USER nobody\n"))
    send_command(bed, "/usr/bin/id")
    ran = daemon.wait_for("/usr/bin/id exited", timeout=10)
    assert "exited 0: uid=65534(nobody) gid=65534(nogroup)" in ran, daemon.log


def test_more_words_than_fwknopd_runs_is_refused(bed, serve, tmp_path):
    daemon = serve(access_conf(tmp_path, "CMD_EXEC_USER nobody\n"))
    send_command(bed, "/bin/echo" + " w" * 28)  # 29 words: fwknopd runs at most 28
    refused = daemon.wait_for(f"packet from {CLIENT_V4} refused")
    assert "29 words" in refused and "28" in refused, refused
    send_command(bed, "/bin/echo" + " w" * 27)  # 28 words: runs
    ran = daemon.wait_for("/bin/echo exited", timeout=10)
    assert "exited 0: " + " ".join(["w"] * 27) in ran, daemon.log
    assert daemon.log.count("/bin/echo exited") == 1, daemon.log


def test_unknown_cmd_exec_user_stops_the_daemon(bed, tmp_path):
    config = tmp_path / "knockgate.toml"
    config.write_text(access_conf(tmp_path, "CMD_EXEC_USER no-such-user-kg\n"))
    config.chmod(0o600)
    for command in ("check", "serve"):
        result = knockgate_cli(bed, bed.server, command, "--config", str(config))
        assert result.returncode == 3, (command, result.stdout + result.stderr)
        assert f"{tmp_path}/access.conf:6" in result.stderr, result.stderr
        assert "no-such-user-kg" in result.stderr, result.stderr
