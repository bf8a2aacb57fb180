"""The crash harness of the state tests: generated input as the ingest stage forwards it,
snapshots written as bounded records and cut short, restores, and a fingerprint of the state.
"""

from __future__ import annotations

import random

from metrics.events import (
    Bundle,
    Event,
    RepUpdated,
)
from metrics.parts import PartSplitter
from metrics.state import PartitionState
from tests.unit.metrics.state.support import (
    CAL,
    CAT,
    LOST_REP,
    ROSTER_REP,
    T0,
    TOPIC,
    random_activity,
    remembered,
)

GRACE, HORIZON = 120.0, 900.0


def generate(rng: random.Random) -> list[Bundle]:
    """Bundles as the ingest stage would forward them from a few source partitions: producer
    duplicates, out-of-order and late events, events near and beyond the dedup horizon, roster
    updates, and stretches forwarded again after an ingest crash."""
    sources = [(TOPIC, 0), (TOPIC, 1), ("sales.reps", 0)]
    streams: dict[tuple[str, int], list[Event]] = {s: [] for s in sources}
    clock = T0 + rng.uniform(0, 3600)
    history: list[Event] = []
    for _ in range(rng.randint(150, 500)):
        clock += rng.expovariate(1 / 12.0)
        src = rng.choice(sources[:2]) if rng.random() < 0.95 else sources[2]
        stream = streams[src]
        r = rng.random()
        if history and r < 0.12:  # a producer duplicate of an earlier event
            orig = rng.choice(history[-200:])
            # half of them re-stamped (a producer that sets ``time`` when it re-sends)
            t = orig.time if rng.random() < 0.5 else float(int(clock - rng.uniform(0, 2 * GRACE)))
            stream.append(Event(len(stream), orig.source, orig.id, t, orig.data))
            continue
        lag = rng.uniform(0, 20)
        if r < 0.25:
            lag = rng.uniform(0, 1.5 * GRACE)
        elif r < 0.32:
            lag = rng.uniform(HORIZON - 200, HORIZON + 60)
        if src[0] == "sales.reps":
            data = RepUpdated(rng.choice([ROSTER_REP, LOST_REP, "rep-0"]),
                              team_id=rng.choice(["team-c", "team-d", None]))
        else:
            data = random_activity(rng)
        e = Event(len(stream), rng.choice(["dialer/a", "mail/b"]), f"{rng.getrandbits(40):x}",
                  float(int(clock - lag)), data)
        stream.append(e)
        history.append(e)
    cursors = dict.fromkeys(sources, 0)
    bundles: list[Bundle] = []
    while any(cursors[s] < len(streams[s]) for s in sources):
        src = rng.choice([s for s in sources if cursors[s] < len(streams[s])])
        if rng.random() < 0.08:  # the ingest stage restarts from an earlier position
            cursors[src] = max(0, cursors[src] - rng.randint(1, 12))
        n = rng.randint(1, 12)
        events = streams[src][cursors[src] : cursors[src] + n]
        cursors[src] += len(events)
        bundles.append(Bundle(src[0], src[1], events))
    return bundles


def fingerprint(state: PartitionState) -> dict:
    state.expire()
    # Settled leads go at most once per minute of watermark: forget them as of now on both
    # sides (that changes no result, see PartitionState.expire).
    state.leads.expire(state.watermark - state.horizon)
    return {
        "windows": {k: dict(p.values) for k, p in state.windows.items()},
        "samples": {k: {s: v for s, v in p.samples.items() if v} for k, p in state.windows.items()},
        "leads": dict(state.leads.leads),
        "waiting": set(state.leads.waiting),
        "resolved": {
            k: state.window_values(*k) for k in state.windows
        },
        "seen": remembered(state),
        "watermark": state.watermark,
        "roster": dict(state.roster),
        "sources": dict(state.sources),
    }


def write(changelog: dict[str, bytes], parts: list[tuple[str, bytes | None]]) -> None:
    for key, value in parts:
        if value is None:
            changelog.pop(key, None)
        else:
            changelog[key] = value


PART_BOUND = 256  # bytes: most parts are written in chunks (metrics.parts)


def run_with_crashes(bundles: list[Bundle], rng: random.Random, **extra) -> tuple[PartitionState, int]:
    """Apply with random crashes; snapshots are written as bounded records (metrics.parts), as
    the worker writes them, and cut short at any record."""
    kw = {"grace_seconds": GRACE, "dedup_horizon_seconds": HORIZON, **extra}
    changelog: dict[str, bytes] = {}
    state = PartitionState(CAT, CAL, **kw)
    splitter = PartSplitter(PART_BOUND)
    crashes = 0
    budget = rng.randint(1, 5)
    i = 0

    def crash() -> tuple[PartitionState, PartSplitter, int]:
        items = list(changelog.items())
        rng.shuffle(items)
        splitter, parts = PartSplitter.assemble(items, PART_BOUND)
        restored = PartitionState.restore(parts, CAT, CAL, **kw)
        # the consumer resumes at or before the last complete snapshot
        return restored, splitter, rng.randint(0, restored.meta_stamp + 1)

    while i < len(bundles):
        state.apply(bundles[i], i)
        i += 1
        if rng.random() < 0.3:
            if rng.random() < 0.7:
                state.expire()
            records = splitter.split(state.snapshot())
            if crashes < budget and rng.random() < 0.3:
                write(changelog, records[: rng.randint(0, len(records))])  # cut short (or not)
                state, splitter, i = crash()
                crashes += 1
            else:
                write(changelog, records)
        elif crashes < budget and rng.random() < 0.04:
            state, splitter, i = crash()  # between snapshots: the in-memory progress is lost
            crashes += 1
    return state, crashes
