"""A rebalance keeps the state of the partitions a worker keeps, and moves the others exactly.

As a user reported it: worker A consumes the input, is SIGKILLed and restarted (so it has
recovered from the changelog once), then, with no input arriving, worker B joins the group.
A keeps some keyed-events partitions and gives the others to B. More input follows. Every rep's
KPIs, across both workers' /metrics, must equal the oracle's single pass: each rep series
exported by exactly one worker, with its exact value; organisation counts summed over the
workers equal the oracle's. Then B leaves with SIGTERM, A takes everything back, more input
follows, and A alone matches the oracle on every scope.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    Samples,
    Worker,
    committed_offsets,
    create_topics,
    end_offsets,
    lag_zero,
    produce,
    topic_set,
    unique,
    value,
)
from tests.integration.oracle import (
    STORED,
    Oracle,
    activity_stream,
    assert_matches,
    recent_today,
    roster_record,
)

pytestmark = pytest.mark.integration

FIRST, SECOND, THIRD = 20000, 4000, 2000
ALL = {0, 1, 2, 3}



def _org_made(samples: Samples) -> float:
    return value(samples, "salespulse_org_calls_made", window="day") or 0.0


def _wait_all(workers: list[Worker], predicate, timeout: float, what: str) -> list[Samples]:
    """Poll every worker's /metrics until ``predicate(list of samples)`` holds."""
    deadline = time.monotonic() + timeout
    samples: list[Samples] = []
    while time.monotonic() < deadline:
        try:
            samples = [w.metrics() for w in workers]
            if predicate(samples):
                return samples
        except OSError:
            pass
        time.sleep(0.25)
    made = [_org_made(s) for s in samples]
    raise TimeoutError(f"timed out waiting for {what}; org calls_made per worker {made}:\n"
                       + "\n".join(w.log_tail(30) for w in workers))


def _wait_committed(bootstrap: str, group: str, names: list[str], timeout: float = 30.0) -> None:
    """Until the group's committed offsets are at the end of every partition of ``names``."""
    deadline = time.monotonic() + timeout
    behind: dict = {}
    while time.monotonic() < deadline:
        ends = asyncio.run(end_offsets(bootstrap, names))
        committed = asyncio.run(committed_offsets(bootstrap, group))
        behind = {tp: (committed.get(tp), end) for tp, end in ends.items() if end and committed.get(tp) != end}
        if not behind:
            return
        time.sleep(0.5)
    raise TimeoutError(f"offsets not committed to the end (committed, end): {behind}")


def _wait_split(a: Worker, b: Worker, timeout: float = 60.0) -> tuple[list[int], list[int]]:
    """Until A and B share the partitions (disjoint, all covered), each holding the state of
    exactly the partitions it is assigned."""
    deadline = time.monotonic() + timeout
    ha = hb = {}
    while time.monotonic() < deadline:
        try:
            ha, hb = a.health(), b.health()
        except OSError:
            time.sleep(0.3)
            continue
        sa, sb = set(ha["assigned"]), set(hb["assigned"])
        if sa and sb and not sa & sb and sa | sb == ALL \
                and set(ha["partitions"]) == sa and set(hb["partitions"]) == sb:
            return sorted(sa), sorted(sb)
        time.sleep(0.3)
    raise TimeoutError(f"no split: A {ha}, B {hb}:\n{a.log_tail(30)}\n{b.log_tail(30)}")


