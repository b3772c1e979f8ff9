"""`knockgate check` and `knockgate serve` judge the files they trust by one rule
(config/files.py ``distrust``) and so refuse exactly the same setups, with the same words."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import SECRET, RunningDaemon, knockgate_cli
from tests.support.testbed import SERVER_V4, inside

if TYPE_CHECKING:  # imported at run time, pytest would try to collect the class
    from tests.support.testbed import TestBed

NOBODY = pwd.getpwnam("nobody").pw_uid
DOOR = '[[door]]\nname = "ssh"\nsequence = ["tcp:7000", "udp:8000"]\nopen = ["tcp:22"]\n'

# Each setup writes its files under a directory and returns the config's text, its mode and
# the words both commands must refuse it with ({d}: the directory).
Setup = Callable[[Path, str], tuple[str, int, str]]


def world_writable_config(d: Path, spa: str) -> tuple[str, int, str]:
    return DOOR, 0o666, ("{d}/k.toml: the config, which names commands run as root, is "
                         "writable by others (mode -rw-rw-rw-) (hint: chmod go-w {d}/k.toml)")


def state_dir_symlink_to_a_shared_directory(d: Path, spa: str) -> tuple[str, int, str]:
    (d / "shared").mkdir()
    (d / "shared").chmod(0o1777)  # like /tmp
    (d / "state").symlink_to(d / "shared")
    return spa, 0o644, ("{d}/k.toml:3: state_dir {d}/state is writable by others "
                        "(mode drwxrwxrwt) (hint: chmod go-w {d}/state)")


def state_dir_symlink_to_nothing(d: Path, spa: str) -> tuple[str, int, str]:
    (d / "state").symlink_to(d / "gone")
    return spa, 0o644, ("{d}/k.toml:3: state_dir {d}/state is a symlink to {d}/gone, which "
                        "does not exist (hint: mkdir -m 700 {d}/gone, or point state_dir at a "
                        "directory)")


def inline_secret_in_a_readable_config(d: Path, spa: str) -> tuple[str, int, str]:
    text = spa.replace(f'secret_file = "{d}/alice.key"', f'secret = "{SECRET}"')
    return text, 0o644, ("{d}/k.toml:10: {d}/k.toml, which holds an inline secret, is readable "
                         "or writable by others (mode -rw-r--r--) (hint: chmod 600 {d}/k.toml)")


def secret_file_of_another_user(d: Path, spa: str) -> tuple[str, int, str]:
    os.chown(d / "alice.key", NOBODY, -1)
    return spa, 0o644, (f"{{d}}/k.toml:10: secret_file {{d}}/alice.key is owned by uid {NOBODY}, "
                        "not root (hint: chown root {d}/alice.key)")


def spa_config(d: Path) -> str:
    secret_file = d / "alice.key"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    return (f'[daemon]\n# the replay cache\nstate_dir = "{d}/state"\n\n[spa]\n\n'
            f'[[spa.key]]\nname = "alice"\nopen = ["tcp:22"]\nsecret_file = "{secret_file}"\n')


def serve_until_ready_or_exit(bed: TestBed, config: Path) -> tuple[int | None, str]:
    """`knockgate serve`'s exit code and log, or None and the log once it is ready."""
    daemon = RunningDaemon(bed, config)
    deadline = time.monotonic() + 10
    try:
        while daemon.process.poll() is None and "ready, watching" not in daemon.log:
            assert time.monotonic() < deadline, f"neither ready nor gone:\n{daemon.log}"
            time.sleep(0.02)
        code = daemon.process.poll()
        if code is not None:
            daemon.process.wait()  # the log thread has read everything once stderr closes
            time.sleep(0.05)
        return code, daemon.log
    finally:
        if daemon.process.poll() is None:
            daemon.stop()


@pytest.mark.parametrize("setup", [
    world_writable_config, state_dir_symlink_to_a_shared_directory,
    state_dir_symlink_to_nothing, inline_secret_in_a_readable_config,
    secret_file_of_another_user])
def test_check_and_serve_refuse_the_same_untrusted_files_alike(bed, tmp_path, setup: Setup):
    text, mode, words = setup(tmp_path, spa_config(tmp_path))
    message = words.format(d=tmp_path)
    config = tmp_path / "k.toml"
    config.write_text(text)
    config.chmod(mode)
    checked = knockgate_cli(bed, bed.server, "check", "--config", str(config))
    assert (checked.returncode, message) == (3, checked.stderr.strip()), checked.stdout
    code, log = serve_until_ready_or_exit(bed, config)
    assert (code, log.strip()) == (3, message)
    tables = bed.run(bed.server, "nft", "list", "tables").stdout
    assert "knockgate" not in tables, "a refused config touches no firewall"


def test_a_state_dir_symlink_to_a_private_directory_serves(bed, tmp_path):
    """The symlink is followed both times: check passes it, serve keeps its replay cache in
    the directory it points to, and a packet sent through it opens the port."""
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "real")
    config = tmp_path / "k.toml"
    config.write_text(spa_config(tmp_path))
    checked = knockgate_cli(bed, bed.server, "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    bed.listen(22)
    daemon = RunningDaemon(bed, config)
    daemon.wait_for("ready, watching")
    opened = knockgate_cli(bed, bed.client, "open", SERVER_V4, "--key-name", "alice",
                           "--secret-file", str(tmp_path / "alice.key"), "--open", "tcp:22")
    assert opened.returncode == 0, opened.stderr
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
    assert (tmp_path / "real" / "replay.sqlite3").exists()
    daemon.stop()
    assert subprocess.run(["test", "-L", str(tmp_path / "state")]).returncode == 0


def test_a_reload_refuses_a_config_that_became_writable_by_others_and_keeps_serving(bed, serve,
                                                                                   tmp_path):
    bed.listen(22)
    daemon = serve(DOOR)
    config = tmp_path / "knockgate.toml"
    config.chmod(0o646)
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    line = daemon.wait_for("reload failed, still serving the previous configuration", after=mark)
    assert line.endswith(f"{config}: the config, which names commands run as root, is writable "
                         f"by others (mode -rw-r--rw-) (hint: chmod go-w {config})")
    bed.send_syns([7000])
    with inside(bed.client), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\0", (SERVER_V4, 8000))
    assert bed.wait_until_open(SERVER_V4, 22) is not None, daemon.log
