"""Which engine runs a door, and why; penalty needs the kernel engine."""

from __future__ import annotations

import pytest

from knockgate.config.describe import describe
from knockgate.config.load import parse_config
from knockgate.errors import ConfigError
from knockgate.model import Door

DOOR = '[[door]]\nname="a"\nsequence=["tcp:1","tcp:2"]\nopen=["tcp:22"]\n'  # lines 1-4
TARGET_REASON = "it has a target"


def door_of(text: str) -> Door:
    (door,) = parse_config(text, "k.toml").doors
    return door


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "k.toml")
    return info.value


def test_default_engine_is_kernel():
    door = door_of(DOOR)
    assert (door.engine, door.engine_reason) == ("kernel", "the default engine is kernel")
    assert door.penalty == 0


def test_daemon_sets_the_default_engine():
    door = door_of('[daemon]\nengine = "userspace"\n' + DOOR)
    assert (door.engine, door.engine_reason) == ("userspace", "the default engine is userspace")


@pytest.mark.parametrize("engine", ["kernel", "userspace"])
def test_engine_set_on_the_door_is_honoured(engine):
    door = door_of(f'[daemon]\nengine = "{"userspace" if engine == "kernel" else "kernel"}"\n'
                   f'{DOOR}engine = "{engine}"\n')
    assert (door.engine, door.engine_reason) == (engine, "engine is set on the door")


SEVEN_KNOCKS = ('[[door]]\nname="a"\nsequence=["tcp:1","tcp:2","tcp:3","tcp:4","tcp:5","tcp:6",'
                '"tcp:7"]\nopen=["tcp:22"]\n')


@pytest.mark.parametrize(
    ("text", "why"),
    [(f'{DOOR}target = "192.0.2.1"\n', TARGET_REASON),
     (f"{SEVEN_KNOCKS}timeout = 0.1\n", "split over 6 gaps gives 16 ms per knock")],
)
def test_default_falls_back_to_userspace_with_the_reason(text, why):
    config = parse_config(text)
    (door,) = config.doors
    assert door.engine == "userspace"
    assert door.engine_reason.startswith("the kernel cannot run it: ")
    assert why in door.engine_reason
    assert f"  engine userspace: {door.engine_reason}" in describe(config)


def test_one_time_door_falls_back_to_userspace(tmp_path):
    once = tmp_path / "once"
    once.write_text("7000,8000\n")
    door = door_of(f'[[door]]\nname="a"\nopen=["tcp:22"]\none_time_sequences="{once}"\n')
    assert door.engine == "userspace" and "one-time file" in door.engine_reason


def test_explicit_kernel_is_refused_with_the_reason():
    error = error_of(f'{DOOR}target = "192.0.2.1"\nengine = "kernel"\n')
    assert error.line == 6
    assert error.reason.startswith("door 'a' cannot run in the kernel: it has a target")
    assert error.hint == "remove engine = 'kernel'"


def test_penalty_on_a_kernel_door():
    config = parse_config(f"{DOOR}penalty = 20\n")
    assert config.doors[0].penalty == 20.0
    assert "  engine kernel: the default engine is kernel; penalty 20s" in describe(config)


@pytest.mark.parametrize(
    ("text", "why"),
    [(f'{DOOR}penalty = 20\nengine = "userspace"\n', "(engine is set on the door)"),
     (f'[daemon]\nengine = "userspace"\n{DOOR}penalty = 20\n', "(the default engine is userspace)"),
     (f'{DOOR}penalty = 20\ntarget = "192.0.2.1"\n', "(the kernel cannot run it: it has a target")],
)
def test_penalty_needs_the_kernel_engine(text, why):
    error = error_of(text)
    assert error.line == text.splitlines().index("penalty = 20") + 1
    assert error.reason.startswith("door 'a': penalty needs the kernel engine ")
    assert why in error.reason
    assert error.hint == "remove penalty or let the door run in the kernel"
