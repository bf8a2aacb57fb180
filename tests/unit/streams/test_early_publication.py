"""Roll-up partials go out before their snapshot is durable, and stay exact through a crash.

A worker publishes the state it has applied without waiting for the broker to take the
snapshot of it (``AggregateStage.publish``) once the partition's epoch is durable. Should it
die before the snapshot is, the next owner restores the last durable snapshot with a later
epoch, replays the same records, and its partials replace the lost owner's in the roll-up
stage, also where they are of an older version.
"""

from __future__ import annotations

import asyncio
import time

from metrics.catalog import Catalog
from metrics.events import Bundle, CallCompleted, Event
from metrics.partials import DECODER, ENCODER, make_partial, partial_key
from metrics.rollup import Parts
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, Calendar
from streams.aggregate import AggregateStage
from streams.publisher import Publisher
from streams.rollup import RollupStage
from tests.unit.streams.fakes import Clock

CAT = Catalog()
CAL = Calendar("UTC")
T0 = time.time() - 60.0  # windows are dropped by the wall clock: events of the current ones
DAY = KIND_INDEX["day"]
GRACE = 300.0


class Changelog:
    """The changelog as the broker holds it: a write is durable once :meth:`deliver` ran."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}  # the table's local dict (Faust's recovery fills it)
        self.durable: dict[str, bytes | None] = {}
        self.pending: list[tuple[asyncio.Future, str, bytes | None]] = []

    def send_changelog(self, partition: int, key: str, value: bytes | None, **kw: object) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((fut, key, value))
        return fut

    def deliver(self) -> None:
        for fut, key, value in self.pending:
            self.durable[key] = value
            fut.set_result(None)
        self.pending = []

    def recovered(self) -> None:
        """What Faust's recovery puts in the table of a worker the partition is assigned to."""
        self.data = {k: v for k, v in self.durable.items() if v is not None}


class Sent:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None, int | None]] = []

    async def send(self, topic: str, *, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        self.records.append((topic, key, value, partition))


def bundle(first: int, n: int) -> Bundle:
    return Bundle("sales.activities", 0, [
        Event(i, "src", f"e{i}", T0 + i, CallCompleted(f"rep-{i % 3}", "outbound", "connected", team_id="east"))
        for i in range(first, first + n)
    ])


def worker(changelog: Changelog, sent: Sent, clock: Clock) -> AggregateStage:
    publisher = Publisher(partitions=1, rollup_topic="r", interval=0.0, clock=clock)
    return AggregateStage(changelog, CAT, CAL, grace_seconds=GRACE, dedup_horizon_seconds=86400,
                          publisher=publisher, send=sent.send)


async def settle(stage: AggregateStage, changelog: Changelog) -> None:
    """A flush whose snapshot the broker takes."""
    flush = asyncio.ensure_future(stage.flush(force=True))
    while not flush.done():
        await asyncio.sleep(0)
        changelog.deliver()
    await flush


def rep_calls(stage: RollupStage, rep: str) -> float:
    start = CAL.bounds("day", T0)[0]
    return stage.values("rep", DAY, start)[(rep, "east")][("calls_made",)]


def test_a_partial_of_a_later_epoch_replaces_a_newer_version_of_an_earlier_one() -> None:
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE, consumer_factory=None,  # type: ignore[arg-type]
                        clock=lambda: T0 + 100)
    start, end = CAL.bounds("day", T0)

    def put(calls: float, version: int, epoch: int) -> None:
        partial = make_partial("rep", "ann", DAY, start, end, 0, version,
                               Parts(sums={("calls_made",): calls}), "east", epoch)
        stage._apply(0, partial_key("rep", "ann", DAY, start, 0), ENCODER.encode(partial))

    put(7.0, version=50, epoch=1)  # the lost owner, state not durable
    put(5.0, version=40, epoch=2)  # the next owner, replaying: its older version wins
    assert rep_calls(stage, "ann") == 5.0
    put(9.0, version=60, epoch=1)  # a worker that has not noticed it lost the partition
    assert rep_calls(stage, "ann") == 5.0


