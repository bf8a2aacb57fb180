"""The event mixes of `salespulse bench` (``--mix``).

* ``demo``: the demo sales floor as it is (:class:`streams.demo.mix.SalesFloor`): about a quarter of its
  events (26%) are lead lane types naming a lead, so they also travel the lead lane.
* ``lead-heavy``: the same floor, except that calls (inbound and outbound, ~48% of the events)
  are aimed at an open lead from its owner about 60% of the time instead of the demo's 30%, as
  on a floor that works an inbound lead queue: about 40% of all events then travel the lead lane
  as well (issue 13: "the benchmark should include a lead-heavy mix"; every call naming a lead
  would give ~57%). Until the first lead is open (the first minutes of event time)
  calls keep the demo's targets.

The demo's own output is not changed: the lead-heavy floor is a subclass that overrides the two
call kinds only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from metrics.leads import LEAD_LANE_TYPES
from streams.demo.mix import DemoRecord, Event, SalesFloor

MIXES = ("demo", "lead-heavy")
LEAD_CALL_SHARE = 0.45  # calls aimed at a lead first; the rest as the demo (30% to a lead)


class LeadHeavyFloor(SalesFloor):
    """Most calls name an open lead and come from the lead's owner."""

    def _lead_target(self) -> dict[str, Any]:
        leads = self._leads.items
        rand = self._rand
        if not leads or rand() >= LEAD_CALL_SHARE:
            return self._target()
        lead = leads[int(rand() * len(leads))]
        d: dict[str, Any] = {"rep_id": self._rep_ids[lead.rep]}
        if rand() < 0.97:
            d["team_id"] = self._rep_team[lead.rep]
        d["lead_id"] = lead.id
        return d

    def _call_out(self, t: int) -> Event:
        return self._call_fields(self._lead_target(), "outbound")

    def _call_in(self, t: int) -> Event:
        return self._call_fields(self._lead_target(), "inbound")


def floor(mix: str, reps: int, teams: int, seed: int) -> SalesFloor:
    """The sales floor of a mix."""
    if mix == "demo":
        return SalesFloor(reps=reps, teams=teams, seed=seed)
    if mix == "lead-heavy":
        return LeadHeavyFloor(reps=reps, teams=teams, seed=seed)
    raise ValueError(f"unknown mix {mix!r}; one of {', '.join(MIXES)}")


def lead_lane_share(records: Iterable[DemoRecord]) -> float:
    """The share of records that the ingest stage also routes to the lead lane: a lead lane
    type naming a lead (``streams.ingest``)."""
    total = lane = 0
    for rec in records:
        total += 1
        if b'"lead_id"' in rec.value:
            event = orjson.loads(rec.value)
            if event["type"] in LEAD_LANE_TYPES and event["data"].get("lead_id"):
                lane += 1
    return lane / total if total else 0.0
