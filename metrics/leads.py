"""Speed to lead: per-lead state, keyed by lead, in the lead lane of an aggregate partition.

A lead's clock starts at its ``lead.created`` event time and stops at its first human touch:
an outbound call (any outcome), an email that is not automated, a meeting scheduled or a
conversation held that names the lead. Inbound calls and automated emails are not touches. A
lead lost or converted before any touch stops waiting without a response time.

Events arrive out of order and duplicated. The book keeps, per lead, the earliest creation,
touch and close it has seen (by event time), so its answer is the one in-order arrival would
give. When a touch with an earlier time arrives after a later one was taken as the first, the
book reports the change: the old response is retracted and the new one recorded. Responses are
reported as :class:`Response` records; the partition state files them into the windows of the
touch time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
from xxhash import xxh3_64_intdigest

from metrics.events import (
    CallCompleted,
    ConversationHeld,
    EmailSent,
    LeadAssigned,
    LeadConverted,
    LeadCreated,
    LeadLost,
    MeetingScheduled,
)

UNASSIGNED = "unassigned"
LEAD_PARTS = 32  # leads are persisted in this many parts per partition, by hash of the lead id

#: Event types that matter to a lead's clock, and so travel in the lead lane.
LEAD_LANE_TYPES = frozenset({
    "lead.created", "lead.assigned", "lead.lost", "lead.converted",
    "call.completed", "email.sent", "meeting.scheduled", "conversation.held",
})


def is_touch(data: Any) -> bool:
    """A first-human-touch candidate (SPEC section 1, lead response time)."""
    if isinstance(data, CallCompleted):
        return data.direction == "outbound"
    if isinstance(data, EmailSent):
        return not data.automated
    return isinstance(data, (MeetingScheduled, ConversationHeld))


def lead_part(lead_id: str) -> int:
    return xxh3_64_intdigest(lead_id.encode()) % LEAD_PARTS


class Response(msgspec.Struct, array_like=True, frozen=True):
    """A lead's response time, filed in the windows of ``touch_time``."""

    seconds: float
    rep: str | None
    team: str
    touch_time: float


class Lead(msgspec.Struct, array_like=True):
    """What is known about one lead. Times are event times (epoch seconds)."""

    created: float | None = None
    team: str | None = None  # the lead's team (from lead.created, else lead.assigned)
    owner: str | None = None
    owner_time: float = float("-inf")
    source: str | None = None
    region: str | None = None
    closed: float | None = None  # earliest lost/converted
    touch: float | None = None  # earliest touch
    touch_rep: str | None = None
    touch_team: str | None = None
    response: Response | None = None  # what is currently filed in the windows

    @property
    def waiting(self) -> bool:
        """Created, not touched, not closed."""
        return self.created is not None and self.touch is None and self.closed is None

    def wanted_response(self, waited: Callable[[str | None, float, float], float]) -> Response | None:
        if self.created is None or self.touch is None:
            return None
        if self.closed is not None and self.closed < self.touch:
            return None  # lost or converted before anyone touched it
        team = self.touch_team or self.team or UNASSIGNED
        seconds = max(0.0, waited(self.team or team, self.created, self.touch))
        return Response(seconds, self.touch_rep, team, self.touch)


def _wall(team: str | None, start: float, end: float) -> float:
    return end - start


class LeadBook:
    """The leads of one partition, with the waiting ones indexed for the overdue gauges."""

    def __init__(self, waited: Callable[[str | None, float, float], float] = _wall) -> None:
        self.leads: dict[str, Lead] = {}
        self.waiting: dict[str, Lead] = {}
        self.waited = waited
        self.dirty_parts: set[int] = set()

    def apply(self, lead_id: str, data: Any, t: float) -> tuple[Response | None, Response | None]:
        """Apply one event naming ``lead_id``; return (retracted, recorded) responses.

        Both are None when the lead's response did not change.
        """
        lead = self.leads.get(lead_id)
        if lead is None:
            lead = self.leads[lead_id] = Lead()
        changed = self._update(lead, data, t)
        if not changed:
            return None, None
        self.dirty_parts.add(lead_part(lead_id))
        if lead.waiting:
            self.waiting[lead_id] = lead
        else:
            self.waiting.pop(lead_id, None)
        wanted = lead.wanted_response(self.waited)
        if wanted == lead.response:
            return None, None
        old, lead.response = lead.response, wanted
        return old, wanted

    @staticmethod
    def _update(lead: Lead, data: Any, t: float) -> bool:
        if isinstance(data, LeadCreated):
            if lead.created is not None and lead.created <= t:
                return False
            lead.created = t
            lead.team = data.team_id or lead.team
            lead.source, lead.region = data.source, data.region
            if data.rep_id and t >= lead.owner_time:
                lead.owner, lead.owner_time = data.rep_id, t
            return True
        if isinstance(data, LeadAssigned):
            if t < lead.owner_time:
                return False
            lead.owner, lead.owner_time = data.rep_id, t
            if not lead.team and data.team_id:
                lead.team = data.team_id  # lead.created's team, when it names one, wins
            return True
        if isinstance(data, (LeadLost, LeadConverted)):
            if lead.closed is not None and lead.closed <= t:
                return False
            lead.closed = t
            return True
        if is_touch(data):
            if lead.touch is not None and lead.touch <= t:
                return False
            lead.touch, lead.touch_rep, lead.touch_team = t, data.rep_id, data.team_id
            return True
        return False

    # -- overdue ----------------------------------------------------------------------------
    def awaiting(self) -> Iterator[tuple[str, Lead]]:
        return iter(self.waiting.items())

    # -- expiry -----------------------------------------------------------------------------
    def expire(self, before: float) -> int:
        """Forget settled leads (answered or closed) whose last event is older than ``before``."""
        drop = [
            lead_id for lead_id, lead in self.leads.items()
            if not lead.waiting
            and max(x for x in (lead.created, lead.touch, lead.closed, lead.owner_time) if x is not None) < before
        ]
        for lead_id in drop:
            del self.leads[lead_id]
            self.dirty_parts.add(lead_part(lead_id))
        return len(drop)

    # -- snapshots --------------------------------------------------------------------------
    def parts(self, which: Iterable[int]) -> Iterator[tuple[int, dict[str, Lead]]]:
        wanted = set(which)
        by_part: dict[int, dict[str, Lead]] = {p: {} for p in wanted}
        for lead_id, lead in self.leads.items():
            p = lead_part(lead_id)
            if p in wanted:
                by_part[p][lead_id] = lead
        return iter(by_part.items())

    def load(self, leads: dict[str, Lead]) -> None:
        for lead_id, lead in leads.items():
            self.leads[lead_id] = lead
            if lead.waiting:
                self.waiting[lead_id] = lead
