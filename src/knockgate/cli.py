"""Command line. The only place exceptions become exit codes.

Imports follow the work: this module imports only what building the parser needs, and each
subcommand imports its own modules, so `knockgate knock` does not load the config reader, the
crypto or the firewall layers (bench/footprint.py measures what each subcommand costs).
"""

from __future__ import annotations

import argparse
import enum
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from knockgate import __version__
from knockgate.client import DEFAULT_PROFILES
from knockgate.errors import CaptureError, ConfigError, FirewallError, KnockgateError
from knockgate.model import DEFAULT_SPA_PORT


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    FIREWALL = 4
    CAPTURE = 5
    INTERRUPTED = 130


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, told the width shutil.get_terminal_size would find: argparse
    makes a formatter for every argument added, and asking shutil imports it (and bz2 and lzma
    with it), ~1.5 ms of every command."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80: shutil's rule."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size().columns or 80
    except OSError:
        return 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that formats with _HelpFormatter; its subcommands' parsers are
    _Parsers too (argparse makes them of the parent's class)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(formatter_class=_HelpFormatter, **options)


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``. When ``argv`` starts with a subcommand, only that one is added:
    adding all of them cost every command ~1 ms (argparse makes a help formatter per argument).
    The top level's -h and --version come before any subcommand, and then all are added."""
    parser = _Parser(
        prog="knockgate", description="Port knocking and single packet authorization.")
    parser.add_argument("--version", action="version", version=f"knockgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments) in _SUBCOMMANDS.items():
        if not argv or argv[0] not in _SUBCOMMANDS or argv[0] == name:
            add_arguments(commands.add_parser(name, help=summary))
    return parser


def _add_config(parser: argparse.ArgumentParser) -> None:
    from knockgate.config import DEFAULT_PATH  # serve and check: other commands skip a package

    parser.add_argument("--config", default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")


def _add_serve(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("--interface", "-i", action="append", default=[],
                        help="watch this interface (repeatable; default: all but loopback)")
    parser.add_argument("--syslog", action="store_true", help="log to syslog instead of stderr")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def _add_up(parser: argparse.ArgumentParser) -> None:
    from knockgate.config import DEFAULT_STATE_DIR

    _add_config(parser)
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="the config's state_dir, where the daemon saves its table: "
                             f"installed if the config is broken (default {DEFAULT_STATE_DIR})")


def _add_family(parser: argparse.ArgumentParser) -> None:
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET)
    family.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6)


def _add_knock(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host")
    parser.add_argument("frames", nargs="+", metavar="FRAME",
                        help="tcp:PORT[:FLAGS], udp:PORT, or knockd's PORT[:udp]")
    parser.add_argument("--delay", "-d", type=float, default=0, metavar="MS",
                        help="milliseconds between knocks")
    _add_family(parser)


def _add_nothing(_: argparse.ArgumentParser) -> None:
    """interfaces, keygen and down take no arguments."""


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["knockd"], help="what the file is")
    parser.add_argument("file", help="e.g. /etc/knockd.conf")


# What a secret given as an option costs: the command line is no secret on Linux.
_IN_PS = "every local user sees it in ps and /proc/PID/cmdline"


def _add_open(spa: argparse.ArgumentParser) -> None:
    spa.add_argument("host", help="server address or name, or a profile from --profiles")
    spa.add_argument("--key-name", help="the key's name in the server's [[spa.key]]")
    secret = spa.add_mutually_exclusive_group()
    secret.add_argument("--secret", help=f"base64 secret; {_IN_PS}: prefer --secret-file")
    secret.add_argument("--secret-file", help="file holding the base64 secret (warns if others "
                        "may read it)")
    spa.add_argument("--open", action="append", default=[], metavar="PROTO:PORT",
                     help="port to open, e.g. tcp:22 (repeatable)")
    spa.add_argument("--action", type=int, help="action code to run instead of opening ports")
    spa.add_argument("--allow-ip", help="address to open instead of this packet's source (NAT)")
    spa.add_argument("--port", type=int, help=f"server's SPA port (default {DEFAULT_SPA_PORT})")
    spa.add_argument("--profiles", default=DEFAULT_PROFILES, help=f"default {DEFAULT_PROFILES}")
    spa.add_argument("--time-offset", type=float, default=0.0, metavar="SECONDS",
                     help="shift the packet's timestamp (testing clock skew)")
    _add_family(spa)
    fwknop = spa.add_argument_group(
        "fwknop", "with --fwknop, send an fwknop 2.x packet that fwknopd (or knockgate's "
        "[fwknop]) accepts; keys as in fwknop's .fwknoprc")
    fwknop.add_argument("--fwknop", action="store_true", help="speak fwknop's format")
    key = fwknop.add_mutually_exclusive_group()
    key.add_argument("--key-file", metavar="FILE",
                     help="file holding KEY_BASE64, the Rijndael key (one base64 line)")
    key.add_argument("--key-base64", help=f"KEY_BASE64; {_IN_PS}: prefer --key-file")
    key.add_argument("--key-rijndael", help=f"KEY, the passphrase form; {_IN_PS}")
    hmac_key = fwknop.add_mutually_exclusive_group()
    hmac_key.add_argument("--hmac-key-file", metavar="FILE",
                          help="file holding HMAC_KEY_BASE64 (one base64 line)")
    hmac_key.add_argument("--hmac-key-base64",
                          help=f"HMAC_KEY_BASE64; {_IN_PS}: prefer --hmac-key-file")
    hmac_key.add_argument("--hmac-key", help=f"HMAC_KEY, the passphrase form; {_IN_PS}")
    fwknop.add_argument("--hmac-digest-type", default="sha256",
                        help="md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512")
    fwknop.add_argument("--user", help="user name in the packet (default: your login name)")
    fwknop.add_argument("--source-ip", action="store_true",
                        help="send 0.0.0.0: open for the packet's source (fwknop -s)")
    fwknop.add_argument("--fw-timeout", type=int, help="ask for this many seconds (fwknop -f)")
    fwknop.add_argument("--server-cmd", help="ask the server to run this command (fwknop -C)")


# Each subcommand, in the order --help lists them: its summary and what adds its arguments.
_SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "serve": ("run the daemon in the foreground", _add_serve),
    "check": ("validate a config and print its doors", _add_config),
    "up": ("install the protection without the daemon (at boot, before the network)",
           _add_up),
    "down": ("remove knockgate's nftables table: every protected port opens", _add_nothing),
    "knock": ("send a knock sequence", _add_knock),
    "interfaces": ("list the interfaces knockgate can watch", _add_nothing),
    "keygen": ("print a new SPA secret (base64 of 32 random bytes)", _add_nothing),
    "import": ("convert another daemon's configuration", _add_import),
    "open": ("send a single packet authorization (SPA) packet", _add_open),
}


