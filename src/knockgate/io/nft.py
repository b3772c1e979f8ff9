"""nftables, in-process through libnftables (Debian's python3-nftables binding)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from knockgate.core.nft.first_stage import render_userspace_rules
from knockgate.core.nft.kernel_doors import KernelSettings, kernel_set_names, render_kernel_doors
from knockgate.core.nft.scan_guard import merge
from knockgate.core.nft.table import (
    FAMILY,
    TABLE,
    Spliced,
    port_set_name,
    render_ruleset,
    render_teardown,
    set_name,
)
from knockgate.errors import FirewallError
from knockgate.io.nfnetlink import SetElementWriter, concat_key
from knockgate.model import Door, IPAddress, PortSpec

log = logging.getLogger("knockgate.nft")


def _load_binding() -> Any:
    try:
        import nftables
    except ImportError as exc:
        raise FirewallError(
            "the libnftables Python binding is missing: install Debian's python3-nftables "
            "(apt-get install python3-nftables) and run knockgate with a Python that sees it"
        ) from exc
    return nftables


class Nftables:
    """Applies rendered rulesets and grants; one libnftables context for the daemon's life."""

    def __init__(self) -> None:
        self._ctx = _load_binding().Nftables()
        self._ctx.set_handle_output(False)
        self._elements = SetElementWriter(TABLE)

    def run(self, commands: str) -> str:
        """Run ``commands`` as one atomic transaction."""
        rc, output, error = self._ctx.cmd(commands)
        if rc != 0:
            raise FirewallError(f"nftables refused the change: {error.strip() or 'no reason'}")
        return str(output)

    def existing_sets(self) -> set[str]:
        self._ctx.set_json_output(True)
        try:
            rc, output, _ = self._ctx.cmd(f"list sets {FAMILY}")
        finally:
            self._ctx.set_json_output(False)
        if rc != 0 or not output:
            return set()
        items: list[dict[str, Any]] = json.loads(output).get("nftables", [])
        return {
            item["set"]["name"]
            for item in items
            if "set" in item and item["set"].get("table") == TABLE
        }

    def install(self, doors: list[Door], hidden: list[PortSpec],
                port_grants: list[PortSpec] | None = None,
                kernel: KernelSettings | None = None) -> None:
        """Apply the whole table in one transaction: doors with engine "kernel" get their knock
        rules, userspace doors the scan guard that reports sources touching other ports and,
        where it can, a first stage kept in the kernel (core/first_stage.py)."""
        kernel = kernel or KernelSettings()
        existing = self.existing_sets()
        in_kernel = [door for door in doors if door.engine == "kernel"]
        penalties = {door.name: door.penalty for door in in_kernel}
        # Always rendered: the knock chains are flushed even without kernel doors, so stale
        # stage sets lose their last reference and can be deleted.
        rules = render_kernel_doors(in_kernel, kernel, penalties, existing)
        kernel_part = Spliced(rules.declarations, rules.rules,
                              frozenset(kernel_set_names(in_kernel, penalties)))
        not_scans = {(f.proto, f.port) for door in in_kernel for f in door.sequence}
        not_scans |= {(spec.proto, spec.port) for spec in hidden + (port_grants or [])}
        userspace = render_userspace_rules(doors, kernel, not_scans, existing)
        self.run(render_ruleset(doors, hidden, existing, port_grants or [],
                                merge(kernel_part, userspace)))

    def grant(self, door: str, source: IPAddress, seconds: float) -> None:
        self._elements.grant(set_name(door, source.version), [source.packed],
                             round(seconds * 1000))

    def grant_ports(self, source: IPAddress, ports: Iterable[PortSpec], seconds: float) -> None:
        """Open exactly ``ports`` for ``source`` (an SPA grant), in one transaction."""
        keys = [concat_key(source, spec.proto, spec.port) for spec in ports]
        self._elements.grant(port_set_name(source.version), keys, round(seconds * 1000))

    def close(self) -> None:
        self._elements.close()

    def remove(self) -> None:
        rc, _, error = self._ctx.cmd(render_teardown())
        if rc != 0 and "No such file" not in error:
            raise FirewallError(f"could not delete table {FAMILY} {TABLE}: {error.strip()}")
