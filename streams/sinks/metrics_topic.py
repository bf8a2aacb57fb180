"""The `sales.metrics` topic (SPEC section 3, contract): a record per changed window, coalesced.

Every ``SALESPULSE_METRICS_INTERVAL_SECONDS`` (stretched in a backlog, below) one record per
window that changed since the last round (:mod:`streams.readout`), and once more, ``final``,
when the window closes. Records are :class:`metrics.snapshots.SnapshotFormat` JSON, keyed
``<scope>/<id>/<window>/<window start>`` (the topic is compacted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from metrics.snapshots import SnapshotFormat
from streams.pacing import BACKLOG, LEARN_WINDOWS, SLICE, WINDOW_COST, Pacing, Rounds, send_all
from streams.readout import Reader


class MetricsTopicSink:
    def __init__(self, reader: Reader, fmt: SnapshotFormat, *, topic: str,
                 send: Callable[..., Any], interval: float,
                 clock: Callable[[], float] = time.time, pacing: Pacing = BACKLOG) -> None:
        self.reader = reader
        self.fmt = fmt
        self.topic = topic
        self.send = send
        self.interval = interval
        self.clock = clock
        self.rounds = Rounds(0.0, pacing, unit_cost=WINDOW_COST, learn_from=LEARN_WINDOWS)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.publish()

    async def publish(self) -> None:
        """Records of the windows that changed, and final ones of closed windows.

        Paced by its cost on the loop like the aggregate's publication (:mod:`streams.pacing`):
        in a backlog every rep's windows change all the time, and a record per rep and window
        each second would take the worker's loop from the events."""
        now = self.clock()
        if not self.rounds.due(now, self.reader.pending):
            return
        fmt, topic = self.fmt, self.topic
        built = 0.0
        began = time.perf_counter()
        updates = self.reader.changed()
        built += time.perf_counter() - began

        def records() -> Iterator[tuple[str, bytes, bytes, None]]:
            # one at a time, each sent before the next is built: a round of 1,000 reps is
            # thousands of records (~30 MB), and a list of them all was that much more at once
            nonlocal built
            clock = time.perf_counter
            for u in updates:
                t = clock()
                record = (topic, fmt.key(u.scope, u.id, u.kind, u.start),
                          fmt.value(u.scope, u.id, u.team, u.kind, u.start, u.end, u.values,
                                    final=u.final, now=now), None)
                built += clock() - t
                yield record

        # in slices: this round is on no event's way to users, the live rounds are
        cost_sent, waited = await send_all(self.send, records(), slice_seconds=SLICE,
                                           rest=self.rounds.pacing.resting())
        self.rounds.done(now, built + cost_sent, waited, len(updates))
