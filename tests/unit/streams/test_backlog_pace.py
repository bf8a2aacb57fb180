"""In a backlog the output rounds and snapshots yield more of the loop; once caught up, the
last snapshot is not held back by the pacing of the costly ones before it.

The end of a backlog is where a snapshot is costliest (every window changed): paced at ten
times that cost, the snapshot of the last records waited a second or more, then a commit tick,
before the backlog was durable: ~15% of a benchmark's backlog time, with nothing competing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from metrics.catalog import Catalog
from metrics.events import Bundle, CallCompleted, Event
from metrics.windows import Calendar
from streams.aggregate import AggregateStage
from streams.pacing import FACTOR, Pacing, Rounds
from streams.settings import Settings
from tests.unit.streams.fakes import delivered

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()


class Table:
    """The changelog writes, kept (the state table of streams.app, without a broker)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.written: list[str] = []

    def send_changelog(self, partition: int, key: str, value: bytes | None, **kw: object) -> asyncio.Future:
        self.written.append(key)
        return delivered()


class Held:
    """A held keyed-events message: acked once the state holding it is durable."""

    def __init__(self) -> None:
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def calls(first: int, n: int) -> Bundle:
    return Bundle("sales.activities", 0, [
        Event(i, "src", f"e{i}", T0 + i, CallCompleted(f"rep-{i % 5}", "outbound", "connected", team_id="east"))
        for i in range(first, first + n)
    ])


def applied(flush_seconds: float, behind: list[bool] | None = None) -> tuple[Table, AggregateStage]:
    """A stage with a state flush interval of ``flush_seconds`` and one bundle applied; its
    pacing is behind while ``behind[0]`` (default: always, as without a lag to go by)."""
    table = Table()
    pacing = Pacing(lambda: behind[0]) if behind is not None else Pacing()
    stage = AggregateStage(table, CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400,
                           flush_seconds=flush_seconds, pacing=pacing)
    stage.state_for(0).apply(calls(0, 20), 0)
    return table, stage


def test_in_a_backlog_a_round_waits_the_backlog_factor_times_its_cost() -> None:
    behind = [True]
    rounds = Rounds(0.25, Pacing(lambda: behind[0], backlog_factor=30.0))
    rounds.done(T0, cost=0.1, waited=0.1)
    assert rounds.next_at() - T0 == pytest.approx(30.0 * 0.2)
    behind[0] = False  # caught up: the usual factor, of the loop's time only
    assert rounds.next_at() - T0 == pytest.approx(FACTOR * 0.1)


def test_the_backlog_factor_is_a_setting_above_the_caught_up_one() -> None:
    assert Settings().backlog_round_factor > FACTOR
    assert Settings(backlog_round_factor=12).backlog_round_factor == 12


def test_a_caught_up_worker_snapshots_after_the_interval_not_ten_times_the_last_cost() -> None:
    async def scenario() -> None:
        # an interval long enough that a busy box does not pass it between two lines (0.05 s
        # did, once, at load ~3)
        table, stage = applied(flush_seconds=0.5, behind=[False])
        await stage.flush(force=True)
        # the last snapshot of a backlog cost 1 s of the loop: the paced one waits 10 s
        stage.rounds.done(time.monotonic(), cost=1.0)
        stage.state_for(0).apply(calls(20, 20), 1)
        first = Held()
        stage.hold(0, first)
        assert stage.holding()
        written = len(table.written)
        assert stage.idle_flush_at() > time.monotonic()  # within the interval: not even idle
        await stage.flush(idle=True)
        await stage.flush()
        assert len(table.written) == written and not first.acked
        await asyncio.sleep(max(0.0, stage.idle_flush_at() - time.monotonic()))
        await stage.flush()  # the timer's paced flush: still held off
        assert len(table.written) == written and not first.acked
        await stage.flush(idle=True)  # caught up: durable now, and acked
        assert len(table.written) > written and first.acked and not stage.holding()
        second = Held()
        stage.state_for(0).apply(calls(40, 5), 2)
        stage.hold(0, second)
        await stage.flush(idle=True)  # and then again only an interval later
        assert not second.acked

    asyncio.run(scenario())


def test_the_first_idle_flush_after_a_backlogs_snapshot_runs_at_once() -> None:
    """The records applied while a backlog's last snapshot was written waited a whole flush
    interval for the next (~15 % of the benchmark's backlog, from its ingest done to durable);
    once caught up nothing competes with that snapshot. Then the interval holds again."""
    async def scenario() -> None:
        behind = [True]
        table, stage = applied(flush_seconds=5.0, behind=behind)
        await stage.flush(force=True)  # the backlog's last snapshot
        behind[0] = False
        first = Held()
        stage.state_for(0).apply(calls(20, 20), 1)
        stage.hold(0, first)
        assert stage.idle_flush_at() <= time.monotonic()
        await stage.flush(idle=True)
        assert first.acked
        second = Held()
        stage.state_for(0).apply(calls(40, 5), 2)
        stage.hold(0, second)
        assert stage.idle_flush_at() > time.monotonic() + 4.0  # caught up: the interval
        await stage.flush(idle=True)
        assert not second.acked

    asyncio.run(scenario())


def test_an_idle_flush_that_waited_for_a_running_one_does_not_snapshot_again_at_once() -> None:
    async def scenario() -> None:
        table, stage = applied(flush_seconds=10.0)
        stage.hold(0, Held())
        async with stage._lock:  # a flush is running: the idle one waits for it
            waiting = asyncio.ensure_future(stage.flush(idle=True))
            await asyncio.sleep(0)
            stage.rounds.done(time.monotonic(), cost=0.1)  # ... and it snapshotted
        await waiting
        assert table.written == [] and stage.holding()  # the next one is an interval away

    asyncio.run(scenario())
