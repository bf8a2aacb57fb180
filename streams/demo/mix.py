"""A synthetic, deterministic sales floor that emits SPEC section 2 CloudEvents.

Pure (no I/O, no Kafka) so the same stream feeds the live demo, the unit tests and the
benchmark's pre-produced data. Everything random comes from one `random.Random(seed)`: the same
seed, `start` and `n` give byte-identical events.

What it models, and why:

* a roster (one `rep.updated` per rep, first) so the worker knows teams, regions and targets;
* background activity in realistic proportions: mostly outbound calls (~40%, ~30% connected),
  emails (~25%, ~40% of them automated sequences), inbound calls, conversations, meetings,
  CRM updates, tool usage; some of it aimed at existing customers (customer engagement) or at
  open leads (from the lead's owner);
* lead and opportunity life cycles driven by a schedule of future actions (a heap keyed by event
  time): `lead.created` → (`lead.assigned`) → first human touch after a lognormal delay (median
  ~1 min, ~5% beyond the 300 s SLA so the demo shows overdue leads) → `lead.qualified` mql/sql →
  `lead.converted` / `lead.lost`; `opportunity.created` → `stage_changed`… → `won` / `lost`.
  Automated sequence emails may reach a lead before its first human touch, as in real life:
  they must not count as a response.

Cycles are compressed to minutes of event time (real ones take days) so a demo shows them.

Event time: in bulk mode (`rate=None`) times advance from `start` by a fixed small step chosen so
the last event is not after the wall clock (the worker rejects events from the future); in live
mode (`rate` given) each event is stamped with the clock when it is generated.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import orjson

ACTIVITIES = "sales.activities"
LEADS = "sales.leads"
DEALS = "sales.deals"
FEEDBACK = "sales.feedback"
REPS = "sales.reps"

# type -> (topic, CloudEvents source)
ROUTES: dict[str, tuple[str, str]] = {
    "call.completed": (ACTIVITIES, "dialer/demo"),
    "email.sent": (ACTIVITIES, "mail/demo"),
    "meeting.scheduled": (ACTIVITIES, "calendar/demo"),
    "conversation.held": (ACTIVITIES, "conversations/demo"),
    "crm.record_updated": (ACTIVITIES, "crm/demo"),
    "tool.used": (ACTIVITIES, "tools/demo"),
    "lead.created": (LEADS, "crm/demo"),
    "lead.assigned": (LEADS, "crm/demo"),
    "lead.qualified": (LEADS, "crm/demo"),
    "lead.converted": (LEADS, "crm/demo"),
    "lead.lost": (LEADS, "crm/demo"),
    "opportunity.created": (DEALS, "crm/demo"),
    "opportunity.stage_changed": (DEALS, "crm/demo"),
    "opportunity.won": (DEALS, "crm/demo"),
    "opportunity.lost": (DEALS, "crm/demo"),
    "spend.recorded": (DEALS, "finance/demo"),
    "nps.responded": (FEEDBACK, "survey/demo"),
    "enps.responded": (FEEDBACK, "hr/demo"),
    "rep.updated": (REPS, "crm/demo"),
}
TOPIC_BY_TYPE: dict[str, str] = {t: topic for t, (topic, _) in ROUTES.items()}

REGIONS = ("amer", "emea", "apac")
CURRENCY = "USD"
DEFAULT_STEP_SECONDS = 0.01  # bulk mode: 100 events per second of event time (400k ≈ 67 min)
OPP_STAGES = ("qualification", "discovery", "proposal", "negotiation")

X = TypeVar("X")


class DemoRecord(NamedTuple):
    """One Kafka record to produce: topic, key (UTF-8 id) and CloudEvent JSON value."""

    topic: str
    key: bytes
    value: bytes


def _table(weights: dict[X, int]) -> tuple[X, ...]:
    """A lookup table for weighted picks: `table[int(random() * len(table))]` is one index, far
    cheaper than `random.choices` per event (generation speed matters for the benchmark)."""
    return tuple(x for x, w in weights.items() for _ in range(w))


OUTBOUND_MISS = _table({"no_answer": 45, "voicemail": 37, "busy": 11, "failed": 7})
INBOUND_OUTCOME = _table({"connected": 70, "no_answer": 15, "voicemail": 10, "failed": 5})
LEAD_SOURCES = _table({"web": 40, "outbound": 25, "event": 20, "referral": 15})
REGION_PICK = _table({"amer": 45, "emea": 35, "apac": 20})
CRM_OBJECTS = _table(
    {"note": 30, "task": 25, "contact": 20, "lead": 10, "opportunity": 10, "account": 5}
)
TOOLS = _table(
    {"linkedin": 30, "gong": 25, "outreach": 20, "zoominfo": 10, "salesloft": 10, "docusign": 5}
)
CHANNELS = _table({"phone": 40, "video": 35, "chat": 15, "in_person": 10})
LOST_NEW = _table({"unresponsive": 55, "unqualified": 35, "other": 10})
LOST_MQL = _table({"unqualified": 50, "no_decision": 30, "unresponsive": 20})
LOST_SQL = _table({"competitor": 45, "no_decision": 45, "other": 10})
OPP_LOST = _table({"price": 30, "competitor": 30, "no_decision": 25, "timing": 15})
EXPANSION = _table({"upsell": 40, "cross_sell": 30, "renewal": 30})
NPS_SCORES = _table({0: 2, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 5, 7: 10, 8: 18, 9: 26, 10: 30})
ENPS_SCORES = _table({0: 1, 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 9, 7: 18, 8: 22, 9: 19, 10: 15})

Event = tuple[str, bytes, dict[str, Any]]  # (type, key, data)


class _Lead:
    __slots__ = ("id", "key", "rep", "region", "stage", "slot")

    def __init__(self, lead_id: str, rep: int, region: str) -> None:
        self.id = lead_id
        self.key = lead_id.encode()
        self.rep = rep  # -1 while unassigned
        self.region = region
        self.stage = 0  # 0 new, 1 mql, 2 sql, 3 closed (converted or lost)
        self.slot = -1


class _Opp:
    __slots__ = (
        "id",
        "rep",
        "customer",
        "lead_id",
        "amount",
        "deal_type",
        "region",
        "stage",
        "slot",
    )

    def __init__(
        self,
        opp_id: str,
        rep: int,
        customer: str,
        lead_id: str | None,
        amount: float,
        deal_type: str,
        region: str,
    ) -> None:
        self.id = opp_id
        self.rep = rep
        self.customer = customer
        self.lead_id = lead_id
        self.amount = amount
        self.deal_type = deal_type
        self.region = region
        self.stage = 0
        self.slot = -1


class _Pool:
    """Open leads/opportunities: O(1) add, remove (swap with last) and uniform random pick."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, obj: Any) -> None:
        obj.slot = len(self.items)
        self.items.append(obj)

    def remove(self, obj: Any) -> None:
        last = self.items.pop()
        if last is not obj:
            self.items[obj.slot] = last
            last.slot = obj.slot
        obj.slot = -1


