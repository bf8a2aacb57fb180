"""Publisher (aggregate side) and roll-up stage, wired by hand: partials merge exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from metrics.catalog import Catalog
from metrics.events import Bundle, CallCompleted, Event
from metrics.partials import DECODER, ENCODER, make_partial, partial_key
from metrics.rollup import Parts, finish, merge, rollup
from metrics.snapshots import SnapshotFormat
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar
from streams.publisher import Publisher
from streams.readout import Readout
from streams.rollup import RollupStage, ScopeWindow
from streams.sinks.metrics_topic import MetricsTopicSink
from tests.unit.streams.fakes import Clock

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()
DAY = KIND_INDEX["day"]
GRACE = 300.0


def metrics_sink(stage: RollupStage, fmt: SnapshotFormat, send, clock: Clock) -> MetricsTopicSink:
    readout = Readout(stage, grace_seconds=GRACE, clock=clock)
    return MetricsTopicSink(readout.reader("sales.metrics"), fmt, topic="m", send=send,
                            interval=0.0, clock=clock)


def state_with(calls: list[tuple[str, str, str]], offset_base: int = 0) -> PartitionState:
    state = PartitionState(CAT, CAL, grace_seconds=GRACE)
    events = [
        Event(i, "src", f"e{offset_base + i}", T0 + i, CallCompleted(rep, "outbound", outcome, team_id=team))
        for i, (rep, team, outcome) in enumerate(calls)
    ]
    state.apply(Bundle("sales.activities", 0, events), 0)
    state.snapshot()
    return state


def test_team_and_org_values_from_partials_of_two_partitions_equal_one_rollup() -> None:
    clock = Clock(T0 + 100)
    pub = Publisher(partitions=4, rollup_topic="r", interval=1.0, clock=clock)
    stage = RollupStage(CAT, topic="r", partitions=4, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    s1 = state_with([("ann", "east", "connected"), ("ann", "east", "no_answer"), ("cid", "west", "connected")])
    s2 = state_with([("bob", "east", "no_answer")] * 3 + [("bob", "east", "connected")], 100)
    records = pub.capture(0, s1) + pub.capture(1, s2)
    for topic, key, value, partition in records:
        if topic == "r":
            stage._apply(partition, key, value)
    start = CAL.bounds("day", T0)[0]
    teams = stage.values("team", DAY, start)
    org = stage.values("org", DAY, start)[()]
    expected = rollup(CAT, [s1.window_values(DAY, start), s2.window_values(DAY, start)])
    assert teams[("east",)][("calls_made",)] == 6.0
    assert teams[("east",)][("call_connect_ratio",)] == pytest.approx(2 / 6)  # not the mean of 1/2 and 1/4
    assert teams[("east",)][("call_connect_ratio",)] == pytest.approx(expected.team[("call_connect_ratio", "east")])
    assert org[("call_connect_ratio",)] == pytest.approx(expected.org[("call_connect_ratio",)])
    # reps: from their partials, with their team label
    assert stage.values("rep", DAY, start)[("bob", "east")][("calls_made",)] == 4.0
    assert stage.values("rep", DAY, start)[("ann", "east")][("call_connect_ratio",)] == 0.5
    # an unchanged rep's parts are not published again (teams and the org are)
    clock.t += 2
    s2.changed_windows.update(s2.windows)  # e.g. a roster change re-publishes every window
    again = pub.capture(1, s2)
    assert again and not [r for r in again if r[1].startswith(b"rep/")]


def test_a_reps_lead_responses_from_the_partitions_of_its_leads_merge_with_its_sums() -> None:
    """A rep's sums live in its own partition, its lead response times in the partitions of its
    leads: the rep's p50 and mean come only from the merge, exported by one worker."""
    clock = Clock(T0 + 100)
    pub = Publisher(partitions=4, rollup_topic="r", interval=1.0, clock=clock)
    stage = RollupStage(CAT, topic="r", partitions=4, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    home = state_with([("ann", "east", "connected")])
    leads = []
    for seconds in ((30.0, 50.0), (40.0,)):
        s = PartitionState(CAT, CAL, grace_seconds=GRACE)
        w = s._window(DAY, *CAL.bounds("day", T0))
        w.samples[("lead_response_seconds", "ann", "east")] = list(seconds)
        s._mark(w)
        leads.append(s)
    for partition, state in enumerate([home, *leads]):
        for _, key, value, p in pub.capture(partition, state):
            stage._apply(p, key, value)
    start = CAL.bounds("day", T0)[0]
    ann = stage.values("rep", DAY, start)[("ann", "east")]
    assert ann[("calls_made",)] == 1.0
    assert ann[("lead_response_seconds_p50",)] == 40.0
    assert ann[("lead_response_seconds_avg",)] == pytest.approx(40.0)


def test_a_stale_partial_never_replaces_a_newer_one_and_windows_end_final() -> None:
    clock = Clock(T0 + 100)
    fmt = SnapshotFormat(CAT, CAL)
    pub = Publisher(partitions=1, rollup_topic="r", interval=0.0, clock=clock)
    sent: list[tuple[bytes, bytes]] = []

    async def send(topic: str, *, key: bytes, value: bytes) -> None:
        sent.append((key, value))

    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    sink = metrics_sink(stage, fmt, send, clock)
    old = state_with([("ann", "east", "connected")])
    new = state_with([("ann", "east", "connected")] * 2)
    new.applied = 5
    newer = [r for r in pub.capture(0, new) if r[0] == "r"]
    clock.t += 1
    older = [r for r in pub.capture(0, old) if r[0] == "r"]
    for _, key, value, p in newer + older:  # the stale copy arrives last
        stage._apply(p, key, value)
    start = CAL.bounds("day", T0)[0]
    assert stage.values("team", DAY, start)[("east",)][("calls_made",)] == 2.0
    assert DECODER.decode(older[0][2]).version < DECODER.decode(newer[0][2]).version

    import asyncio

    asyncio.run(sink.publish())
    assert any(json.loads(v)["final"] is False for _, v in sent)
    sent.clear()
    clock.t = CAL.bounds("quarter", T0)[1] + 2 * GRACE  # every window of T0 has expired
    asyncio.run(sink.publish())
    finals = [json.loads(v) for _, v in sent]
    assert finals and all(r["final"] for r in finals)
    assert {r["window"] for r in finals} == {"minute", "hour", "day", "week", "month", "quarter"}
    assert not stage.windows


def test_the_expiry_tombstones_of_the_sources_do_not_empty_the_final_record() -> None:
    clock = Clock(T0 + 100)
    fmt = SnapshotFormat(CAT, CAL)
    pub = Publisher(partitions=1, rollup_topic="r", interval=0.0, clock=clock)
    sent: list[bytes] = []

    async def send(topic: str, *, key: bytes, value: bytes) -> None:
        sent.append(value)

    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    sink = metrics_sink(stage, fmt, send, clock)
    state = state_with([("ann", "east", "connected")] * 3)
    for topic, key, value, p in pub.capture(0, state):
        if topic == "r":
            stage._apply(p, key, value)
    minute_end = CAL.bounds("minute", T0)[1]
    clock.t = minute_end + 2 * GRACE  # the source drops the minute and sends tombstones first
    state.expire(clock.t)
    tombstones = [r for r in pub.capture(0, state) if r[0] == "r" and r[2] is None]
    assert tombstones
    for _, key, value, p in tombstones:
        stage._apply(p, key, value)

    import asyncio

    asyncio.run(sink.publish())
    finals = [json.loads(v) for v in sent if json.loads(v)["window"] == "minute"]
    assert finals and all(r["final"] and r["kpis"]["calls_made"] == 3.0 for r in finals), finals


def test_a_window_of_one_source_finishes_its_parts_as_they_are_without_changing_them() -> None:
    """One source (most rep windows: their own partition): its parts are finished without a
    merge, to the values a merge would give, and stay as they were (a later partial of
    another source is merged with them)."""
    samples = [30.0, 10.0, 20.0]
    parts = Parts(sums={("calls_made",): 3.0, ("calls_connected",): 1.0},
                  samples={"lead_response_seconds": samples})
    window = ScopeWindow(0, T0 + 86400, ("rep", "ann", DAY, T0))
    window.put(make_partial("rep", "ann", DAY, T0, T0 + 86400, 0, 1, parts, "east"))
    one = window.values(CAT)
    assert one == finish(CAT, merge([parts]))
    assert one[("calls_made",)] == 3.0 and one[("call_connect_ratio",)] == pytest.approx(1 / 3)
    held = window.sources[0].parts()
    assert held.samples == {"lead_response_seconds": [30.0, 10.0, 20.0]}
    assert held.sums == {("calls_made",): 3.0, ("calls_connected",): 1.0}
    other = Parts(sums={("calls_made",): 2.0}, samples={"lead_response_seconds": [40.0]})
    window.put(make_partial("rep", "ann", DAY, T0, T0 + 86400, 1, 1, other, "east"))
    assert window.values(CAT)[("calls_made",)] == 5.0
    assert window.values(CAT) == finish(CAT, merge([parts, other]))


def test_own_partials_are_applied_as_published_and_their_copies_from_the_topic_skipped() -> None:
    """``RollupStage.local``: a worker's own partials show at once in the scopes it owns; when
    their copies come back from the topic they change nothing (no new change number), while an
    older copy still loses to the newer partial and a partial of a partition owned elsewhere
    waits for the topic."""
    clock = Clock(T0 + 100)
    pub = Publisher(partitions=4, rollup_topic="r", interval=1.0, clock=clock)
    stage = RollupStage(CAT, topic="r", partitions=4, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    stage._assigned = {0, 1, 2, 3}
    state = state_with([("ann", "east", "connected"), ("bob", "west", "no_answer")])
    first = pub.capture(0, state)
    stage.local(first)
    assert stage.partials_read == len(first)
    readout = Readout(stage, grace_seconds=GRACE, clock=clock)
    org = {u.id: u.values for u in readout.reader("r").live() if u.kind == DAY and u.scope == "org"}
    assert org["org"][("calls_made",)] == 2.0
    seq = stage.seq
    state.apply(Bundle("sales.activities", 0, [
        Event(9, "src", "e-late", T0 + 9, CallCompleted("ann", "outbound", "connected", team_id="east"))]), 1)
    second = pub.capture(0, state)
    stage.local(second)
    assert stage.seq > seq
    seq, read = stage.seq, stage.partials_read
    for _, key, value, partition in first + second:  # the topic's copies, in order
        stage._apply(partition, key, value)
    assert stage.seq == seq  # the older copies lose, the newer ones are the same: no change
    # every copy is one of this worker's own records, in the order it sent them: none is
    # decoded again, also where the second round replaced the first's
    newer = {k: v for _, k, v, _ in second}
    assert sum(1 for _, k, v, _ in first if k in newer and newer[k] != v) >= 12
    assert stage.partials_read == read
    assert not stage._echo
    org = {u.id: u.values for u in readout.reader("s").live() if u.kind == DAY and u.scope == "org"}
    assert org["org"][("calls_made",)] == 3.0

    stage._assigned = {1}  # the other roll-up partitions are another worker's: the topic brings them
    before = stage.partials_read
    third = pub.capture(0, state_with([("cyd", "east", "connected")], 50))
    mine = sum(1 for *_, p in third if p == 1)
    assert len(third) - mine > 0
    stage.local(third)
    assert stage.partials_read == before + mine


def test_own_records_stay_on_top_of_older_ones_and_tombstones_read_from_the_topic() -> None:
    """A rep's group vanishes from a window and comes back (its samples retracted, then filed
    again): the source sends a tombstone, then a partial. Applied as sent, and the topic's
    copies of both then skipped; an older tombstone read afterwards (the partition read again
    from its beginning, or another worker's) must not take the newer own partial away. It did:
    a group of workers showed a rep's lead response average without one source's samples."""
    clock = Clock(T0 + 100)
    pub = Publisher(partitions=1, rollup_topic="r", interval=1.0, clock=clock)
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    stage._assigned = {0}
    readout = Readout(stage, grace_seconds=GRACE, clock=clock)

    def ann_day() -> float:
        return {u.id: u.values for u in readout.reader(f"r{stage.seq}").live()
                if u.kind == DAY and u.scope == "rep"}["ann"][("calls_made",)]

    first = pub.capture(0, state_with([("ann", "east", "connected")]))
    stage.local(first)
    key = next(k for _, k, _, _ in first if k.startswith(b"rep/ann/%d/" % DAY))
    tombstone = ("r", key, None, 0)
    stage.local([tombstone])
    second = pub.capture(0, state_with([("ann", "east", "connected")] * 2, 10))
    newer = [r for r in second if r[1] == key]
    stage.local(newer)
    assert ann_day() == 2.0
    for _, k, v, p in first + [tombstone] + newer:  # the topic's copies, in order
        stage._apply(p, k, v)
    assert ann_day() == 2.0
    stage.local(newer[:0])
    stage._apply(0, key, None)  # a tombstone not this worker's (or read again): it is applied...
    stage.local(newer)
    stage._apply(0, key, first[[r[1] for r in first].index(key)][2])  # ...an older copy too
    assert ann_day() == 2.0  # ...and the newest own partial stays on top
    stage._apply(0, key, newer[0][2])
    assert not stage._echo


def test_a_window_is_held_under_one_key_and_a_reps_id_once() -> None:
    """Every index of the stage (its windows, their order of change) holds a window's key as
    one tuple, and a rep's windows hold its id as one string: a partial's own decoded key and
    strings are not kept (the stage holds tens of thousands of windows)."""
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=Clock(T0 + 100))  # type: ignore[arg-type]
    parts = Parts(sums={("calls_made",): 1.0})
    for version, (kind, source) in enumerate([(DAY, 0), (KIND_INDEX["hour"], 0), (DAY, 0),
                                              (DAY, 1)], start=1):
        start, end = CAL.bounds(WINDOW_KINDS[kind], T0)
        partial = make_partial("rep", "ann", kind, start, end, source, version, parts, "east")
        stage._apply(0, partial_key("rep", "ann", kind, start, source), ENCODER.encode(partial))
    assert len(stage.windows) == 2
    for key, window in stage.windows.items():
        assert window.key is key
        assert next(k for k in stage.recent if k == key) is key
    ids = {id(k[1]) for k in stage.windows}
    assert len(ids) == 1  # "ann" once
    teams = {id(h.team) for w in stage.windows.values() for h in w.sources.values()}
    assert len(teams) == 1  # "east" once, over three held partials
    assert stage.values("rep", DAY, CAL.bounds("day", T0)[0])[("ann", "east")][("calls_made",)] == 2.0


def test_the_echo_of_own_partials_keeps_digests_not_values_and_a_newer_epoch_wins() -> None:
    """Own partials wait for their copies from the topic as digests (a worker behind its roll-up
    topic held every partial it had sent since: 12 MB traced in the benchmark's sustained
    phase); a record that is not the next copy is applied and the window's own partial put on
    top again, unless that record is newer (a later epoch: the partition moved on)."""
    clock = Clock(T0 + 100)
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    stage._assigned = {0}
    start, end = CAL.bounds("day", T0)
    key = partial_key("rep", "ann", DAY, start, 0)

    def value(calls: float, version: int, epoch: int = 0) -> bytes:
        return ENCODER.encode(make_partial("rep", "ann", DAY, start, end, 0, version,
                                           Parts(sums={("calls_made",): calls}), "east", epoch))

    def calls() -> float:
        return stage.values("rep", DAY, start)[("ann", "east")][("calls_made",)]

    own = [value(1.0, 5), value(2.0, 6)]
    stage.local([("r", key, v, 0) for v in own])
    assert [type(d) for d in stage._echo[key]] == [int, int]
    assert calls() == 2.0
    stage._apply(0, key, value(9.0, 3))  # an older record read again: own stays on top
    assert calls() == 2.0
    stage._apply(0, key, own[0])
    stage._apply(0, key, own[1])
    assert not stage._echo and calls() == 2.0
    stage.local([("r", key, value(3.0, 7), 0)])
    stage._apply(0, key, value(4.0, 1, epoch=1))  # the partition restored elsewhere since
    assert calls() == 4.0
