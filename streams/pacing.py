"""How often the output rounds run (roll-up publication, `sales.metrics`, Redis): the loop's time.

Every round shares the one event loop with the events. A round that costs ``c`` seconds of the
loop may run again after ``max(interval, factor * c)``: in a backlog, where every window changes
between rounds and a round of 1,000 reps costs tenths of a second, each kind of round then takes
at most ``1 / factor`` of the loop; live (small changes, cheap rounds) the interval holds.

Caught up, the cost is the loop's own time only: what the round computes, and its sends up to
the moment they return. A send that *waits* (the producer's buffer is full while the broker
takes a large snapshot) lets the events run meanwhile; counted as cost, one such wait of a second
paced the next round ten seconds out, and the latency from an event to Redis grew to tens of
seconds. In a backlog the waits count too: there they mean that the round's records compete with
the events' own (forwarded bundles, snapshots) for the producer, and the backlog's throughput
(until durable) is what the pacing is for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: A round that costs ``c`` seconds of the loop runs again no sooner than ``FACTOR * c`` later.
#: (Three times, once the worker was caught up, showed events sooner but ran the end of a
#: backlog at ~0.18 of bare instead of ~0.3: when a backlog ends every window has changed and
#: every kind of round is at its costliest; four kinds at a third of the loop each starve it.)
FACTOR = 10.0

#: The factor in a backlog, unless the app sets its own (``SALESPULSE_BACKLOG_ROUND_FACTOR``):
#: behind, values showing sooner matter less than catching up.
BACKLOG_FACTOR = FACTOR

#: Live: once the worker has not been in a backlog for :data:`SETTLED` seconds, a round on the
#: way of an event to what users see (``Rounds(live=True)``) waits this many times its cost.
#: Live rounds are small or cheap (a round of every rep's every window, at half the worker's
#: maximum rate, costs 0.2-0.4 s, and ten times that was most of an event's way to Redis); the
#: worker has headroom by definition (not behind), and should the rounds take too much of it
#: the lag grows past ``backlog_events``, which brings back :data:`FACTOR` at once. The end of
#: a backlog (every window changed, the costliest rounds, the lag just gone) is not live yet:
#: it keeps :data:`FACTOR` for :data:`SETTLED` seconds. (A factor of three or six for every
#: kind of round once caught up, without the settling, ran the end of a backlog at ~0.18 of
#: bare instead of ~0.30: docs/benchmark.md.)
LIVE_FACTOR = 4.0
SETTLED = 5.0
#: Live and light (``Pacing(light=...)``: the worker reads within a few hundred events of its
#: input's end): a live round waits only its own cost, or its interval. The events leave most of
#: the loop free at such rates, and four times a round's cost was most of an event's way at 200
#: events/s (rounds of 40-100 ms for 1,000 reps, every 0.2-0.5 s: p99 0.5-1.1 s to /metrics).
#: Should the rounds take the loop from the events, the lag grows past light at once, and
#: :data:`LIVE_FACTOR` holds again.
LIGHT_FACTOR = 1.0
#: The largest lag, in events, that is light (:data:`LIGHT_FACTOR`).
LIGHT_EVENTS = 1_000
#: Behind for less than this: a round held the loop (at half the maximum rate, a second of
#: rounds is ~10,000 events of lag), not a backlog: it does not start the settling again.
BLIP = 2.0

#: A round held for the work it would do counts it again at most this often, and when it may be
#: due: the work grows, and the factor changes when the worker catches up.
RECOUNT = 1.0

#: A sink's loop time per window it writes, until a round of :data:`LEARN_WINDOWS` windows or
#: more has measured its own (``Rounds(unit_cost=..., learn_from=...)``).
WINDOW_COST = 50e-6
LEARN_WINDOWS = 500

#: A send that took longer than this waited (for room in the producer's buffer) rather than
#: worked: its time is not the loop's. A send that does not wait returns in tens of microseconds.
WAITED = 0.002


#: A round off an event's way to users (``sales.metrics``) gives the loop back after this
#: much of it (``send_all(slice_seconds=...)``): at 200 events/s such a round carries most
#: windows (it is paced ten times its cost, and a few seconds change every rep) and held the
#: loop 0.7-1.1 s at once, every ~10 s, while the live rounds and the events waited behind it.
SLICE = 0.02
#: While the worker is light (:meth:`Pacing.resting`), such a round rests this many times each
#: slice's length after it: the rest of the worker has at least half the loop, in stretches
#: long enough for an event's whole way. A bare ``sleep(0)`` gave each other task one step a
#: slice, and an event's way through the worker (the consumer thread's hand-over, ingest, its
#: forward, the apply: dozens of awaits) waited for the whole round (probes at 200 events/s
#: after a backlog: 0.8 s behind a 0.54 s round of 14,000 windows). Not under load: there a
#: round's events wait anyway, and in two alternating pairs at half the maximum rate resting
#: looked worse (docs/benchmark.md, "Where an event waits at 200 events/s after a backlog").
REST = 1.0


async def send_all(send: Callable[..., Awaitable[Any]],
                   records: Iterable[tuple[str, bytes, bytes | None, int | None]],
                   slice_seconds: float | None = None, rest: float = 0.0) -> tuple[float, float]:
    """Send ``(topic, key, value, partition)`` records in order; return the loop's time they
    took, and the time those of them that waited took (see :data:`WAITED`). With
    ``slice_seconds``, give the loop back each time that much of it has passed since the last
    time (building the records included), for ``rest`` times as long (:data:`REST`; 0: one
    turn of the loop): what runs meanwhile is not the round's cost."""
    cost = waited = 0.0
    clock = time.perf_counter
    since = clock()
    for topic, key, value, partition in records:
        began = clock()
        if partition is None:
            await send(topic, key=key, value=value)
        else:
            await send(topic, key=key, value=value, partition=partition)
        done = clock()
        took = done - began
        if took < WAITED:
            cost += took
        else:
            waited += took
            since = done  # the send gave the loop back while it waited
        if slice_seconds is not None and done - since >= slice_seconds:
            await asyncio.sleep((done - since) * rest)
            since = clock()
    return cost, waited


