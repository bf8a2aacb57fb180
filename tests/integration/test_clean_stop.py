"""A clean stop: SIGTERM or Ctrl-C ends the worker promptly, with state durable and offsets committed.

The worker is stopped with SIGTERM mid-stream while events (with producer duplicates) are still
arriving. It must exit with code 0 within the stop timeout, and what it committed must match
what it made durable: the restarted worker restores each keyed-events partition's state up to
exactly the offset before the committed one (nothing applied is replayed, nothing unapplied is
skipped). After the input is drained every KPI equals the oracle's single pass. Then, with the
input fully processed, it is stopped with SIGINT: the group's committed offsets of every input
and keyed-events partition are at the end of the partition (a restart has nothing to replay),
and the restarted worker recovers the exact values from the changelog.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    TOPIC_KINDS,
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
    Oracle,
    activity_stream,
    assert_matches,
    recent_today,
    roster_record,
)

pytestmark = pytest.mark.integration

EVENTS = 16000
STOP_WITHIN = 10.0  # seconds: the default stop timeout (SALESPULSE_STOP_TIMEOUT_SECONDS)
RESTORED = re.compile(r"partition (\d+): state restored from \d+ parts \(applied up to offset (-?\d+)\)")



def _restored(worker: Worker) -> dict[int, int]:
    """Per keyed-events partition, the last offset the restored state holds (from the log)."""
    return {int(p): int(o) for p, o in RESTORED.findall(worker.log_text())}


def test_sigterm_mid_stream_stops_cleanly_and_commits_what_it_applied(
    bootstrap: str, log_dir: Path
) -> None:
    topics = topic_set(unique("stop"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    earliest, now = recent_today()
    rng = random.Random(11)
    oracle = Oracle()
    roster = roster_record(topics["reps"], earliest)
    stream = activity_stream(rng, topics["activities"], EVENTS, oracle, earliest, now)
    stream.insert(len(stream) // 3, roster)

    # Snapshots once a second: a stop always finds records applied but not yet durable.
    worker = Worker(bootstrap, unique("app"), topics, log_dir,
                    SALESPULSE_STATE_FLUSH_SECONDS="1.0").start()
    group = worker.app_id
    keyed = f"{group}-keyed-events"
    watched = [topics[k] for k in TOPIC_KINDS] + [keyed]
    try:
        done = threading.Event()
        sent = []

        def feed() -> None:
            sent.append(asyncio.run(produce(bootstrap, stream, pause_every=200, pause=0.1)))
            done.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        worker.wait_for(lambda s: (value(s, "salespulse_org_calls_made", window="day") or 0) > 1000,
                        timeout=30, what="the worker under way")
        time.sleep(1.0)

        # 1. SIGTERM mid-stream: a prompt, clean exit.
        assert not done.is_set(), "the input ended before the stop: the test proves nothing"
        took, code = worker.terminate(signal.SIGTERM)
        assert code == 0, f"SIGTERM: exit code {code} after {took:.1f} s:\n{worker.log_tail()}"
        assert took < STOP_WITHIN, f"SIGTERM: took {took:.1f} s"
        print(f"SIGTERM mid-stream: exited with 0 in {took:.2f} s")

        # What was committed is what the durable state holds: the restart restores each
        # keyed-events partition up to the offset just before the committed one.
        committed = asyncio.run(committed_offsets(bootstrap, group))
        assert any(committed.get((topics["activities"], p), 0) > 0 for p in range(4)), committed
        worker.start()
        restored = _restored(worker)
        assert sorted(restored) == [0, 1, 2, 3], worker.log_tail()
        for p, applied in restored.items():
            assert committed.get((keyed, p), 0) == applied + 1, (p, committed, restored)

        feeder.join(120)
        assert done.is_set() and sent == [len(stream)]
        org_made = oracle.v[("org", "calls_made")]
        worker.wait_for(
            lambda s: lag_zero(s) and value(s, "salespulse_org_calls_made", window="day") == org_made,
            timeout=120, what="input drained",
        )
        time.sleep(1.0)  # anything still in flight would now show as a surplus
        assert assert_matches(worker.metrics(), oracle) > 100

        # 2. Ctrl-C with everything processed: nothing is left to replay.
        took, code = worker.terminate(signal.SIGINT)
        assert code == 0, f"SIGINT: exit code {code} after {took:.1f} s:\n{worker.log_tail()}"
        assert took < STOP_WITHIN, f"SIGINT: took {took:.1f} s"
        print(f"SIGINT idle: exited with 0 in {took:.2f} s")
        ends = asyncio.run(end_offsets(bootstrap, watched))
        committed = asyncio.run(committed_offsets(bootstrap, group))
        behind = {tp: (committed.get(tp), end) for tp, end in ends.items() if end and committed.get(tp) != end}
        assert not behind, f"committed offsets behind the end (committed, end): {behind}"

        worker.start()
        restored = _restored(worker)
        for p in range(4):
            assert restored.get(p) == ends[(keyed, p)] - 1, (p, restored, ends)
        worker.wait_for(lambda s: value(s, "salespulse_org_calls_made", window="day") == org_made,
                        timeout=30, what="state recovered")
        assert assert_matches(worker.metrics(), oracle) > 100
    finally:
        worker.stop()
