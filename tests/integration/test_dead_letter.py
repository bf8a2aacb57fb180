"""Bad input goes to the dead-letter topic unchanged, with the reason and its origin; the good
records around it are all counted and the worker keeps running."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    produce,
    read_topic,
    topic_set,
    unique,
    value,
)

pytestmark = pytest.mark.integration

REQUIRED = {  # SPEC section 2, bold fields
    "call.completed": {"rep_id": "r", "direction": "outbound", "outcome": "connected"},
    "email.sent": {"rep_id": "r"},
    "meeting.scheduled": {"rep_id": "r"},
    "conversation.held": {"rep_id": "r"},
    "crm.record_updated": {"rep_id": "r", "object": "lead", "action": "created"},
    "tool.used": {"rep_id": "r", "tool": "gong"},
    "lead.created": {"lead_id": "l"},
    "lead.assigned": {"lead_id": "l", "rep_id": "r"},
    "lead.qualified": {"lead_id": "l", "stage": "sql"},
    "lead.converted": {"lead_id": "l"},
    "lead.lost": {"lead_id": "l", "reason": "competitor"},
    "opportunity.created": {"opportunity_id": "o", "rep_id": "r"},
    "opportunity.stage_changed": {"opportunity_id": "o", "to_stage": "proposal"},
    "opportunity.won": {"opportunity_id": "o", "rep_id": "r", "amount": 10},
    "opportunity.lost": {"opportunity_id": "o", "rep_id": "r"},
    "nps.responded": {"score": 9},
    "enps.responded": {"score": 7, "team_id": "t"},
    "spend.recorded": {"amount": 5, "category": "sales"},
    "rep.updated": {"rep_id": "r"},
}


def envelope(**over: object) -> bytes:
    ev = {"specversion": "1.0", "id": "x", "source": "test", "type": "email.sent",
          "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": {"rep_id": "r"}}
    ev.update(over)
    return json.dumps({k: v for k, v in ev.items() if v is not None}).encode()


def corpus() -> list[tuple[str, bytes]]:
    """(expected reason, record value) for every kind of bad input."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    bad: list[tuple[str, bytes]] = [
        ("invalid_json", b'{"specversion": "1.0", '),
        ("invalid_encoding", b'{"id": "\xff\xfe"}'),
        ("not_cloudevent", b"[1, 2, 3]"),
        ("not_cloudevent", b'"just a string"'),
        ("not_cloudevent", b'{"hello": "world"}'),
        ("not_cloudevent", envelope(specversion="0.3")),
        ("not_cloudevent", envelope(source=None)),
        ("unknown_type", envelope(type="call.teleported")),
        ("invalid_time", envelope(time="yesterday")),
        ("invalid_time", envelope(time="2026-11-22T14:03:11")),  # no offset
        ("future_time", envelope(time="2099-01-01T00:00:00Z")),
        ("invalid_type", envelope(data={"rep_id": 17})),
        ("invalid_type", envelope(type="call.completed",
                                  data={**REQUIRED["call.completed"], "talk_seconds": "long"})),
        ("out_of_range", envelope(type="call.completed",
                                  data={**REQUIRED["call.completed"], "talk_seconds": -1})),
        ("out_of_range", envelope(type="nps.responded", data={"score": 11})),
        ("out_of_range", envelope(data={"rep_id": "r" * 129})),
        ("invalid_value", envelope(type="call.completed",
                                   data={**REQUIRED["call.completed"], "outcome": "maybe"})),
        ("currency_mismatch", envelope(type="opportunity.won",
                                       data={**REQUIRED["opportunity.won"], "currency": "EUR"})),
        ("too_large", envelope(data={"rep_id": "r", "notes": "x" * 70000})),
        ("missing_field", envelope(data=None)),
    ]
    for etype, required in REQUIRED.items():
        for field in required:
            data = {k: v for k, v in required.items() if k != field}
            bad.append(("missing_field", envelope(type=etype, time=now, data=data)))
    return bad


