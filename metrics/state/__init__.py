"""The state of one aggregate partition: windowed KPI sums, the roster, and what was applied.

Why it looks like this (see README, "Exactness"):

* State lives in memory and is applied per event; it is made durable in *parts* (one per live
  window, one per event-time minute of dedup ids, one ``meta``) that are written to a changelog
  only when dirty, on an interval. A part records the partition offset it reflects (its
  ``stamp``); ``meta`` is written after every part, only deletions of expired parts after it.
* After a crash the consumer resumes at or before the last durable snapshot. A record at or
  below ``meta``'s stamp is skipped whole. A record above it but at or below a part's stamp (a
  snapshot that was cut short) is applied only to the parts that do not yet hold it. So each
  record counts exactly once, whatever the moment of the crash.
* The ingest stage may forward a source record again (after its own crash or a rebalance).
  Source offsets are forwarded in order, so a per-source-partition high-water mark in ``meta``
  recognises every re-forwarded event, with no time horizon.
* Producer duplicates (same ``source`` + ``id``, whatever their ``time``) are recognised by a
  packed 128-bit hash of the pair (``metrics.dedup``), remembered for ``dedup_horizon`` seconds
  of event time after the minute of its first sighting. Events older than the horizon behind
  the watermark are counted as late, because a duplicate of them could no longer be
  recognised. The first sighting's sequence number is written beside the hash, so a replayed
  record is not mistaken for a duplicate of itself.
* Lateness is judged against event time, never the wall clock, so a replay after a crash makes
  the same decisions as the first pass: an event is late for a window that closed more than the
  grace period before the newest event already read from the event's own input partition.
  Input partitions are read at different paces (a backlog especially), so a partition-wide
  clock would make an on-time event of a slower partition "late". Windows are dropped two
  grace periods after they end by the wall clock the caller passes to :meth:`expire`: only
  current windows are exported, so that changes no exported value, and a backlog never loses a
  window that is still filling.
* A lead still waiting a wait horizon after its creation (event time, behind the partition's
  watermark) is forgotten, and so is a settled one (answered, lost or converted) a dedup horizon
  after its last event. Each lead event first forgets its lead if it is such a lead, so the
  outcome does not depend on when :meth:`expire` (which forgets them all, for the gauges and
  the memory) happens to run: a replay decides the same.
* Label values are bounded (``metrics.labels``): at most a cap of distinct reps, teams and
  values per dimension are admitted, in event order, and the rest is keyed ``other``. The
  admitted sets are parts of their own (``g/<label>``), written before ``meta`` when they grew:
  a set only grows and, once full, never admits again, so a restored set (even one ahead of
  ``meta``) gives every replayed event its first-pass answer.
"""

from metrics.state.codec import META_KEY, part_stamp
from metrics.state.fast_path import TYPE_OF
from metrics.state.lead_lane import RESPONSE_SERIES
from metrics.state.partition import PartitionState
from metrics.state.roster import ROSTER_HISTORY, UNASSIGNED, RosterEntry
from metrics.state.windows import WindowPart

__all__ = [
    "META_KEY",
    "RESPONSE_SERIES",
    "ROSTER_HISTORY",
    "TYPE_OF",
    "UNASSIGNED",
    "PartitionState",
    "RosterEntry",
    "WindowPart",
    "part_stamp",
]
