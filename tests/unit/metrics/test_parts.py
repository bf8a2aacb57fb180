"""Parts split into bounded changelog records (metrics.parts): exact round trips, and a snapshot
cut short after any of its records never restores a mix of two versions of a part."""

from __future__ import annotations

import random

import msgspec
import pytest

from metrics.parts import MIN_PART_BYTES, PartSplitter

BOUND = 4096
ENC = msgspec.msgpack.Encoder()


def part(stamp: int, size: int, fill: int) -> bytes:
    """A part record as metrics.state writes them: an array whose first field is the stamp."""
    return ENC.encode([stamp, bytes([fill]) * size])


def apply(changelog: dict[str, bytes], records: list[tuple[str, bytes | None]]) -> None:
    for key, value in records:
        if value is None:
            changelog.pop(key, None)
        else:
            changelog[key] = value


def test_a_large_part_is_written_in_records_within_the_bound_and_restored_exactly():
    splitter = PartSplitter(BOUND)
    raw = random.Random(1).randbytes(10 * BOUND + 17)
    big = ENC.encode([5, raw])
    records = splitter.split([("w/day/0", big), ("meta", part(5, 10, 1))])
    written = [(k, v) for k, v in records if v is not None]
    assert len(written) == 12 and all(len(v) <= BOUND + 64 for _, v in written)
    assert written[-1][0] == "meta"
    changelog: dict[str, bytes] = {}
    apply(changelog, records)
    restored, parts = PartSplitter.assemble(changelog.items(), BOUND)
    assert dict(parts) == {"w/day/0": big, "meta": part(5, 10, 1)}
    assert restored.generation == splitter.generation and not restored.stale


def test_small_parts_are_written_as_before():
    splitter = PartSplitter(BOUND)
    parts = [("s/1", part(1, 100, 2)), ("meta", part(1, 5, 3)), ("w/minute/0", None)]
    assert splitter.split(parts) == parts


def test_replaced_versions_are_deleted_after_meta():
    splitter = PartSplitter(BOUND)
    changelog: dict[str, bytes] = {}
    apply(changelog, splitter.split([("l/3", part(1, 3 * BOUND, 1)), ("meta", part(1, 5, 0))]))
    first = set(changelog)
    records = splitter.split([("l/3", part(2, 2 * BOUND, 2)), ("meta", part(2, 5, 0))])
    meta_at = [k for k, _ in records].index("meta")
    deleted = [k for k, v in records if v is None]
    assert set(deleted) == first - {"meta"}
    assert all(i > meta_at for i, (_, v) in enumerate(records) if v is None)
    apply(changelog, records)
    # shrunk below the bound: one plain record, the chunks deleted after meta
    records = splitter.split([("l/3", part(3, 10, 3)), ("meta", part(3, 5, 0))])
    apply(changelog, records)
    assert set(changelog) == {"l/3", "meta"}
    assert dict(PartSplitter.assemble(changelog.items(), BOUND)[1])["l/3"] == part(3, 10, 3)
    # deleted by the state: every chunk goes
    apply(changelog, splitter.split([("l/3", part(4, 3 * BOUND, 4))]))
    apply(changelog, splitter.split([("l/3", None)]))
    assert set(changelog) == {"meta"}


@pytest.mark.parametrize("seed", range(40))
def test_a_snapshot_cut_short_anywhere_restores_one_whole_version_of_each_part(seed):
    """Versions grow, shrink and cross the bound; every snapshot is cut short at a random record
    (or not), and every restore gives each part exactly its previous or its new version."""
    rng = random.Random(seed)
    keys = ["w/day/0", "l/1", "s/7/0", "meta"]
    splitter = PartSplitter(BOUND)
    changelog: dict[str, bytes] = {}
    current: dict[str, bytes] = {}
    for stamp in range(1, 30):
        new = {}
        for key in keys:
            if key == "meta" or rng.random() < 0.6:
                new[key] = part(stamp, rng.choice([10, BOUND // 2, BOUND + 1, 3 * BOUND, 7 * BOUND]),
                                stamp % 251)
        order = sorted(new, key=lambda k: k == "meta")
        records = splitter.split([(k, new[k]) for k in order])
        cut = rng.randint(0, len(records)) if rng.random() < 0.4 else len(records)
        apply(changelog, records[:cut])
        splitter, parts = PartSplitter.assemble(list(changelog.items()), BOUND)
        restored = dict(parts)
        for key in keys:
            allowed = {current.get(key), new.get(key, current.get(key))}
            assert restored.get(key) in allowed, (stamp, key, cut, len(records))
        if cut == len(records):
            assert restored == {**current, **new}
        current = restored
        # what survives besides the restored versions is deleted by the next snapshot
        live = {k for k in changelog if "~" not in k} | {c for v in splitter.chunked.values() for c in v}
        assert set(changelog) - live <= splitter.stale


def test_the_bound_has_a_floor():
    with pytest.raises(ValueError):
        PartSplitter(MIN_PART_BYTES - 1)


def test_on_equal_stamps_the_plain_record_is_the_newer_version():
    """A part rewritten without new records (leads forgotten by expiry) keeps its stamp; it only
    shrinks, so a plain record beside a complete chunked version of the same stamp is newer."""
    splitter = PartSplitter(BOUND)
    changelog: dict[str, bytes] = {}
    apply(changelog, splitter.split([("l/3", part(5, 3 * BOUND, 1)), ("meta", part(5, 5, 0))]))
    records = splitter.split([("l/3", part(5, 10, 2)), ("meta", part(5, 5, 0))])
    apply(changelog, [r for r in records if r[1] is not None])  # cut before the deletions
    restored, parts = PartSplitter.assemble(changelog.items(), BOUND)
    assert dict(parts)["l/3"] == part(5, 10, 2)
    assert restored.stale == {k for k in changelog if "~" in k}
