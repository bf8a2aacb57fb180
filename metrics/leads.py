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

A lead nobody touches, loses or converts does not wait forever: once its creation is a wait
horizon (``lead_wait_horizon_seconds``, 30 days by default) behind the partition's watermark it
is forgotten (see :meth:`LeadBook.apply` and :meth:`LeadBook.expire_waiting`). The decision is
taken against event time only, so a replay after a crash takes it the same way. A touch that
arrives for a forgotten lead finds no creation: the lead is unknown then and gets no response
time.
"""

from __future__ import annotations

import heapq
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
#: Default wait horizon: a waiting lead created this long before the partition's watermark is
#: forgotten (a month: far beyond any first-response SLA, and the alerts topic keeps its
#: alerts that long plus a margin, see ``streams.app.ensure_topics``).
LEAD_WAIT_HORIZON_SECONDS = 30 * 86400.0

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
    counted: bool = False  # its first response is in the cumulative histogram (never twice)

    @property
    def last_time(self) -> float:
        """The event time of the latest event that changed the lead."""
        last = self.owner_time  # never None (-inf until owned)
        for x in (self.created, self.touch, self.closed):
            if x is not None and x > last:
                last = x
        return last

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
        #: (created, lead id) of waiting leads, earliest first, for :meth:`expire_waiting`;
        #: entries of leads no longer waiting (or created earlier since) are skipped there
        self._wait_heap: list[tuple[float, str]] = []
        self.expired = 0  # waiting leads forgotten past the wait horizon, since the last drain

    def apply(
        self, lead_id: str, data: Any, t: float, wait_before: float = float("-inf"),
        settled_before: float = float("-inf"),
    ) -> tuple[Response | None, Response | None]:
        """Apply one event naming ``lead_id``; return (retracted, recorded) responses.

        Both are None when the lead's response did not change. A lead that expiry would forget
        (still waiting although created at or before ``wait_before``, the wait horizon behind the
        partition's watermark; or settled with its last event before ``settled_before``, the
        dedup horizon behind it) is forgotten first, whether or not :meth:`expire_waiting` and
        :meth:`expire` got to it yet: so the event meets the same (unknown) lead in a replay as
        in the first pass, wherever expiry runs in between.
        """
        lead = self.leads.get(lead_id)
        if lead is not None:
            if lead.waiting:
                if lead.created <= wait_before:  # type: ignore[operator]
                    self._forget_waiting(lead_id)
                    lead = None
            elif lead.last_time < settled_before:
                del self.leads[lead_id]
                self.dirty_parts.add(lead_part(lead_id))
                lead = None
        if lead is None:
            lead = self.leads[lead_id] = Lead()
        was_waiting, created = lead.waiting, lead.created
        changed = self._update(lead, data, t)
        if not changed:
            return None, None
        self.dirty_parts.add(lead_part(lead_id))
        if lead.waiting:
            self.waiting[lead_id] = lead
            if not was_waiting or lead.created != created:
                self._push_waiting(lead_id, lead)
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
    def _push_waiting(self, lead_id: str, lead: Lead) -> None:
        heap = self._wait_heap
        heapq.heappush(heap, (lead.created, lead_id))  # type: ignore[arg-type]
        if len(heap) > 2 * len(self.waiting) + 1024:  # mostly leads answered since: rebuild
            self._wait_heap = [(w.created, i) for i, w in self.waiting.items()]  # type: ignore[misc]
            heapq.heapify(self._wait_heap)

    def _forget_waiting(self, lead_id: str) -> None:
        del self.leads[lead_id]
        del self.waiting[lead_id]
        self.dirty_parts.add(lead_part(lead_id))
        self.expired += 1

    def expire_waiting(self, before: float) -> int:
        """Forget waiting leads created at or before ``before`` (the wait horizon behind the
        partition's watermark). Cheap when none is due: a heap of creation times."""
        heap = self._wait_heap
        n = 0
        while heap and heap[0][0] <= before:
            created, lead_id = heapq.heappop(heap)
            lead = self.waiting.get(lead_id)
            if lead is not None and lead.created == created:
                self._forget_waiting(lead_id)
                n += 1
        return n

    def drain_expired(self) -> int:
        n, self.expired = self.expired, 0
        return n

    def expire(self, before: float) -> int:
        """Forget settled leads (answered or closed) whose last event is older than ``before``."""
        drop = [
            lead_id for lead_id, lead in self.leads.items()
            if not lead.waiting and lead.last_time < before
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
                self._push_waiting(lead_id, lead)
