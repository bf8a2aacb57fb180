"""Output rounds are paced by the loop's time they take, not by the time their sends wait.

A send waits when the producer's buffer is full (a large snapshot is on its way to the broker);
the events run meanwhile. Counted as the round's cost, a wait of 0.2 s paced the next round
2 s out (ten times it), and under load an event took tens of seconds to reach Redis. Only in a
backlog do the waits count (there the round's records compete with the events' for the
producer, and throughput is what the pacing keeps).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from metrics.catalog import Catalog
from metrics.events import Bundle, CallCompleted, Event
from metrics.snapshots import SnapshotFormat
from metrics.windows import KIND_INDEX, Calendar
from streams.aggregate import AggregateStage
from streams.pacing import (
    BLIP,
    FACTOR,
    LIGHT_FACTOR,
    LIVE_FACTOR,
    RECOUNT,
    REST,
    SETTLED,
    SLICE,
    WAITED,
    Pacing,
    Rounds,
    send_all,
)
from streams.publisher import KEY_COST, Publisher
from streams.readout import WindowUpdate
from streams.sinks.metrics_topic import MetricsTopicSink
from tests.unit.streams.fakes import Clock, delivered

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()
WAIT = 0.05  # each send waits this long, as for room in a full producer buffer


class SlowBroker:
    """A send that waits ``WAIT`` seconds before it returns (its records are kept)."""

    def __init__(self, wait: float = WAIT) -> None:
        self.records: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.wait = wait

    async def send(self, topic: str, *, key: bytes, value: bytes | None,
                   partition: int | None = None) -> None:
        await asyncio.sleep(self.wait)
        self.records.append((topic, key, value, partition))


class Table:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def send_changelog(self, partition: int, key: str, value: bytes | None, **kw: object) -> asyncio.Future:
        return delivered()


class Reader:
    def __init__(self, updates: list[WindowUpdate]) -> None:
        self.updates = updates

    def changed(self) -> list[WindowUpdate]:
        out, self.updates = self.updates, []
        return out

    def pending(self) -> int:
        return len(self.updates)


def test_send_all_counts_the_loops_time_not_the_waits() -> None:
    broker = SlowBroker()
    records = [("t", b"k%d" % i, b"v", None) for i in range(6)]
    cost, waited = asyncio.run(send_all(broker.send, records))
    assert broker.records == records  # all sent, in order
    assert cost < WAITED * len(records) < WAIT * len(records) <= waited

    async def quick(topic: str, **kw: object) -> None:
        sum(range(100))  # works on the loop, never waits (microseconds: with 0.3 ms each, one
        # send preempted past WAITED on a busy box counted as waiting, and the test failed)

    cost, waited = asyncio.run(send_all(quick, records))
    assert cost > 0.0 and waited == 0.0


def test_a_sliced_round_rests_long_enough_for_an_events_way_through_its_awaits() -> None:
    """A ``sales.metrics`` round after a backlog (14,000 windows, 0.5 s of the loop) gave the
    loop back with ``sleep(0)`` every slice: each other task took one step a slice, and an
    event's way (the consumer's hand-over, ingest, its forward, the aggregate's apply: dozens of
    awaits) waited for the whole round (probes at 200 events/s: 0.8 s). After each slice the
    round now rests as long as the slice took: what waits runs through in one rest."""
    steps = 30
    progress: list[int] = []

    async def send(topic: str, **kw: object) -> None:
        deadline = time.perf_counter() + SLICE / 40  # works on the loop (< WAITED), never waits
        while time.perf_counter() < deadline:
            pass

    async def event_way() -> None:
        for step in range(steps):
            await asyncio.sleep(0)
            progress.append(step)

    async def scenario() -> int:
        records = [("t", b"k%d" % i, b"v", None) for i in range(160)]  # four slices of work
        way = asyncio.ensure_future(event_way())
        await asyncio.sleep(0)
        await send_all(send, records, slice_seconds=SLICE, rest=REST)
        done_during_round = len(progress)
        await way
        return done_during_round

    assert asyncio.run(scenario()) == steps  # the whole way, while the round ran


def test_a_sliced_round_rests_only_while_the_worker_is_light() -> None:
    """Under load the events wait anyway, and resting rounds looked worse at half the
    maximum rate: a round off the events' way rests only while the worker is light."""
    lag = {"behind": False, "light": True}
    pacing = Pacing(lambda: lag["behind"], light=lambda: lag["light"])
    assert pacing.resting() == REST
    lag["light"] = False
    assert pacing.resting() == 0.0
    lag["behind"], lag["light"] = True, True
    assert pacing.resting() == 0.0


