"""Socket options shared by the daemon's receiving sockets."""

from __future__ import annotations

import socket

_SO_RCVBUFFORCE = 33


def grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """A receive buffer of ``size`` bytes, so a burst is queued rather than dropped. Root may
    exceed net.core.rmem_max (SO_RCVBUFFORCE); others get what rmem_max allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
