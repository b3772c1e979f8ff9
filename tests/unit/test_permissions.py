"""The one permission rule (config/files.py ``distrust``, sshd's StrictModes): every file
knockgate trusts is owned by root or the daemon's user and writable by nobody else; a secret
is readable by nobody else either. The refusals of whole configurations, with FILE:LINE and
hint, are in test_config_errors.py."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from knockgate.config.files import check_trusted, distrust
from knockgate.errors import ConfigError

NOBODY = pwd.getpwnam("nobody").pw_uid
DAEMON_UID = 1234


def status(mode: int, uid: int = 0) -> os.stat_result:
    """A stat result with only what the rule reads: a regular file's mode and its owner."""
    return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o755, 0o444, 0o4755, 0o711, 0o1755])
@pytest.mark.parametrize("uid", [0, DAEMON_UID])
def test_files_of_root_or_the_daemon_that_only_they_write_are_trusted(mode, uid):
    assert distrust("/f", status(mode, uid), DAEMON_UID, secret=False) is None


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700, 0o611])
@pytest.mark.parametrize("uid", [0, DAEMON_UID])
def test_secrets_that_only_their_owner_reads_are_trusted(mode, uid):
    assert distrust("/f", status(mode, uid), DAEMON_UID, secret=True) is None


@pytest.mark.parametrize(("mode", "shown"), [(0o620, "-rw--w----"), (0o602, "-rw-----w-"),
                                             (0o666, "-rw-rw-rw-"), (0o1777, "-rwxrwxrwt")])
def test_a_file_others_may_write_is_refused_with_chmod_go_w(mode, shown):
    problem = distrust("/etc/k.toml", status(mode), 0, secret=False)
    assert problem is not None
    assert problem.reason == f"is writable by others (mode {shown})"
    assert problem.hint == "chmod go-w /etc/k.toml"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o660])
def test_a_secret_others_may_read_or_write_is_refused_with_chmod_600(mode):
    problem = distrust("/k", status(mode), 0, secret=True)
    assert problem is not None
    shown = stat.filemode(stat.S_IFREG | mode)
    assert problem.reason == f"is readable or writable by others (mode {shown})"
    assert problem.hint == "chmod 600 /k"


@pytest.mark.parametrize("secret", [False, True])
def test_a_file_of_another_user_is_refused_whatever_its_mode(secret):
    problem = distrust("/k", status(0o600, NOBODY), 0, secret)
    assert problem == (f"is owned by uid {NOBODY}, not root", "chown root /k")
    problem = distrust("/k", status(0o600, NOBODY), DAEMON_UID, secret)
    assert problem == (f"is owned by uid {NOBODY}, not root or uid {DAEMON_UID}",
                       f"chown {DAEMON_UID} /k")


def test_every_fault_is_named_with_every_fix():
    problem = distrust("/k", status(0o646, NOBODY), 0, secret=False)
    assert problem == (f"is owned by uid {NOBODY}, not root and is writable by others "
                       "(mode -rw-r--rw-)", "chown root /k; chmod go-w /k")


# The same rule on real files: check_trusted stats nothing itself, readers pass what they
# opened (so a symlink is judged by its target); as root we can hand files to nobody.

def real(path: Path, mode: int, uid: int | None = None) -> Path:
    path.write_text("x\n")
    if uid is not None:
        os.chown(path, uid, -1)
    path.chmod(mode)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_check_trusted_names_the_file_itself_without_a_config_line(tmp_path):
    bad = real(tmp_path / "f", 0o600, NOBODY)
    with pytest.raises(ConfigError) as info:
        check_trusted("one_time_sequences file", str(bad), os.stat(bad))
    assert str(info.value) == (f"{bad}: one_time_sequences file is owned by uid {NOBODY}, not "
                               f"root (hint: chown root {bad})")


def test_a_symlink_is_judged_by_what_it_points_to(tmp_path):
    good, bad = real(tmp_path / "good", 0o600), real(tmp_path / "bad", 0o666)
    (tmp_path / "to-good").symlink_to(good)
    (tmp_path / "to-bad").symlink_to(bad)
    check_trusted("f", str(tmp_path / "to-good"), os.stat(tmp_path / "to-good"), secret=True)
    with pytest.raises(ConfigError, match="writable by others"):
        check_trusted("f", str(tmp_path / "to-bad"), os.stat(tmp_path / "to-bad"))