class SalesFloor:
    """A sales organisation of `reps` reps in `teams` teams (round robin) over three regions.

    The floor is stateful: successive `events()` calls continue the same story (ids keep
    counting, open leads stay open), so event ids never repeat within one floor.
    """

    def __init__(
        self,
        reps: int = 1000,
        teams: int = 40,
        seed: int = 7,
        start: datetime | None = None,
        *,
        step_seconds: float = DEFAULT_STEP_SECONDS,
    ) -> None:
        if reps < 1 or teams < 1:
            raise ValueError("reps and teams must be >= 1")
        if step_seconds < 0:
            raise ValueError("step_seconds must be >= 0")
        self._rng = random.Random(seed)
        self._rand = self._rng.random
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._start_ms = None if start is None else int(start.timestamp() * 1000)
        self._step_us = int(step_seconds * 1_000_000)
        # Event ids: deterministic from (seed, start); without a fixed start, unique per floor so a
        # restarted demo never re-sends ids the worker would drop as producer duplicates.
        anchor = self._start_ms if self._start_ms is not None else f"t{time.time_ns()}"
        h = hashlib.blake2b(f"{seed}:{anchor}".encode(), digest_size=12).hexdigest()
        # UUID-shaped (8-4-4-4-12, version 4 / variant nibbles) with the counter as the last group
        self._id_prefix = f"{h[0:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) % 4]}{h[16:19]}-"
        self._tag = h[:4]  # keeps lead/opportunity/customer ids of separate runs apart
        self._count = 0

        self._nreps = reps
        self._team_ids = [f"team-{t + 1:02d}" for t in range(min(teams, reps))]
        team_region = [REGIONS[t % len(REGIONS)] for t in range(len(self._team_ids))]
        self._rep_ids = [f"rep-{i + 1:04d}" for i in range(reps)]
        self._rep_keys = [r.encode() for r in self._rep_ids]
        self._rep_team = [self._team_ids[i % len(self._team_ids)] for i in range(reps)]
        self._rep_region = [team_region[i % len(self._team_ids)] for i in range(reps)]
        self._reps_in: dict[str, list[int]] = {g: [] for g in REGIONS}
        for i, g in enumerate(self._rep_region):
            self._reps_in[g].append(i)
        # existing customers and their account owners
        self._cust_ids = [f"cust-{c + 1:05d}" for c in range(reps * 2)]
        self._cust_owner = [c % reps for c in range(reps * 2)]

        self._roster_next = 0
        self._leads = _Pool()
        self._opps = _Pool()
        self._lead_seq = 0
        self._opp_seq = 0
        self._cust_seq = 0
        self._heap: list[tuple[int, int, Callable[[int, Any], Event], Any]] = []
        self._heap_seq = 0
        self._last_ms: int | None = None
        self._sec = -1
        self._sec_prefix = ""

        self._kinds: tuple[Callable[[int], Event], ...] = _table(
            {
                self._call_out: 425,
                self._call_in: 50,
                self._email: 250,
                self._conversation: 55,
                self._meeting: 35,
                self._crm: 95,
                self._tool: 60,
                self._lead_created: 12,
                self._expansion: 4,
                self._nps: 8,
                self._enps: 3,
                self._spend: 3,
            }
        )

    # ------------------------------------------------------------------ stream

    def events(
        self,
        n: int | None = None,
        *,
        rate: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Iterator[DemoRecord]:
        """Yield `n` records (None: forever).

        `rate` only selects the time stamping (the caller paces): None is bulk mode, event times
        start + i * step ending no later than now; otherwise live mode, each event stamped with
        `clock()` (default `time.time`) as it is generated.
        """
        clock = clock or time.time
        live = rate is not None
        now_ms = int(clock() * 1000)
        step_us = self._step_us
        if self._last_ms is not None:
            base = self._last_ms
        elif self._start_ms is not None:
            base = self._start_ms
        elif n:
            base = now_ms - 1000 - n * step_us // 1000
        else:
            base = now_ms - 3_600_000
        if n and not live and now_ms - 1000 > base:
            step_us = min(step_us, (now_ms - 1000 - base) * 1000 // n)
        horizon = now_ms

        rand = self._rand
        kinds = self._kinds
        nkinds = len(kinds)
        heap = self._heap
        heappop = heapq.heappop
        routes = ROUTES
        dumps = orjson.dumps
        make = DemoRecord._make
        id_prefix = self._id_prefix
        roster = self._roster
        sec_cache, sec_prefix = self._sec, self._sec_prefix
        last = self._last_ms if self._last_ms is not None else base
        count = self._count
        k = 0
        try:
            while n is None or k < n:
                if live:
                    t = int(clock() * 1000)
                    if t < last:  # wall clock stepped back: keep event time non-decreasing
                        t = last
                else:
                    t = base + k * step_us // 1000
                    if t > horizon:
                        horizon = max(horizon, int(clock() * 1000))
                        if t > horizon:
                            t = horizon
                last = t
                k += 1

                if self._roster_next < self._nreps:
                    etype, key, data = roster(t)
                elif heap and heap[0][0] <= t:
                    _, _, action, obj = heappop(heap)
                    etype, key, data = action(t, obj)
                else:
                    etype, key, data = kinds[int(rand() * nkinds)](t)

                sec = t // 1000
                if sec != sec_cache:
                    sec_cache = sec
                    sec_prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
                topic, source = routes[etype]
                yield make(
                    (
                        topic,
                        key,
                        dumps(
                            {
                                "specversion": "1.0",
                                "id": f"{id_prefix}{count:012x}",
                                "source": source,
                                "type": etype,
                                "datacontenttype": "application/json",
                                "time": f"{sec_prefix}{t - sec * 1000:03d}Z",
                                "data": data,
                            }
                        ),
                    )
                )
                count += 1
        finally:  # also on early close: the floor continues where this stream stopped
            self._count = count
            self._last_ms = last if k else self._last_ms
            self._sec, self._sec_prefix = sec_cache, sec_prefix

    # ------------------------------------------------------------------ helpers

    def _schedule(self, due_ms: int, action: Callable[[int, Any], Event], obj: Any) -> None:
        self._heap_seq += 1
        heapq.heappush(self._heap, (due_ms, self._heap_seq, action, obj))

    def _delay_ms(self, median_s: float, sigma: float, cap_s: float) -> int:
        """Lognormal delay: most actions come soon, a long tail comes late (as people do)."""
        return int(min(cap_s, median_s * math.exp(sigma * self._rng.gauss())) * 1000)

    def _who(
        self, rep: int, lead_id: str | None = None, customer_id: str | None = None
    ) -> dict[str, Any]:
        d: dict[str, Any] = {"rep_id": self._rep_ids[rep]}
        if self._rand() < 0.97:  # a few producers leave team_id out: the roster fills it in
            d["team_id"] = self._rep_team[rep]
        if lead_id is not None:
            d["lead_id"] = lead_id
        if customer_id is not None:
            d["customer_id"] = customer_id
        return d

    def _target(self) -> dict[str, Any]:
        """Who a rep's activity is aimed at: an open lead (from its owner), an existing customer
        (from its account owner), or an unknown prospect (any rep). Inlined `_who`: hot path."""
        rand = self._rand
        x = rand()
        leads = self._leads.items
        if x < 0.30 and leads:
            lead = leads[int(rand() * len(leads))]
            rep = lead.rep
            extra = ("lead_id", lead.id)
        elif x < 0.50:
            c = int(rand() * len(self._cust_ids))
            rep = self._cust_owner[c]
            extra = ("customer_id", self._cust_ids[c])
        else:
            rep = int(rand() * self._nreps)
            extra = None
        d: dict[str, Any] = {"rep_id": self._rep_ids[rep]}
        if rand() < 0.97:
            d["team_id"] = self._rep_team[rep]
        if extra is not None:
            d[extra[0]] = extra[1]
        return d

    def _call_fields(self, d: dict[str, Any], direction: str) -> Event:
        rand = self._rand
        if direction == "outbound":
            x = rand()
            outcome = "connected" if x < 0.30 else OUTBOUND_MISS[int(rand() * len(OUTBOUND_MISS))]
        else:
            outcome = INBOUND_OUTCOME[int(rand() * len(INBOUND_OUTCOME))]
        d["direction"] = direction
        d["outcome"] = outcome
        if outcome == "connected":
            d["talk_seconds"] = 30 + int(871 * rand() * rand())  # skewed to short calls
            d["wrap_seconds"] = int(121 * rand())
        else:
            d["talk_seconds"] = 0
            d["wrap_seconds"] = int(21 * rand())
        return "call.completed", d["rep_id"].encode(), d

    # ------------------------------------------------------------------ background kinds

    def _roster(self, t: int) -> Event:
        i = self._roster_next
        self._roster_next = i + 1
        rand = self._rand
        targets = {
            "calls_made": {"day": 50 + 5 * int(5 * rand())},
            "emails_sent": {"day": 30 + 5 * int(5 * rand())},
            "meetings_scheduled": {"week": 5 + int(6 * rand())},
            "revenue": {"quarter": 100_000 + 25_000 * int(5 * rand())},
        }
        data = {
            "rep_id": self._rep_ids[i],
            "team_id": self._rep_team[i],
            "region": self._rep_region[i],
            "targets": targets,
        }
        return "rep.updated", self._rep_keys[i], data

    def _call_out(self, t: int) -> Event:
        return self._call_fields(self._target(), "outbound")

    def _call_in(self, t: int) -> Event:
        return self._call_fields(self._target(), "inbound")

    def _email(self, t: int) -> Event:
        d = self._target()
        d["automated"] = self._rand() < 0.40
        return "email.sent", d["rep_id"].encode(), d

    def _conversation(self, t: int) -> Event:
        d = self._target()
        d["channel"] = CHANNELS[int(self._rand() * len(CHANNELS))]
        d["duration_seconds"] = 60 + int(3540 * self._rand() ** 3)
        return "conversation.held", d["rep_id"].encode(), d

    def _meeting(self, t: int) -> Event:
        opps = self._opps.items
        if opps and self._rand() < 0.30:
            opp = opps[int(self._rand() * len(opps))]
            d = self._who(opp.rep, customer_id=opp.customer)
            d["opportunity_id"] = opp.id
        else:
            d = self._target()
        return "meeting.scheduled", d["rep_id"].encode(), d

    def _crm(self, t: int) -> Event:
        rand = self._rand
        rep = int(rand() * self._nreps)
        d = self._who(rep)
        d["object"] = CRM_OBJECTS[int(rand() * len(CRM_OBJECTS))]
        d["action"] = "created" if rand() < 0.40 else "updated"
        return "crm.record_updated", self._rep_keys[rep], d

    def _tool(self, t: int) -> Event:
        rep = int(self._rand() * self._nreps)
        d = self._who(rep)
        d["tool"] = TOOLS[int(self._rand() * len(TOOLS))]
        return "tool.used", self._rep_keys[rep], d

    def _nps(self, t: int) -> Event:
        c = int(self._rand() * len(self._cust_ids))
        rep = self._cust_owner[c]
        d = self._who(rep, customer_id=self._cust_ids[c])
        d["score"] = NPS_SCORES[int(self._rand() * len(NPS_SCORES))]
        d["region"] = self._rep_region[rep]
        return "nps.responded", self._rep_keys[rep], d

    def _enps(self, t: int) -> Event:
        team = self._team_ids[int(self._rand() * len(self._team_ids))]
        return (
            "enps.responded",
            team.encode(),
            {"score": ENPS_SCORES[int(self._rand() * len(ENPS_SCORES))], "team_id": team},
        )

    def _spend(self, t: int) -> Event:
        rand = self._rand
        if rand() < 0.6:
            team = self._team_ids[int(rand() * len(self._team_ids))]
            return (
                "spend.recorded",
                team.encode(),
                {
                    "amount": round(200 + 4800 * rand(), 2),
                    "currency": CURRENCY,
                    "category": "sales",
                    "team_id": team,
                },
            )
        return (
            "spend.recorded",
            b"marketing",
            {
                "amount": round(1000 + 24000 * rand(), 2),
                "currency": CURRENCY,
                "category": "marketing",
            },
        )

    # ------------------------------------------------------------------ leads

    def _lead_created(self, t: int) -> Event:
        rand = self._rand
        self._lead_seq += 1
        source = LEAD_SOURCES[int(rand() * len(LEAD_SOURCES))]
        if source == "outbound" or rand() < 0.70:
            rep = int(rand() * self._nreps)
            region = self._rep_region[rep]
        else:  # inbound web/event/referral lead, routed to a rep later
            rep = -1
            region = REGION_PICK[int(rand() * len(REGION_PICK))]
        lead = _Lead(f"lead-{self._tag}-{self._lead_seq:06d}", rep, region)
        data: dict[str, Any] = {"lead_id": lead.id}
        if rep >= 0:
            data["rep_id"] = self._rep_ids[rep]
            data["team_id"] = self._rep_team[rep]
            self._schedule(t + self._delay_ms(60, 1.0, 7200), self._first_touch, lead)
            if source != "outbound" and rand() < 0.5:  # marketing sequence fires at once
                self._schedule(t + self._delay_ms(5, 0.8, 120), self._sequence_email, lead)
            key = self._rep_keys[rep]
        else:
            self._schedule(t + self._delay_ms(20, 0.8, 600), self._lead_assigned, lead)
            key = lead.key
        data["source"] = source
        data["region"] = region
        return "lead.created", key, data

    def _lead_assigned(self, t: int, lead: _Lead) -> Event:
        reps = self._reps_in[lead.region] or list(range(self._nreps))
        lead.rep = reps[int(self._rand() * len(reps))]
        self._schedule(t + self._delay_ms(45, 1.0, 7200), self._first_touch, lead)
        return (
            "lead.assigned",
            self._rep_keys[lead.rep],
            {
                "lead_id": lead.id,
                "rep_id": self._rep_ids[lead.rep],
                "team_id": self._rep_team[lead.rep],
            },
        )

    def _sequence_email(self, t: int, lead: _Lead) -> Event:
        # a lead closed meanwhile has left the sequence: the email goes to someone else
        d = self._who(lead.rep, lead_id=lead.id if lead.stage < 3 else None)
        d["automated"] = True
        return "email.sent", self._rep_keys[lead.rep], d

    def _first_touch(self, t: int, lead: _Lead) -> Event:
        """The first human touch (speed to lead); afterwards the lead is open for more touches."""
        self._leads.add(lead)
        self._schedule(t + self._delay_ms(120, 0.8, 3600), self._lead_progress, lead)
        d = self._who(lead.rep, lead_id=lead.id)
        x = self._rand()
        if x < 0.55:
            return self._call_fields(d, "outbound")
        key = self._rep_keys[lead.rep]
        if x < 0.85:
            d["automated"] = False
            return "email.sent", key, d
        if x < 0.93:
            d["channel"] = "phone"
            d["duration_seconds"] = 60 + int(900 * self._rand())
            return "conversation.held", key, d
        return "meeting.scheduled", key, d

    def _lead_progress(self, t: int, lead: _Lead) -> Event:
        rand = self._rand
        rep = lead.rep
        who = {"lead_id": lead.id, "rep_id": self._rep_ids[rep], "team_id": self._rep_team[rep]}
        key = self._rep_keys[rep]
        stage = lead.stage
        lost_p, reasons = ((0.35, LOST_NEW), (0.40, LOST_MQL), (0.50, LOST_SQL))[stage]
        if rand() < lost_p:
            self._leads.remove(lead)
            lead.stage = 3
            who["reason"] = reasons[int(rand() * len(reasons))]
            return "lead.lost", key, who
        if stage < 2:
            lead.stage = stage + 1
            self._schedule(t + self._delay_ms(180, 0.8, 3600), self._lead_progress, lead)
            who["stage"] = "mql" if stage == 0 else "sql"
            return "lead.qualified", key, who
        self._leads.remove(lead)
        lead.stage = 3
        self._cust_seq += 1
        customer = f"cust-{self._tag}-{self._cust_seq:05d}"
        self._cust_ids.append(customer)
        self._cust_owner.append(rep)
        opp = self._new_opp(rep, customer, lead.id, 22_000, "new")
        self._schedule(t + self._delay_ms(20, 0.7, 600), self._opp_created, opp)
        who["customer_id"] = customer
        who["opportunity_id"] = opp.id
        return "lead.converted", key, who

    # ------------------------------------------------------------------ opportunities

    def _new_opp(
        self, rep: int, customer: str, lead_id: str | None, median: float, deal_type: str
    ) -> _Opp:
        self._opp_seq += 1
        amount = round(median * math.exp(0.6 * self._rng.gauss()), 2)
        return _Opp(
            f"opp-{self._tag}-{self._opp_seq:06d}",
            rep,
            customer,
            lead_id,
            amount,
            deal_type,
            self._rep_region[rep],
        )

    def _expansion(self, t: int) -> Event:
        """A new opportunity with an existing customer (upsell, cross-sell, renewal)."""
        c = int(self._rand() * len(self._cust_ids))
        deal_type = EXPANSION[int(self._rand() * len(EXPANSION))]
        opp = self._new_opp(self._cust_owner[c], self._cust_ids[c], None, 15_000, deal_type)
        return self._opp_created(t, opp)

    def _opp_created(self, t: int, opp: _Opp) -> Event:
        self._opps.add(opp)
        self._schedule(t + self._delay_ms(180, 0.8, 7200), self._opp_progress, opp)
        d = self._who(opp.rep, lead_id=opp.lead_id, customer_id=opp.customer)
        d["opportunity_id"] = opp.id
        d["amount"] = opp.amount
        d["currency"] = CURRENCY
        d["region"] = opp.region
        return "opportunity.created", self._rep_keys[opp.rep], d

    def _opp_progress(self, t: int, opp: _Opp) -> Event:
        rand = self._rand
        key = self._rep_keys[opp.rep]
        d = {
            "opportunity_id": opp.id,
            "rep_id": self._rep_ids[opp.rep],
            "team_id": self._rep_team[opp.rep],
        }
        if rand() < 0.18:
            self._opps.remove(opp)
            d["reason"] = OPP_LOST[int(rand() * len(OPP_LOST))]
            d["region"] = opp.region
            return "opportunity.lost", key, d
        if opp.stage == len(OPP_STAGES) - 1:
            self._opps.remove(opp)
            d["amount"] = round(opp.amount * (0.85 + 0.3 * rand()), 2)
            d["currency"] = CURRENCY
            d["customer_id"] = opp.customer
            d["region"] = opp.region
            d["deal_type"] = opp.deal_type
            return "opportunity.won", key, d
        d["from_stage"] = OPP_STAGES[opp.stage]
        opp.stage += 1
        d["to_stage"] = OPP_STAGES[opp.stage]
        self._schedule(t + self._delay_ms(180, 0.8, 7200), self._opp_progress, opp)
        return "opportunity.stage_changed", key, d
