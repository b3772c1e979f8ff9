"""What a knockgate configuration may say: every option's key, help and default, declared once,
and the frozen values a parsed configuration becomes.

An option's default is the default of the value type's field of the same name (``Door``,
``SpaKeyConfig`` in model.py; ``DaemonOptions``, ``SpaConfig``, ``FwknopConfig`` below): the
tables read it from there, so validation and a value built in code cannot disagree. Only an
option that no field stores as written (a file to read, a table of tables) declares its default
in its table.

It imports the model and two constants of core/, never the parser, crypto or compat code. Its
values are NamedTuples, as the model's are: a dataclass holds ~35 kB of the daemon's memory;
and like the model's, their annotations are objects, not strings (see model.py).
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from knockgate.config import DEFAULT_STATE_DIR
from knockgate.core.nft.grants import CLOSED_PORT_SETTINGS
from knockgate.core.nft.kernel_doors import DEFAULT_LOG_GROUP, DEFAULT_STAGE_SIZE
from knockgate.model import (
    DEFAULT_SPA_PORT,
    FWKNOP_ACCESS_PATH,
    FWKNOP_MAX_AGE,
    Door,
    PortSpec,
    SpaKeyConfig,
)

if TYPE_CHECKING:
    from knockgate.compat.fwknop.access import FwknopAccess as _FwknopAccess
else:
    _FwknopAccess = object  # what FwknopConfig.access's annotation is at run time: not a string


MAX_OPEN_FOR = 7 * 24 * 3600  # seconds; also the bound of penalty and command_delay


class _NoDefault:
    """The default of an option whose absence its parser handles: one that must be written, or
    one of two (secret, secret_file), or a table of tables."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


class Option(NamedTuple):
    """One key of a table. Numbers carry their range (``low``..``high``; ``whole``: an integer)."""

    key: str
    help: str
    default: Any = NO_DEFAULT
    low: float = 0
    high: float = 0
    whole: bool = False


def field_default(model: Any, name: str) -> Any:
    """The default of the NamedTuple ``model``'s field ``name``, or NO_DEFAULT."""
    return model._field_defaults.get(name, NO_DEFAULT)


def _table(model: Any, *options: Option) -> Mapping[str, Option]:
    """The options by key, each with its default taken from ``model``'s field of that name."""
    table = {}
    for option in options:
        default = field_default(model, option.key) if model else NO_DEFAULT
        if default is not NO_DEFAULT:
            if option.default is not NO_DEFAULT:
                raise TypeError(f"{option.key}: its default is the model's; declare it once")
            option = option._replace(default=default)
        table[option.key] = option
    return MappingProxyType(table)


class DaemonOptions(NamedTuple):
    interfaces: tuple[str, ...] = ()
    # What a kernel door's first stage needs (core/nft/kernel_doors.py): each unit costs the
    # kernel memory whether used or not, and floods are met by the overflow buckets instead.
    max_pending: int = DEFAULT_STAGE_SIZE
    command_timeout: float = 10.0
    hide_knock_ports: bool = True
    closed_ports: str = CLOSED_PORT_SETTINGS[0]  # "auto": do what the host's firewall does
    state_dir: str = DEFAULT_STATE_DIR
    log_file: str | None = None
    syslog: bool = False
    # The default engine of doors is the one a door gets when nothing is said at all.
    engine: str = field_default(Door, "engine")
    nflog_group: int = DEFAULT_LOG_GROUP


class SpaConfig(NamedTuple):
    port: int = DEFAULT_SPA_PORT
    max_age: float = 60.0
    keys: tuple[SpaKeyConfig, ...] = ()

    def by_name(self) -> dict[str, SpaKeyConfig]:
        return {entry.key.name: entry for entry in self.keys}


class FwknopConfig(NamedTuple):
    """fwknop-compatible SPA: the stanzas of an fwknop access.conf, on a UDP port."""

    access: _FwknopAccess
    port: int = DEFAULT_SPA_PORT
    max_age: float = FWKNOP_MAX_AGE

    def protected_ports(self) -> tuple[PortSpec, ...]:
        return tuple(sorted({PortSpec(proto, port) for stanza in self.access.stanzas
                             for proto, port in stanza.open_ports or ()
                             if proto in ("tcp", "udp")}))


class Config(NamedTuple):
    path: str
    doors: tuple[Door, ...]
    options: DaemonOptions
    spa: SpaConfig | None = None
    fwknop: FwknopConfig | None = None
    warnings: tuple[str, ...] = ()

    @property
    def hidden_ports(self) -> list[PortSpec]:
        """Knock and SPA ports, dropped so they look like every other closed port."""
        if not self.options.hide_knock_ports:
            return []
        ports = {PortSpec(frame.proto, frame.port) for door in self.doors
                 for frame in door.sequence}
        if self.spa is not None:
            ports.add(PortSpec("udp", self.spa.port))
        if self.fwknop is not None:
            ports.add(PortSpec("udp", self.fwknop.port))
        return sorted(ports)

    @property
    def grant_ports(self) -> list[PortSpec]:
        """Every port an SPA key or fwknop stanza may open: the per-port grant sets guard these."""
        ports: set[PortSpec] = set()
        if self.spa is not None:
            ports |= {spec for entry in self.spa.keys for spec in entry.open}
        if self.fwknop is not None:
            ports |= set(self.fwknop.protected_ports())
        return sorted(ports)


