"""The output seam: each reader gets every change once, coalesced, and every window once final."""

from __future__ import annotations

from metrics.catalog import Catalog
from metrics.partials import ENCODER, make_partial, partial_key
from metrics.rollup import Parts
from metrics.windows import KIND_INDEX
from streams.readout import Readout
from streams.rollup import RollupStage
from tests.unit.streams.fakes import Clock

CAT = Catalog()
DAY = KIND_INDEX["day"]
START, END = 86400.0 * 100, 86400.0 * 101
GRACE = 10.0


def put(stage: RollupStage, scope: str, scope_id: str, calls: float, version: int, source: int = 0) -> None:
    parts = Parts(sums={("calls_made",): calls}, samples={})
    partial = make_partial(scope, scope_id, DAY, START, END, source, version, parts,
                           "east" if scope == "rep" else None)
    stage._apply(0, partial_key(scope, scope_id, DAY, START, source), ENCODER.encode(partial))


def test_two_readers_each_read_every_change_once_coalesced_and_each_window_final_once() -> None:
    clock = Clock(START + 60)
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    readout = Readout(stage, grace_seconds=GRACE, clock=clock)
    fast, slow = readout.reader("fast"), readout.reader("slow")
    put(stage, "rep", "ann", 1, 1)
    put(stage, "team", "east", 1, 1)
    assert {(u.scope, u.id, u.team) for u in fast.changed()} == {("rep", "ann", "east"), ("team", "east", None)}
    assert fast.changed() == []
    put(stage, "rep", "ann", 2, 2)
    put(stage, "rep", "ann", 3, 3)  # two changes, one update
    [update] = fast.changed()
    assert (update.id, update.values[("calls_made",)], update.final) == ("ann", 3.0, False)
    # the slow reader was never read: it gets both windows, at their latest values, once
    got = {u.id: u.values[("calls_made",)] for u in slow.changed()}
    assert got == {"ann": 3.0, "east": 1.0}
    assert len(slow.live()) == 2 and slow.changed() == []
    # the windows close: each reader reads each once more, final; they go when both did
    clock.t = END + 2 * GRACE
    finals = fast.changed()
    assert sorted(u.id for u in finals) == ["ann", "east"] and all(u.final for u in finals)
    assert len(stage.windows) == 2  # the slow reader has not read them yet
    assert fast.changed() == []
    assert all(u.final for u in slow.changed())
    assert not stage.windows


def test_a_skipping_reader_builds_nothing_and_does_not_hold_closed_windows() -> None:
    """A sink that cannot write (Redis away) skips: it builds no values, the other reader's
    changes are untouched, and closed windows still go once the others have read them."""
    clock = Clock(START + 60)
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    readout = Readout(stage, grace_seconds=GRACE, clock=clock)
    writer, away = readout.reader("writer"), readout.reader("away")
    put(stage, "rep", "ann", 1, 1)
    away.skip()
    assert away.changed() == []
    assert [u.id for u in writer.changed()] == ["ann"]
    put(stage, "rep", "ann", 2, 2)
    away.skip()
    assert [u.values[("calls_made",)] for u in away.live()] == [2.0]  # what a full write takes
    clock.t = END + 2 * GRACE
    assert all(u.final for u in writer.changed())
    away.skip()
    assert not stage.windows
