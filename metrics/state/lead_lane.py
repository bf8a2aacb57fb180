"""The lead lane: lead events update the lead book (``metrics.leads``), and each change of a
lead's response is filed into (or retracted from) the response samples of its windows.

A lead event first forgets its lead if the lead is past its horizon, so the outcome does not
depend on when expiry runs. Copies of an event in the lead lane are deduplicated apart from its
KPI-lane copy (a salted identity). Responses are handed to the cumulative histogram once per
lead (:meth:`LeadLane.count_response`).
"""

from __future__ import annotations

import msgspec

from metrics.events import DATA_TYPES, Bundle
from metrics.labels import REP, TEAM
from metrics.leads import LEAD_LANE_TYPES, Response, is_touch, lead_part
from metrics.state.sightings import SEQ_BITS

LEAD_LANE_SALT = 0x9E3779B97F4A7C15  # lead-lane copies of an event are deduplicated apart
#: the data types of the lead lane's types (each has ``lead_id``, ``rep_id`` and ``team_id``)
LEAD_LANE_CLASSES = frozenset(DATA_TYPES[t] for t in LEAD_LANE_TYPES)
RESPONSE_SERIES = "lead_response_seconds"


class LeadLane:
    """The lead lane of :class:`metrics.state.PartitionState`."""

    def _apply_leads(self, bundle: Bundle, offset: int, replaying: bool) -> None:
        """Lead-lane events: update lead state, file response changes into windows."""
        src = (bundle.topic, bundle.partition, bundle.lane)
        src_hw = self.sources.get(src, -1)
        base_seq = offset << SEQ_BITS
        book = self.leads
        gated = self.label_caps is not None
        reps_in, teams_in = self.labels[REP], self.labels[TEAM]
        horizon, wait_horizon = self.horizon, self.wait_horizon
        first = self.dedup.first  # producer duplicates (metrics.dedup), apart from the KPI lane
        wm = self.watermark  # kept in step with self.watermark (only this loop moves it)
        events = bundle.events
        again = bool(events) and events[0].offset <= src_hw  # offsets ascend (FastPath.apply)
        for index, ev in enumerate(events):
            t = ev.time
            if again:
                if ev.offset <= src_hw and self._forwarded_again(ev, t, src, LEAD_LANE_SALT):
                    continue
                src_hw = ev.offset
            if t <= wm - horizon:
                continue  # counted late in the KPI lane
            if not first(ev.source, ev.id, LEAD_LANE_SALT, int(t // 60.0), base_seq | index, wm):
                continue  # a duplicate (counted in the KPI lane)
            if t > wm:
                self.watermark = wm = t
            data = ev.data
            if type(data) not in LEAD_LANE_CLASSES:
                continue
            lead_id = data.lead_id  # type: ignore[attr-defined]
            if lead_id is None:
                continue
            if gated:
                # Admit the labels a response may carry (the touch's rep, a team) here, where
                # a replay passes too, even when this lead's part already holds the record.
                team = data.team_id  # type: ignore[attr-defined]
                if team is not None and team not in teams_in:
                    self.admit(TEAM, team)
                rep = data.rep_id  # type: ignore[attr-defined]
                if rep is not None and rep not in reps_in and is_touch(data):
                    self.admit(REP, rep)
            if replaying and self.lead_stamps.get(lead_part(lead_id), -1) >= offset:
                continue  # this lead's part already holds the record
            old, new = book.apply(lead_id, data, t, wm - wait_horizon, wm - horizon)
            if old is not None:
                self._file_response(old, offset, replaying, retract=True)
            if new is not None:
                self._file_response(new, offset, replaying, retract=False)
            if old is not None or new is not None:
                self._response_changes.add(lead_id)
        if events and not again:
            src_hw = events[-1].offset
        if src_hw >= 0:
            self.sources[src] = src_hw

    def _file_response(self, r: Response, offset: int, replaying: bool, *, retract: bool) -> None:
        # Samples and the pending sums are independent: no fold needed (stamps change only at
        # a snapshot, which folds first).
        key = (RESPONSE_SERIES, self.label_of(REP, r.rep), self.label_of(TEAM, r.team))
        for kind, (start, end) in enumerate(self.calendar.bounds_all(r.touch_time)):
            wpart = self._window(kind, start, end)
            if replaying and wpart.stamp >= offset:
                continue
            if retract:
                values = wpart.samples.get(key)
                if values and r.seconds in values:
                    values.remove(r.seconds)
            else:
                wpart.samples.setdefault(key, []).append(r.seconds)
            self._mark(wpart, (key[1:],))

    def drain_response_changes(self) -> set[str]:
        """Leads whose response was filed, changed or withdrawn since the last call (for the
        cumulative histogram, which ``count_response`` then fills once per lead)."""
        out, self._response_changes = self._response_changes, set()
        return out

    def count_response(self, lead_id: str) -> Response | None:
        """The lead's response for the cumulative histogram, labelled, if it has one that was
        not counted yet; marks it counted (a lead is counted once, whatever corrections follow)."""
        lead = self.leads.leads.get(lead_id)
        if lead is None or lead.response is None or lead.counted:
            return None
        lead.counted = True
        response = lead.response
        team = self.label_of(TEAM, response.team)
        return response if team == response.team else msgspec.structs.replace(response, team=team)