def gap(interval: float, cost: float, factor: float = FACTOR) -> float:
    """How long after a round that cost ``cost`` seconds of the loop the next may run."""
    return max(interval, factor * cost)


class Pacing:
    """Whether a round's sends' waits count as its cost: while ``behind()`` (the worker's lag
    is a backlog) they do, once caught up they do not; and how many times its cost a round
    waits: ``backlog_factor`` in a backlog, caught up :data:`FACTOR`, or for a live round
    :data:`LIVE_FACTOR` once :data:`SETTLED` seconds (by ``clock``) have passed since the last
    backlog. A lag past the backlog's bound for less than :data:`BLIP` seconds (a costly round
    held the loop) is paced by :data:`FACTOR`, not ``backlog_factor``, while it lasts, and does
    not start the settling again. A worker is assumed to start in a backlog."""

    def __init__(self, behind: Callable[[], bool] = lambda: True,
                 backlog_factor: float = BACKLOG_FACTOR,
                 clock: Callable[[], float] = time.monotonic,
                 backlog_interval: float = 0.0,
                 light: Callable[[], bool] = lambda: False) -> None:
        self.behind = behind
        self.light = light
        self.backlog_factor = backlog_factor
        self.clock = clock
        #: in a backlog (and a live round until the worker has settled) no round runs more
        #: often than this, whatever its own interval: a live interval of 0.1 s (roll-up
        #: partials) made a group of two workers, whose rounds are cheap (half the partitions
        #: each), publish ten times as often in a backlog as it could use
        self.backlog_interval = backlog_interval
        self._backlog_at = clock()  # the last time the worker was in a backlog (start: assumed)
        #: since when it is behind, while it is (start: assumed a backlog, not a blip)
        self._behind_since: float | None = self._backlog_at - BLIP
        #: when the worker was last found light since its last backlog (settled early)
        self._light_at = float("-inf")

    @property
    def backlog_at(self) -> float:
        """The last time (by ``clock``) the worker was found in a backlog (at start: then)."""
        return self._backlog_at

    def next_round(self, now: float, interval: float, cost: float, waited: float = 0.0,
                   live: bool = False) -> float:
        """When a round done at ``now`` may run again (:meth:`gap` after it)."""
        return now + self.gap(interval, cost, waited, live)

    def gap(self, interval: float, cost: float, waited: float = 0.0, live: bool = False) -> float:
        """How long after a round the next may run: ``cost`` is the loop's time it took,
        ``waited`` the time its sends waited for the producer (counted in a backlog only).
        Read when asked: a round long enough to put the worker behind while it ran (its sends
        waited) does not hold off the next for ten times its waits once it has caught up.
        ``live``: a round on the way of an event to what users see, paced by
        :data:`LIVE_FACTOR` once the worker has settled."""
        at = self.clock()
        if self.behind():
            if self._behind_since is None:
                self._behind_since = at
            if at - self._behind_since >= BLIP:
                self._backlog_at = at
                return gap(max(interval, self.backlog_interval), cost + waited,
                           self.backlog_factor)
            # a blip: FACTOR at once, but not the backlog's factor (thirty times a live round of
            # 0.3 s held Redis and /metrics back for the whole blip, and a blip is what a costly
            # round itself makes at half the maximum rate)
            return gap(interval, cost + waited)
        self._behind_since = None
        if not live:
            return gap(interval, cost)
        if not self._settled(at):
            # not settled yet (the end of a backlog): a live round no more often than in one
            return gap(max(interval, self.backlog_interval), cost)
        return gap(interval, cost, LIGHT_FACTOR if self.light() else LIVE_FACTOR)

    def resting(self) -> float:
        """How long a sliced round off the events' way rests after each slice, in slices
        (``send_all(rest=...)``): :data:`REST` while the worker is light, else 0."""
        return REST if not self.behind() and self.light() else 0.0

    def settled(self) -> bool:
        """Not behind, and not since :data:`SETTLED` seconds, or light since the last backlog
        (once light, settled until the next backlog: a lag that comes and goes does not make the
        publisher drop its indexes and build them again): the live pace holds."""
        return not self.behind() and self._settled(self.clock())

    def _settled(self, at: float) -> bool:
        if at - self._backlog_at >= SETTLED or self._light_at >= self._backlog_at:
            return True
        if self.light():
            self._light_at = at
            return True
        return False



