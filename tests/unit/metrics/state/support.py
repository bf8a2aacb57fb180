"""Helpers of the partition state tests: events, feeds, bundles, and the SPEC section 1
activity KPIs counted straight from the events (:func:`spec_activity`), never read back from
the catalog.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from metrics.catalog import Catalog
from metrics.events import (
    Bundle,
    CallCompleted,
    ConversationHeld,
    CrmRecordUpdated,
    EmailSent,
    Event,
    LeadCreated,
    MeetingScheduled,
    ToolUsed,
)
from metrics.state import UNASSIGNED, PartitionState
from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()  # Monday 09:00 UTC
MINUTE, HOUR, DAY = KIND_INDEX["minute"], KIND_INDEX["hour"], KIND_INDEX["day"]
ACTIVITY_TYPES = ("call.completed", "email.sent", "meeting.scheduled", "conversation.held")
TOPIC = "sales.activities"


# -- helpers -----------------------------------------------------------------------------------


def new_state(**kw) -> PartitionState:
    return PartitionState(CAT, CAL, **kw)


def ev(off: int, t: float, data, *, eid: str | None = None, source: str = "dialer/acme") -> Event:
    return Event(off, source, eid if eid is not None else f"id-{source}-{off}", t, data)


class Feed:
    """Forwards events of one source partition in bundles, numbering source offsets."""

    def __init__(self, topic: str = TOPIC, partition: int = 0) -> None:
        self.topic, self.partition = topic, partition
        self.next_offset = 0

    def events(self, items: Iterable[tuple[float, object]], **kw) -> list[Event]:
        out = []
        for t, data in items:
            out.append(ev(self.next_offset, t, data, **kw))
            self.next_offset += 1
        return out

    def bundle(self, events: list[Event]) -> Bundle:
        return Bundle(self.topic, self.partition, events)


def apply_all(state: PartitionState, bundles: list[Bundle], first_offset: int = 0) -> int:
    for i, b in enumerate(bundles):
        state.apply(b, first_offset + i)
    return first_offset + len(bundles)


def in_bundles(feed: Feed, events: list[Event], rng: random.Random, max_size: int = 25) -> list[Bundle]:
    bundles, i = [], 0
    while i < len(events):
        n = rng.randint(1, max_size)
        bundles.append(feed.bundle(events[i : i + n]))
        i += n
    return bundles


# The stored activity KPIs of SPEC section 1 (and the hidden parts of their ratios). Other
# families of the catalog are not looked at here.
ACTIVITY_KPIS = frozenset({
    "calls_made", "calls_connected", "calls_received", "calls_received_connected",
    "talk_seconds", "handled_calls", "handle_seconds", "emails_sent", "emails_automated",
    "conversations", "conversation_seconds", "meetings_scheduled", "crm_updates", "tool_uses",
    "customer_engagements",
})


def window(state: PartitionState, kind: int, t: float) -> dict[tuple, float]:
    """Non-zero activity KPI values of the window of ``kind`` containing ``t`` (teams resolved)."""
    start = CAL.bounds(WINDOW_KINDS[kind], t)[0]
    return {k: v for k, v in state.window_values(kind, start).items() if v and k[0] in ACTIVITY_KPIS}


def of(values: dict[tuple, float], kpi: str) -> dict[tuple, float]:
    return {k[1:]: v for k, v in values.items() if k[0] == kpi}


def total(values: dict[tuple, float], kpi: str) -> float:
    return sum(v for k, v in values.items() if k[0] == kpi)


def spec_activity(events: Iterable[Event], team_of: Callable[[str], str]) -> dict[tuple, float]:
    """SPEC section 1 activity KPIs counted straight from the events, keyed (kpi, rep, team, *dims)."""
    out: dict[tuple, float] = defaultdict(float)
    for e in events:
        d, typ = e.data, e.type
        if typ == "rep.updated":
            continue
        rep = d.rep_id
        team = d.team_id or team_of(rep)

        def inc(kpi: str, v: float = 1.0, *dims: str, _rep: str = rep, _team: str = team) -> None:
            out[(kpi, _rep, _team, *dims)] += v

        if typ == "call.completed":
            connected = d.outcome == "connected"
            if d.direction == "outbound":
                inc("calls_made")
                if connected:
                    inc("calls_connected")
            else:
                inc("calls_received")
                if connected:
                    inc("calls_received_connected")
            inc("talk_seconds", d.talk_seconds)
            if connected:
                inc("handled_calls")
                inc("handle_seconds", d.talk_seconds + d.wrap_seconds)
        elif typ == "email.sent":
            inc("emails_automated" if d.automated else "emails_sent")
        elif typ == "conversation.held":
            inc("conversations")
            inc("conversation_seconds", d.duration_seconds)
        elif typ == "meeting.scheduled":
            inc("meetings_scheduled")
        elif typ == "crm.record_updated":
            inc("crm_updates")
        elif typ == "tool.used":
            inc("tool_uses", 1.0, d.tool)
        if typ in ACTIVITY_TYPES and d.customer_id is not None:
            inc("customer_engagements")
    return {k: v for k, v in out.items() if v}


REP_TEAM = {"rep-0": "team-a", "rep-1": "team-a", "rep-2": "team-b", "rep-3": "team-b"}
ROSTER_REP = "rep-4"  # never sends team_id; the roster puts it in team-c
LOST_REP = "rep-5"  # never sends team_id and is not in the roster


def random_activity(rng: random.Random):
    rep = rng.choice([*REP_TEAM, ROSTER_REP, LOST_REP])
    team = REP_TEAM.get(rep)
    customer = rng.choice([None, None, "cust-1", "cust-2"])
    lead = rng.choice([None, "lead-1"])
    r = rng.random()
    if r < 0.45:
        connected = rng.random() < 0.4
        return CallCompleted(
            rep,
            rng.choice(["outbound", "outbound", "inbound"]),
            "connected" if connected else rng.choice(["no_answer", "voicemail", "busy", "failed"]),
            team_id=team,
            lead_id=lead,
            customer_id=customer,
            talk_seconds=float(rng.randint(1, 900)) if connected else float(rng.choice([0, 0, 20])),
            wrap_seconds=float(rng.randint(0, 120)),
        )
    if r < 0.65:
        return EmailSent(rep, team_id=team, lead_id=lead, customer_id=customer,
                         automated=rng.random() < 0.4)
    if r < 0.72:
        return MeetingScheduled(rep, team_id=team, customer_id=customer)
    if r < 0.8:
        return ConversationHeld(rep, team_id=team, customer_id=customer, channel="video",
                                duration_seconds=float(rng.randint(60, 1800)))
    if r < 0.88:
        return CrmRecordUpdated(rep, rng.choice(["contact", "note"]), "updated", team_id=team)
    if r < 0.97:
        return ToolUsed(rep, rng.choice(["gong", "linkedin", "outreach"]), team_id=team)
    return LeadCreated("lead-9", rep_id=rep)  # no activity KPI reads it


def roster_team(rep: str) -> str:
    return "team-c" if rep == ROSTER_REP else REP_TEAM.get(rep, UNASSIGNED)


def remembered(state: PartitionState) -> dict[bytes, int]:
    """Identities remembered (live) -> the minute of their first sighting."""
    return dict(state.dedup.ids.live(state.dedup.live_from(state.watermark)))