TOP = _table(
    None,
    Option("daemon", "daemon options"),
    Option("door", "a [[door]] table"),
    Option("spa", "single packet authorization"),
    Option("fwknop", "fwknop-compatible SPA from an access.conf"),
)
DAEMON = _table(
    DaemonOptions,
    Option("interfaces", "network interfaces to watch (none: every non-loopback one)"),
    Option("max_pending", "sources remembered at their first knock, per door",
           low=1, high=10_000_000, whole=True),
    Option("command_timeout", "seconds a command may run before it is killed",
           low=0.1, high=3600),
    Option("hide_knock_ports", "close knock ports too (as closed_ports says), so they look like "
           "any closed port"),
    Option("closed_ports", "how hidden and ungranted ports answer: 'auto' (like this host's "
           "closed ports), 'reject' (TCP reset, ICMP port unreachable) or 'drop' (silence)"),
    Option("state_dir", "where the SPA replay cache lives"),
    Option("log_file", "also append the log to this file"),
    Option("syslog", "log to syslog instead of stderr"),
    Option("engine", "default engine of doors: 'kernel' where a door can run there, "
           "or 'userspace'"),
    Option("nflog_group", "NFLOG group through which kernel doors report openings",
           low=1, high=65535, whole=True),
)
DOOR = _table(
    Door,
    Option("name", "a short identifier, e.g. 'ssh'"),
    Option("sequence", "the knock frames, e.g. ['tcp:7000', 'udp:8000']"),
    Option("timeout", "seconds to complete the sequence, counted from the first knock",
           low=0.1, high=3600),
    Option("open", "ports that open for the knocker, e.g. ['tcp:22']"),
    Option("open_for", "seconds new connections are accepted", low=1, high=MAX_OPEN_FOR),
    Option("command", "argv run on opening, e.g. ['/usr/bin/logger', 'knock from {ip}']"),
    Option("stop_command", "argv run command_delay seconds after command"),
    Option("command_delay", "seconds between command and stop_command",
           low=0, high=MAX_OPEN_FOR),
    Option("command_6", "like command, run instead of it for IPv6 sources"),
    Option("stop_command_6", "like stop_command, run instead of it for IPv6 sources"),
    Option("target", "only knocks addressed to this address count (knockd's Target)"),
    Option("one_time_sequences", "a knockd One_Time_Sequences file used instead of sequence",
           default=None),
    Option("tcp_flags", "flags for TCP knocks read from one_time_sequences, e.g. 'syn,!ack'",
           default="s"),  # SYN alone, as in a frame written without flags
    Option("shell", "run commands written as strings through /bin/sh; the address is $1"),
    Option("engine", "'kernel' (nftables matches the knocks) or 'userspace' (the daemon does)"),
    Option("penalty", "seconds a source that breaks the sequence or scans is ignored "
           "(kernel engine)", low=0, high=MAX_OPEN_FOR),
)
SPA = _table(
    SpaConfig,
    Option("port", "UDP port SPA packets are sent to", low=1, high=65535, whole=True),
    Option("max_age", "seconds a packet stays valid, the allowed clock skew", low=1, high=3600),
    Option("key", "the [[spa.key]] tables, one per user"),
)
SPA_KEY = _table(
    SpaKeyConfig,
    Option("name", "the key's name, which the client sends as --key-name"),
    Option("secret", "base64 of 32 bytes, from 'knockgate keygen'"),
    Option("secret_file", "a file holding the base64 secret, readable by root only"),
    Option("open", "ports this key may open, e.g. ['tcp:22']"),
    Option("open_for", "seconds new connections are accepted", low=1, high=MAX_OPEN_FOR),
    Option("actions", "action codes this key may ask for, e.g. { 21 = ['/usr/bin/x', '{ip}'] }"),
    Option("sources", "networks the packet may come from, e.g. ['192.0.2.0/24']"),
    Option("allow_nat", "let the packet name another address than its source "
           "(clients behind NAT)"),
)
FWKNOP = _table(
    FwknopConfig,
    Option("access", "path of an fwknop access.conf", default=FWKNOP_ACCESS_PATH),
    Option("port", "UDP port fwknop clients send to", low=1, high=65535, whole=True),
    Option("max_age", "seconds a packet stays valid", low=1, high=3600),
)