def assert_split_matches(a: Samples, b: Samples, oracle: Oracle) -> None:
    """Two workers sharing the partitions: every rep series on exactly one of them, with the
    oracle's value; organisation counts and sums, summed over the workers, the oracle's."""
    rep_a = {k for k in a if k[0].startswith("salespulse_rep_") and ("window", "day") in k[1]}
    rep_b = {k for k in b if k[0].startswith("salespulse_rep_") and ("window", "day") in k[1]}
    assert rep_a and rep_b, "one worker exports no rep series"
    assert not rep_a & rep_b, f"rep series exported by both workers: {sorted(rep_a & rep_b)[:5]}"
    assert assert_matches({**a, **b}, oracle, kinds=("rep",)) > 50
    for kpi in STORED:
        got = sum(value(s, f"salespulse_org_{kpi}", window="day") or 0.0 for s in (a, b))
        assert got == pytest.approx(oracle.v.get(("org", kpi), 0.0)), ("org", kpi, got)
    for tool in ("gong", "linkedin"):
        got = sum(value(s, "salespulse_org_tool_uses", window="day", tool=tool) or 0.0 for s in (a, b))
        assert got == pytest.approx(oracle.v.get(("org", "tool_uses", tool), 0.0)), ("org", tool, got)


def test_rebalance_keeps_kept_state_and_moves_the_rest_exactly(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("rebal"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    earliest, now = recent_today()
    rng = random.Random(23)
    oracle = Oracle()
    roster = roster_record(topics["reps"], earliest)
    first = [roster, *activity_stream(rng, topics["activities"], FIRST, oracle, earliest, now)]
    second = activity_stream(rng, topics["activities"], SECOND, oracle_2 := Oracle(), earliest, now)
    third = activity_stream(rng, topics["activities"], THIRD, oracle_3 := Oracle(), earliest, now)

    app_id = unique("app")
    a = Worker(bootstrap, app_id, topics, log_dir, name="-a")
    b = Worker(bootstrap, app_id, topics, log_dir, name="-b")
    try:
        # A consumes the first part, is SIGKILLed and restarted: it has recovered once.
        a.start()
        asyncio.run(produce(bootstrap, first))
        made = oracle.v[("org", "calls_made")]
        a.wait_for(lambda s: lag_zero(s) and _org_made(s) == made, timeout=90, what="first part")
        consumed = [t for kind, t in topics.items() if kind != "metrics"]  # metrics: output
        _wait_committed(bootstrap, app_id, [*consumed, f"{app_id}-keyed-events"])
        a.kill()  # everything committed: the restart replays nothing and writes nothing
        a.start()
        a.wait_for(lambda s: _org_made(s) == made, timeout=30, what="A recovered")
        assert assert_matches(a.metrics(), oracle) > 100

        # B joins while no input arrives; they split the partitions.
        b.start(at_least=1)
        kept, moved = _wait_split(a, b)
        samples = _wait_all([a, b], lambda ss: all(lag_zero(s) for s in ss), 30, "split settled")
        time.sleep(1.0)
        samples = [a.metrics(), b.metrics()]
        assert_split_matches(*samples, oracle)

        # More input: it lands on both workers' state.
        asyncio.run(produce(bootstrap, second))
        for k, v in oracle_2.v.items():
            oracle.v[k] += v
        made = oracle.v[("org", "calls_made")]
        _wait_all([a, b], lambda ss: all(lag_zero(s) for s in ss) and sum(map(_org_made, ss)) == made,
                  60, "second part on both workers")
        time.sleep(1.0)
        samples = [a.metrics(), b.metrics()]
        assert_split_matches(*samples, oracle)

        # B leaves cleanly; A takes everything back, then more input.
        took, code = b.terminate()
        assert code == 0 and took < 10.0, (took, code, b.log_tail())
        # A recovers the changelog partitions that come back to it, by itself. (It used to stall
        # now and then, about one run in eight: a fetch dropped by the rebalance had already
        # passed those partitions' records; streams.transport.BatchConsumer._rewind.)
        a.wait_ready(30)
        a.wait_for(lambda s: lag_zero(s) and _org_made(s) == made, timeout=60, what="A owns all")
        assert assert_matches(a.metrics(), oracle) > 100
        asyncio.run(produce(bootstrap, third))
        for k, v in oracle_3.v.items():
            oracle.v[k] += v
        made = oracle.v[("org", "calls_made")]
        a.wait_for(lambda s: lag_zero(s) and _org_made(s) == made, timeout=60, what="third part")
        time.sleep(1.0)
        assert assert_matches(a.metrics(), oracle) > 100
    finally:
        b.stop()
        a.stop()
