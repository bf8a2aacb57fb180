"""Windows and expiry."""

from __future__ import annotations

from metrics.events import (
    CallCompleted,
)
from metrics.state import META_KEY, PartitionState
from tests.unit.metrics.state.support import (
    CAL,
    CAT,
    HOUR,
    T0,
    Feed,
    new_state,
    of,
    window,
)

# -- expiry ----------------------------------------------------------------------


def test_expire_drops_closed_windows_and_old_dedup_minutes_with_tombstones():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state(grace_seconds=60, dedup_horizon_seconds=600)
    state.apply(feed.bundle(feed.events([(T0 + 5, call), (T0 + 65, call)])), 0)
    state.snapshot()
    minute_keys = {f"w/minute/{int(T0)}", f"w/minute/{int(T0) + 60}"}
    seen_keys = {f"d/{int(T0 // 60)}/0", f"d/{int(T0 // 60) + 1}/0"}
    assert minute_keys <= {p.key for p in state.windows.values()}
    assert state.expire() == 0  # nothing closed yet

    # watermark T0 + 1000: both minutes closed beyond grace, both dedup minutes beyond horizon
    state.apply(feed.bundle(feed.events([(T0 + 1000, call)])), 1)
    wm = state.watermark
    assert state.expire() == 4
    for p in state.windows.values():
        assert p.end + state.grace > wm
    assert all((m + 1) * 60 + state.horizon > wm for m in state.dedup.minutes())
    parts = state.snapshot()
    tombstones = {k for k, v in parts if v is None}
    assert tombstones == minute_keys | seen_keys
    assert dict(parts)[META_KEY] is not None
    # hour and day still hold all three calls
    assert of(window(state, HOUR, T0), "calls_made") == {("r", "t"): 3}
    # the next snapshot has nothing to delete
    state.apply(feed.bundle(feed.events([(T0 + 1001, call)])), 2)
    assert all(v is not None for _, v in state.snapshot())
    # a restore from the changelog does not bring expired parts back
    changelog: dict[str, bytes] = {}
    for k, v in parts:
        if v is None:
            changelog.pop(k, None)
        else:
            changelog[k] = v
    restored = PartitionState.restore(changelog.items(), CAT, CAL, grace_seconds=60,
                                      dedup_horizon_seconds=600)
    assert not any(p.key in minute_keys for p in restored.windows.values())


# -- shared keys -----------------------------------------------------------------------


def test_a_key_is_one_tuple_in_every_window_and_dropped_windows_keys_are_forgotten():
    """The fast path makes a key tuple per hit; each window kind used to keep the one of the
    minute it first saw (memory: a tuple per key and window instead of one per key)."""
    feed = Feed()
    state = new_state(grace_seconds=60, dedup_horizon_seconds=600)
    reps = [f"rep-{i}" for i in range(20)]
    events = [(T0 + 30 * i + 1, CallCompleted(reps[i % 20], "outbound", "busy", team_id="t"))
              for i in range(600)]  # five hours of event time: minute and hour windows each
    for n in range(0, 600, 20):
        state.apply(feed.bundle(feed.events(events[n : n + 20])), n // 20)
    objects: dict[tuple, set[int]] = {}
    for part in state.windows.values():
        for key in part.values:
            objects.setdefault(key, set()).add(id(key))
    assert len(objects) >= 20 and len(state.windows) > 300
    assert {key: len(ids) for key, ids in objects.items() if len(ids) > 1} == {}
    kept = len(state._keys)
    assert kept == len(objects)
    # much later: every minute and hour window is dropped; their keys go from the table once
    # it has grown past twice what the windows held (here: at once, the day's keys remain)
    for n in range(3):
        late = [(T0 + 86_400 * (n + 1) + 7, CallCompleted(f"new-{n}-{i}", "outbound", "busy", team_id="t"))
                for i in range(2 * kept + 1100)]
        state.apply(feed.bundle(feed.events(late)), 100 + n)
        state.expire()
    live = {k for part in state.windows.values() for k in part.values}
    assert set(state._keys) >= live and len(state._keys) <= 2 * len(live) + 1024
    assert not any(k[1] == "rep-0" for k in state._keys if k not in live)


def test_a_restored_state_shares_its_keys_and_their_strings_across_windows():
    """Each window's part decodes its own keys: restored, a key is one tuple in every window
    (the table the fast path's new keys then take too) and its strings one str each."""
    from metrics.state import PartitionState

    feed = Feed()
    state = new_state(grace_seconds=60, dedup_horizon_seconds=600)
    events = [(T0 + 30 * i + 1, CallCompleted(f"rep-{i % 5}", "outbound", "busy", team_id="t"))
              for i in range(300)]
    for n in range(0, 300, 20):
        state.apply(feed.bundle(feed.events(events[n : n + 20])), n // 20)
    parts = dict(state.snapshot())
    restored = PartitionState.restore(parts.items(), CAT, CAL, grace_seconds=60, dedup_horizon_seconds=600)
    assert len(restored.windows) == len(state.windows) > 100
    tuples: dict[tuple, set[int]] = {}
    strings: dict[str, set[int]] = {}
    for part in restored.windows.values():
        for key in part.values:
            tuples.setdefault(key, set()).add(id(key))
            for x in key:
                strings.setdefault(x, set()).add(id(x))
    assert {k: len(v) for k, v in tuples.items() if len(v) > 1} == {}
    assert {k: len(v) for k, v in strings.items() if len(v) > 1} == {}
    assert {f"rep-{i}" for i in range(5)} <= set(strings)
    # a new event's key is the restored tuple
    restored.apply(feed.bundle(feed.events([(T0 + 9001, CallCompleted("rep-1", "outbound", "busy", team_id="t"))])), 500)
    day = max((p for p in restored.windows.values() if p.kind == 2), key=lambda p: p.start)
    key = next(k for k in day.values if k[:3] == ("calls_made", "rep-1", "t"))
    assert key is restored._keys[key]
