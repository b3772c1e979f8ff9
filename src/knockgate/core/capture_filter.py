"""The capture socket's filter, in libpcap's language (io/bpf.py compiles it): knocks of the
doors the daemon reads, and SPA datagrams of a valid shape only, so a flood of garbage at the
SPA port is dropped in the kernel, never copied to Python. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def capture_filter(knock_clauses: Iterable[str], spa_clauses: Iterable[str]) -> str | None:
    """The filter that passes the captured knocks (each kind's ``bpf_clause``) and SPA
    datagrams; None when there is nothing to capture."""
    clauses = [f"({clause})" for clause in [*knock_clauses, *spa_clauses]]
    return " or ".join(clauses) if clauses else None


# A filter over this many key ids would grow long; past it, unknown ids are left to Python.
MAX_FILTERED_KEY_IDS = 256


def fixed_datagram_clause(port: int, payload_length: int, first_byte: int,
                          key_ids: Sequence[bytes] = ()) -> str:
    """UDP to ``port`` whose payload has exactly this length and first byte and, if
    ``key_ids`` are given, carries one of them right after that byte (so garbage with a
    random key id never leaves the kernel).

    libpcap indexes ``udp[]`` for IPv4 only, so the IPv6 half reads the UDP header at its
    fixed offset behind a 40-byte header (``ip6 proto 17``: no extension headers).
    """
    length = 8 + payload_length
    v4 = f"ip and udp[4:2] = {length} and udp[8] = {first_byte}"
    v6 = f"ip6 proto 17 and ip6[44:2] = {length} and ip6[48] = {first_byte}"
    if key_ids and len(key_ids) <= MAX_FILTERED_KEY_IDS:
        v4 += " and (" + " or ".join(_key_id_test("udp", 9, k) for k in key_ids) + ")"
        v6 += " and (" + " or ".join(_key_id_test("ip6", 49, k) for k in key_ids) + ")"
    return f"udp dst port {port} and (({v4}) or ({v6}))"


def _key_id_test(base: str, offset: int, key_id: bytes) -> str:
    words = [key_id[i:i + 4] for i in range(0, len(key_id), 4)]
    return "(" + " and ".join(
        f"{base}[{offset + 4 * n}:{len(word)}] = 0x{word.hex()}" for n, word in enumerate(words)
    ) + ")"


def datagram_length_clause(port: int, shortest: int, longest: int) -> str:
    """UDP to ``port`` with a payload of ``shortest`` to ``longest`` bytes (IPv4 and IPv6)."""
    low, high = 8 + shortest, 8 + longest
    return (f"udp dst port {port} and ((ip and udp[4:2] >= {low} and udp[4:2] <= {high}) "
            f"or (ip6 proto 17 and ip6[44:2] >= {low} and ip6[44:2] <= {high}))")
