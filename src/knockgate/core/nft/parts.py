"""What each renderer of knockgate's table returns, and the commands they all write.

core/nft/table.py renders the whole table from parts: the grant sets and the rules that let
granted sources in (core/nft/grants.py), the knock rules of kernel doors
(core/nft/kernel_doors.py), and for userspace doors the first stage and the scan guard
(core/nft/first_stage.py, core/nft/scan_guard.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from knockgate.core.nft.names import CHAIN, TABLE_REF


class TablePart(NamedTuple):
    """One renderer's share of the transaction: ``declarations`` (chains and sets, before any
    rule), ``rules`` (commands, in order), and the names of the ``sets`` it owns: every other
    set that exists in the table is stale and deleted."""

    declarations: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    sets: frozenset[str] = frozenset()


def join(*parts: TablePart) -> TablePart:
    """The parts one after another."""
    return TablePart(tuple(d for part in parts for d in part.declarations),
                     tuple(r for part in parts for r in part.rules),
                     frozenset().union(*(part.sets for part in parts)))


def declare_set(name: str, key: str, *, size: int | None = None, timeout_ms: int | None = None,
                dynamic: bool = True, existing: Collection[str] = ()) -> list[str]:
    """The command that declares set ``name`` with ``key`` (``type ipv4_addr``, ``typeof ...``).

    A set in ``existing`` is deleted first, so a changed size or timeout applies (and its
    elements are forgotten). Sets whose elements must survive a reload, grants above all, are
    declared without it: ``add set`` leaves the elements of an existing set alone.
    ``dynamic``: rules may add to the set (nft 1.0.6 insists on the flag then).
    """
    commands = [f"delete set {TABLE_REF} {name}"] if name in existing else []
    body = [key]
    if size is not None:
        body.append(f"size {size}")
    body.append("flags dynamic,timeout" if dynamic else "flags timeout")
    if timeout_ms is not None:
        body.append(f"timeout {timeout_ms}ms")
    return [*commands, f"add set {TABLE_REF} {name} {{ " + "; ".join(body) + "; }"]


def knock_ports(pairs: Iterable[tuple[str, int]]) -> str:
    """An anonymous set of (protocol, port) pairs, for ``meta l4proto . th dport``."""
    return "{ " + ", ".join(f"{proto} . {port}" for proto, port in sorted(set(pairs))) + " }"


def add_rule(rule: str, chain: str = CHAIN) -> str:
    return f"add rule {TABLE_REF} {chain} {rule}"
