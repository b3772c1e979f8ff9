"""knockd's One_Time_Sequences files: a used line gets '#' written over its first byte."""

from __future__ import annotations

import os

from knockgate.compat.knockd.conf import one_time_frames
from knockgate.errors import KnockgateError
from knockgate.model import Door


def consume_one_time(door: Door) -> Door:
    """Mark ``door``'s current sequence used, durably, and return the door with the next one
    (an empty sequence when the file is used up)."""
    source = door.one_time
    if source is None or source.offset is None:
        raise KnockgateError(f"door {door.name} has no one-time sequence left")
    try:
        fd = os.open(source.path, os.O_RDWR)
        try:
            os.pwrite(fd, b"#", source.offset)
            os.fsync(fd)  # a used sequence must stay used after a crash
            text = _read_all(fd).decode("utf-8", "surrogateescape")
        finally:
            os.close(fd)
    except OSError as exc:
        raise KnockgateError(f"cannot write {source.path}: {exc.strerror}") from exc
    frames, offset = one_time_frames(text, source.flags_mask, source.flags_value)
    return door._replace(sequence=frames, one_time=source._replace(offset=offset))


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
