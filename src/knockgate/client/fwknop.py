"""`knockgate open --fwknop`: an fwknop 2.x packet, so one client serves fwknopd and knockgate
alike during a migration."""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import os
import secrets
import socket
import time
from ipaddress import IPv4Address, ip_address

from knockgate.client.knock import resolve, send_datagram
from knockgate.client.profiles import read_secret_file
from knockgate.compat.fwknop.wire import DEFAULT_PORT, Access, MsgType, encode
from knockgate.core.kinds.ports import parse_port_spec
from knockgate.errors import KnockgateError


def _key(text_b64: str | None, text: str | None, file: str | None, what: str) -> bytes | None:
    """A key from its base64 form, its passphrase form or a file holding the base64 form
    (which keeps it out of ps); argparse lets at most one of them through."""
    if file:
        text_b64, what = read_secret_file(file).strip(), f"{file} (one base64 line)"
    if text_b64:
        try:
            return base64.b64decode(text_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KnockgateError(f"{what} is not valid base64") from exc
    return text.encode() if text else None


def _allow_ip(args: argparse.Namespace, server: IPv4Address) -> IPv4Address:
    if args.source_ip:
        return IPv4Address(0)
    if args.allow_ip:
        address = ip_address(args.allow_ip)
        if not isinstance(address, IPv4Address):
            raise KnockgateError("fwknop is IPv4 only: --allow-ip must be an IPv4 address")
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((str(server), 9))  # no packet is sent: this only picks the route
        return IPv4Address(probe.getsockname()[0])


def _message(args: argparse.Namespace) -> tuple[MsgType, Access | str, int | None]:
    if args.server_cmd:
        return MsgType.COMMAND, args.server_cmd, None
    if not args.open:
        raise KnockgateError("say what to open: --open tcp:22 (or --server-cmd)")
    access = tuple((spec.proto, spec.port) for spec in map(parse_port_spec, args.open))
    if args.fw_timeout is not None:
        return MsgType.CLIENT_TIMEOUT_ACCESS, access, args.fw_timeout
    return MsgType.ACCESS, access, None


def send_fwknop(args: argparse.Namespace) -> None:
    key = _key(args.key_base64, args.key_rijndael, args.key_file, "--key-base64")
    if key is None:
        raise KnockgateError("--fwknop needs --key-file (or --key-base64, --key-rijndael)")
    hmac_key = _key(args.hmac_key_base64, args.hmac_key, args.hmac_key_file, "--hmac-key-base64")
    if hmac_key is None:
        raise KnockgateError("--fwknop needs --hmac-key-file (or --hmac-key-base64, --hmac-key): "
                             "packets without an HMAC are refused by default on both fwknopd "
                             "2.6 setups and knockgate")
    server = resolve(args.host, socket.AF_INET)
    assert isinstance(server, IPv4Address)
    kind, access, timeout = _message(args)
    try:
        payload = encode(time.time() + args.time_offset, f"{secrets.randbelow(10**16):016d}",
                         os.urandom(8), args.user or getpass.getuser(), _allow_ip(args, server),
                         access, key, hmac_key, args.hmac_digest_type, kind, timeout)
    except ValueError as exc:
        raise KnockgateError(f"cannot build the fwknop packet: {exc}") from exc
    send_datagram(server, args.port or DEFAULT_PORT, payload)
