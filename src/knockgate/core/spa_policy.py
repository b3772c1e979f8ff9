"""What an authenticated SPA request may do, decided from the key's configuration. Pure.

Runs after ``open_at`` (authenticity, freshness) and ``ReplayWindow.admit`` (once only). A
request is granted whole or refused whole: nothing is half-applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from knockgate.errors import InvalidMessage
from knockgate.model import IPAddress, PortSpec, SpaKeyConfig

if TYPE_CHECKING:  # the crypto behind it is imported only where SPA is configured
    from knockgate.core.spa import VerifiedRequest


class SpaGrant(NamedTuple):
    """What one SPA packet earned (a NamedTuple: one is built per granted packet)."""

    key: str
    source: IPAddress
    target: IPAddress
    ports: tuple[PortSpec, ...]
    open_for: float
    action: int | None
    command: tuple[str, ...]
    # True when ``command`` came from the packet (fwknop): run as is, never as a template.
    literal_command: bool = False
    user: str | None = None
    group: str | None = None


def authorize(verified: VerifiedRequest, source: IPAddress, policy: SpaKeyConfig) -> SpaGrant:
    """The grant for ``verified``, which arrived from ``source``; InvalidMessage if refused."""
    if policy.sources and not any(source in network for network in policy.sources):
        raise InvalidMessage(f"source {source} is outside the key's sources")
    request = verified.request
    target = source if request.target is None else request.target
    if target != source and not policy.allow_nat:
        raise InvalidMessage(f"asks to open {target} but came from {source} (allow_nat is off)")
    ports = tuple(PortSpec(proto, port) for proto, port in request.ports)
    refused = [str(spec) for spec in ports if spec not in policy.open]
    if refused:
        raise InvalidMessage(f"asks for {', '.join(refused)}, which the key may not open")
    command: tuple[str, ...] = ()
    if request.action is not None:
        if request.action not in policy.actions:
            raise InvalidMessage(f"asks for action {request.action}, which the key may not run")
        command = policy.actions[request.action]
    return SpaGrant(verified.key_name, source, target, ports, policy.open_for, request.action,
                    command)