def test_metrics_topic_round_waiting_on_its_sends_runs_again_after_its_interval() -> None:
    clock = Clock(T0 + 100)
    start, end = CAL.bounds("day", T0)
    updates = [WindowUpdate("rep", f"rep-{i}", "east", KIND_INDEX["day"], start, end,
                            {("calls_made",): float(i)}, False) for i in range(10)]
    broker = SlowBroker()
    behind = [False]
    sink = MetricsTopicSink(Reader(updates), SnapshotFormat(CAT, CAL), topic="m",
                            send=broker.send, interval=0.25, clock=clock,
                            pacing=Pacing(lambda: behind[0]))
    asyncio.run(sink.publish())
    assert len(broker.records) == 10
    # 0.5 s of waiting: paced by it, the next round would be FACTOR * 0.5 s = 5 s away
    assert sink.rounds.next_at() - clock.t < WAIT
    behind[0] = True  # in a backlog the waits count: ten times them
    assert sink.rounds.next_at() - clock.t >= FACTOR * WAIT * 10


def test_publication_waiting_on_its_sends_runs_again_after_its_interval() -> None:
    clock = Clock(T0 + 100)
    publisher = Publisher(partitions=4, rollup_topic="r", interval=1.0, clock=clock,
                          pacing=Pacing(lambda: False))
    broker = SlowBroker()
    stage = AggregateStage(Table(), CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400,
                           publisher=publisher, send=broker.send)
    state = stage.state_for(0)
    events = [Event(i, "src", f"e{i}", T0 + i, CallCompleted(f"rep-{i % 5}", "outbound", "connected",
                                                            team_id="east"))
              for i in range(20)]
    state.apply(Bundle("sales.activities", 0, events), 0)
    asyncio.run(stage.flush(force=True))
    sent = len(broker.records)
    assert sent > 10  # a partial per rep, team and the org in each of six windows
    # sent * WAIT seconds of waiting: paced by it, the next round would be that times FACTOR out
    assert publisher.rounds.next_at() - clock.t == 1.0  # the interval
    assert not publisher.due()


def test_a_rounds_waits_count_while_the_worker_is_behind_and_not_once_it_caught_up() -> None:
    behind = [True]  # the round's sends waited: the producer was full, the lag grew meanwhile
    rounds = Rounds(0.25, Pacing(lambda: behind[0]))
    rounds.done(T0, cost=0.05, waited=0.5)
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.55)
    assert not rounds.due(T0 + 2.0)
    behind[0] = False  # the events caught up: read when asked, not when the round ended
    assert rounds.due(T0 + 0.5)
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.05)
    rounds.done(T0, cost=0.01)
    assert rounds.next_at() - T0 == pytest.approx(0.25)  # cheap rounds: the interval


def test_live_rounds_wait_less_once_the_worker_has_settled_and_more_as_soon_as_it_is_behind() -> None:
    """Caught up for SETTLED seconds, a live round waits LIVE_FACTOR times its cost (the worker
    has headroom: an event's way to Redis was ten times a round's cost); the end of a backlog
    (the costliest rounds, the lag just gone) and any lag past the backlog keep FACTOR; a
    short lag (a round held the loop) does not start the settling again."""
    behind = [True]
    clock = Clock(1000.0)
    pacing = Pacing(lambda: behind[0], clock=clock)
    rounds = Rounds(0.1, pacing, live=True)
    other = Rounds(0.1, pacing)  # sales.metrics, snapshots: not on the way to users
    rounds.done(T0, cost=0.2)
    other.done(T0, cost=0.2)
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)  # a backlog
    clock.t += BLIP  # a backlog that lasts
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    behind[0] = False
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)  # its end: not settled yet
    clock.t += SETTLED - 0.1
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    clock.t += 0.2
    assert rounds.next_at() - T0 == pytest.approx(LIVE_FACTOR * 0.2)  # live
    assert other.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    rounds.done(T0, cost=0.01)
    assert rounds.next_at() - T0 == pytest.approx(0.1)  # cheap rounds: the interval
    rounds.done(T0, cost=0.2)
    behind[0] = True  # the lag grew past the backlog: at once
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    clock.t += BLIP / 2
    behind[0] = False  # a blip: live again at once
    assert rounds.next_at() - T0 == pytest.approx(LIVE_FACTOR * 0.2)
    behind[0] = True
    clock.t += 0.1
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    clock.t += BLIP  # behind that long: a backlog
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    behind[0] = False
    clock.t += SETTLED / 2
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)  # settling again


