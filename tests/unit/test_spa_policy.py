"""core/spa_policy.authorize: what an authenticated SPA request may do, granted whole or not at
all."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from knockgate.core.spa import SpaKey, SpaRequest, VerifiedRequest
from knockgate.core.spa_policy import SpaGrant, authorize
from knockgate.errors import InvalidMessage
from knockgate.model import IPAddress, PortSpec, SpaKeyConfig

ALICE = SpaKey("alice", bytes(32))
CLIENT = ip_address("192.0.2.10")
ELSEWHERE = ip_address("198.51.100.20")
SSH = PortSpec("tcp", 22)
DNS = PortSpec("udp", 53)
WAKE = ("/usr/local/bin/wake", "{ip}")
BASE = SpaKeyConfig(key=ALICE, open=(SSH, DNS), open_for=30.0, actions={7: WAKE}, sources=(),
                    allow_nat=False, line=1)


def policy(**overrides: object) -> SpaKeyConfig:
    return BASE._replace(**overrides)


def verified(request: SpaRequest) -> VerifiedRequest:
    return VerifiedRequest(ALICE.key_id, "alice", 1_700_000_000, bytes(12), request)


def refusal(request: SpaRequest, source: IPAddress = CLIENT, **overrides: object) -> str:
    with pytest.raises(InvalidMessage) as caught:
        authorize(verified(request), source, policy(**overrides))
    return caught.value.reason


# --- sources ---------------------------------------------------------------------------------


def test_any_source_when_the_key_names_none() -> None:
    grant = authorize(verified(SpaRequest(None, (("tcp", 22),))), ELSEWHERE, policy())
    assert (grant.source, grant.target) == (ELSEWHERE, ELSEWHERE)


def test_source_inside_one_of_the_key_sources() -> None:
    sources = (ip_network("10.0.0.0/8"), ip_network("192.0.2.0/24"))
    grant = authorize(verified(SpaRequest(None, (("tcp", 22),))), CLIENT,
                      policy(sources=sources))
    assert grant.target == CLIENT


def test_source_outside_the_key_sources_is_refused() -> None:
    reason = refusal(SpaRequest(None, (("tcp", 22),)), ELSEWHERE,
                     sources=(ip_network("192.0.2.0/24"),))
    assert reason == f"source {ELSEWHERE} is outside the key's sources"


def test_an_ipv6_source_is_outside_ipv4_sources() -> None:
    reason = refusal(SpaRequest(None, (("tcp", 22),)), ip_address("2001:db8::1"),
                     sources=(ip_network("192.0.2.0/24"),))
    assert reason == "source 2001:db8::1 is outside the key's sources"


# --- NAT --------------------------------------------------------------------------------------


def test_another_target_is_refused_without_allow_nat() -> None:
    reason = refusal(SpaRequest(ELSEWHERE, (("tcp", 22),)))
    assert reason == f"asks to open {ELSEWHERE} but came from {CLIENT} (allow_nat is off)"


def test_another_target_is_opened_with_allow_nat() -> None:
    grant = authorize(verified(SpaRequest(ELSEWHERE, (("tcp", 22),))), CLIENT,
                      policy(allow_nat=True))
    assert (grant.source, grant.target) == (CLIENT, ELSEWHERE)


def test_naming_its_own_source_needs_no_allow_nat() -> None:
    grant = authorize(verified(SpaRequest(CLIENT, (("tcp", 22),))), CLIENT, policy())
    assert grant.target == CLIENT


def test_sources_are_checked_against_the_sender_not_the_nat_target() -> None:
    reason = refusal(SpaRequest(CLIENT, (("tcp", 22),)), ELSEWHERE, allow_nat=True,
                     sources=(ip_network("192.0.2.0/24"),))
    assert reason == f"source {ELSEWHERE} is outside the key's sources"


# --- ports and actions ------------------------------------------------------------------------


def test_a_port_the_key_may_not_open_is_refused() -> None:
    assert refusal(SpaRequest(None, (("tcp", 2222),))) == (
        "asks for tcp:2222, which the key may not open")


def test_the_same_port_number_on_the_other_protocol_is_refused() -> None:
    assert refusal(SpaRequest(None, (("udp", 22),))) == (
        "asks for udp:22, which the key may not open")


def test_an_action_the_key_may_not_run_is_refused() -> None:
    assert refusal(SpaRequest(None, (), 8)) == "asks for action 8, which the key may not run"


def test_an_action_is_refused_by_a_key_with_no_actions() -> None:
    assert refusal(SpaRequest(None, (), 7), actions={}) == (
        "asks for action 7, which the key may not run")


def test_an_allowed_action_carries_its_command() -> None:
    grant = authorize(verified(SpaRequest(None, (), 7)), CLIENT, policy())
    assert grant == SpaGrant("alice", CLIENT, CLIENT, (), 30.0, 7, WAKE)


# --- granted whole or refused whole ---------------------------------------------------------


def test_every_port_asked_for_is_granted_together() -> None:
    grant = authorize(verified(SpaRequest(None, (("tcp", 22), ("udp", 53)))), CLIENT,
                      policy(open_for=45.0))
    assert grant == SpaGrant("alice", CLIENT, CLIENT, (SSH, DNS), 45.0, None, ())
    assert not grant.literal_command and grant.user is None and grant.group is None


def test_one_refused_port_refuses_the_allowed_ones_with_it() -> None:
    assert refusal(SpaRequest(None, (("tcp", 22), ("tcp", 80), ("udp", 53), ("udp", 9)))) == (
        "asks for tcp:80, udp:9, which the key may not open")

