"""Remembered identities (metrics.dedup): exact answers, expiry by minute, packed memory."""

from __future__ import annotations

import random
import tracemalloc

from metrics.dedup import (
    FILL,
    IDENT,
    KEPT,
    MIN_BUCKETS,
    RECORD,
    DedupLedger,
    RememberedIds,
    identity,
)


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
    a = bytes(4) + bytes(range(1, 13))
    ids.add(a, 5, 0)
    # the kept hash bits of b straddle a's record (same bucket): found by find(), not aligned
    record = a[:KEPT] + (5).to_bytes(4, "big")
    b = record[2 : 2 + KEPT] + bytes(2)
    assert ids.bucket_of(b) == ids.bucket_of(a) and ids.buckets[ids.bucket_of(a)].find(b[:KEPT]) == 2
    assert not ids.seen(b, 0)
    assert ids.add(b, 5, 0) and ids.seen(b, 0) and ids.seen(a, 0)


def test_buckets_split_as_ids_come_and_every_id_stays_found():
    """Linear hashing: about FILL records per bucket at any size, nothing lost by a split,
    and a restored set (load) answers as the one it was written from."""
    rng = random.Random(3)
    n = 150_000
    idents = [rng.randbytes(16) for _ in range(n)]
    ids = RememberedIds()
    for i, ident in enumerate(idents):
        assert ids.add(ident, 100 + i // 25_000, 0)
        if i in (1_000, 120_000):
            assert ids.count == i + 1 and len(ids.buckets) == max(MIN_BUCKETS, -(-ids.count // FILL))
    assert len(ids.buckets) == n // FILL > MIN_BUCKETS
    assert all(ids.seen(ident, 0) for ident in idents)
    assert not any(ids.add(ident, 200, 0) for ident in idents[::7])
    assert not any(ids.seen(rng.randbytes(16), 0) for _ in range(10_000))
    for key, buf in enumerate(ids.buckets):  # every record in the bucket its hash picks
        assert all(ids.bucket_of(buf[p : p + RECORD]) == key for p in range(0, len(buf or b""), RECORD))
    assert ids.purge(102) == 50_000 and ids.count == n - 50_000
    assert [ids.seen(ident, 102) for ident in idents[::2500]] == [i >= 20 for i in range(60)]
    restored = RememberedIds()
    restored.load((ident, 100 + i // 25_000) for i, ident in enumerate(idents))
    assert restored.count == n and len(restored.buckets) == len(ids.buckets)
    assert all(restored.seen(ident, 100) for ident in idents)
    assert sorted(restored.live(102)) == sorted(ids.live(102))


def _written(parts: list[tuple[str, bytes]]) -> dict[str, int]:
    import msgspec

    return {key: len(msgspec.msgpack.decode(raw)[2]) // IDENT for key, raw in parts}


def test_the_ledger_files_each_new_id_in_the_open_chunk_of_its_minute():
    """The ledger keeps the last minute's open chunk at hand (metrics.dedup): an id sighted after
    that chunk was sealed by a snapshot, or after its minute was forgotten, goes to a new chunk
    that the next snapshot writes; a duplicate opens none."""
    ledger = DedupLedger(horizon=600.0)
    wm = 100 * 60.0
    assert ledger.first("s", "a", 0, 100, 1, wm) and ledger.first("s", "b", 0, 100, 2, wm)
    assert not ledger.first("s", "a", 0, 100, 3, wm)  # a duplicate
    assert _written(ledger.snapshot(1, 4)) == {"d/100/0": 2}
    assert ledger.snapshot(2, 4) == [] and ledger.open == {}  # unchanged since: sealed
    assert not ledger.first("s", "b", 0, 100, 4, wm)  # still remembered, opens no chunk
    assert ledger.open == {} and ledger.chunks == {100: 1}
    assert ledger.first("s", "c", 0, 100, 5, wm) and ledger.first("s", "d", 0, 101, 6, wm)
    assert ledger.first("s", "e", 0, 100, 7, wm)  # back to minute 100: the same new chunk
    assert _written(ledger.snapshot(3, 8)) == {"d/100/1": 2, "d/101/0": 1}
    assert ledger.first("s", "f", 0, 100, 8, wm)
    assert ledger.expire(wm + 700.0) == ["d/100/0", "d/100/1"]  # minute 100 forgotten
    assert ledger.first("s", "a", 0, 100, 9, wm + 700.0)  # beyond the horizon: new again
    assert _written(ledger.snapshot(4, 10)) == {"d/100/0": 1}  # minute 101: sealed since


def _bytes_per_id(n: int, seed: int) -> float:
    rng = random.Random(seed)
    idents = [rng.randbytes(16) for _ in range(n)]
    tracemalloc.start()
    try:
        ids = RememberedIds()
        for i, ident in enumerate(idents):
            ids.add(ident, 29_000_000 + i // 5000, 0)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return used / n


def test_memory_per_remembered_id_is_packed():
    """The figure the README states: about 20 bytes per id at any size (18 of record, a bucket
    header per ~20 ids); at 1M ids, and at a benchmark-sized partition of 50,000 ids, where a
    fixed 65,536 buckets cost ~60 bytes per id (one or two ids per bucket)."""
    assert RECORD == 18
    assert _bytes_per_id(1_000_000, 2) < 21
    assert _bytes_per_id(50_000, 4) < 22
