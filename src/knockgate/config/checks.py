"""Checks across doors and SPA, once each table is valid on its own: names are unique, no
sequence is a prefix of another, no knock port is also a port that opens, the SPA port is
nobody else's, and the table fits the kernel's memory budget. Each is linear in doors."""

from __future__ import annotations

from knockgate.config.lines import Where
from knockgate.config.schema import Config, SpaConfig
from knockgate.core.nft.kernel_doors import KernelSettings
from knockgate.core.nft.memory import KernelMemory, table_memory
from knockgate.core.nft.table import TablePlan, render_table
from knockgate.errors import ConfigError
from knockgate.model import Door, Frame

# The share of the host's memory the table may take when every bounded set is full.
KERNEL_MEMORY_SHARE = 8
_MEMINFO = "/proc/meminfo"


def check_doors_together(doors: tuple[Door, ...], path: str, same_sequence_fires_both: bool = False
                         ) -> None:
    """``same_sequence_fires_both``: doors with equal sequences are accepted (a served
    knockd.conf: knockd fires every such door); a strict prefix is refused either way."""
    seen: dict[str, Door] = {}
    for door in doors:
        if door.name in seen:
            raise ConfigError(f"door {door.name!r} is defined twice", path=path, line=door.line,
                              hint=f"the first is on line {seen[door.name].line}; rename one")
        seen[door.name] = door
    _check_no_prefix(doors, path, same_sequence_fires_both)
    _check_ports_disjoint(doors, path)


def _check_no_prefix(doors: tuple[Door, ...], path: str, same_sequence_fires_both: bool
                     ) -> None:
    """The first door (in file order) whose sequence starts another door's is an error, named
    with the first such other door (one with the same sequence only unless
    ``same_sequence_fires_both``). Each door's prefixes are looked up once, so the cost is
    doors x knocks, not doors squared."""
    starting: dict[tuple[Frame, ...], list[Door]] = {}
    for door in doors:
        for length in range(1, len(door.sequence) + 1):
            owners = starting.setdefault(door.sequence[:length], [])
            longer = length < len(door.sequence)
            # The first two are enough to find one that is not the door; a door whose
            # sequence is this prefix is found by the first longer one, kept apart.
            if len(owners) < 2 or (longer and not any(len(o.sequence) > length
                                                      for o in owners)):
                owners.append(door)
    for door in doors:
        other = next((o for o in starting.get(door.sequence, ()) if o is not door and not (
            same_sequence_fires_both and o.sequence == door.sequence)), None)
        if door.sequence and other is not None:
            raise ConfigError(
                f"door {door.name!r}: its sequence is a prefix of door {other.name!r}'s",
                path=path, line=door.line,
                hint=f"knocking {other.name!r} would also open {door.name!r}; "
                "make the sequences differ",
            )


def same_sequence_warnings(doors: tuple[Door, ...], path: str) -> tuple[str, ...]:
    """A warning for each door whose sequence an earlier door has too, naming both lines:
    one knock then opens both."""
    first: dict[tuple[Frame, ...], Door] = {}
    warnings = []
    for door in doors:
        earlier = first.setdefault(door.sequence, door)
        if door.sequence and earlier is not door:
            warnings.append(f"{path}:{door.line}: warning: door {door.name!r} has the same "
                            f"sequence as door {earlier.name!r} (line {earlier.line}): one "
                            "knock opens both, as knockd does")
    return tuple(warnings)


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


def kernel_memory(config: Config) -> KernelMemory:
    """What ``config``'s table costs the kernel (core/nft/memory.py), sized as the daemon
    sizes it."""
    settings = KernelSettings(stage_size=min(config.options.max_pending, 1 << 20))
    plan = TablePlan(config.doors, tuple(config.hidden_ports), tuple(config.grant_ports),
                     settings)
    return table_memory(render_table(plan, ()).splitlines())


def host_memory_bytes(meminfo: str = _MEMINFO) -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    with open(meminfo, encoding="ascii") as handle:
        text = handle.read()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "MemTotal":
            return int(value.split()[0]) * 1024
    raise ValueError(f"{meminfo} has no MemTotal line")


def check_kernel_memory(config: Config, host_bytes: int,
                        cost: KernelMemory | None = None) -> KernelMemory:
    """``config``'s kernel memory (``cost``, when the caller rendered the table already), or
    ConfigError when its table, every bounded set full, would take more than
    1/KERNEL_MEMORY_SHARE of ``host_bytes``."""
    cost = kernel_memory(config) if cost is None else cost
    budget = host_bytes // KERNEL_MEMORY_SHARE
    if cost.full > budget:
        raise ConfigError(
            f"the nftables table of these {len(config.doors)} door(s) may take "
            f"{cost.full / 2**20:.0f} MiB of kernel memory, over the budget of "
            f"{budget / 2**20:.0f} MiB (1/{KERNEL_MEMORY_SHARE} of this host's memory)",
            path=config.path, line=config.doors[0].line if config.doors else 1,
            hint="lower [daemon] max_pending (each unit costs every kernel door's sets), "
            "use fewer doors, or run some with engine = 'userspace'")
    return cost
