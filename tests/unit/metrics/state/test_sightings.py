"""Producer duplicates, re-forwarded records and offsets that go backwards."""

from __future__ import annotations

import random

from metrics.events import (
    Bundle,
    CallCompleted,
    Event,
)
from metrics.state import UNASSIGNED, PartitionState
from tests.unit.metrics.state.support import (
    CAL,
    CAT,
    DAY,
    HOUR,
    T0,
    TOPIC,
    Feed,
    apply_all,
    ev,
    in_bundles,
    new_state,
    of,
    random_activity,
    spec_activity,
    total,
    window,
)

# -- duplicates and re-forwarding -----------------------------------------------------------------


def test_duplicate_in_the_same_bundle_counts_once():
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    events = [ev(0, T0, call, eid="dup"), ev(1, T0, call, eid="dup"), ev(2, T0, call, eid="other")]
    state = new_state()
    state.apply(Bundle(TOPIC, 0, events), 0)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 2}
    processed, duplicates, _ = state.drain_counters()
    assert duplicates == 1 and processed["call.completed"] == 2


def test_duplicates_across_bundles_and_offsets_count_once():
    rng = random.Random(3)
    feed = Feed()
    unique = sorted(((T0 + rng.uniform(0, 3000), random_activity(rng)) for _ in range(300)),
                    key=lambda x: x[0])
    originals = feed.events(unique)
    # producer re-sends: same source and id (and time and data), at later source offsets
    resent_from = [rng.choice(originals) for _ in range(200)]
    stream = list(originals)
    for orig in resent_from:
        stream.insert(rng.randint(stream.index(orig) + 1, len(stream)), orig)
    stream = [Event(i, e.source, e.id, e.time, e.data) for i, e in enumerate(stream)]
    state = new_state()
    apply_all(state, in_bundles(feed, stream, rng))
    # no roster here: every rep without team_id is unassigned
    assert window(state, DAY, T0) == spec_activity(originals, lambda rep: UNASSIGNED)
    processed, duplicates, late = state.drain_counters()
    assert duplicates == len(resent_from)
    assert sum(processed.values()) == len(originals)
    assert late == 0  # a copy of an old event is a duplicate, not a late event


def test_a_resent_event_with_a_restamped_time_counts_once():
    """SPEC section 2: ``source`` + ``id`` identify an event, whatever its ``time``."""
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state(dedup_horizon_seconds=86400)
    state.apply(Bundle(TOPIC, 0, [ev(0, T0 + 5, call, eid="x")]), 0)
    # re-sent 2 hours later with the send time as its time: another minute, hour and window
    state.apply(Bundle(TOPIC, 0, [ev(1, T0 + 7200, call, eid="x"), ev(2, T0 + 7201, call)]), 1)
    # and once more with an earlier time, across a snapshot and restore
    restored = PartitionState.restore(state.snapshot(), CAT, CAL, dedup_horizon_seconds=86400)
    restored.apply(Bundle(TOPIC, 0, [ev(3, T0 + 3000, call, eid="x")]), 2)
    for st, dups in ((state, 1), (restored, 1)):
        assert total(window(st, DAY, T0), "calls_made") == 2
        assert st.drain_counters()[1] == dups
    assert of(window(restored, HOUR, T0 + 7200), "calls_made") == {("r", "t"): 1}


def test_a_restamped_copy_beyond_the_horizon_is_a_new_event():
    """The horizon bounds the memory: ids are remembered a horizon after their minute."""
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state(grace_seconds=60, dedup_horizon_seconds=600)
    state.apply(Bundle(TOPIC, 0, [ev(0, T0, call, eid="x")]), 0)
    state.apply(Bundle(TOPIC, 0, [ev(1, T0 + 500, call, eid="x")]), 1)  # inside: duplicate
    # the watermark passes the original's minute + horizon (T0 + 660): x is forgotten
    state.apply(Bundle(TOPIC, 0, [ev(2, T0 + 700, call, eid="y")]), 2)
    state.apply(Bundle(TOPIC, 0, [ev(3, T0 + 700, call, eid="x")]), 3)  # beyond: new
    state.apply(Bundle(TOPIC, 0, [ev(4, T0 + 710, call, eid="x")]), 4)  # a copy of that one
    assert total(window(state, DAY, T0), "calls_made") == 3
    assert state.drain_counters()[1] == 2
    state.expire()
    state.dedup.ids.purge(state.dedup.live_from(state.watermark))  # reclaiming changes nothing
    state.apply(Bundle(TOPIC, 0, [ev(5, T0 + 720, call, eid="x")]), 5)
    assert total(window(state, DAY, T0), "calls_made") == 3


