"""The Redis sink against the session's real Redis, fed by a real roll-up stage and readout:
a rep whose team changes moves between team leaderboards, values are whole and idempotent,
and a scope left with no values is deleted."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis import Redis

from metrics.catalog import Catalog
from metrics.partials import ENCODER, make_partial, partial_key
from metrics.rollup import Parts
from metrics.snapshots import SnapshotFormat
from metrics.windows import KIND_INDEX, Calendar
from streams.readout import Readout
from streams.redis_layout import Layout
from streams.rollup import RollupStage
from streams.sinks.redis import RedisSink, client
from tests.integration.harness import REDIS_URL, unique

pytestmark = pytest.mark.integration

CAT, CAL = Catalog(), Calendar("UTC")
DAY = KIND_INDEX["day"]
GRACE = 60.0


def put(stage: RollupStage, rep: str, team: str, calls: float, version: int,
        window: str = "day") -> None:
    kind = KIND_INDEX[window]
    start, end = CAL.bounds(window, time.time())
    parts = Parts(sums={("calls_made",): calls} if calls else {}, samples={})
    partial = make_partial("rep", rep, kind, start, end, 0, version, parts, team)
    stage._apply(0, partial_key("rep", rep, kind, start, 0), ENCODER.encode(partial))


def assigned_stage() -> tuple[RollupStage, Readout]:
    """A roll-up stage that owns roll-up partition 0 (fed by :func:`put`), and its read-out."""
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None)  # type: ignore[arg-type]
    stage.assign([0])
    stage._assigned = {0}  # as its run loop does once assigned
    return stage, Readout(stage, grace_seconds=GRACE)


async def next_round(sink: RedisSink) -> None:
    """A round of the sink, once it is due (rounds are paced by their cost), with its
    leaderboard writes (they go out while the next round's values do)."""
    await asyncio.sleep(max(0.0, sink.rounds.next_at() - time.time()))
    await sink.tick()
    await sink.boards_written()


def test_a_rep_changing_team_moves_between_boards_and_an_empty_scope_is_deleted(bootstrap: str) -> None:
    app_id = unique("sink")
    stage, readout = assigned_stage()
    layout = Layout(app_id)
    sync = Redis.from_url(REDIS_URL)
    start = int(CAL.bounds("day", time.time())[0])

    async def scenario() -> None:
        sink = RedisSink(readout.reader("redis"), readout, client(REDIS_URL, 2.0), layout,
                         SnapshotFormat(CAT, CAL), CAT, interval=0.0, grace_seconds=GRACE,
                         overdue=lambda: {0: {}})
        put(stage, "ann", "east", 3, 1)
        put(stage, "bob", "east", 5, 1)
        await next_round(sink)  # first round: a full write
        assert sink.up and sink.resyncs == 1
        assert dict(sync.zrevrange(layout.board("day", start, "calls_made"), 0, -1, withscores=True)) \
            == {b"bob": 5.0, b"ann": 3.0}
        assert dict(sync.zrevrange(layout.board("day", start, "calls_made", "east"), 0, -1,
                                   withscores=True)) == {b"bob": 5.0, b"ann": 3.0}
        fields = sync.hgetall(layout.kpis("day", start, "rep", "ann"))
        assert fields[b"team"] == b"east" and json.loads(fields[b"kpis"])["calls_made"] == 3.0
        assert sync.ttl(layout.board("day", start, "calls_made")) > 0

        put(stage, "ann", "west", 4, 2)  # the roster moved ann: her window now says west
        await next_round(sink)
        assert dict(sync.zrevrange(layout.board("day", start, "calls_made", "east"), 0, -1,
                                   withscores=True)) == {b"bob": 5.0}
        assert dict(sync.zrevrange(layout.board("day", start, "calls_made", "west"), 0, -1,
                                   withscores=True)) == {b"ann": 4.0}
        assert sync.zscore(layout.board("day", start, "calls_made"), "ann") == 4.0
        assert sync.ttl(layout.board("day", start, "calls_made", "west")) > 0  # a new board

        put(stage, "bob", "east", 0, 2)  # bob's window lost its values (its parts moved away)
        await next_round(sink)
        assert not sync.exists(layout.kpis("day", start, "rep", "bob"))
        assert sync.zscore(layout.board("day", start, "calls_made"), "bob") is None
        assert sync.zscore(layout.board("day", start, "calls_made", "east"), "bob") is None

        await sink.redis.aclose()

    asyncio.run(scenario())


def test_every_changed_window_of_a_scope_is_written_and_announced_in_one_round(bootstrap: str) -> None:
    """A rep's round writes all of its windows that changed (one script call per scope): each
    window's hash, its leaderboard entries with their expiry, and one message per window."""
    app_id = unique("sink")
    stage, readout = assigned_stage()
    layout = Layout(app_id)
    sync = Redis.from_url(REDIS_URL)
    windows = ("hour", "day", "week")
    starts = {w: int(CAL.bounds(w, time.time())[0]) for w in windows}

    async def scenario() -> None:
        sink = RedisSink(readout.reader("redis"), readout, client(REDIS_URL, 2.0), layout,
                         SnapshotFormat(CAT, CAL), CAT, interval=0.0, grace_seconds=GRACE,
                         overdue=lambda: {0: {}})
        put(stage, "cy", "north", 1, 1, "day")
        await next_round(sink)  # the first round: a full write
        pubsub = sync.pubsub()
        pubsub.psubscribe(layout.channel_pattern("rep", None, "cy"))
        assert pubsub.get_message(timeout=2.0)["type"] == "psubscribe"
        for n, window in enumerate(windows):
            put(stage, "cy", "north", 2 + n, 2, window)
        put(stage, "dee", "north", 9, 2, "day")
        await next_round(sink)
        for n, window in enumerate(windows):
            fields = sync.hgetall(layout.kpis(window, starts[window], "rep", "cy"))
            assert json.loads(fields[b"kpis"])["calls_made"] == 2 + n, window
            assert sync.ttl(layout.kpis(window, starts[window], "rep", "cy")) > 0
            board = layout.board(window, starts[window], "calls_made", "north")
            assert sync.zscore(board, "cy") == 2 + n and sync.ttl(board) > 0
        assert sync.zscore(layout.board("day", starts["day"], "calls_made"), "dee") == 9
        messages = []
        while (m := pubsub.get_message(timeout=1.0)) is not None:
            messages.append(json.loads(m["data"]))
        assert sorted(m["window"] for m in messages) == sorted(windows)
        assert {m["kpis"]["calls_made"] for m in messages} == {2, 3, 4}
        pubsub.close()
        await sink.redis.aclose()

    asyncio.run(scenario())


def test_leaderboards_are_coalesced_to_their_interval_while_values_go_out_every_round(
        bootstrap: str) -> None:
    """SALESPULSE_REDIS_BOARD_INTERVAL_SECONDS: a rep's value and message go out at once,
    its leaderboard entries at most once per interval, with the latest value."""
    app_id = unique("sink")
    stage, readout = assigned_stage()
    layout = Layout(app_id)
    sync = Redis.from_url(REDIS_URL)
    start = int(CAL.bounds("day", time.time())[0])
    board = layout.board("day", start, "calls_made")

    async def scenario() -> None:
        sink = RedisSink(readout.reader("redis"), readout, client(REDIS_URL, 2.0), layout,
                         SnapshotFormat(CAT, CAL), CAT, interval=0.0, grace_seconds=GRACE,
                         overdue=lambda: {0: {}}, board_interval=1.0)
        put(stage, "eve", "south", 1, 1)
        began = time.time()  # before the round's clock: the board is due again no sooner
        await next_round(sink)  # the full write: leaderboards too
        assert sync.zscore(board, "eve") == 1.0
        for calls in (2, 3):
            put(stage, "eve", "south", calls, calls)
            await next_round(sink)
            fields = sync.hgetall(layout.kpis("day", start, "rep", "eve"))
            assert json.loads(fields[b"kpis"])["calls_made"] == calls  # the value: at once
        if time.time() - began < 1.0:
            assert sync.zscore(board, "eve") == 1.0  # the board: not again in the interval
        await asyncio.sleep(max(0.0, began + 1.0 - time.time()))
        # nothing new: the pending entry goes out once due (a round paced a second after the
        # first, on a slow box, wrote the board with 2: due again a little later)
        for _ in range(30):
            await next_round(sink)
            if sync.zscore(board, "eve") == 3.0:
                break
            await asyncio.sleep(0.1)
        assert sync.zscore(board, "eve") == 3.0
        await sink.redis.aclose()

    asyncio.run(scenario())


def test_a_rounds_cost_counts_reading_its_windows_out(bootstrap: str) -> None:
    """A round's cost paces the next (:mod:`streams.pacing`). Reading the changed windows out
    (each finished into its values) is the round's work on the loop as much as building its
    commands, and the metrics topic sink counts it; the Redis sink did not (its count began
    after the read-out), so a read-out that held the loop did not slow the rounds down."""
    stage, readout = assigned_stage()
    reader = readout.reader("redis")
    read = reader.changed

    def changed() -> list:  # a read-out that takes 50 ms of the loop
        deadline = time.perf_counter() + 0.05
        while time.perf_counter() < deadline:
            pass
        return read()

    reader.changed = changed  # type: ignore[method-assign]

    async def scenario() -> None:
        sink = RedisSink(reader, readout, client(REDIS_URL, 2.0), Layout(unique("sink")),
                         SnapshotFormat(CAT, CAL), CAT, interval=0.0, grace_seconds=GRACE,
                         overdue=lambda: {0: {}})
        put(stage, "eve", "north", 1, 1)
        await next_round(sink)  # the first round: a full write
        put(stage, "eve", "north", 2, 2)
        await next_round(sink)
        assert sink.rounds.count == 2
        assert sink.rounds.cost >= 0.05
        await sink.redis.aclose()

    asyncio.run(scenario())
