"""How often the output rounds run (roll-up publication, `sales.metrics`, Redis): the loop's time.

Every round shares the one event loop with the events. A round that costs ``c`` seconds of the
loop may run again after ``max(interval, factor * c)``: in a backlog, where every window changes
between rounds and a round of 1,000 reps costs tenths of a second, each kind of round then takes
at most ``1 / factor`` of the loop; live (small changes, cheap rounds) the interval holds.

The cost is the loop's own time only: what the round computes, and its sends up to the moment
they return. A send that *waits* (the producer's buffer is full while the broker takes a large
snapshot) lets the events run meanwhile; counted as cost, one such wait of a second paced the
next round ten seconds out, and the latency from an event to Redis grew to tens of seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: A round that costs ``c`` seconds of the loop runs again no sooner than ``FACTOR * c`` later.
FACTOR = 10.0

#: A send that took longer than this waited (for room in the producer's buffer) rather than
#: worked: its time is not the loop's. A send that does not wait returns in tens of microseconds.
WAITED = 0.002


async def send_all(send: Callable[..., Awaitable[Any]],
                   records: Iterable[tuple[str, bytes, bytes | None, int | None]]) -> float:
    """Send ``(topic, key, value, partition)`` records in order; return the loop's time they
    took, without the time any of them waited (see :data:`WAITED`)."""
    cost = 0.0
    clock = time.perf_counter
    for topic, key, value, partition in records:
        began = clock()
        if partition is None:
            await send(topic, key=key, value=value)
        else:
            await send(topic, key=key, value=value, partition=partition)
        took = clock() - began
        if took < WAITED:
            cost += took
    return cost


def next_round(now: float, interval: float, cost: float) -> float:
    """When a round that began at ``now`` and cost ``cost`` seconds of the loop may run again."""
    return now + max(interval, FACTOR * cost)