def _setup_logging(use_syslog: bool, verbose: bool, log_file: str | None = None) -> None:
    import logging

    handlers: list[logging.Handler] = []
    plain = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    if use_syslog:
        from logging.handlers import SysLogHandler

        handlers.append(SysLogHandler(address="/dev/log"))
        handlers[-1].setFormatter(logging.Formatter("knockgate[%(process)d]: %(message)s"))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setFormatter(plain)
    unopenable = None
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file))
            handlers[-1].setFormatter(plain)
        except OSError as exc:  # knockd warns and runs on; so does the daemon
            unopenable = exc.strerror
    root = logging.getLogger("knockgate")
    root.handlers[:] = handlers
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if unopenable is not None:
        root.warning("cannot open log file %s: %s; logging to %s only", log_file, unopenable,
                     "syslog" if use_syslog else "stderr")


def _serve(args: argparse.Namespace) -> None:
    from knockgate.config.load import load_config
    from knockgate.daemon.main import serve

    config = load_config(args.config)
    _setup_logging(args.syslog or config.options.syslog, args.verbose, config.options.log_file)
    serve(config, tuple(args.interface))


def _check(args: argparse.Namespace) -> None:
    from knockgate.config.describe import describe
    from knockgate.config.load import load_config
    from knockgate.io.nft import closed_ports_line

    config = load_config(args.config)
    for line in describe(config):
        print(line)
    print(closed_ports_line(config.options.closed_ports))
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    print(f"{args.config}: OK, {len(config.doors)} door(s)"
          + (f", {len(config.warnings)} warning(s)" if config.warnings else ""))