def test_the_epoch_is_the_restored_one_plus_one_and_snapshots_carry_it() -> None:
    state = PartitionState(CAT, CAL)
    state.apply(bundle(0, 3), 0)
    first = PartitionState.restore(state.snapshot(), CAT, CAL)
    assert (state.epoch, first.epoch) == (0, 1)
    again = PartitionState.restore(first.snapshot(), CAT, CAL)
    assert again.epoch == 2
    assert PartitionState.restore([], CAT, CAL).epoch == 1


def test_partials_go_out_before_the_snapshot_is_durable_once_the_epoch_is() -> None:
    async def run() -> None:
        changelog, sent, clock = Changelog(), Sent(), Clock(T0 + 100)
        stage = worker(changelog, sent, clock)
        stage.recovered([0], [0])
        stage.apply(0, [])
        stage.states[0].apply(bundle(0, 3), 0)
        await settle(stage, changelog)  # the first snapshot: published once durable
        assert 0 in stage.early and sent.records
        before = len(sent.records)
        stage.states[0].apply(bundle(3, 3), 1)
        flush = asyncio.ensure_future(stage.flush(force=True))  # the broker does not answer
        await asyncio.sleep(0)
        clock.t += 1
        await stage.publish()
        assert changelog.pending and not flush.done()
        news = [DECODER.decode(v) for _, _, v, _ in sent.records[before:] if v is not None]
        assert news and {p.version for p in news} == {1}
        changelog.deliver()
        await flush

    asyncio.run(run())


def test_values_stay_exact_when_the_owner_dies_before_its_published_state_is_durable() -> None:
    async def run() -> None:
        changelog, sent, clock = Changelog(), Sent(), Clock(T0 + 100)
        lost = worker(changelog, sent, clock)
        lost.recovered([0], [0])
        records = [bundle(0, 3), bundle(3, 4), bundle(7, 5)]
        lost.states[0].apply(records[0], 0)
        await settle(lost, changelog)
        for offset in (1, 2):
            lost.states[0].apply(records[offset], offset)
            asyncio.ensure_future(lost.flush(force=True))  # never durable: the worker dies
            await asyncio.sleep(0)
            clock.t += 1
            await lost.publish()
        # the next owner: the durable changelog, a later epoch, the same records replayed
        changelog.pending = []
        changelog.recovered()
        heir = worker(changelog, sent, clock)
        heir.recovered([0], [0])
        assert heir.states[0].epoch == lost.states[0].epoch + 1
        clock.t += 1
        await settle(heir, changelog)  # its restored state, published once its epoch is durable
        for offset in (1, 2):
            heir.states[0].apply(records[offset], offset)
            await settle(heir, changelog)
            clock.t += 1
            await heir.publish()
        rollup = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                             consumer_factory=None, clock=lambda: clock.t)  # type: ignore[arg-type]
        for _, key, value, partition in sent.records:
            rollup._apply(partition or 0, key, value)
        reference = PartitionState(CAT, CAL)
        for offset, b in enumerate(records):
            reference.apply(b, offset)
        start = CAL.bounds("day", T0)[0]
        for rep in ("rep-0", "rep-1", "rep-2"):
            want = reference.window_values(DAY, start)[("calls_made", rep, "east")]
            assert rep_calls(rollup, rep) == want

    asyncio.run(run())


def test_a_change_to_a_window_already_dirty_is_published_by_the_next_round() -> None:
    """Partials are captured apart from snapshots: a window changed again before its snapshot
    (still dirty) must be captured again; the last events of a burst were never shown."""
    clock = Clock(T0 + 100)
    publisher = Publisher(partitions=1, rollup_topic="r", interval=0.0, clock=clock)
    state = PartitionState(CAT, CAL, grace_seconds=GRACE)
    state.apply(bundle(0, 3), 0)
    first = publisher.capture(0, state)
    assert first
    state.apply(bundle(3, 3), 1)  # no snapshot in between: the window is still dirty
    again = [DECODER.decode(v) for _, _, v, _ in publisher.capture(0, state) if v is not None]
    org = [p for p in again if p.scope == "org" and p.kind == DAY]
    assert org and org[0].version == 1
    assert org[0].parts.sums[("calls_made",)] == 6.0
    assert publisher.capture(0, state) == []  # nothing changed since
