"""`knockgate open`: build an SPA v1 packet from options and profile, and send it."""

from __future__ import annotations

import argparse
import os
import socket
import time
from ipaddress import ip_address

from knockgate.client.knock import resolve, send_datagram
from knockgate.client.profiles import Profile, load_profile, read_secret_file
from knockgate.core.kinds.ports import parse_port_spec
from knockgate.core.spa import NONCE_SIZE, SpaKey, SpaRequest, decode_secret, seal_at
from knockgate.errors import KnockgateError
from knockgate.model import DEFAULT_SPA_PORT


def _secret_text(args: argparse.Namespace, profile: Profile) -> str:
    if args.secret:
        return str(args.secret)
    file = args.secret_file or profile.secret_file
    if file:
        return read_secret_file(file)
    if profile.secret:
        return profile.secret
    raise KnockgateError("no secret: pass --secret-file FILE (or --secret, or a profile)")


def build_request(args: argparse.Namespace, profile: Profile) -> SpaRequest:
    # What to ask for comes whole from the command line, or whole from the profile.
    if args.open or args.action is not None:
        opens, action = list(args.open), args.action
    else:
        opens, action = list(profile.open), profile.action
    allow_ip = args.allow_ip or profile.allow_ip
    try:
        ports = tuple((spec.proto, spec.port) for spec in map(parse_port_spec, opens))
        target = ip_address(allow_ip) if allow_ip else None
        return SpaRequest(target=target, ports=ports, action=action)
    except ValueError as exc:
        raise KnockgateError(f"cannot build the request: {exc}; say what to open with "
                             "--open tcp:22 or --action CODE") from exc


def send_open(args: argparse.Namespace) -> None:
    profile = load_profile(args.host, args.profiles) or Profile()
    key_name = args.key_name or profile.key_name
    if not key_name:
        raise KnockgateError("no key name: pass --key-name NAME (or use a profile)")
    key = SpaKey(key_name, decode_secret(_secret_text(args, profile)))
    request = build_request(args, profile)
    address = resolve(profile.host or args.host, args.family or socket.AF_UNSPEC)
    packet = seal_at(key=key, now=time.time() + args.time_offset,
                     nonce=os.urandom(NONCE_SIZE), request=request)
    send_datagram(address, args.port or profile.port or DEFAULT_SPA_PORT, packet)
