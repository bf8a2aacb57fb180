"""The partition state as one object: its attributes, and the seams it is made of.

Each seam is a module of :mod:`metrics.state` that can be read alone; this class only
holds the state they share. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from metrics.catalog import Catalog
from metrics.dedup import DedupLedger
from metrics.extras import hooks
from metrics.labels import REP, TEAM, LabelCaps, same
from metrics.leads import LEAD_WAIT_HORIZON_SECONDS, LeadBook
from metrics.opportunities import OpportunityBook
from metrics.state.codec import Codec
from metrics.state.fast_path import FastPath
from metrics.state.labels import Labels
from metrics.state.lead_lane import LeadLane
from metrics.state.reads import Reads
from metrics.state.replay import Replay
from metrics.state.roster import Roster, RosterEntry
from metrics.state.sightings import Sightings
from metrics.state.windows import WindowPart, Windows
from metrics.windows import Calendar


class PartitionState(FastPath, Replay, Sightings, LeadLane, Windows, Roster, Labels, Codec, Reads):
    """Everything one aggregate partition knows (see :mod:`metrics.state`):

    * :mod:`~metrics.state.fast_path`: :meth:`apply` a KPI-lane bundle, :meth:`skip` a record;
    * :mod:`~metrics.state.replay`: the exact path of records replayed after a crash;
    * :mod:`~metrics.state.sightings`: re-forwarded records and producer duplicates;
    * :mod:`~metrics.state.lead_lane`: lead events, response samples, the histogram's counts;
    * :mod:`~metrics.state.windows`: windows, the pending hits folded into them, :meth:`expire`;
    * :mod:`~metrics.state.roster`: each rep's team by event time;
    * :mod:`~metrics.state.labels`: bounded cardinality, :meth:`admit`;
    * :mod:`~metrics.state.codec`: :meth:`snapshot` and :meth:`restore`;
    * :mod:`~metrics.state.reads`: window values and samples, health counters.
    """

    def __init__(
        self,
        catalog: Catalog,
        calendar: Calendar,
        *,
        grace_seconds: float = 300.0,
        dedup_horizon_seconds: float = 86400.0,
        waited: Any = None,
        lead_wait_horizon_seconds: float = LEAD_WAIT_HORIZON_SECONDS,
        label_caps: LabelCaps | None = None,
    ) -> None:
        self.catalog = catalog
        self.calendar = calendar
        self.grace = grace_seconds
        self.horizon = dedup_horizon_seconds
        self.wait_horizon = lead_wait_horizon_seconds
        self._windows: dict[tuple[int, float], WindowPart] = {}  # see :attr:`windows`
        #: one tuple per distinct key in the windows (metrics.state.windows: shared keys)
        self._keys: dict[tuple, tuple] = {}
        self._keys_kept = 0  # keys in the windows when ``_keys`` was last pruned
        #: producer duplicates: identities remembered for the horizon (metrics.dedup)
        self.dedup = DedupLedger(dedup_horizon_seconds)
        self.roster: dict[str, RosterEntry] = {}
        self.sources: dict[tuple[str, int, int], int] = {}
        #: newest event time read per input partition: lateness is judged against the event's
        #: own input partition, so it does not depend on how partitions interleave
        self.source_times: dict[tuple[str, int, int], float] = {}
        self.leads = LeadBook(waited) if waited is not None else LeadBook()
        self.lead_stamps: dict[int, int] = {}  # lead part -> stamp
        #: leads whose response was filed, changed or withdrawn since the last drain
        self._response_changes: set[str] = set()
        #: per-opportunity state (metrics.opportunities), persisted in parts ``o/<n>``
        self.opportunities = OpportunityBook()
        #: event class -> what it does besides the catalog's sums (opportunities, sampled fields)
        self._hooks = hooks(catalog)
        #: event class -> what the fast path does with it (metrics.state.fast_path)
        self._plans: dict[type, tuple[Any, Any, bool, bool]] = {}
        self.watermark = float("-inf")
        self._next_window_expiry = float("-inf")  # the earliest clock at which a window expires
        self._leads_expired_at = float("-inf")
        #: KPI hits of the bundle being applied, not yet in their windows:
        #: (minute, first open kind) -> {(kpi, rep, team, *dims): value}
        self._pending: dict[tuple[int, int], dict[tuple, float]] = {}
        #: how many times the partition was restored (by any worker), from its durable meta + 1:
        #: roll-up partials carry it, so a restored owner's partials replace those of the last
        #: owner, even those of state it had not made durable (streams.aggregate)
        self.epoch = 0
        self.applied = -1  # last partition offset applied
        self.meta_stamp = -1  # stamp of the durable meta: records <= it are skipped whole
        self.max_stamp = -1  # largest part stamp: records <= it may be partly applied
        self._dirty_parts: dict[str, WindowPart] = {}
        self._deleted: set[str] = set()
        #: for the publisher of roll-up partials and snapshots: windows changed since it last
        #: took them, and windows dropped by expiry (their final values)
        self.changed_windows: set[tuple[int, float]] = set()
        #: what changed in each of those windows, for an incremental read (metrics.split_index):
        #: (kind, start) -> the (rep, team) pairs of the changed keys, as their keys name them,
        #: in groups as they were applied; None, or a changed window missing here: anything
        self.touched: dict[tuple[int, float], list[Iterable[tuple]] | None] = {}
        self.touched_keys = 0  # how many keys those groups hold (metrics.state.windows)
        self.expired_windows: list[WindowPart] = []
        # Health counters since the last drain (the caller sums them across partitions).
        self.processed: Counter[str] = Counter()
        self.duplicates = 0
        self.late = 0
        #: (topic, partition, high-water mark, offset) of sources whose offsets went backwards
        self.offset_resets: list[tuple[str, int, int, int]] = []
        #: bounded cardinality (``metrics.labels``): label -> admitted values (value -> value),
        #: persisted in parts ``g/<label>``; without caps every value is admitted, unrecorded
        self.label_caps = label_caps
        self.labels: dict[str, dict[str, str]] = {REP: {}, TEAM: {}}
        self._dirty_labels: set[str] = set()
        self._admit = self.admit if label_caps is not None else same
        #: label -> values mapped to ``other`` since the last drain (per event and label)
        self.overflow: Counter[str] = Counter()
