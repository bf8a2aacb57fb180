"""Re-forwarded records and producer duplicates (see :mod:`metrics.state`, and
:mod:`metrics.dedup` for the ledger of identities).

The ingest stage forwards each source partition in order, so an event at or below its source's
high-water mark was forwarded again, unless the source's offsets went backwards (the topic was
recreated, the group reset). A duplicate is the same (source, id) sighted before, in any
minute of the dedup horizon. Each sighting is recorded with its sequence number (the record's
offset and the event's index in it), so a record replayed after a crash is not mistaken for a
duplicate of itself. Both lanes record a sighting with one call of the ledger,
``DedupLedger.first`` (:mod:`metrics.state.fast_path`, :mod:`metrics.state.lead_lane`).
"""

from __future__ import annotations

from typing import Any

SEQ_BITS = 20  # events per bundle < 2**20; sequence = offset << 20 | index


class Sightings:
    """Recognising what was already applied (part of :class:`metrics.state.PartitionState`)."""

    def _forwarded_again(self, ev: Any, t: float, src: tuple, salt: int = 0) -> bool:
        """An event at or below its source partition's high-water mark: forwarded again by the
        ingest stage (after its crash or a rebalance), or a new record because the source's
        offsets went backwards (the topic deleted and recreated, the group reset).

        A re-forward is an event already sighted: its identity is in the dedup minutes, which
        are durable with the high-water mark. One that is not, and that would have been
        recorded (inside the dedup horizon), is new: it is processed (true duplicates are still
        recognised by their identity), and the reset is reported (KPI lane only).
        """
        if t <= self.watermark - self.horizon:
            return True  # too old to tell, and would be dropped as late anyway
        if self.dedup.known(ev.source, ev.id, salt, self.watermark):
            return True
        if not salt:
            self.offset_resets.append((src[0], src[1], self.sources.get(src, -1), ev.offset))
        return False