def test_a_light_worker_settles_at_once_and_its_live_rounds_wait_only_their_cost() -> None:
    """Light (close to its input's end, and the backlog's end durable and committed): the end of
    a backlog does not wait SETTLED seconds with its rounds paced FACTOR times their cost, and a
    live round waits LIGHT_FACTOR times its cost (after a catch-up, /metrics and Redis stood
    still for 8-13 s at 200 events/s). Once light the worker stays settled until the next
    backlog, whatever the lag does below it; the rounds not on the way to users keep FACTOR."""
    behind, light = [True], [False]
    clock = Clock(1000.0)
    pacing = Pacing(lambda: behind[0], clock=clock, backlog_interval=1.0,
                    light=lambda: light[0])
    rounds = Rounds(0.1, pacing, live=True)
    other = Rounds(0.1, pacing)
    clock.t += BLIP  # a backlog
    rounds.done(T0, cost=0.8)
    other.done(T0, cost=0.8)
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.8)
    behind[0] = False  # caught up, the backlog's end not committed yet
    assert not pacing.settled()
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.8)
    light[0] = True  # its end is durable and committed, the lag is light
    assert pacing.settled()
    assert rounds.next_at() - T0 == pytest.approx(LIGHT_FACTOR * 0.8)
    assert other.next_at() - T0 == pytest.approx(FACTOR * 0.8)
    light[0] = False  # a lag above light: live, and still settled (no settling again)
    assert pacing.settled()
    assert rounds.next_at() - T0 == pytest.approx(LIVE_FACTOR * 0.8)
    rounds.done(T0, cost=0.01)
    assert rounds.next_at() - T0 == pytest.approx(0.1)  # cheap rounds: the interval
    behind[0] = True
    rounds.done(T0, cost=0.8)
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.8)  # behind: a blip so far
    clock.t += BLIP  # a backlog again: light from before it does not count
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.8)
    behind[0], light[0] = False, False
    clock.t += 0.1
    assert not pacing.settled()
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.8)


def test_the_rounds_on_the_way_to_users_are_live_the_others_not() -> None:
    assert Publisher(partitions=1, rollup_topic="r", interval=1.0).rounds.live
    sink = MetricsTopicSink(Reader([]), SnapshotFormat(CAT, CAL), topic="m", send=None,
                            interval=1.0)
    assert not sink.rounds.live


def test_the_keyed_events_lag_counts_in_events_of_the_bundles_applied() -> None:
    """In a backlog the ingest stage is done first: the lag left is a few hundred keyed-events
    records (bundles), each of many events; counted as records, the worker looked caught up."""
    from types import SimpleNamespace

    from metrics.events import BUNDLE_ENCODER

    stage = AggregateStage(Table(), CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400)
    assert stage.events_per_record() == 1.0
    records = []
    for offset, n in enumerate((30, 50)):
        events = [Event(offset * 100 + i, "src", f"e{offset}-{i}", T0 + i,
                        CallCompleted("ann", "outbound", "connected", team_id="east")) for i in range(n)]
        records.append(SimpleNamespace(offset=offset, value=BUNDLE_ENCODER.encode(
            Bundle("sales.activities", 0, events))))
    stage.apply(0, records)
    assert stage.events_per_record() == 40.0