def _up(args: argparse.Namespace) -> None:
    """The table a stopped daemon leaves: protected ports closed, no knock rule (nothing
    would log an opening); `serve` adopts it."""
    from contextlib import closing

    from knockgate.config.load import load_config
    from knockgate.daemon.setup import install_dormant, install_saved_table
    from knockgate.io.instance import claim_namespace
    from knockgate.io.nft import Nftables

    with claim_namespace(), closing(Nftables()) as nft:  # a running daemon's table is its own
        nft.refuse_foreign_table()
        try:
            config = load_config(args.config)
        except ConfigError:  # at boot: better the last table the daemon ran than none
            print(install_saved_table(nft, args.state_dir), file=sys.stderr)
            raise
        install_dormant(nft, config)
    print(f"{args.config}: protection installed in table inet knockgate, no knock is "
          "answered until `knockgate serve` runs")


def _down(_: argparse.Namespace) -> None:
    from contextlib import closing

    from knockgate.io.instance import claim_namespace
    from knockgate.io.nft import Nftables

    with claim_namespace(), closing(Nftables()) as nft:  # a daemon would grant into nothing
        nft.refuse_foreign_table()
        nft.remove_table()
    print("removed table inet knockgate: the ports it protected are reachable by everyone")


def _knock(args: argparse.Namespace) -> None:
    from knockgate.client.knock import knock, resolve
    from knockgate.core.kinds import parse_frame

    frames = [parse_frame(text) for text in args.frames]
    address = resolve(args.host, args.family or socket.AF_UNSPEC)
    knock(address, frames, args.delay)


def _interfaces(_: argparse.Namespace) -> None:
    from knockgate.io.capture import list_interfaces

    for index, name in list_interfaces():
        note = "  (loopback: never watched)" if name == "lo" else ""
        print(f"{index:>4}  {name}{note}")


def _import(args: argparse.Namespace) -> None:
    from knockgate.compat.knockd.conf import parse_knockd_conf
    from knockgate.compat.knockd.importer import knockd_to_toml

    try:
        with open(args.file, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=args.file) from exc
    sys.stdout.write(knockd_to_toml(parse_knockd_conf(text, args.file)))


def _keygen(_: argparse.Namespace) -> None:
    import os

    from knockgate.core.spa import SECRET_SIZE, generate_secret

    print(generate_secret(os.urandom(SECRET_SIZE)))


def _open(args: argparse.Namespace) -> None:
    if args.fwknop:
        from knockgate.client.fwknop import send_fwknop

        send_fwknop(args)
        return
    from knockgate.client.spa import send_open

    send_open(args)


_COMMANDS = {"serve": _serve, "check": _check, "up": _up, "down": _down, "knock": _knock,
             "interfaces": _interfaces, "keygen": _keygen, "open": _open, "import": _import}
_CODES: list[tuple[type[KnockgateError], ExitCode]] = [
    (FirewallError, ExitCode.FIREWALL),
    (CaptureError, ExitCode.CAPTURE),
    (KnockgateError, ExitCode.FAILURE),
]


def run(argv: Sequence[str] | None = None) -> ExitCode:
    words = sys.argv[1:] if argv is None else argv
    args = _parser(words).parse_args(words)
    try:
        _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)  # FILE:LINE: first, like a compiler
        return ExitCode.CONFIG
    except KnockgateError as exc:
        print(f"knockgate {args.command}: error: {exc}", file=sys.stderr)
        return next(code for kind, code in _CODES if isinstance(exc, kind))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def main() -> None:
    sys.exit(run())
