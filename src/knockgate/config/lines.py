"""Where a table or key is written in the TOML text, which tomllib does not report: every
configuration error names its FILE:LINE."""

import re
from typing import NamedTuple

from knockgate.errors import ConfigError


class Lines:
    """The line of each table header and key of one TOML text."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"']+)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self._tables: dict[tuple[str, int], int] = {}
        self._keys: dict[tuple[str, int, str], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = header.group(2).strip("\"'")
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else 0
                counts[table] = index
                self._tables.setdefault((table, index), number)
                continue
            key = self._KEY.match(line)
            if key:
                self._keys.setdefault((table, index, key.group(1).strip("\"'")), number)

    def of(self, table: str, index: int = 0, key: str | None = None) -> int | None:
        if key is not None and (table, index, key) in self._keys:
            return self._keys[(table, index, key)]
        if key is not None and not table and (key, 0) in self._tables:
            return self._tables[(key, 0)]  # a top-level key written as a [table] header
        if (table, index) in self._tables:
            return self._tables[(table, index)]
        # A table written inline (`spa = 1`, `door = [1]`): the line of its key.
        parent, _, name = table.rpartition(".")
        return self._keys.get((parent, 0, name)) if name else None


class Where(NamedTuple):
    """One table of one file (``entry``: which of an array of tables); errors name its lines.
    (``entry``, not ``index``: a NamedTuple field may not hide tuple.index.)"""

    path: str
    lines: Lines
    table: str
    entry: int = 0

    def line(self, key: str | None = None) -> int | None:
        """The key's line, or the table's when the key is not written."""
        return self.lines.of(self.table, self.entry, key)

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line(key), hint=hint)