def test_a_blip_is_paced_by_factor_and_only_a_lasting_backlog_by_the_backlog_factor() -> None:
    """A lag past the backlog's bound for less than BLIP seconds (a costly round held the loop
    at half the maximum rate) brings back FACTOR at once, not the backlog's factor: thirty times
    a live round's cost held Redis and /metrics back for the whole blip. A worker that starts
    behind is in a backlog at once."""
    behind = [True]
    clock = Clock(1000.0)
    pacing = Pacing(lambda: behind[0], backlog_factor=30.0, clock=clock)
    rounds = Rounds(0.1, pacing, live=True)
    rounds.done(T0, cost=0.2)
    assert rounds.next_at() - T0 == pytest.approx(30.0 * 0.2)  # started behind: a backlog
    behind[0] = False
    clock.t += SETTLED + 0.1
    assert rounds.next_at() - T0 == pytest.approx(LIVE_FACTOR * 0.2)  # live
    behind[0] = True  # a round held the loop
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    clock.t += BLIP / 2
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.2)
    clock.t += BLIP / 2
    assert rounds.next_at() - T0 == pytest.approx(30.0 * 0.2)  # behind that long: a backlog


def test_in_a_backlog_no_round_runs_more_often_than_the_backlog_interval() -> None:
    """A group's workers own a few partitions each: their rounds are cheap, and a live interval
    of 0.1 s made them publish ten times as often in a backlog (the group's throughput fell from
    0.46 to 0.29 of bare). Behind, a round waits at least ``backlog_interval``; caught up, its
    own interval holds again."""
    clock = Clock(1000.0)
    behind = [True]
    pacing = Pacing(lambda: behind[0], clock=clock, backlog_interval=1.0)
    rounds = Rounds(0.1, pacing, live=True)
    clock.t += BLIP  # behind that long: a backlog
    rounds.done(clock.t, 0.001)
    assert rounds.next_at() - clock.t == pytest.approx(1.0)
    behind[0] = False
    assert not pacing.settled()
    assert rounds.next_at() - clock.t == pytest.approx(1.0)  # not settled yet
    clock.t += SETTLED
    rounds.done(clock.t, 0.001)
    assert pacing.settled()
    assert rounds.next_at() - clock.t == pytest.approx(0.1)


def test_a_round_is_paced_by_the_work_it_will_do_not_only_by_the_last_rounds_cost() -> None:
    """In a backlog the round after a cheap one read every window of every rep (1.1 s of a 5 s
    backlog in the benchmark): paced by the last round's cost alone, it was due at once. Told
    its work, a round waits the factor times that work at the unit cost last measured."""
    pacing = Pacing(lambda: True, backlog_factor=30.0, clock=Clock(1000.0))  # a backlog
    rounds = Rounds(0.0, pacing, unit_cost=1e-3, learn_from=100)
    rounds.done(T0, cost=0.0001)  # a cheap round: nothing to read yet
    assert rounds.due(T0 + 1.0)  # by its cost alone
    assert not rounds.due(T0 + 1.0, lambda: 1000)  # 1 s of work: 30 s after the last round
    assert rounds.due(T0 + 30.0, lambda: 1000)
    rounds.done(T0 + 30.0, cost=0.5, waited=0.0, work=1000)  # measured: 0.5 ms a unit
    assert rounds.unit_cost == pytest.approx(5e-4)
    rounds.done(T0 + 60.0, cost=0.1, work=10)  # too few units to teach the unit cost
    assert rounds.unit_cost == pytest.approx(5e-4)
    assert not rounds.due(T0 + 60.0 + 29.0, lambda: 2000)  # 1 s of work again
    assert rounds.due(T0 + 60.0 + 30.0, lambda: 2000)


def test_a_round_held_for_its_work_counts_it_again_when_the_pace_changes() -> None:
    """Held in a backlog (thirty times its work), a round is asked again within RECOUNT seconds:
    once the worker has caught up the factor is ten, and it runs then, not 30 times out."""
    behind = [True]
    clock = Clock(1000.0)
    pacing = Pacing(lambda: behind[0], backlog_factor=30.0, clock=clock)
    rounds = Rounds(0.0, pacing, unit_cost=1e-3)
    rounds.done(T0, cost=0.0)
    counted = []

    def work() -> int:
        counted.append(1)
        return 100  # 0.1 s: 3 s out in the backlog, 1 s once caught up

    assert not rounds.due(T0 + 0.5, work)
    assert not rounds.due(T0 + 0.6, work) and len(counted) == 1  # not counted again so soon
    behind[0] = False
    assert rounds.due(T0 + 0.5 + RECOUNT, work) and len(counted) == 2


