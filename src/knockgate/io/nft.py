"""nftables, in-process through libnftables (Debian's python3-nftables binding). Sends what
core/nft renders and nothing it decides itself."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from knockgate.core.nft.grants import (
    ElementGrant,
    HostChain,
    closed_port_answer,
    describe_closed_ports,
)
from knockgate.core.nft.names import FAMILY, TABLE, TABLE_REF, is_marked
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

    def refuse_foreign_table(self) -> None:
        """Raise FirewallError if a table inet knockgate exists that knockgate did not make:
        adopting it would rewrite another program's rules, and `down` would delete them."""
        self._ctx.set_terse_output(True)  # a table's sets may hold many elements: skip them
        try:
            rc, listing, error = self._ctx.cmd(f"list table {TABLE_REF}")
        finally:
            self._ctx.set_terse_output(False)
        if rc != 0:
            if "No such file" in error:
                return
            raise FirewallError(f"could not read table {TABLE_REF}: {error.strip()}")
        if not is_marked(listing):
            raise FirewallError(
                f"a table {TABLE_REF} exists that knockgate did not make (it lacks knockgate's "
                "comment), and knockgate would rewrite and delete it (hint: see what it is with "
                f"`nft list table {TABLE_REF}`; if nothing needs it, as when an older knockgate "
                f"left it, remove it with `nft delete table {TABLE_REF}`)")

    def input_chains(self) -> list[HostChain]:
        """The base chains on the input hook of the ip, ip6 and inet tables but knockgate's,
        each with its last rule: what core/nft/grants.py's closed_port_answer reads."""
        chains = []
        for item in self._list_json({"chains": {}}):
            chain = item.get("chain", {})
            if (chain.get("hook") != "input" or chain.get("family") not in ("ip", "ip6", "inet")
                    or (chain["family"], chain.get("table")) == (FAMILY, TABLE)):
                continue
            rules = [entry["rule"] for entry in self._list_json({"chain": {
                key: chain[key] for key in ("family", "table", "name")}}) if "rule" in entry]
            last_rule = tuple(next(iter(expr)) for expr in rules[-1]["expr"]) if rules else ()
            chains.append(HostChain(chain["family"], chain["table"], chain["name"],
                                    int(chain.get("prio", 0)), chain.get("policy", "accept"),
                                    last_rule))
        return chains

    def _list_json(self, what: dict[str, Any]) -> list[dict[str, Any]]:
        """``list`` through libnftables' JSON input, so no name is spliced into a command."""
        rc, output, error = self._ctx.json_cmd({"nftables": [{"list": what}]})
        if rc != 0:
            raise FirewallError(f"could not list the ruleset: {str(error).strip()}")
        items: list[dict[str, Any]] = output.get("nftables", []) if output else []
        return items

    def add_elements(self, grant: ElementGrant) -> None:
        """Add (or refresh) a grant's elements, in one nfnetlink batch."""
        self._elements.grant(*grant)

    def remove_table(self) -> None:
        """Delete knockgate's table (`knockgate down`); one that is already gone is fine."""
        rc, _, error = self._ctx.cmd(render_teardown())
        if rc != 0 and "No such file" not in error:
            raise FirewallError(f"could not delete table {TABLE_REF}: {error.strip()}")

    def close(self) -> None:
        self._elements.close()


# In state_dir: the table the daemon last left for when it is not running (core/nft/table.py's
# render_dormant), which `knockgate up` installs when the configuration is broken at boot.
SAVED_TABLE = "table.nft"


def save_table(state_dir: str, text: str) -> str:
    """Write ``text`` to ``state_dir``/table.nft, mode 0600, whole or not at all (a new file
    renamed over the old); a missing ``state_dir`` is created 0700. Returns the path."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, SAVED_TABLE)
    # Not tempfile.mkstemp: tempfile imports shutil, bz2, lzma and random into the daemon.
    fresh = os.path.join(state_dir, f".{SAVED_TABLE}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fresh)  # left by a daemon of the same pid that died mid-write
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(fresh)
        raise
    return path


def read_saved_table(state_dir: str) -> tuple[str, str, os.stat_result, os.stat_result]:
    """The path, text and status of ``state_dir``/table.nft, and the status of ``state_dir``
    (the caller decides whether to trust them). Raises OSError."""
    path = os.path.join(state_dir, SAVED_TABLE)
    directory = os.stat(state_dir)
    with open(path, encoding="utf-8") as saved:
        return path, saved.read(), os.fstat(saved.fileno()), directory


def closed_ports_line(setting: str) -> str:
    """What `knockgate check` says closed ports answer on this host now (``[daemon]
    closed_ports = setting``); "auto" needs to read the ruleset, which needs root."""
    try:
        nft = Nftables()
        try:
            chains = nft.input_chains() if setting == "auto" else []
        finally:
            nft.close()
    except FirewallError as exc:
        return f'closed ports: closed_ports = "{setting}", decided at start ({exc})'
    return describe_closed_ports(closed_port_answer(setting, chains))
