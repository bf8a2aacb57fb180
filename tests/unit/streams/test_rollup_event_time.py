"""Windows closed by event time (SALESPULSE_WINDOW_CLOCK=event): replays of historical data get
their final `sales.metrics` records from the sources' watermarks, never from the wall clock."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from metrics.catalog import Catalog
from metrics.events import Bundle, Event, OpportunityWon
from metrics.partials import DECODER
from metrics.snapshots import SnapshotFormat
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, Calendar
from streams.publisher import Publisher
from streams.readout import Readout
from streams.rollup import RollupStage
from streams.sinks.metrics_topic import MetricsTopicSink

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2016, 11, 2, 9, 0, tzinfo=UTC).timestamp()  # long past: the wall clock is no use
QUARTER = KIND_INDEX["quarter"]
Q_START, Q_END = CAL.bounds("quarter", T0)
GRACE = 86400.0
WALL = datetime(2026, 11, 29, tzinfo=UTC).timestamp()


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []

    async def __call__(self, topic: str, *, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        self.sent.append((topic, key, value, partition))


def won(i: int, t: float, rep: str, amount: float) -> Event:
    return Event(i, "crm", f"w{i}", t, OpportunityWon(f"o{i}", rep, amount, team_id="team-a"))


class Wired:
    """A roll-up stage (sending its tombstones to ``sink``) and the `sales.metrics` sink
    reading it through the readout (sending to ``sink`` too, topic "m")."""

    def __init__(self, event_time: bool) -> None:
        self.sink = Sink()
        self.pub = Publisher(partitions=2, rollup_topic="r", interval=0.0, clock=lambda: WALL,
                             event_time=event_time)
        self.stage = RollupStage(CAT, topic="r", partitions=2, grace_seconds=GRACE,
                                 consumer_factory=None,  # type: ignore[arg-type]
                                 clock=lambda: WALL, event_time=event_time, sources=2, send=self.sink)
        readout = Readout(self.stage, grace_seconds=GRACE, clock=lambda: WALL)
        self.metrics = MetricsTopicSink(readout.reader("sales.metrics"), SnapshotFormat(CAT, CAL),
                                        topic="m", send=self.sink, interval=0.0, clock=lambda: WALL)

    def publish(self) -> None:
        self.metrics.rounds.last = float("-inf")
        asyncio.run(self.metrics.publish())
        asyncio.run(self.stage._send_tombstones())


def wire(event_time: bool = True):
    w = Wired(event_time)
    return w.sink, w.pub, w.stage, w


def feed(stage: RollupStage, pub: Publisher, partition: int, state: PartitionState) -> list:
    state.expire(None if pub.event_time else WALL)
    records = pub.capture(partition, state)
    for _, key, value, part in records:
        stage._apply(part, key, value)
    return records


def finals(sink: Sink) -> dict[str, dict]:
    out = {}
    for topic, key, value, _ in sink.sent:
        if topic == "m":
            rec = json.loads(value)
            if rec["final"]:
                out[key.decode()] = rec
    return out


def test_final_records_come_when_every_sources_watermark_passes_two_graces():
    sink, pub, stage, w = wire()
    s0 = PartitionState(CAT, CAL, grace_seconds=GRACE)
    s1 = PartitionState(CAT, CAL, grace_seconds=GRACE, dedup_horizon_seconds=400 * 86400.0)
    s0.apply(Bundle("d", 0, [won(0, T0, "ann", 100.0)]), 0)
    s1.apply(Bundle("d", 0, [won(1, T0 + 60, "bob", 300.0)]), 0)
    feed(stage, pub, 0, s0)
    feed(stage, pub, 1, s1)
    w.publish()
    assert not finals(sink)  # the wall clock (years later) closes nothing
    # partition 0 reads on, past the quarter's end + 2 graces: it expires the quarter itself,
    # sends no tombstone, re-sends nothing it published already, only the change of the round,
    # then its watermark to every roll-up partition
    past = Q_END + 2 * GRACE + 1
    s0.apply(Bundle("d", 0, [won(2, T0 + 5, "ann", 0.0), won(3, past, "ann", 7.0)]), 1)
    records = feed(stage, pub, 0, s0)
    assert not [k for _, k, v, _ in records if v is None]
    marks = [(k, p) for _, k, _, p in records if k.startswith(b"~wm/")]
    assert sorted(marks) == [(b"~wm/0", p) for p in range(2)]
    assert records[-2:] == [r for r in records if r[1].startswith(b"~wm/")]  # after the partials
    old = [DECODER.decode(v) for _, k, v, _ in records if not k.startswith(b"~wm/")]
    assert [p for p in old if p.start == Q_START and p.scope == "org"]  # the round's change
    w.publish()
    assert not finals(sink)  # partition 1 has not read past the quarter yet
    s1.apply(Bundle("d", 0, [won(4, past + 60, "bob", 1.0)]), 1)
    feed(stage, pub, 1, s1)
    w.publish()
    got = finals(sink)
    key = f"org/org/quarter/{datetime.fromtimestamp(Q_START, UTC).isoformat().replace('+00:00', 'Z')}"
    assert got[key]["kpis"]["revenue"] == 400.0
    assert got[key]["kpis"]["opportunities_won"] == 3.0
    # the stage tombstones the closed window's partials itself
    tombstones = {k for t, k, v, _ in sink.sent if t == "r" and v is None}
    assert b"org/org/5/%d/0" % int(Q_START) in tombstones
    assert b"org/org/5/%d/1" % int(Q_START) in tombstones
    # an event on time for its own input partition, but for the closed quarter: late, dropped
    s1.apply(Bundle("other", 0, [won(5, T0 + 120, "bob", 50.0)]), 2)
    feed(stage, pub, 1, s1)
    assert stage.late_partials > 0
    assert ("org", "org", QUARTER, Q_START) not in stage.windows


def test_a_partition_without_events_announces_no_watermark():
    sink, pub, stage, w = wire()
    assert not feed(stage, pub, 0, PartitionState(CAT, CAL, grace_seconds=GRACE))


def one_deal_retracted(scope: str, scope_id: str):
    """A deal of ann published from partition 0, then its partial of ``scope`` tombstoned."""
    sink, pub, stage, w = wire()
    s0 = PartitionState(CAT, CAL, grace_seconds=GRACE)
    s0.apply(Bundle("d", 0, [won(0, T0, "ann", 100.0)]), 0)
    feed(stage, pub, 0, s0)
    window = stage.windows[(scope, scope_id, QUARTER, Q_START)]
    stage._apply(window.partition, f"{scope}/{scope_id}/5/{int(Q_START)}/0".encode(), None)
    return sink, stage, window, w


def test_a_tombstone_is_a_retraction_when_windows_close_by_event_time():
    _, _, window, _ = one_deal_retracted("org", "org")
    assert not window.sources  # by the wall clock this old window would have ignored it


def test_wall_clock_mode_is_unchanged_for_old_windows():
    sink, pub, stage, w = wire(event_time=False)
    s0 = PartitionState(CAT, CAL, grace_seconds=GRACE)
    s0.apply(Bundle("d", 0, [won(0, T0, "ann", 100.0)]), 0)
    records = feed(stage, pub, 0, s0)
    # expired at once by the wall clock: tombstones only, nothing for the roll-up to publish
    assert records and all(v is None for _, _, v, _ in records)
    assert not stage.windows


def test_no_window_closes_before_every_source_has_said_how_far_it_is():
    sink, pub, stage, w = wire()
    s0 = PartitionState(CAT, CAL, grace_seconds=GRACE)
    s0.apply(Bundle("d", 0, [won(0, T0, "ann", 100.0), won(1, Q_END + 3 * GRACE, "ann", 1.0)]), 0)
    feed(stage, pub, 0, s0)  # partition 1 has published nothing yet (a replay's start)
    w.publish()
    assert not finals(sink)
    assert ("org", "org", QUARTER, Q_START) in stage.windows


def test_a_rep_dropped_by_every_source_is_published_with_a_team_label():
    """All of a rep's partials retracted (tombstones): its record still names a team (the
    schema wants a string), unassigned."""
    sink, stage, _, w = one_deal_retracted("rep", "ann")
    w.publish()
    records = [json.loads(v) for t, k, v, _ in sink.sent if t == "m" and k.startswith(b"rep/ann/quarter")]
    assert records and records[-1]["team"] == "unassigned" and records[-1]["kpis"] == {}