def test_a_backlogs_first_publication_waits_for_the_keys_it_will_read() -> None:
    """The publisher paces its first round from its start: in a backlog, reading every window
    whole a second in cost most of a short backlog, while the snapshots were what it waited for."""
    clock = Clock(T0 + 100)
    pacing = Pacing(lambda: True, backlog_factor=30.0, clock=clock)
    publisher = Publisher(partitions=4, rollup_topic="r", interval=0.1, clock=clock,
                          pacing=pacing, behind=lambda: True)
    broker = SlowBroker(wait=0.0)
    stage = AggregateStage(Table(), CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400,
                           publisher=publisher, send=broker.send)
    # over the last 2.5 hours: a minute's hits are few, the windows that add them up hold all
    # (counted after the flush has folded them: counted before, the first publication was due)
    since = time.time() - 9000
    events = [Event(i, "src", f"e{i}", since + i * 4.5, CallCompleted(f"rep-{i % 400}", "outbound",
                                                                     "connected", team_id=f"team-{i % 7}"))
              for i in range(2000)]
    stage.state_for(0).apply(Bundle("sales.activities", 0, events), 0)
    start = clock.t
    clock.t += 2.0
    asyncio.run(stage.flush(force=True))
    assert broker.records == []  # the snapshot went, the partials wait
    assert 0 in stage.early  # its snapshot is durable: the publication tick publishes it
    keys = stage.state_for(0).changed_size()
    held = 30.0 * keys * KEY_COST  # from the publisher's start
    assert held > 4.0, keys  # every window kind of 400 reps
    clock.t = start + held - 0.5
    asyncio.run(stage.publish())
    assert broker.records == []
    clock.t = start + held + 0.01
    asyncio.run(stage.publish())
    assert broker.records


def test_one_publication_round_at_a_time() -> None:
    """A flush publishes the partitions whose snapshot just became durable, the publication tick
    the others: both found a round due by the last one's cost and ran at once."""
    clock = Clock(T0)
    publisher = Publisher(partitions=4, rollup_topic="r", interval=0.1, clock=clock,
                          pacing=Pacing(lambda: False))
    clock.t += 1.0
    assert publisher.due()
    assert not publisher.due()  # the first is not spent yet
    publisher.spent(0.0)
    clock.t += 1.0
    assert publisher.due()


def test_a_publication_round_that_fails_does_not_hold_the_next_back() -> None:
    """A round found due is the only one until it is spent: one whose send failed (or that
    stopped with the worker) must still count as spent, or no round would ever run again."""
    clock = Clock(T0)
    publisher = Publisher(partitions=4, rollup_topic="r", interval=0.1, clock=clock,
                          pacing=Pacing(lambda: False))

    async def refused(topic: str, *, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        raise RuntimeError("refused")

    stage = AggregateStage(Table(), CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400,
                           publisher=publisher, send=refused)
    now = time.time() - 60
    events = [Event(i, "src", f"e{i}", now + i, CallCompleted("rep-1", "outbound", "connected",
                                                             team_id="east")) for i in range(5)]
    stage.state_for(0).apply(Bundle("sales.activities", 0, events), 0)
    clock.t += 1.0
    with pytest.raises(RuntimeError, match="refused"):
        asyncio.run(stage.flush(force=True))
    clock.t += 1.0
    assert publisher.due()


def test_a_rounds_pace_is_its_interval_exactly_at_wall_clock_times() -> None:
    """The pace on /metrics is the gap itself: computed as ``next_at() - last`` with ``last``
    a wall-clock time (~1.7e9 s), the roll-up partials' 0.1 s read 0.0999999 (CI failed on
    ``pace >= interval``)."""
    now = 1_764_554_400.123  # a wall-clock time, where one ulp is 2.4e-7 s
    pacing = Pacing(lambda: False, clock=Clock(now))
    rounds = Rounds(0.1, pacing)
    rounds.done(now, cost=0.001)
    assert rounds.pace() >= 0.1
    assert rounds.pace() == 0.1
