"""Two workers of one app id: nobody pages a lead whose touch another worker has not read yet.

SPEC §4: a lead is overdue only when no touch for it has been read although its input has been
read up to the end, and with several workers "read up to the end" means by the whole group.

Worker A owns the keyed-events partition of a lead (its state and its alert are A's), while
the lead's first touch sits in an input partition that only worker B reads, and B is stalled
(SIGSTOP, still a member of the group: the session timeout is raised so that the stall does not
move its partitions). A has read all of its own input, including the lead's `lead.created`
(already past the SLA), but must not page the lead: the group has not read its input. Once B
resumes, reads the touch and forwards it, the lead is answered and never paged, while leads
that truly have no touch, produced alongside (one judged by A, one by B), are paged exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from zlib import crc32

import pytest

from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    produce,
    read_topic,
    topic_set,
    unique,
)

pytestmark = pytest.mark.integration

SLA = 6.0
PARTITIONS = 4


def keyed_partition(lead_id: str) -> int:
    """The keyed-events partition of a lead's state (the ingest stage's lead lane)."""
    return crc32(lead_id.encode()) % PARTITIONS


def lead_in(partitions: set[int], prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1000) if keyed_partition(f"{prefix}-{i}") in partitions)


def settled(a: Worker, b: Worker, inputs: int, timeout: float = 60.0) -> tuple[dict, dict]:
    """Wait until the group has split the work between A and B (every keyed-events and input
    partition owned by exactly one of them, each with some of both, states restored) and the
    split held for a second."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ha, hb = a.health(), b.health()
        keyed_a, keyed_b = set(ha["assigned"]), set(hb["assigned"])
        in_a, in_b = {tuple(x) for x in ha["inputs"]}, {tuple(x) for x in hb["inputs"]}
        split = (
            keyed_a and keyed_b and not keyed_a & keyed_b and len(keyed_a | keyed_b) == PARTITIONS
            and in_a and in_b and not in_a & in_b and len(in_a | in_b) == inputs
            and ha["partitions"] == ha["assigned"] and hb["partitions"] == hb["assigned"]
        )
        now = (ha["assigned"], hb["assigned"], sorted(in_a), sorted(in_b))
        if split and now == last:
            return ha, hb
        last = now if split else None
        time.sleep(1.0)
    raise TimeoutError(f"group did not settle: A {a.health()} B {b.health()}")


def alerted(bootstrap: str, topic: str) -> Counter:
    return Counter(json.loads(r.value)["data"]["lead_id"]
                   for r in asyncio.run(read_topic(bootstrap, topic)))


def test_no_page_while_another_worker_has_the_touch_unread(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("group"))
    alerts_topic = topics["activities"].replace("activities", "alerts")
    inputs = [topics[k] for k in ("activities", "leads", "deals", "feedback", "reps")]
    asyncio.run(create_topics(bootstrap, [*inputs, topics["dlq"]], partitions=PARTITIONS))
    asyncio.run(create_topics(bootstrap, [alerts_topic], partitions=1))
    env = {
        "SALESPULSE_LEAD_SLA_SECONDS": str(SLA),
        "SALESPULSE_ALERTS_TOPIC": alerts_topic,
        # B is stalled for ~10 s: it must stay the owner of its partitions meanwhile.
        "SALESPULSE_SESSION_TIMEOUT_SECONDS": "30",
    }
    app_id = unique("app")
    a = Worker(bootstrap, app_id, topics, log_dir / "a", **env)
    b = Worker(bootstrap, app_id, topics, log_dir / "b", **env)
    a.log_dir.mkdir()
    b.log_dir.mkdir()
    a.start()
    try:
        b.start(at_least=1)  # shares the work with A: holds only some partitions
        ha, hb = settled(a, b, inputs=len(inputs) * PARTITIONS)
        keyed_a, keyed_b = set(ha["assigned"]), set(hb["assigned"])
        a_input = tuple(ha["inputs"][0])  # where A reads the leads' creation
        b_input = tuple(hb["inputs"][0])  # where only B reads the touch
        touched = lead_in(keyed_a, "touched")  # A owns its state, B has its touch
        untouched_a = lead_in(keyed_a, "untouched")
        untouched_b = lead_in(keyed_b, "untouched")

        def created(lead: str, t: float) -> tuple:
            return (a_input[0], None, cloudevent("lead.created", {
                "lead_id": lead, "rep_id": "rep-1", "team_id": "team-a"}, t=t), [], a_input[1])

        b.pause()
        try:
            t = time.time()
            asyncio.run(produce(bootstrap, [
                (b_input[0], None, cloudevent("call.completed", {
                    "lead_id": touched, "rep_id": "rep-2", "team_id": "team-a",
                    "direction": "outbound", "outcome": "connected"}, t=t - SLA + 1), [], b_input[1]),
                created(touched, t - SLA),
                created(untouched_a, t - SLA),
                created(untouched_b, t - SLA),
            ]))
            time.sleep(5 * 1.0)  # every lead is past its SLA; A judges once a second
            during_stall = alerted(bootstrap, alerts_topic)
        finally:
            b.resume()
        assert touched not in during_stall, (
            f"{touched} was paged while its touch sat unread in B's input partition {b_input}: "
            f"alerts {dict(during_stall)}")

        # B reads the touch; the untouched leads are paged, each exactly once; the touched never.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alerts = alerted(bootstrap, alerts_topic)
            if alerts[untouched_a] and alerts[untouched_b]:
                break
        time.sleep(3 * 1.0)  # a few more judging ticks on both workers
        alerts = alerted(bootstrap, alerts_topic)
        assert alerts == Counter({untouched_a: 1, untouched_b: 1}), dict(alerts)
        # The stall did not move B's partitions (else A would have read the touch itself).
        assert (a.health()["assigned"], b.health()["assigned"]) == (ha["assigned"], hb["assigned"])
    finally:
        b.stop()
        a.stop()