def test_every_bad_record_lands_in_the_dlq_with_reason_and_origin(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("dlq"))
    asyncio.run(create_topics(bootstrap, topics.values(), partitions=1))
    bad = corpus()
    records, good = [], 0
    for i, (_, raw) in enumerate(bad):
        # A good record on each side of every bad one, on the same partition.
        for _ in range(2):
            good += 1
            records.append((topics["activities"], b"k", cloudevent(
                "email.sent", {"rep_id": "rep-good", "team_id": "t"}, t=time.time() - 5), []))
        records.append((topics["activities"], f"bad-{i}".encode(), raw, [("trace", f"{i}".encode())]))
    asyncio.run(produce(bootstrap, records))

    worker = Worker(bootstrap, unique("app"), topics, log_dir).start()
    try:
        samples = worker.wait_for(
            lambda s: value(s, "salespulse_org_emails_sent", window="day") == good
            and sum(v for (n, _), v in s.items() if n == "salespulse_events_rejected_total") == len(bad),
            what="good records counted and bad ones rejected",
        )
        expected = Counter(reason for reason, _ in bad)
        for reason, n in expected.items():
            assert value(samples, "salespulse_events_rejected_total", reason=reason) == n, reason

        dead = asyncio.run(read_topic(bootstrap, topics["dlq"], expect=len(bad)))
        assert len(dead) == len(bad)
        by_key = {rec.key: rec for rec in dead}
        for i, (reason, raw) in enumerate(bad):
            rec = by_key[f"bad-{i}".encode()]
            headers = dict(rec.headers)
            assert rec.value == raw  # unchanged
            assert headers["trace"] == f"{i}".encode()  # original headers kept
            assert headers["salespulse.errors.reason"].decode() == reason
            assert headers["salespulse.errors.message"]
            assert headers["salespulse.errors.topic"].decode() == topics["activities"]
            assert headers["salespulse.errors.partition"] == b"0"
            assert int(headers["salespulse.errors.offset"]) == 3 * i + 2
        missing = [r for r in dead if r.headers and dict(r.headers)["salespulse.errors.reason"] == b"missing_field"]
        assert any(b"rep_id" in dict(r.headers)["salespulse.errors.message"] for r in missing)
        assert worker.proc is not None and worker.proc.poll() is None  # never a crash
    finally:
        worker.stop()


def test_an_undecodable_record_on_the_internal_topic_is_dead_lettered_not_fatal(
    bootstrap: str, log_dir: Path
) -> None:
    """The keyed-events topic is input too: a record there that is not a bundle (damaged, or
    written by something else) used to stop the worker, and again after every restart."""
    topics = topic_set(unique("internal"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    app_id = unique("app")
    keyed = f"{app_id}-keyed-events"
    worker = Worker(bootstrap, app_id, topics, log_dir).start()
    try:
        def emails(n: int) -> list:
            return [(topics["activities"], None, cloudevent(
                "email.sent", {"rep_id": f"rep-{i % 7}", "team_id": "t"}, t=time.time() - 5), [])
                for i in range(n)]

        asyncio.run(produce(bootstrap, emails(300)))
        worker.wait_for(lambda s: value(s, "salespulse_org_emails_sent", window="day") == 300,
                        what="first emails counted")
        hostile = [
            (keyed, b"junk", b"\xc1 not msgpack at all", [("trace", b"1")]),
            (keyed, b"shape", b"\x93\x01\x02\x03", []),  # valid msgpack, not a bundle
            (keyed, b"tomb", None, []),
        ]
        asyncio.run(produce(bootstrap, hostile))
        asyncio.run(produce(bootstrap, emails(200)))
        samples = worker.wait_for(
            lambda s: value(s, "salespulse_org_emails_sent", window="day") == 500
            and value(s, "salespulse_events_rejected_total", reason="unprocessable") == 3,
            what="later emails counted, the internal records dead-lettered")
        assert worker.proc is not None and worker.proc.poll() is None
        dead = {rec.key: rec for rec in asyncio.run(read_topic(bootstrap, topics["dlq"], expect=3))}
        assert set(dead) == {b"junk", b"shape", b"tomb"}
        junk = dict(dead[b"junk"].headers)
        assert dead[b"junk"].value == b"\xc1 not msgpack at all"
        assert junk["trace"] == b"1"
        assert junk["salespulse.errors.reason"] == b"unprocessable"
        assert junk["salespulse.errors.topic"].decode() == keyed
        assert b"bundle" in junk["salespulse.errors.message"]
        assert value(samples, "salespulse_org_emails_sent", window="day") == 500
        worker.kill()  # and a restart replays past them without stopping
        worker.start()
        worker.wait_for(lambda s: value(s, "salespulse_org_emails_sent", window="day") == 500,
                        what="state recovered past the dead-lettered records")
        assert worker.proc.poll() is None
    finally:
        worker.stop()
