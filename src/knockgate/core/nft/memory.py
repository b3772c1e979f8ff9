"""What knockgate's table costs the kernel, estimated from the sets it declares.

Every set knockgate declares is dynamic with timeouts, which only nftables' resizable hash
backend (rhashtable) serves, whatever the set's ``policy``. That backend allocates its bucket
array when the set is created, sized for the set's ``size`` (the kernel's ``nelem_hint``, a
16-bit field: the size modulo 65536), so an empty set of size 32768 already costs 1 MiB of
unreclaimable kernel memory (measured with /proc/meminfo's SUnreclaim on Linux 6.18; see
bench/kernel_memory.py). Each element then costs a small allocation of its own. A set without
``size`` starts small and grows, but it has no bound either; knockgate gives a size to every
set that packets can fill, so the total has a bound, which this module computes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

# rhashtable: 4/3 buckets per expected element, a power of two, the hint read as 16 bits; 64
# buckets without a hint; 8 bytes per bucket after a 64-byte header, and kmalloc rounds the
# array up to a power of two.
_HINT_BITS, _DEFAULT_BUCKETS, _BUCKET_BYTES, _TABLE_HEADER_BYTES = 16, 64, 8, 64
# The set itself, its share of the rules and chains that name it, and slab rounding: what
# bench/kernel_memory.py measured per door, less the buckets, over the door's sets.
SET_OVERHEAD_BYTES = 4096
# One element: the rhashtable node, the key (up to 16 bytes), timeout and expiry, rounded up
# to the slab it lands in.
ELEMENT_BYTES = 128

_SIZE = re.compile(r"\bsize (\d+);")


class KernelMemory(NamedTuple):
    """Bytes of unreclaimable kernel memory: with every set empty, and with every set full."""

    idle: int
    full: int

    def __add__(self, other: object) -> KernelMemory:
        if not isinstance(other, KernelMemory):
            return NotImplemented
        return KernelMemory(self.idle + other.idle, self.full + other.full)


def _power_of_two_at_least(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def set_memory(size: int | None) -> KernelMemory:
    """What one set of ``size`` elements (None: no size) costs."""
    hint = (size or 0) % (1 << _HINT_BITS)
    buckets = _power_of_two_at_least(hint * 4 // 3) if hint else _DEFAULT_BUCKETS
    idle = SET_OVERHEAD_BYTES + _power_of_two_at_least(_TABLE_HEADER_BYTES
                                                       + _BUCKET_BYTES * max(4, buckets))
    return KernelMemory(idle, idle + (size or 0) * ELEMENT_BYTES)


def table_memory(commands: Iterable[str]) -> KernelMemory:
    """What the sets that ``commands`` (core/nft/table.py's transaction) declare cost. Sets
    without a size (grants) count empty: only a completed knock or SPA request adds to them."""
    total = KernelMemory(0, 0)
    for command in commands:
        if command.startswith("add set "):
            found = _SIZE.search(command)
            total += set_memory(int(found.group(1)) if found else None)
    return total
