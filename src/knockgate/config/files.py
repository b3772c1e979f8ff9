"""The files a configuration points at: secret files (refused when others may read them),
knockd One_Time_Sequences files, and fwknop's access.conf. Errors name the config key's line."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from knockgate.compat.knockd.conf import one_time_frames
from knockgate.config.lines import Where
from knockgate.errors import ConfigError
from knockgate.model import Frame

if TYPE_CHECKING:
    from knockgate.compat.fwknop.access import FwknopAccess


def read_secret_file(file: Any, where: Where) -> str:
    """The text of an SPA key's secret_file, which only its owner may read or write."""
    if not isinstance(file, str) or not file.startswith("/"):
        raise where.error("secret_file", "secret_file must be an absolute path",
                          "e.g. secret_file = '/etc/knockgate/NAME.key'")
    try:
        with open(file, encoding="ascii") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("secret_file", f"cannot read secret_file {file}: {exc}",
                          "the file holds one base64 line from 'knockgate keygen'") from exc
    if mode & 0o077:
        raise where.error("secret_file", f"secret_file {file} is readable or writable by others "
                          f"(mode {stat.filemode(mode)})", f"chmod 600 {file}")
    return text


def read_one_time(path: str, mask: int, value: int, where: Where | None = None
                  ) -> tuple[tuple[Frame, ...], int | None]:
    """The file's next unused sequence and where its line starts; ((), None) when used up.
    TCP knocks get the flags ``mask``/``value``. Without ``where`` (the daemon rereading the
    file) errors name the file itself."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except OSError as exc:
        message = f"cannot read one_time_sequences {path}: {exc.strerror}"
        if where is None:
            raise ConfigError(message, path=path) from exc
        raise where.error("one_time_sequences", message,
                          "one sequence per line, e.g. 7000,8000:udp,9000") from exc
    return one_time_frames(text, mask, value)


def read_access_conf(path: str, where: Where) -> FwknopAccess:
    """fwknop's access.conf, every stanza naming the OPEN_PORTS it guards. Errors in the file
    name the file's own lines (parse_access_conf refuses a file without a stanza)."""
    from knockgate.compat.fwknop.access import parse_access_conf  # its crypto: fwknop only

    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            access = parse_access_conf(handle.read(), path)
    except OSError as exc:
        raise where.error("access", f"cannot read {path}: {exc.strerror}",
                          "point access at fwknop's access.conf") from exc
    for stanza in access.stanzas:
        if not stanza.open_ports:
            raise ConfigError(
                "knockgate needs OPEN_PORTS in every stanza: it guards exactly those ports "
                "(fwknopd relies on your own default-drop firewall instead)", path=path,
                line=stanza.line, hint="add e.g. 'OPEN_PORTS tcp/22' to this stanza")
    return access
