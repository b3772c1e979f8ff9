"""Command templates → argv lists. Values are substituted per argument, never through a shell."""

from __future__ import annotations

from collections.abc import Mapping


def expand_argv(template: tuple[str, ...], values: Mapping[str, str]) -> tuple[str, ...]:
    """Fill ``{ip}``-style placeholders; config validation has already rejected unknown ones."""
    return tuple(arg.format_map(values) for arg in template)
