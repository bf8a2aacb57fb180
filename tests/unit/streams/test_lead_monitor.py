"""LeadMonitor.tick: judging overdue leads and sending their alerts while events keep coming."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from metrics.events import LeadCreated
from metrics.leads import LeadBook
from streams.leads import ALERT_TYPE, AlertLedger, LeadMonitor

NOW = 1_800_000_000.0
SLA = 300.0


def _monitor(book: LeadBook, sent: list[tuple[bytes, dict]], on_send=None) -> LeadMonitor:
    async def send(topic: str, *, key: bytes, value: bytes) -> asyncio.Future:
        sent.append((key, json.loads(value)))
        if on_send is not None:
            on_send()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    ledger = AlertLedger("unused:9092", "alerts")
    ledger.ready.set()
    return LeadMonitor(
        lambda: [SimpleNamespace(leads=book, drain_responses=list)],
        lambda: True,
        lambda team, start, end: end - start,
        send,
        ledger,
        sla_seconds=SLA,
        alerts_topic="alerts",
        source="salespulse/test",
        clock=lambda: NOW,
    )


async def test_leads_created_while_alerts_are_sent_do_not_break_the_tick():
    book = LeadBook()
    for i in range(3):
        book.apply(f"lead-{i}", LeadCreated(f"lead-{i}", team_id="t1"), NOW - SLA - 60 - i)
    arrivals = iter(range(100, 200))

    def new_lead_arrives() -> None:  # what the aggregate agent does between two awaits
        n = next(arrivals)
        book.apply(f"lead-{n}", LeadCreated(f"lead-{n}", team_id="t1"), NOW - 10)

    sent: list[tuple[bytes, dict]] = []
    monitor = _monitor(book, sent, new_lead_arrives)
    await monitor.tick()  # caught up once: not yet confirmed
    assert sent == []
    await monitor.tick()
    assert sorted(key for key, _ in sent) == [b"lead-0", b"lead-1", b"lead-2"]
    assert {body["type"] for _, body in sent} == {ALERT_TYPE}
    assert all(body["data"]["waited_seconds"] > SLA for _, body in sent)
    assert len(book.waiting) == 6  # the three new leads were applied meanwhile
    await monitor.tick()  # already alerted: never twice
    assert len(sent) == 3
