"""knockgate's whole nftables table as one transaction, rendered from a plan; io/nft.py applies
it.

Everything lives in ``table inet knockgate`` (core/nft/names.py). The transaction creates the
table or updates it in place: sets that exist keep their elements unless their part recreates
them, so a reload or restart keeps live grants, and sets no part owns any more are deleted.
The input chain, in order: what lets granted sources in (core/nft/grants.py), the knock rules
of kernel doors (core/nft/kernel_doors.py), what the kernel does for userspace doors (their
scan guard and first stage, core/nft/first_stage.py), then the drops.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from knockgate.core.kinds import knock_port
from knockgate.core.nft.first_stage import render_userspace_rules
from knockgate.core.nft.grants import SILENT, ClosedPortAnswer, render_drops, render_grants
from knockgate.core.nft.kernel_doors import KernelSettings, render_kernel_doors
from knockgate.core.nft.names import CHAIN, MARKED_TABLE, TABLE_REF
from knockgate.core.nft.parts import join
from knockgate.model import Door, PortSpec


class TablePlan(NamedTuple):
    """What the table is rendered from: the ``doors``; ``hidden`` ports, closed so they look
    like every other closed port (knock and SPA ports); ``port_grants``, the ports per-port
    grants (SPA) may open; the kernel ``settings``; and how closed ports ``answer``."""

    doors: tuple[Door, ...]
    hidden: tuple[PortSpec, ...] = ()
    port_grants: tuple[PortSpec, ...] = ()
    settings: KernelSettings = KernelSettings()
    answer: ClosedPortAnswer = SILENT


def render_table(plan: TablePlan, existing_sets: Collection[str]) -> str:
    """The one transaction that makes the table what ``plan`` says; ``existing_sets`` are the
    sets the table has now."""
    existing = frozenset(existing_sets)
    in_kernel = [door for door in plan.doors if door.engine == "kernel"]
    # A kernel door's knocks, hidden ports and ports SPA may open are no scan of a userspace
    # door's knocker.
    not_scans = {knock_port(frame) for door in in_kernel for frame in door.sequence}
    not_scans |= {(spec.proto, spec.port) for spec in (*plan.hidden, *plan.port_grants)}
    knocks = join(render_kernel_doors(in_kernel, plan.settings, existing),
                  render_userspace_rules(plan.doors, plan.settings, not_scans, existing))
    grants = render_grants(plan.doors, plan.port_grants)
    stale = sorted(existing - knocks.sets - grants.sets)
    commands = [
        MARKED_TABLE,
        f"add chain {TABLE_REF} {CHAIN} "
        "{ type filter hook input priority filter - 10; policy accept; }",
        f"flush chain {TABLE_REF} {CHAIN}",
        *knocks.declarations,
        *grants.declarations,
        *(f"delete set {TABLE_REF} {name}" for name in stale),
        *grants.rules,
        *knocks.rules,
        *render_drops(plan.doors, plan.hidden, plan.port_grants, plan.answer),
    ]
    return "\n".join(commands) + "\n"


def render_teardown() -> str:
    return f"delete table {TABLE_REF}\n"
