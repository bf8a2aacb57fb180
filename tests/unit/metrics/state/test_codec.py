"""Snapshots: dirty parts, meta after them, and restore."""

from __future__ import annotations

import random

from metrics.events import (
    Bundle,
    CallCompleted,
    RepUpdated,
)
from metrics.state import META_KEY, PartitionState
from metrics.windows import WINDOW_KINDS
from tests.unit.metrics.state.support import (
    CAL,
    CAT,
    DAY,
    ROSTER_REP,
    T0,
    Feed,
    apply_all,
    ev,
    in_bundles,
    new_state,
    of,
    random_activity,
    remembered,
    roster_team,
    spec_activity,
    window,
)


def test_snapshot_writes_only_dirty_parts_and_meta_after_them():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state()
    state.apply(feed.bundle(feed.events([(T0, call)])), 0)
    parts = state.snapshot()
    keys = [k for k, v in parts if v is not None]
    assert keys[-1] == META_KEY
    assert set(keys[:-1]) == {f"w/{k}/{int(CAL.bounds(k, T0)[0])}" for k in WINDOW_KINDS} | {
        f"d/{int(T0 // 60)}/0"
    }
    assert not state.dirty
    assert [k for k, _ in state.snapshot()] == [META_KEY]  # nothing changed: meta only
    # a new event in the next minute touches its minute window and every bigger one
    state.apply(feed.bundle(feed.events([(T0 + 60, call)])), 1)
    keys = [k for k, v in state.snapshot()]
    assert keys[-1] == META_KEY
    assert f"w/minute/{int(T0)}" not in keys and f"w/minute/{int(T0) + 60}" in keys
    assert f"w/day/{int(CAL.bounds('day', T0)[0])}" in keys


def test_snapshot_restore_round_trip():
    rng = random.Random(11)
    feed = Feed()
    events = feed.events(sorted(
        ((T0 + rng.uniform(0, 7200), random_activity(rng)) for _ in range(1500)),
        key=lambda x: x[0],
    ))
    roster = Bundle("sales.reps", 0, [ev(0, T0, RepUpdated(ROSTER_REP, team_id="team-c",
                                                            targets={"calls_made": {"day": 60.0}}),
                                         source="hr")])
    bundles = [roster, *in_bundles(feed, events, rng)]
    half = len(bundles) // 2
    state = new_state()
    apply_all(state, bundles[:half])
    parts = state.snapshot()
    restored = PartitionState.restore(parts, CAT, CAL)
    assert restored.applied == restored.meta_stamp == half - 1
    assert restored.watermark == state.watermark
    assert restored.roster == state.roster
    assert restored.sources == state.sources
    assert {k: (p.end, p.values) for k, p in restored.windows.items()} == {
        k: (p.end, p.values) for k, p in state.windows.items()
    }
    assert remembered(restored) == remembered(state) != {}
    # records up to the snapshot are skipped, later ones applied, as by the original
    apply_all(restored, bundles)
    apply_all(state, bundles[half:], half)
    assert {k: p.values for k, p in restored.windows.items()} == {
        k: p.values for k, p in state.windows.items()
    }
    assert window(restored, DAY, T0) == spec_activity(events, roster_team)


def test_restore_ignores_tombstones_and_is_order_independent():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state()
    state.apply(feed.bundle(feed.events([(T0, call), (T0 + 61, call)])), 0)
    parts = state.snapshot()
    rng = random.Random(0)
    for _ in range(5):
        shuffled = [*parts, ("w/minute/123", None)]
        rng.shuffle(shuffled)
        restored = PartitionState.restore(shuffled, CAT, CAL)
        assert restored.meta_stamp == 0
        assert of(window(restored, DAY, T0), "calls_made") == {("r", "t"): 2}
