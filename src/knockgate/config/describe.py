"""The doors and SPA keys of a configuration in words, for `knockgate check`."""

from __future__ import annotations

from knockgate.config.checks import check_kernel_memory, host_memory_bytes
from knockgate.config.schema import Config
from knockgate.core.kinds import format_frame
from knockgate.core.nft.first_stage import first_stage_summary
from knockgate.core.nft.kernel_doors import stage_timeout_ms
from knockgate.model import Door


def kernel_timing(door: Door) -> str:
    """How a kernel door times its knocks: each stage keeps a source for its share of the
    timeout, so the gaps, not only the total, must fit."""
    if len(door.sequence) < 2:
        return "a single knock opens at once"
    gaps = len(door.sequence) - 1
    share = stage_timeout_ms(door) / 1000
    return (f"each knock within {share:g}s of the one before ({door.timeout:g}s split over "
            f"{gaps} gap{'s' if gaps > 1 else ''}), so the whole sequence within "
            f"{share * gaps:g}s; uneven gaps may fail although the total fits")


def describe(config: Config, host_bytes: int | None = None) -> list[str]:
    """Human-readable summary for `knockgate check`; ConfigError when the table would not
    fit the kernel memory budget of a host with ``host_bytes`` (default: this one)."""
    memory = check_kernel_memory(config, host_memory_bytes() if host_bytes is None
                                 else host_bytes)
    lines = []
    for door in config.doors:
        knocks = " ".join(format_frame(f) for f in door.sequence) or "(one-time sequences used up)"
        opens = ", ".join(str(p) for p in door.open) or "nothing"
        lines.append(f"door {door.name} (line {door.line}): knock {knocks} within "
                     f"{door.timeout:g}s -> open {opens} for {door.open_for:g}s")
        lines.append(f"  engine {door.engine}: {door.engine_reason}"
                     + (f"; penalty {door.penalty:g}s" if door.penalty else ""))
        if door.engine == "userspace":
            lines.append(f"  {first_stage_summary(door)}")
        else:
            lines.append(f"  {kernel_timing(door)}")
        if door.command:
            lines.append(f"  runs {list(door.command)}")
        if door.stop_command:
            lines.append(f"  then after {door.command_delay:g}s {list(door.stop_command)}")
    if config.doors and not config.options.hide_knock_ports:
        knocked = sorted({(f.proto, f.port) for door in config.doors for f in door.sequence})
        lines.append(f"knock ports not hidden (hide_knock_ports = false): "
                     f"{', '.join(f'{proto}:{port}' for proto, port in knocked)} answer as "
                     "your firewall and services make them, so a service there stays reachable")
    if config.fwknop is not None:
        fw = config.fwknop
        lines.append(f"fwknop SPA on udp:{fw.port} from {fw.access.path}, packets valid for "
                     f"{fw.max_age:g}s")
        for number, stanza in enumerate(fw.access.stanzas, start=1):
            if stanza.closed_by is not None:
                lines.append(f"  stanza {number} (line {stanza.line}): closed, opens nothing: "
                             f"{stanza.closed_by}")
                continue
            ports = ", ".join(f"{proto}:{port}" for proto, port in stanza.open_ports or ())
            hmac = stanza.hmac_type if stanza.hmac_key else "NONE"
            lines.append(f"  stanza {number} (line {stanza.line}): SOURCE "
                         f"{', '.join(map(str, stanza.sources))} may open {ports} for "
                         f"{stanza.fw_access_timeout}s (client may ask up to "
                         f"{stanza.max_fw_timeout}s), HMAC {hmac}"
                         + (", commands allowed" if stanza.enable_cmd_exec else ""))
    if config.spa is not None:
        lines.append(f"spa on udp:{config.spa.port}, packets valid for {config.spa.max_age:g}s")
        for entry in config.spa.keys:
            opens = ", ".join(str(p) for p in entry.open) or "nothing"
            lines.append(f"  key {entry.key.name} (line {entry.line}): may open {opens} for "
                         f"{entry.open_for:g}s" + (f", actions {sorted(entry.actions)}"
                                                   if entry.actions else "")
                         + (f", from {', '.join(map(str, entry.sources))}" if entry.sources
                            else "") + (", NAT allowed" if entry.allow_nat else ""))
    lines.append(f"kernel memory: {memory.idle / 1024:.0f} KiB with no knock in progress, at "
                 f"most {memory.full / 1024:.0f} KiB with every bounded set full")
    return lines
