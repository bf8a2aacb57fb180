"""streams.allocator: freed memory pinned between live blocks goes back to the system (glibc:
the worker's image and this box are Debian)."""

from __future__ import annotations

import os

from streams import allocator


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trim_returns_the_free_pages_between_live_blocks() -> None:
    # blocks above pymalloc's 512 bytes come from glibc's heap; every tenth stays alive, so
    # the heap cannot shrink from its top and keeps the freed pages between them resident
    blocks = [bytes(600 + i % 900) for i in range(60_000)]
    pinned = blocks[::10]
    del blocks
    before = _resident_mb()
    assert allocator.trim()
    after = _resident_mb()
    assert before - after > 10, (before, after)
    assert len(pinned) == 6_000


def test_tune_is_accepted_by_glibc() -> None:
    assert allocator.tune()
