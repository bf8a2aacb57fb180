"""The Redis sink's leaderboard changes (``RedisSink._rank``): what it keeps of a rep's window
between two leaderboard writes, and the changes it gives from it. No I/O: the client is never
used."""

from __future__ import annotations

import math

from metrics.catalog import Catalog
from metrics.snapshots import SnapshotFormat
from metrics.windows import KIND_INDEX, Calendar
from streams.readout import Readout, WindowUpdate
from streams.redis_layout import Layout
from streams.rollup import RollupStage
from streams.sinks import redis as redis_sink

CAT, CAL = Catalog(), Calendar("UTC")
DAY = KIND_INDEX["day"]
START = 1_777_000_000.0 - 1_777_000_000.0 % 86400


def sink() -> redis_sink.RedisSink:
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=60.0,
                        consumer_factory=None)  # type: ignore[arg-type]
    readout = Readout(stage, grace_seconds=60.0)
    return redis_sink.RedisSink(
        readout.reader("redis"), readout, redis_sink.client("redis://127.0.0.1:1/0", 1.0),
        Layout("app"), SnapshotFormat(CAT, CAL), CAT, interval=1.0, grace_seconds=60.0,
        overdue=dict)  # type: ignore[arg-type]


def update(values: dict[tuple, float], team: str = "east") -> WindowUpdate:
    return WindowUpdate("rep", "ann", team, DAY, START, START + 86400, values, False)


def changes(s: redis_sink.RedisSink, u: WindowUpdate) -> list[tuple[str, object]]:
    boards: list = []
    s._rank(u, boards)
    return list(zip(boards[::2], boards[1::2], strict=True))


def test_only_the_ranked_values_are_kept_between_writes_and_changes_compare_with_them() -> None:
    """A rep's window keeps, until its next leaderboard write, the values of its ranked KPIs
    only: it kept the window's whole values dict, and under load (a rep's values replaced every
    round, the leaderboards written every few seconds) that was a second copy of every rep's
    values."""
    s = sink()
    values = {("calls_made",): 3.0, ("calls_connected",): 1.0, ("tool_uses", "dialer"): 2.0,
              ("call_outcomes", "connected"): 1.0}
    first = changes(s, update(values))
    day = f"day:{START:.0f}"
    assert first == [(f"app:lb:{day}:calls_made", 3.0), (f"app:lbt:{day}:calls_made:east", 3.0),
                     (f"app:lb:{day}:calls_connected", 1.0),
                     (f"app:lbt:{day}:calls_connected:east", 1.0)]
    assert s._ranked[("ann", DAY, START)][1] == {("calls_made",): 3.0, ("calls_connected",): 1.0}
    assert changes(s, update(dict(values))) == []  # nothing ranked changed
    more = changes(s, update({**values, ("calls_made",): 4.0}))
    assert more == [(f"app:lb:{day}:calls_made", 4.0), (f"app:lbt:{day}:calls_made:east", 4.0)]
    gone = changes(s, update({("calls_connected",): 1.0}))
    assert gone == [(f"app:lb:{day}:calls_made", False), (f"app:lbt:{day}:calls_made:east", False)]


def test_a_value_that_is_not_finite_leaves_the_boards_and_a_team_change_moves_the_rep() -> None:
    s = sink()
    day = f"day:{START:.0f}"
    changes(s, update({("calls_made",): 3.0}))
    assert changes(s, update({("calls_made",): math.nan})) == [
        (f"app:lb:{day}:calls_made", False), (f"app:lbt:{day}:calls_made:east", False)]
    assert changes(s, update({("calls_made",): 5.0}, team="west")) == [
        (f"app:lbt:{day}:calls_made:east", False),
        (f"app:lb:{day}:calls_made", 5.0), (f"app:lbt:{day}:calls_made:west", 5.0)]