#: Pacing without a lag to go by: always as in a backlog.
BACKLOG = Pacing()


class Rounds:
    """One kind of round's pace: due ``interval`` after the last, or :data:`FACTOR` times its
    cost (see :class:`Pacing`), whichever is later. ``live``: the round is on the way of an
    event to /metrics, Redis and SSE (roll-up partials, the Redis sink), paced by
    :data:`LIVE_FACTOR` once the worker has settled; the others (``sales.metrics``, which
    coalesces per interval anyway, and snapshots) keep :data:`FACTOR`, so that all kinds
    together do not take the loop from the events.

    The cost that paces a round is the larger of the last round's and, when the caller says
    how much work the next one has (``due(now, work)``: windows or keys to read), that work
    at the loop's time per unit of the last round that had at least ``learn_from`` units
    (before one did: ``unit_cost``). Paced by the last round's cost alone, the first round of
    a backlog ran right after a cheap one (a second into the backlog, when nothing was durable
    yet to publish) and read every window of every rep: 1.1 s of a 5 s backlog in the
    benchmark, where the pacing means to allow one thirtieth.
    """

    def __init__(self, interval: float, pacing: Pacing = BACKLOG, live: bool = False,
                 unit_cost: float = 0.0, learn_from: int = 1,
                 start: float = float("-inf")) -> None:
        self.interval = interval
        self.pacing = pacing
        self.live = live
        self.last = float("-inf")  # when the last round was done
        self.cost = 0.0  # the loop's time it took
        self.waited = 0.0  # the time its sends waited for the producer
        #: the loop's time per unit of work (known before a round runs, unlike its cost)
        self.unit_cost = unit_cost
        #: a round with fewer units does not teach the unit cost (its fixed costs dominate)
        self.learn_from = learn_from
        self._held = float("-inf")  # not due before this, for the work last counted
        #: before the first round, its work is paced from this moment (default: the first
        #: round is due at once, whatever its work)
        self.start = start
        self._counted = float("-inf")  # when the work was last counted
        #: totals since start, for the service's own metrics (streams.exposition)
        self.count = 0  # rounds done
        self.seconds = 0.0  # the loop's time they took
        self.waited_seconds = 0.0  # the time their sends waited for the producer
        self.units = 0  # the units of work they read (keys, windows)

    def next_at(self) -> float:
        return self.pacing.next_round(self.last, self.interval, self.cost, self.waited, self.live)

    def pace(self) -> float | None:
        """How far after the last round the pace puts the next one now (seconds; None before
        the first round): with the round's cost, what an event waits for it at most."""
        if self.count == 0:
            return None
        # the gap itself, not ``next_at() - last``: with ``last`` from the wall clock
        # (~1.7e9 s) that difference lost the interval's last digits (0.0999999 for 0.1)
        return max(self.pacing.gap(self.interval, self.cost, self.waited, self.live),
                   self._held - self.last)

    def due(self, now: float, work: Callable[[], int] | None = None) -> bool:
        """Whether the round may run; ``work``: counts the units the round would read (called
        only when the last round's cost allows the round; its count only grows until a round
        reads it: a round held for it is asked again when it could be due, or after
        :data:`RECOUNT` seconds, when the pace may have changed)."""
        if now < self.next_at() or (now < self._held and now < self._counted + RECOUNT):
            return False
        if work is None or not self.unit_cost:
            return True
        self._counted = now
        predicted = work() * self.unit_cost
        if predicted <= self.cost:
            return True
        # before the first round, from ``start``
        last = self.last if self.last > float("-inf") else self.start
        self._held = self.pacing.next_round(last, self.interval, predicted, self.waited, self.live)
        return now >= self._held

    def done(self, now: float, cost: float, waited: float = 0.0, work: int = 0) -> None:
        """A round began at ``now``, took ``cost`` of the loop and read ``work`` units."""
        self.last, self.cost, self.waited = now, cost, waited
        self._held = float("-inf")
        self.count += 1
        self.seconds += cost
        self.waited_seconds += waited
        self.units += work
        if work >= self.learn_from and work > 0:
            self.unit_cost = cost / work
