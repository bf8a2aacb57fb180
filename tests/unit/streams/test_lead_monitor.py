"""LeadMonitor.tick: judging overdue leads as of confirmed moments, and sending their alerts
while events keep coming. Only the progress source is faked: it confirms each round one tick
after it started, as a live group does."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from metrics.events import CallCompleted, LeadCreated
from metrics.leads import LEAD_WAIT_HORIZON_SECONDS, LeadBook
from streams.leads import ALERT_TYPE, AlertLedger, LeadMonitor
from tests.unit.streams.fakes import delivered

NOW = 1_800_000_000.0
SLA = 300.0


class FakeProgress:
    """Starts a round at every check and confirms the previous one (unless ``stalled``)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.pending = None
        self.stalled = False

    async def check(self, mark):
        if self.stalled:
            return None
        done, t0 = self.pending, self.clock()
        self.pending = (t0, mark(t0))
        return done


def _monitor(book: LeadBook, sent: list[tuple[bytes, dict]], on_send=None, clock=lambda: NOW,
             states=None):
    async def send(topic: str, *, key: bytes, value: bytes) -> asyncio.Future:
        sent.append((key, json.loads(value)))
        if on_send is not None:
            on_send()
        return delivered()

    ledger = AlertLedger("unused:9092", "alerts")
    ledger.ready.set()
    progress = FakeProgress(clock)
    monitor = LeadMonitor(
        states or (lambda: [SimpleNamespace(leads=book, drain_response_changes=set,
                                            label_of=lambda label, v: v)]),
        progress,
        lambda team, start, end: end - start,
        send,
        ledger,
        sla_seconds=SLA,
        alerts_topic="alerts",
        source="salespulse/test",
        clock=clock,
    )
    return monitor, progress


async def test_leads_created_while_alerts_are_sent_do_not_break_the_tick():
    book = LeadBook()
    for i in range(3):
        book.apply(f"lead-{i}", LeadCreated(f"lead-{i}", team_id="t1"), NOW - SLA - 60 - i)
    arrivals = iter(range(100, 200))

    def new_lead_arrives() -> None:  # what the aggregate agent does between two awaits
        n = next(arrivals)
        book.apply(f"lead-{n}", LeadCreated(f"lead-{n}", team_id="t1"), NOW - 10)

    sent: list[tuple[bytes, dict]] = []
    monitor, _ = _monitor(book, sent, new_lead_arrives)
    await monitor.tick()  # a round starts: not yet confirmed
    assert sent == []
    await monitor.tick()
    assert sorted(key for key, _ in sent) == [b"lead-0", b"lead-1", b"lead-2"]
    assert {body["type"] for _, body in sent} == {ALERT_TYPE}
    assert all(body["data"]["waited_seconds"] > SLA for _, body in sent)
    assert len(book.waiting) == 6  # the three new leads were applied meanwhile
    await monitor.tick()  # already alerted: never twice
    assert len(sent) == 3


async def test_judged_as_of_the_confirmed_moment_only():
    """A lead read after T0 waits for a later round (its touch may be unread elsewhere); a lead
    touched before T0 is confirmed never pages; nothing is judged while the group is behind."""
    now = [NOW]
    book = LeadBook()
    book.apply("old", LeadCreated("old", team_id="t1"), NOW - SLA - 5)
    book.apply("answered", LeadCreated("answered", team_id="t1"), NOW - SLA - 5)
    sent: list[tuple[bytes, dict]] = []
    monitor, progress = _monitor(book, sent, clock=lambda: now[0])

    await monitor.tick()  # round at T0 = NOW: candidates "old" and "answered"
    # Read after T0: a lead long overdue by its event time, and the touch of "answered".
    book.apply("late", LeadCreated("late", team_id="t1"), NOW - SLA - 100)
    book.apply("answered", CallCompleted(rep_id="r1", direction="outbound", outcome="connected",
                                         lead_id="answered"), NOW - 1)
    now[0] += 1
    await monitor.tick()  # T0 confirmed
    assert [key for key, _ in sent] == [b"old"]
    assert monitor.judged_at == NOW
    assert monitor.gauges()["t1"][:2] == (2, 1)  # "old" and "late" await; "old" is overdue

    progress.stalled = True  # the group is behind: the last verdict stands, nobody is paged
    now[0] += 1
    await monitor.tick()
    assert [key for key, _ in sent] == [b"old"]
    assert monitor.gauges()["t1"][:2] == (2, 1)

    progress.stalled = False
    now[0] += 1
    await monitor.tick()  # round at NOW + 3 includes "late"
    now[0] += 1
    await monitor.tick()
    assert sorted(key for key, _ in sent) == [b"late", b"old"]
    assert monitor.gauges()["t1"][:2] == (2, 2)


async def test_a_lead_created_longer_ago_than_the_wait_horizon_is_never_paged():
    """The alerts topic (the ledger) keeps alerts the wait horizon plus a day: a lead older than
    the horizon may have had its alert deleted by retention, so it is never paged, lest a
    restart page it again. Its partition may still hold it (no event moved its watermark)."""
    book = LeadBook()
    book.apply("ancient", LeadCreated("ancient", team_id="t1"), NOW - LEAD_WAIT_HORIZON_SECONDS - 60)
    book.apply("recent", LeadCreated("recent", team_id="t1"), NOW - LEAD_WAIT_HORIZON_SECONDS + 60)
    sent: list[tuple[bytes, dict]] = []
    monitor, _ = _monitor(book, sent)
    await monitor.tick()
    await monitor.tick()
    assert [key for key, _ in sent] == [b"recent"]
    assert monitor.gauges()["t1"][:2] == (2, 2)  # both still in state, and overdue


async def test_the_histogram_counts_a_lead_once_after_the_group_read_what_could_correct_it():
    """A response is counted once a round confirms that the whole group had read all input from
    before the response was seen: an earlier touch read meanwhile (shuffled input, a backlog)
    is what gets counted. A change after the count is a correction, never a second count."""
    from metrics.events import LANE_LEAD, Bundle
    from tests.unit.metrics.state.support import T0, ev, new_state

    state = new_state()
    now = [NOW]
    sent: list[tuple[bytes, dict]] = []
    monitor, _ = _monitor(LeadBook(), sent, clock=lambda: now[0], states=lambda: [state])

    def read(i: int, t: float, data) -> None:
        state.apply(Bundle("sales.leads", 0, [ev(i, t, data)], LANE_LEAD), i)

    def counted() -> tuple[int, float]:
        return sum(sum(c) for c in monitor.histogram.values()), sum(monitor.histogram_sum.values())

    read(0, T0, LeadCreated("lead-1", rep_id="rep-1", team_id="t"))
    read(1, T0 + 60, CallCompleted("rep-1", "outbound", "busy", lead_id="lead-1"))
    await monitor.tick()  # seen now; a round starts at now
    assert counted() == (0, 0.0)
    read(2, T0 + 20, CallCompleted("rep-2", "outbound", "busy", lead_id="lead-1"))  # earlier touch
    now[0] += 1
    await monitor.tick()  # the round confirmed: the settled response counts
    assert counted() == (1, 20.0)
    assert monitor.response_corrections == 0
    read(3, T0 + 10, CallCompleted("rep-3", "outbound", "busy", lead_id="lead-1"))  # late correction
    for _ in range(3):
        now[0] += 1
        await monitor.tick()
    assert counted() == (1, 20.0)
    assert monitor.response_corrections == 1
