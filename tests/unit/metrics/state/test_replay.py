"""Exact replay: random crashes, including in the middle of writing a snapshot, give the
same state as one uninterrupted pass; the exact path of replayed records gives the state the
fast path gives.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from metrics.catalog import KPI, Catalog
from metrics.events import (
    LANE_KPI,
    LANE_LEAD,
    Bundle,
    CallCompleted,
    EmailSent,
    Event,
    LeadAssigned,
    LeadCreated,
    LeadLost,
    ToolUsed,
    Validator,
)
from metrics.labels import LabelCaps
from metrics.leads import LEAD_LANE_TYPES
from metrics.state import PartitionState
from streams.demo.mix import SalesFloor
from tests.unit.metrics.state.crashes import (
    GRACE,
    HORIZON,
    fingerprint,
    generate,
    run_with_crashes,
    write,
)
from tests.unit.metrics.state.support import (
    CAL,
    CAT,
    DAY,
    T0,
    TOPIC,
    apply_all,
    ev,
    new_state,
    of,
    window,
)

# -- crash exactness -------------------------------------------------------------------------


@pytest.mark.parametrize("block", range(4))
def test_crash_exactness_property(block):
    """Random crashes at random moments, including in the middle of writing a snapshot, give
    the same state as one uninterrupted pass."""
    crashes = 0
    for seed in range(block * 50, (block + 1) * 50):
        rng = random.Random(seed)
        bundles = generate(rng)
        reference = new_state(grace_seconds=GRACE, dedup_horizon_seconds=HORIZON)
        apply_all(reference, bundles)
        state, n = run_with_crashes(bundles, rng)
        crashes += n
        assert fingerprint(state) == fingerprint(reference), f"seed {seed}"
    assert crashes >= 50  # the property was really exercised


WAIT = 600.0  # a lead wait horizon shorter than the dedup horizon: leads expire all the time


def _generate_leads(rng: random.Random) -> list[Bundle]:
    """Lead-lane bundles (each sometimes with its KPI-lane copy, as the ingest stage forwards
    them) from two source partitions: leads created, touched (or not), lost, reassigned, out of
    order, duplicated, re-forwarded, with touches and creations arriving after the lead's wait
    horizon has passed."""
    sources = [("sales.leads", 0), (TOPIC, 0)]
    streams: dict[tuple[str, int], list[Event]] = {s: [] for s in sources}
    clock = T0 + rng.uniform(0, 3600)
    history: list[Event] = []
    leads = [f"lead-{i}" for i in range(rng.randint(5, 40))]
    for _ in range(rng.randint(150, 400)):
        clock += rng.expovariate(1 / 20.0)
        lead = rng.choice(leads)
        r = rng.random()
        if history and r < 0.1:
            orig = rng.choice(history[-100:])
            src = rng.choice(sources)
            streams[src].append(Event(len(streams[src]), orig.source, orig.id, orig.time, orig.data))
            continue
        lag = rng.uniform(0, 20) if rng.random() < 0.8 else rng.uniform(0, HORIZON + 60)
        team = rng.choice(["team-a", "team-b", None])
        if r < 0.4:
            data, src = LeadCreated(lead, rep_id=rng.choice(["rep-0", "rep-1"]), team_id=team), sources[0]
        elif r < 0.5:
            data, src = LeadAssigned(lead, rng.choice(["rep-2", "rep-3"]), team_id=team), sources[0]
        elif r < 0.56:
            data, src = LeadLost(lead, "unresponsive"), sources[0]
        elif r < 0.75:
            data = CallCompleted(rng.choice(["rep-0", "rep-4"]), rng.choice(["outbound", "inbound"]),
                                 "no_answer", team_id=team, lead_id=lead)
            src = sources[1]
        elif r < 0.9:
            data = EmailSent("rep-4", team_id=team, lead_id=lead, automated=rng.random() < 0.3)
            src = sources[1]
        else:  # moves the watermark: leads age out of their wait horizon meanwhile
            data, src = ToolUsed("rep-5", "gong", team_id="team-a"), sources[1]
            lag = 0
        e = Event(len(streams[src]), "crm/a", f"{rng.getrandbits(40):x}", float(int(clock - lag)), data)
        streams[src].append(e)
        history.append(e)
    cursors = dict.fromkeys(sources, 0)
    bundles: list[Bundle] = []
    while any(cursors[s] < len(streams[s]) for s in sources):
        src = rng.choice([s for s in sources if cursors[s] < len(streams[s])])
        if rng.random() < 0.08:
            cursors[src] = max(0, cursors[src] - rng.randint(1, 12))
        events = streams[src][cursors[src] : cursors[src] + rng.randint(1, 12)]
        cursors[src] += len(events)
        lanes = [LANE_LEAD, LANE_KPI] if rng.random() < 0.5 else [LANE_LEAD]
        rng.shuffle(lanes)
        bundles.extend(Bundle(src[0], src[1], events, lane) for lane in lanes)
    return bundles


@pytest.mark.parametrize("block", range(2))
def test_crash_exactness_property_with_leads(block):
    """The same with the lead lane: waiting leads forgotten past their wait horizon, touches
    arriving for them afterwards, and responses filed and retracted give the same leads, waiting
    set and windows (response samples included) as one uninterrupted pass."""
    crashes = 0
    for seed in range(block * 50, (block + 1) * 50):
        rng = random.Random(1000 + seed)
        bundles = _generate_leads(rng)
        reference = new_state(grace_seconds=GRACE, dedup_horizon_seconds=HORIZON,
                              lead_wait_horizon_seconds=WAIT)
        apply_all(reference, bundles)
        state, n = run_with_crashes(bundles, rng, lead_wait_horizon_seconds=WAIT)
        crashes += n
        assert fingerprint(state) == fingerprint(reference), f"seed {seed}"
    assert crashes >= 25


def test_generated_leads_expire_inside_the_property_test():
    """Guard: in that input, waiting leads are forgotten, and events arrive for leads already
    forgotten (so the order of expiry and events matters)."""
    expired = reborn = responses = 0
    for seed in range(20):
        state = new_state(grace_seconds=GRACE, dedup_horizon_seconds=HORIZON,
                          lead_wait_horizon_seconds=WAIT)
        gone: set[str] = set()
        for i, bundle in enumerate(_generate_leads(random.Random(1000 + seed))):
            before = set(state.leads.waiting)
            state.apply(bundle, i)
            if i % 7 == 0:
                state.expire()
            gone |= before - set(state.leads.waiting)
            reborn += sum(1 for e in bundle.events if getattr(e.data, "lead_id", None) in gone)
        expired += state.leads.drain_expired()
        responses += sum(len(v) for p in state.windows.values() for v in p.samples.values())
    assert expired > 50
    assert reborn > 50
    assert responses > 50


def test_generated_input_exercises_what_it_should():
    """Guard for the property test: its input has duplicates, late and re-forwarded events."""
    totals: Counter = Counter()
    for seed in range(20):
        bundles = generate(random.Random(seed))
        state = new_state(grace_seconds=GRACE, dedup_horizon_seconds=HORIZON)
        apply_all(state, bundles)
        processed, duplicates, late = state.drain_counters()
        forwarded = sum(len(b.events) for b in bundles)
        totals.update(duplicates=duplicates, late=late, forwarded=forwarded,
                      processed=sum(processed.values()))
    assert totals["duplicates"] > 50
    assert totals["late"] > 50
    # re-forwarded events: forwarded more often than processed, duplicates or dropped
    assert totals["forwarded"] > totals["processed"] + totals["duplicates"] + 50


def test_cut_short_snapshot_that_expired_a_dedup_minute_keeps_duplicates_out():
    """A crash after a snapshot's deletions were written but before its ``meta``: the
    duplicate of an event whose dedup minute that snapshot expired must still not be counted
    when the records since the previous snapshot are applied again."""
    kw = {"grace_seconds": 120.0, "dedup_horizon_seconds": 600.0}
    call = CallCompleted("rep-1", "outbound", "connected", team_id="t")

    def e(off, eid, t):
        return Event(off, "dialer", eid, t, call)

    bundles = [
        Bundle(TOPIC, 0, [e(0, "a", T0)]),
        Bundle(TOPIC, 0, [e(1, "b", T0 + 500)]),
        Bundle(TOPIC, 0, [e(2, "a", T0)]),  # producer duplicate, within the horizon
        Bundle(TOPIC, 0, [e(3, "c", T0 + 700)]),  # T0's dedup minute is now beyond the horizon
    ]
    reference = new_state(**kw)
    apply_all(reference, bundles)
    assert of(window(reference, DAY, T0), "calls_made") == {("rep-1", "t"): 3}

    for cut in range(20):
        state = new_state(**kw)
        changelog: dict[str, bytes] = {}
        apply_all(state, bundles[:2])
        write(changelog, state.snapshot())
        state.apply(bundles[2], 2)
        state.apply(bundles[3], 3)
        state.expire()
        parts = state.snapshot()
        if cut > len(parts):
            break
        write(changelog, parts[:cut])
        restored = PartitionState.restore(changelog.items(), CAT, CAL, **kw)
        apply_all(restored, bundles)
        assert of(window(restored, DAY, T0), "calls_made") == {("rep-1", "t"): 3}, cut
        assert fingerprint(restored) == fingerprint(reference)


def test_a_snapshot_during_the_replay_keeps_parts_that_are_ahead():
    """After a restore from a cut-short snapshot, some parts already hold records beyond
    ``meta``. A snapshot taken while those records are replayed (the flush timer does not
    wait) must not make the state forget it: the records are still in those parts."""
    call = CallCompleted("rep-1", "outbound", "busy", team_id="t")
    bundles = [Bundle(TOPIC, 0, [ev(i, T0 + i, call)]) for i in range(4)]
    state = new_state()
    changelog: dict[str, bytes] = {}
    state.apply(bundles[0], 0)
    write(changelog, state.snapshot())
    apply_all(state, bundles[1:3], 1)
    parts = state.snapshot()
    write(changelog, [p for p in parts if p[0].startswith("w/")])  # windows durable, meta not
    restored = PartitionState.restore(changelog.items(), CAT, CAL)
    assert (restored.meta_stamp, restored.max_stamp) == (0, 2)
    restored.apply(bundles[1], 1)
    write(changelog, restored.snapshot())  # a flush in the middle of the replay
    restored.apply(bundles[2], 2)
    restored.apply(bundles[3], 3)
    assert of(window(restored, DAY, T0), "calls_made") == {("rep-1", "t"): 4}
    # and once more from what is durable now
    again = PartitionState.restore(changelog.items(), CAT, CAL)
    apply_all(again, bundles)
    assert of(window(again, DAY, T0), "calls_made") == {("rep-1", "t"): 4}


# -- the exact path and the fast path ----------------------------------------------------------


def _demo_bundles(n: int) -> list[Bundle]:
    """The demo floor's records as the ingest stage forwards them: per topic, in bundles, each
    lead event also in the lead lane."""
    validator = Validator()
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    offsets: Counter[str] = Counter()
    by_topic: dict[str, list[Event]] = {}
    for record in SalesFloor(seed=5, start=start).events(n):
        event = validator.decode(record.value, offsets[record.topic], start.timestamp() + 86400)
        offsets[record.topic] += 1
        by_topic.setdefault(record.topic, []).append(event)
    bundles = []
    for topic, events in by_topic.items():
        for i in range(0, len(events), 40):
            chunk = events[i : i + 40]
            bundles.append(Bundle(topic, 0, chunk))
            leads = [e for e in chunk if e.type in LEAD_LANE_TYPES
                     and getattr(e.data, "lead_id", None) is not None]
            if leads:
                bundles.append(Bundle(topic, 0, leads, LANE_LEAD))
    random.Random(5).shuffle(bundles)  # the topics interleave; each keeps its own order
    by_source: dict[tuple, list[Bundle]] = {}
    for b in bundles:
        by_source.setdefault((b.topic, b.lane), []).append(b)
    ordered = {k: iter(sorted(v, key=lambda b: b.events[0].offset)) for k, v in by_source.items()}
    return [next(ordered[(b.topic, b.lane)]) for b in bundles]


def _everything(state: PartitionState) -> dict:
    out = fingerprint(state)
    out.update(
        opportunities=dict(state.opportunities.opportunities),
        labels={label: dict(values) for label, values in state.labels.items()},
        counters=state.drain_counters(),
        overflow=dict(state.overflow),
        responses=state.drain_response_changes(),
    )
    return out


@pytest.mark.parametrize(
    "source", ["generated", "generated, a KPI kept per day", "leads", "demo floor, capped labels"])
def test_the_exact_path_and_the_fast_path_give_identical_state(source):
    """Every record applied by the exact (replay) path gives the state the fast path gives:
    one compiled form of the catalog, the same hits, lateness and admissions."""
    kw: dict = {"grace_seconds": GRACE, "dedup_horizon_seconds": HORIZON}
    catalog = CAT
    if source.startswith("generated"):
        inputs = [generate(random.Random(seed)) for seed in range(20)]
        if source.endswith("per day"):
            catalog = Catalog((*CAT.kpis, KPI(
                name="calls_daily", help="h", aggregation="count", types=("call.completed",),
                dimensions=("outcome",), windows=("day", "week"))))
    elif source == "leads":
        kw["lead_wait_horizon_seconds"] = WAIT
        inputs = [_generate_leads(random.Random(2000 + seed)) for seed in range(20)]
    else:
        kw["label_caps"] = LabelCaps(reps=200, teams=10, dimension_values=3)
        inputs = [_demo_bundles(30_000)]
    for bundles in inputs:
        fast = PartitionState(catalog, CAL, **kw)
        apply_all(fast, bundles)
        exact = PartitionState(catalog, CAL, **kw)
        exact.max_stamp = len(bundles)  # as after a restore: every record may be partly applied
        apply_all(exact, bundles)
        assert fast._pending and not exact._pending  # each took its own path
        got, expected = _everything(exact), _everything(fast)
        for sums in ("windows", "resolved"):
            # amounts with cents add up in another order (per minute, then per hour, on the
            # fast path): the same to the last few bits, and exactly for whole numbers
            assert got[sums].keys() == expected[sums].keys()
            for window_key, values in expected.pop(sums).items():
                assert got[sums][window_key] == pytest.approx(values, rel=1e-12, abs=0.0)
            del got[sums]
        assert got == expected
