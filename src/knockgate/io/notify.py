"""systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET, if it is set."""

from __future__ import annotations

import contextlib
import os
import socket


def notify(state: str) -> None:
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    # If systemd went away there is nothing useful to do about it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(state.encode(), target)
