"""One daemon per network namespace: both would own the same nftables table."""

from __future__ import annotations

import socket

from knockgate.errors import KnockgateError

# Abstract unix socket names live in the network namespace and vanish with the process, so a
# crashed daemon never leaves a stale lock behind.
_NAME = b"\0knockgate-serve"


def claim_namespace() -> socket.socket:
    """A socket held for the daemon's life; KnockgateError if another daemon holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(_NAME)
    except OSError as exc:
        sock.close()
        raise KnockgateError("another 'knockgate serve' is running in this network namespace "
                             "(it owns table inet knockgate); stop it first") from exc
    return sock
