"""Checks across doors and SPA, once each table is valid on its own: names are unique, no
sequence is a prefix of another, no knock port is also a port that opens, and the SPA port is
nobody else's."""

from __future__ import annotations

from knockgate.config.lines import Where
from knockgate.config.schema import SpaConfig
from knockgate.errors import ConfigError
from knockgate.model import Door, Frame


def check_doors_together(doors: tuple[Door, ...], path: str) -> None:
    seen: dict[str, Door] = {}
    for door in doors:
        if door.name in seen:
            raise ConfigError(f"door {door.name!r} is defined twice", path=path, line=door.line,
                              hint=f"the first is on line {seen[door.name].line}; rename one")
        seen[door.name] = door
    for door in doors:
        for other in doors:
            if other is not door and door.sequence and _is_prefix(door.sequence,
                                                                  other.sequence):
                raise ConfigError(
                    f"door {door.name!r}: its sequence is a prefix of door {other.name!r}'s",
                    path=path, line=door.line,
                    hint=f"knocking {other.name!r} would also open {door.name!r}; "
                    "make the sequences differ",
                )
    _check_ports_disjoint(doors, path)


def _is_prefix(short: tuple[Frame, ...], long: tuple[Frame, ...]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def _check_ports_disjoint(doors: tuple[Door, ...], path: str) -> None:
    knocked = {(f.proto, f.port): door for door in doors for f in door.sequence}
    for door in doors:
        for spec in door.open:
            owner = knocked.get((spec.proto, spec.port))
            if owner is not None:
                raise ConfigError(
                    f"door {door.name!r} opens {spec}, which door {owner.name!r} knocks on",
                    path=path, line=door.line, hint="a knock port cannot also be a protected port",
                )


def check_spa_port(spa: SpaConfig, doors: tuple[Door, ...], where: Where) -> None:
    """``where`` is the [spa] table."""
    used = {(f.proto, f.port) for door in doors for f in door.sequence}
    used |= {(s.proto, s.port) for door in doors for s in door.open}
    used |= {(s.proto, s.port) for entry in spa.keys for s in entry.open}
    if ("udp", spa.port) in used:  # sharing with [fwknop] is fine: the formats differ
        raise where.error("port", f"the SPA port udp:{spa.port} is also a knock or protected "
                          "port", "choose another [spa] port")
