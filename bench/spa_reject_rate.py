"""How many SPA packets one core rejects or verifies per second (pure core, no I/O).

    .venv/bin/python bench/spa_reject_rate.py [--count 200000] [--keys 1000]

Bogus packets of each kind a flood could send, cheapest reject first, then valid packets. The
keyring holds ``--keys`` users to show that the key lookup does not grow with them. Each figure
is the best of five runs over ``--count`` distinct packets.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping

from knockgate.core.spa import (
    PACKET_SIZE,
    SpaKey,
    SpaRequest,
    make_keyring,
    open_at,
    seal_at,
)
from knockgate.errors import InvalidMessage

NOW = 1_700_000_000
REQUEST = SpaRequest(None, (("tcp", 22),))


def _rate(packets: list[bytes], keyring: Mapping[bytes, SpaKey]) -> tuple[float, int]:
    """Packets per second, and how many of them were rejected (a check on the case itself)."""
    best = float("inf")
    for _ in range(5):
        rejected = 0
        start = time.perf_counter()
        for packet in packets:
            try:
                open_at(unverified_packet=packet, now=NOW, max_age=30, keyring=keyring)
            except InvalidMessage:
                rejected += 1
        best = min(best, time.perf_counter() - start)
    return len(packets) / best, rejected


def _cases(user: SpaKey) -> dict[str, Callable[[], bytes]]:
    valid = seal_at(key=user, now=NOW, nonce=bytes(12), request=REQUEST)
    return {
        "bogus: wrong length (60 bytes)": lambda: b"\x01" + os.urandom(59),
        "bogus: wrong version byte": lambda: b"\x02" + os.urandom(PACKET_SIZE - 1),
        "bogus: unknown key id": lambda: b"\x01" + os.urandom(PACKET_SIZE - 1),
        "bogus: known key id, forged tag": lambda: valid[:29] + os.urandom(PACKET_SIZE - 29),
        "valid: verified": lambda: seal_at(key=user, now=NOW, nonce=os.urandom(12),
                                           request=REQUEST),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    users = [SpaKey(f"user{n}", os.urandom(32)) for n in range(args.keys)]
    keyring = make_keyring(users)
    print(f"{args.count} packets per case, {args.keys} keys, best of 5, one core")
    for name, make in _cases(users[-1]).items():
        packets = [make() for _ in range(args.count)]
        rate, rejected = _rate(packets, keyring)
        print(f"  {name:34} {rate:>12,.0f} packets/s   ({rejected} of {len(packets)} rejected)")


if __name__ == "__main__":
    main()
