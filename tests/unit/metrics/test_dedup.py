"""Remembered identities (metrics.dedup): exact answers, expiry by minute, packed memory."""

from __future__ import annotations

import random
import tracemalloc

from metrics.dedup import RECORD, RememberedIds, identity


def test_identities_are_told_apart_by_source_and_id_and_lane():
    assert identity("a", "1") != identity("a", "2") != identity("b", "1")
    assert identity("a", "1") == identity("a", "1") != identity("a", "1", salt=7)
    # any character may appear in source and id (NUL too): no separator could tell them apart
    assert identity("a\x001", "2") != identity("a", "\x0012")
    assert identity("a:1", "2") != identity("a", ":12") != identity("a:", "12")
    assert len(identity("dialer/acme", "x" * 128)) == 16


def test_add_seen_and_expiry_by_minute():
    ids = RememberedIds()
    rng = random.Random(1)
    idents = [rng.randbytes(16) for _ in range(5000)]
    for i, ident in enumerate(idents):
        assert ids.add(ident, 1000 + i // 1000, live_from=0)
    assert not any(ids.add(ident, 2000, live_from=0) for ident in idents)  # all remembered
    assert all(ids.seen(ident, live_from=1000) for ident in idents)
    # minutes before 1003 are beyond the horizon: ignored at once, reclaimed later
    assert [ids.seen(ident, live_from=1003) for ident in idents] == [i >= 3000 for i in range(5000)]
    assert not any(ids.seen(rng.randbytes(16), 0) for _ in range(5000))
    # a new sighting of an expired identity counts, and takes the new minute
    assert ids.add(idents[0], 1010, live_from=1003)
    assert ids.seen(idents[0], live_from=1010)
    assert ids.purge(1003) >= 2900  # front records of each bucket, in arrival order
    assert ids.count == sum(1 for _ in ids.live(float("-inf"))) <= 5000 - 2900
    assert all(ids.seen(ident, 1003) for ident in idents[3000:])
    assert {m for _, m in ids.live(0)} <= {1003, 1004, 1010} | set(range(1000, 1003))


def test_a_match_across_record_boundaries_is_not_a_sighting():
    ids = RememberedIds()
    a = bytes(2) + bytes(range(1, 15))
    ids.add(a, 5, 0)
    # the stored hash bits of b straddle a's record: found by find(), but not aligned
    b = bytes(2) + a[4:14] + (5).to_bytes(4, "big")[:2] + bytes(2)
    assert not ids.seen(b, 0)
    assert ids.add(b, 5, 0) and ids.seen(b, 0) and ids.seen(a, 0)


def test_memory_per_remembered_id_is_packed():
    """The figure the README states: about 16.6 bytes per id at scale (here 1M ids, the bucket
    overhead not yet amortised: under 20)."""
    rng = random.Random(2)
    idents = [rng.randbytes(16) for _ in range(1_000_000)]
    tracemalloc.start()
    try:
        ids = RememberedIds()
        for i, ident in enumerate(idents):
            ids.add(ident, 29_000_000 + i // 5000, 0)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert RECORD == 16
    assert used / len(idents) < 20, used / len(idents)