def test_same_id_from_another_source_is_another_event():
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    events = [ev(0, T0, call, eid="1", source="dialer/a"), ev(1, T0, call, eid="1", source="dialer/b")]
    state = new_state()
    state.apply(Bundle(TOPIC, 0, events), 0)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 2}
    assert state.drain_counters()[1] == 0


def test_reforwarded_events_are_skipped():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    events = feed.events((T0 + i, call) for i in range(8))
    state = new_state()
    state.apply(feed.bundle(events[:5]), 0)
    # the ingest stage crashed and forwards source offsets 2.. again, then goes on
    state.apply(feed.bundle(events[2:8]), 1)
    state.apply(feed.bundle(events[6:8]), 2)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 8}
    processed, duplicates, _ = state.drain_counters()
    assert processed["call.completed"] == 8
    assert duplicates == 0  # re-forwarding is not a producer duplicate


def test_offsets_that_go_backwards_are_new_records_and_reported():
    """An input topic deleted and recreated (or a group reset) restarts its offsets: records at
    or below the remembered high-water mark used to be skipped silently as re-forwards."""
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state()
    old = Feed()
    first = old.events((T0 + i, call) for i in range(10))
    state.apply(old.bundle(first), 0)
    recreated = Feed()  # same topic and partition, offsets from 0 again, new events
    fresh = recreated.events(((T0 + 20 + i, call) for i in range(6)), source="dialer/new")
    state.apply(recreated.bundle(fresh[:3]), 1)
    dup = ev(6, first[4].time, call, eid=first[4].id, source=first[4].source)  # a true duplicate
    state.apply(recreated.bundle(fresh[3:] + [dup]), 2)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 16}
    assert [(t, p, mark, off) for t, p, mark, off in state.offset_resets] == [(TOPIC, 0, 9, 0)]
    processed, duplicates, _ = state.drain_counters()
    assert processed["call.completed"] == 16
    assert duplicates == 1
    # and a re-forward of the recreated topic's own records is still recognised
    state.apply(recreated.bundle(fresh[1:]), 3)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 16}


def test_reforwarding_is_tracked_per_source_partition():
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    a = [ev(i, T0 + i, call, eid=f"a{i}") for i in range(3)]
    b = [ev(i, T0 + i, call, eid=f"b{i}") for i in range(3)]  # same source offsets, other partition
    c = [ev(i, T0 + i, call, eid=f"c{i}") for i in range(3)]  # same offsets, other topic
    state = new_state()
    state.apply(Bundle(TOPIC, 0, a), 0)
    state.apply(Bundle(TOPIC, 1, b), 1)
    state.apply(Bundle("sales.leads", 0, c), 2)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 9}


def test_a_record_at_or_below_the_applied_offset_is_ignored():
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state()
    state.apply(Bundle(TOPIC, 0, [ev(0, T0, call)]), 5)
    before = window(state, DAY, T0)
    state.apply(Bundle(TOPIC, 0, [ev(1, T0, call)]), 5)  # same partition offset again
    state.apply(Bundle(TOPIC, 0, [ev(2, T0, call)]), 3)  # an older one
    assert window(state, DAY, T0) == before
    assert of(before, "calls_made") == {("r", "t"): 1}
    assert state.applied == 5
    state.apply(Bundle(TOPIC, 0, [ev(3, T0, call)]), 6)
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 2}
