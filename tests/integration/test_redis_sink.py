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


def put(stage: RollupStage, rep: str, team: str, calls: float, version: int) -> None:
    start, end = CAL.bounds("day", time.time())
    parts = Parts(sums={("calls_made",): calls} if calls else {}, samples={})
    partial = make_partial("rep", rep, DAY, start, end, 0, version, parts, team)
    stage._apply(0, partial_key("rep", rep, DAY, start, 0), ENCODER.encode(partial))


async def next_round(sink: RedisSink) -> None:
    """A round of the sink, once it is due (rounds are paced by their cost)."""
    await asyncio.sleep(max(0.0, sink.rounds.next_at() - time.time()))
    await sink.tick()


def test_a_rep_changing_team_moves_between_boards_and_an_empty_scope_is_deleted(bootstrap: str) -> None:
    app_id = unique("sink")
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None)  # type: ignore[arg-type]
    stage.assign([0])
    stage._assigned = {0}  # as its run loop does once assigned
    readout = Readout(stage, grace_seconds=GRACE)
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

        put(stage, "bob", "east", 0, 2)  # bob's window lost its values (its parts moved away)
        await next_round(sink)
        assert not sync.exists(layout.kpis("day", start, "rep", "bob"))
        assert sync.zscore(layout.board("day", start, "calls_made"), "bob") is None
        assert sync.zscore(layout.board("day", start, "calls_made", "east"), "bob") is None

        await sink.redis.aclose()

    asyncio.run(scenario())
