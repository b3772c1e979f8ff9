"""knockgate's whole nftables table as one transaction, rendered from a plan; io/nft.py applies
it.

Everything lives in ``table inet knockgate`` (core/nft/names.py). The transaction creates the
table or updates it in place: sets that exist keep their elements unless their part recreates
them, so a reload or restart keeps live grants, and sets no part owns any more are deleted.
The input chain, in order: what lets granted sources in (core/nft/grants.py), the knock rules
of kernel doors (core/nft/kernel_doors.py), what the kernel does for userspace doors (their
scan guard and first stage, core/nft/first_stage.py), then the drops.

While no daemon runs the table stays, dormant (``render_dormant``): the protection must not
depend on a live process, and a knock rule must not open a door that nobody logs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from knockgate.core.kinds import knock_port
from knockgate.core.nft.first_stage import render_userspace_rules
from knockgate.core.nft.grants import SILENT, ClosedPortAnswer, render_drops, render_grants
from knockgate.core.nft.kernel_doors import KernelSettings, render_kernel_doors
from knockgate.core.nft.names import CHAIN, MARKED_TABLE, TABLE_REF, VERSIONS, knock_chain
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
        *_empty_input_chain(),
        *knocks.declarations,
        *grants.declarations,
        *(f"delete set {TABLE_REF} {name}" for name in stale),
        *grants.rules,
        *knocks.rules,
        *render_drops(plan.doors, plan.hidden, plan.port_grants, plan.answer),
    ]
    return "\n".join(commands) + "\n"


def render_dormant(plan: TablePlan, existing_sets: Collection[str]) -> str:
    """The table while no daemon runs: what the daemon leaves at exit and `knockgate up`
    installs. Granted sources stay in (their kernel timers end the grants) and every protected
    and hidden port stays closed, but no knock rule is left: a kernel door would open with no
    log line and no command, and a userspace door's first stage hands sources to nobody. The
    knock chains and every set but the grant sets are deleted, so a daemon that adopts the
    table starts every sequence afresh. ``existing_sets``: the sets the table has now."""
    grants = render_grants(plan.doors, plan.port_grants)
    knock_chains = [knock_chain(version.number) for version in VERSIONS]
    commands = [
        *_empty_input_chain(),
        # add, so that deleting a chain the table lacks is no error
        *(f"{verb} chain {TABLE_REF} {chain}" for chain in knock_chains
          for verb in ("add", "flush", "delete")),
        *grants.declarations,
        *(f"delete set {TABLE_REF} {name}" for name in sorted(set(existing_sets) - grants.sets)),
        *grants.rules,
        *render_drops(plan.doors, plan.hidden, plan.port_grants, plan.answer),
    ]
    return "\n".join(commands) + "\n"


def _empty_input_chain() -> tuple[str, ...]:
    """The marked table and its input chain, emptied: rules are always rendered whole."""
    return (MARKED_TABLE,
            f"add chain {TABLE_REF} {CHAIN} "
            "{ type filter hook input priority filter - 10; policy accept; }",
            f"flush chain {TABLE_REF} {CHAIN}")


def render_teardown() -> str:
    return f"delete table {TABLE_REF}\n"
