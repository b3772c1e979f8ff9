"""io/onetime.py: a used knockd One_Time_Sequences line is marked durably, the next one armed."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from knockgate.config.files import read_one_time
from knockgate.errors import KnockgateError
from knockgate.io.onetime import consume_one_time
from knockgate.model import Door, Frame, OneTimeSource, PortSpec, TcpFlag

SYN = int(TcpFlag.SYN)
LINES = b"# used before we started\n7000,8000:udp,9000\n\n  7001,8001\n"


def door_for(path: Path) -> Door:
    frames, offset = read_one_time(str(path), SYN, SYN)
    return Door("ssh", frames, 5.0, (PortSpec("tcp", 22),), 30.0,
                one_time=OneTimeSource(str(path), SYN, SYN, offset))


@pytest.fixture
def sequences(tmp_path: Path) -> Path:
    path = tmp_path / "ssh.sequences"
    path.write_bytes(LINES)
    return path


def test_the_first_unused_line_is_the_door_sequence(sequences: Path) -> None:
    door = door_for(sequences)
    assert door.sequence == (Frame("tcp", 7000, SYN, SYN), Frame("udp", 8000),
                             Frame("tcp", 9000, SYN, SYN))


def test_consuming_marks_the_line_and_arms_the_next(sequences: Path) -> None:
    following = consume_one_time(door_for(sequences))
    assert sequences.read_bytes() == (
        b"# used before we started\n#000,8000:udp,9000\n\n  7001,8001\n")
    assert following.sequence == (Frame("tcp", 7001, SYN, SYN), Frame("tcp", 8001, SYN, SYN))
    assert following.one_time == OneTimeSource(str(sequences), SYN, SYN, LINES.index(b"  7001"))
    assert (following.name, following.open, following.open_for) == ("ssh", (PortSpec("tcp", 22),),
                                                                     30.0)


def test_the_mark_is_fsynced_after_it_is_written(sequences: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_pwrite, real_fsync = os.pwrite, os.fsync

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append(("pwrite", os.readlink(f"/proc/self/fd/{fd}")))
        return real_pwrite(fd, data, offset)

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fsync", fsync)
    consume_one_time(door_for(sequences))
    assert calls == [("pwrite", str(sequences)), ("fsync", str(sequences))]


def test_an_indented_line_is_marked_at_its_first_byte(sequences: Path) -> None:
    consume_one_time(consume_one_time(door_for(sequences)))
    assert sequences.read_bytes().endswith(b"\n\n# 7001,8001\n")


def test_a_used_up_file_leaves_an_empty_sequence(sequences: Path) -> None:
    last = consume_one_time(consume_one_time(door_for(sequences)))
    assert last.sequence == ()
    assert last.one_time == OneTimeSource(str(sequences), SYN, SYN, None)
    with pytest.raises(KnockgateError, match="door ssh has no one-time sequence left"):
        consume_one_time(last)
    assert sequences.read_bytes() == (
        b"# used before we started\n#000,8000:udp,9000\n\n# 7001,8001\n")


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` refuses writes, to root as well (the immutable flag) as to anyone else."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_unwritable_file_is_an_error_and_changes_nothing(sequences: Path) -> None:
    door = door_for(sequences)
    with unwritable(sequences), pytest.raises(KnockgateError) as caught:
        consume_one_time(door)
    assert str(caught.value).startswith(f"cannot write {sequences}: ")
    assert sequences.read_bytes() == LINES
    assert door_for(sequences).sequence == door.sequence  # still the armed line


def test_a_vanished_file_is_an_error(sequences: Path) -> None:
    door = door_for(sequences)
    sequences.unlink()
    with pytest.raises(KnockgateError, match=f"cannot write {sequences}: No such file"):
        consume_one_time(door)
