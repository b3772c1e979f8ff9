"""The files a configuration points at, and the one rule for trusting them.

Secret files, knockd One_Time_Sequences files, fwknop's access.conf, the state_dir: each is
opened, then judged by ``distrust`` (sshd's StrictModes) on what was opened, so a symlink is
judged by what it points to and `knockgate check` refuses exactly what `knockgate serve` does.
Errors name the config key's line. Imports stay light: `knockgate open` uses ``distrust`` too.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from knockgate.errors import ConfigError

if TYPE_CHECKING:
    from knockgate.compat.fwknop.access import FwknopAccess
    from knockgate.config.lines import Where
    from knockgate.model import Frame

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_READABLE_BY_OTHERS = stat.S_IRGRP | stat.S_IROTH


class Distrust(NamedTuple):
    """Why a file may not be trusted (``reason`` follows its name) and the commands that fix it."""

    reason: str
    hint: str


def distrust(path: str, status: os.stat_result, daemon_uid: int, secret: bool
             ) -> Distrust | None:
    """None when knockgate may trust the file or directory ``path`` whose stat is ``status``:
    owned by root or ``daemon_uid`` (the daemon's user; the client's, for `knockgate open`)
    and writable by nobody else, for a ``secret`` readable by nobody else either. Anyone
    else who may write it could put commands in a config (run as root), keys in access.conf
    or forged entries in the replay cache; anyone who may read a secret can forge packets."""
    reasons, fixes = [], []
    if status.st_uid not in (0, daemon_uid):
        owners = "root" if daemon_uid == 0 else f"root or uid {daemon_uid}"
        reasons.append(f"is owned by uid {status.st_uid}, not {owners}")
        fixes.append(f"chown {'root' if daemon_uid == 0 else daemon_uid} {path}")
    if secret and status.st_mode & (_WRITABLE_BY_OTHERS | _READABLE_BY_OTHERS):
        reasons.append(f"is readable or writable by others (mode {stat.filemode(status.st_mode)})")
        fixes.append(f"chmod 600 {path}")
    elif status.st_mode & _WRITABLE_BY_OTHERS:
        reasons.append(f"is writable by others (mode {stat.filemode(status.st_mode)})")
        fixes.append(f"chmod go-w {path}")
    if not reasons:
        return None
    return Distrust(" and ".join(reasons), "; ".join(fixes))


def check_trusted(what: str, path: str, status: os.stat_result, *, secret: bool = False,
                  where: Where | None = None, key: str | None = None) -> None:
    """Raise ConfigError when ``distrust`` refuses ``path`` for the daemon's user (this
    process's): at ``key``'s line of ``where``, or naming ``path`` itself without one."""
    problem = distrust(path, status, os.geteuid(), secret)
    if problem is None:
        return
    reason = f"{what} {problem.reason}"
    if where is None:
        raise ConfigError(reason, path=path, hint=problem.hint)
    raise where.error(key, reason, problem.hint)


def read_secret_file(file: Any, where: Where) -> str:
    """The text of an SPA key's secret_file, which only its owner may read or write."""
    if not isinstance(file, str) or not file.startswith("/"):
        raise where.error("secret_file", "secret_file must be an absolute path",
                          "e.g. secret_file = '/etc/knockgate/NAME.key'")
    try:
        with open(file, encoding="ascii") as handle:
            check_trusted(f"secret_file {file}", file, os.fstat(handle.fileno()), secret=True,
                          where=where, key="secret_file")
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("secret_file", f"cannot read secret_file {file}: {exc}",
                          "the file holds one base64 line from 'knockgate keygen'") from exc


def read_one_time(path: str, mask: int, value: int, where: Where | None = None
                  ) -> tuple[tuple[Frame, ...], int | None]:
    """The file's next unused sequence and where its line starts; ((), None) when used up.
    TCP knocks get the flags ``mask``/``value``. Without ``where`` (the daemon rereading the
    file) errors name the file itself."""
    from knockgate.compat.knockd.conf import one_time_frames  # not for `knockgate open`

    try:
        with open(path, "rb") as handle:
            check_trusted(f"one_time_sequences {path}", path, os.fstat(handle.fileno()),
                          where=where, key="one_time_sequences")
            text = handle.read().decode("utf-8", "surrogateescape")
    except OSError as exc:
        message = f"cannot read one_time_sequences {path}: {exc.strerror}"
        if where is None:
            raise ConfigError(message, path=path) from exc
        raise where.error("one_time_sequences", message,
                          "one sequence per line, e.g. 7000,8000:udp,9000") from exc
    return one_time_frames(text, mask, value)


def read_access_conf(path: str, where: Where) -> FwknopAccess:
    """fwknop's access.conf, every stanza that can grant naming the OPEN_PORTS it guards (a
    closed one, or one expired now, grants nothing). It holds keys, so it is a secret. Errors
    in the file name the file's own lines (parse_access_conf refuses a file without a stanza).
    Stanzas expired by now get a warning each: they match no packet, the others work."""
    from knockgate.compat.fwknop.access import (  # its crypto: fwknop only
        expiry_warnings,
        parse_access_conf,
    )

    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            check_trusted(f"access {path}", path, os.fstat(handle.fileno()), secret=True,
                          where=where, key="access")
            access = parse_access_conf(handle.read(), path)
    except OSError as exc:
        raise where.error("access", f"cannot read {path}: {exc.strerror}",
                          "point access at fwknop's access.conf") from exc
    now = time.time()
    for stanza in access.stanzas:
        if not stanza.open_ports and stanza.closed_by is None and not stanza.expired(now):
            raise ConfigError(
                "knockgate needs OPEN_PORTS in every stanza: it guards exactly those ports "
                "(fwknopd relies on your own default-drop firewall instead)", path=path,
                line=stanza.line, hint="add e.g. 'OPEN_PORTS tcp/22' to this stanza")
    return replace(access, warnings=access.warnings + expiry_warnings(access, now))


def check_state_dir(directory: str, where: Where) -> None:
    """Refuse a state_dir the daemon's replay store could not use or must not trust: what it
    points to, if a symlink, must be a directory that ``distrust`` accepts, and so must every
    file in it (the replay cache). A missing one is fine: the store creates it, mode 0700."""
    try:
        status = os.stat(directory)
    except FileNotFoundError:
        if not os.path.lexists(directory):
            return
        target = os.readlink(directory)
        raise where.error("state_dir", f"state_dir {directory} is a symlink to {target}, "
                          "which does not exist", f"mkdir -m 700 {target}, or point state_dir "
                          "at a directory") from None
    except OSError as exc:
        raise where.error("state_dir", f"cannot use state_dir {directory}: {exc.strerror}",
                          "set state_dir to a directory the daemon can create") from exc
    if not stat.S_ISDIR(status.st_mode):
        raise where.error("state_dir", f"state_dir {directory} is not a directory",
                          "point state_dir at a directory, e.g. /var/lib/knockgate")
    check_trusted(f"state_dir {directory}", directory, status, where=where, key="state_dir")
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                check_trusted(f"{entry.path} in state_dir", entry.path, entry.stat(),
                              where=where, key="state_dir")
    except OSError as exc:
        raise where.error("state_dir", f"cannot use state_dir {directory}: {exc.filename}: "
                          f"{exc.strerror}", "the daemon's user must be able to read "
                          "state_dir and every file in it") from exc
