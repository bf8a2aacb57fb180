"""The sales.metrics sink: a round's records are built as they are sent, not all at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from metrics.catalog import Catalog
from metrics.partials import ENCODER, make_partial, partial_key
from metrics.rollup import Parts
from metrics.snapshots import SnapshotFormat
from metrics.windows import KIND_INDEX, Calendar
from streams.pacing import SLICE
from streams.readout import Readout
from streams.rollup import RollupStage
from streams.sinks.metrics_topic import MetricsTopicSink

CAT = Catalog()
CAL = Calendar("UTC")
DAY = KIND_INDEX["day"]
START, END = 86400.0 * 100, 86400.0 * 101


class CountingFormat(SnapshotFormat):
    """The sink's record format, counting the records it has built."""

    built = 0

    def value(self, *args: Any, **kwargs: Any) -> bytes:
        self.built += 1
        return super().value(*args, **kwargs)


def test_a_round_builds_each_record_just_before_its_send() -> None:
    """With 1,000 reps a round is thousands of records (~30 MB): held in a list before the
    first send, they were that much more in the worker's peak memory."""
    clock = lambda: START + 60  # noqa: E731
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=10.0,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    for i in range(5):
        parts = Parts(sums={("calls_made",): float(i + 1)}, samples={})
        partial = make_partial("rep", f"rep-{i}", DAY, START, END, 0, 1, parts, "east")
        stage._apply(0, partial_key("rep", f"rep-{i}", DAY, START, 0), ENCODER.encode(partial))
    fmt = CountingFormat(CAT, CAL)
    built_at_send: list[int] = []
    sent: list[bytes] = []

    async def send(topic: str, *, key: bytes, value: bytes) -> None:
        built_at_send.append(fmt.built)
        sent.append(key)

    sink = MetricsTopicSink(Readout(stage, grace_seconds=10.0, clock=clock).reader("m"), fmt,
                            topic="m", send=send, interval=0.0, clock=clock)
    asyncio.run(sink.publish())
    assert len(sent) == 5
    assert built_at_send == [1, 2, 3, 4, 5]


OTHER_STEP = 0.1


def test_a_long_round_gives_the_loop_back_in_slices() -> None:
    """A round of most windows (at 200 events/s, paced ten times its cost, it carries nearly
    every rep) held the loop 0.7-1.1 s at once: the live rounds (roll-up partials, Redis) and
    the events waited behind it. It gives the loop back every SLICE seconds of its own work,
    in order, and what runs meanwhile is not its cost."""
    clock = lambda: START + 60  # noqa: E731
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=10.0,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    reps = 60
    for i in range(reps):
        parts = Parts(sums={("calls_made",): float(i + 1)}, samples={})
        partial = make_partial("rep", f"rep-{i}", DAY, START, END, 0, 1, parts, "east")
        stage._apply(0, partial_key("rep", f"rep-{i}", DAY, START, 0), ENCODER.encode(partial))
    sent: list[bytes] = []
    others: list[int] = []  # how many records were sent each time another task ran
    sending = [0.0]  # the loop's time inside the sends, as measured here

    async def send(topic: str, *, key: bytes, value: bytes) -> None:
        began = time.perf_counter()
        deadline = began + SLICE / 20  # work on the loop (< WAITED), no wait
        while time.perf_counter() < deadline:
            pass
        sent.append(key)
        sending[0] += time.perf_counter() - began

    async def other() -> None:
        while True:
            others.append(len(sent))
            deadline = time.perf_counter() + OTHER_STEP  # another task's work on the loop
            while time.perf_counter() < deadline:
                pass
            await asyncio.sleep(0)

    async def scenario() -> None:
        task = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        others.clear()
        await sink.publish()
        task.cancel()

    sink = MetricsTopicSink(Readout(stage, grace_seconds=10.0, clock=clock).reader("m"),
                            SnapshotFormat(CAT, CAL), topic="m", send=send, interval=0.0,
                            clock=clock)
    asyncio.run(scenario())
    assert len(sent) == reps == len(set(sent))
    # the other task ran between the records, not only once the round was over (about every
    # 20 sends; fewer on a busy box: a send stretched past WAITED counts as a wait, and a wait
    # starts the slice again)
    during = [n for n in others if 0 < n < reps]
    assert during
    # its own sends' time and the building of its records, not the other task's steps (each
    # OTHER_STEP long, at least one of them during the round); measured against the sends'
    # own time, so that a busy box that stretches them does not fail the test
    assert sink.rounds.seconds < sending[0] + OTHER_STEP
