"""nftables, in-process through libnftables (Debian's python3-nftables binding). Sends what
core/nft renders and nothing it decides itself."""

from __future__ import annotations

import json
from typing import Any

from knockgate.core.nft.grants import ElementGrant
from knockgate.core.nft.names import FAMILY, TABLE, TABLE_REF
from knockgate.core.nft.table import render_teardown
from knockgate.errors import FirewallError
from knockgate.io.nfnetlink import SetElementWriter


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
    """Applies rendered tables and grants; one libnftables context for the daemon's life."""

    def __init__(self) -> None:
        self._ctx = _load_binding().Nftables()
        self._ctx.set_handle_output(False)
        self._elements = SetElementWriter(TABLE)

    def apply(self, commands: str) -> None:
        """Run ``commands`` (core/nft/table.py's ``render_table``) as one atomic transaction."""
        rc, _, error = self._ctx.cmd(commands)
        if rc != 0:
            raise FirewallError(f"nftables refused the change: {error.strip() or 'no reason'}")

    def existing_sets(self) -> set[str]:
        """The sets knockgate's table has now (none if there is no table)."""
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

    def add_elements(self, grant: ElementGrant) -> None:
        """Add (or refresh) a grant's elements, in one nfnetlink batch."""
        self._elements.grant(*grant)

    def remove_table(self) -> None:
        """Delete knockgate's table; one that is already gone is fine."""
        rc, _, error = self._ctx.cmd(render_teardown())
        if rc != 0 and "No such file" not in error:
            raise FirewallError(f"could not delete table {TABLE_REF}: {error.strip()}")

    def close(self) -> None:
        self._elements.close()
