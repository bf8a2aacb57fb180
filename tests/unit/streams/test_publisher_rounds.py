"""Rounds of roll-up partials split only what changed, and publish what whole splits publish.

A round reads, per changed window, only the reps and teams that its changed keys name
(``metrics.split_index``). Over the demo floor's every event type (calls, leads and their
response samples, opportunities with their open pipeline and cycle samples, surveys, spend,
roster changes with targets), the latest partial of every scope after rounds of a few bundles
each equals what one whole split of the final state publishes.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from metrics.events import LANE_LEAD, Bundle, Event, RepUpdated, Validator
from metrics.leads import LEAD_LANE_TYPES
from metrics.partials import DECODER
from metrics.state import PartitionState
from streams.demo.mix import SalesFloor
from streams.publisher import Publisher
from tests.unit.metrics.state.support import CAL, CAT
from tests.unit.streams.fakes import Clock

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def demo_bundles(n: int, seed: int) -> list[Bundle]:
    """The demo floor's records in bundles as the ingest stage forwards them (each lead event
    also in the lead lane), topics interleaved, each topic in its order."""
    validator = Validator()
    offsets: Counter[str] = Counter()
    by_topic: dict[str, list[Event]] = {}
    for record in SalesFloor(seed=seed, start=START).events(n):
        event = validator.decode(record.value, offsets[record.topic], START.timestamp() + 86400)
        offsets[record.topic] += 1
        by_topic.setdefault(record.topic, []).append(event)
    rng = random.Random(seed)
    queues: list[list[Bundle]] = []
    for topic, events in by_topic.items():
        queue = []
        i = 0
        while i < len(events):
            size = rng.randint(1, 30)
            chunk = events[i:i + size]
            queue.append(Bundle(topic, 0, chunk))
            leads = [e for e in chunk if e.type in LEAD_LANE_TYPES
                     and getattr(e.data, "lead_id", None) is not None]
            if leads:
                queue.append(Bundle(topic, 0, leads, LANE_LEAD))
            i += size
        queues.append(queue)
    out = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    return out


def latest(records, into: dict[bytes, bytes | None]) -> None:
    for _, key, value, _ in records:
        into[key] = value


def decoded(value: bytes) -> tuple:
    p = DECODER.decode(value)
    parts = p.parts
    sketches = {k: (s.bins, s.zeros, s.count, round(s.sum, 6)) for k, s in parts.sketches.items()}
    return p.scope, p.team, parts.sums, parts.samples, sketches


@pytest.mark.parametrize(("seed", "team_interval"), [(3, 0.0), (8, 0.0), (5, 0.5)])
def test_rounds_of_changed_scopes_publish_what_a_whole_split_publishes(seed, team_interval):
    """With ``team_interval``, team and organisation partials are held back between rounds and
    go out together: once their interval has passed, the latest parts are out all the same."""
    state = PartitionState(CAT, CAL, grace_seconds=86400.0 * 400)
    clock = Clock(1000.0)
    publisher = Publisher(partitions=4, rollup_topic="r", interval=0.0, clock=clock,
                          team_interval=team_interval)
    published: dict[bytes, bytes | None] = {}
    rng = random.Random(seed)
    bundles = demo_bundles(6000, seed)
    i = 0
    for offset, b in enumerate(bundles):
        state.apply(b, offset)
        i += 1
        if i >= rng.randint(1, 12):  # a round every few bundles, 0.1 s apart
            i = 0
            clock.t += 0.1
            latest(publisher.capture(0, state), published)
    clock.t += team_interval
    latest(publisher.capture(0, state), published)
    assert publisher.partial_reads > 2 * publisher.whole_reads  # most reads were partial

    # new targets for some reps (their windows' targets are read again, not the windows
    # whole), then one rep moves team (read whole)
    last = max(e.time for b in bundles for e in b.events)
    reps = sorted({k[1] for w in state.windows.values() for k in w.values if k[1]})[:5]
    whole_reads = publisher.whole_reads
    moves = [RepUpdated(rep, state.roster[rep].team, targets={"calls_made": {"day": 7.0 + i}})
             for i, rep in enumerate(reps)]
    state.apply(Bundle("sales.reps", 0, [Event(i, "hr", f"t-{i}", last + 1, d)
                                          for i, d in enumerate(moves)]), len(bundles))
    clock.t += team_interval
    latest(publisher.capture(0, state), published)
    assert publisher.whole_reads == whole_reads
    move = RepUpdated(reps[0], "team-moved", targets={"calls_made": {"day": 99.0}})
    state.apply(Bundle("sales.reps", 0, [Event(9, "hr", "t-9", last + 2, move)]), len(bundles) + 1)
    clock.t += team_interval
    latest(publisher.capture(0, state), published)
    assert publisher.whole_reads > whole_reads

    whole = Publisher(partitions=4, rollup_topic="r", interval=0.0)
    state._mark_all(state.windows)
    expected: dict[bytes, bytes | None] = {}
    latest(whole.capture(0, state), expected)
    assert whole.partial_reads == 0

    live = {k: v for k, v in published.items() if v is not None}
    assert set(live) == {k for k, v in expected.items() if v is not None}
    assert len(live) > 1000
    for key, value in expected.items():
        scope, team, sums, samples, sketches = decoded(value)
        got = decoded(live[key])
        assert got[:2] == (scope, team), key
        if scope in ("team", "org"):  # moved by differences: equal up to rounding
            assert got[2] == pytest.approx(sums, rel=1e-12), key
        else:
            assert got[2] == sums, key
        assert got[3] == samples, key
        assert got[4] == sketches, key


def test_a_worker_in_a_backlog_reads_windows_whole_and_keeps_no_index():
    """Behind, every rep changes between two rounds anyway: no index (~100 bytes a key) is kept;
    caught up again, the next rounds build it and read only what changed."""
    state = PartitionState(CAT, CAL, grace_seconds=86400.0 * 400)
    behind = [True]
    publisher = Publisher(partitions=4, rollup_topic="r", interval=0.0,
                          behind=lambda: behind[0])
    bundles = demo_bundles(4000, 4)
    half = len(bundles) // 2
    for offset, b in enumerate(bundles[:half]):
        state.apply(b, offset)
        if offset % 2 == 0:
            publisher.capture(0, state)
    assert publisher.whole_reads > 0 and publisher.partial_reads == 0
    assert not publisher._index
    behind[0] = False
    for offset, b in enumerate(bundles[half:], half):
        state.apply(b, offset)
        if offset % 2 == 0:
            publisher.capture(0, state)
    assert publisher._index and publisher.partial_reads > 0
