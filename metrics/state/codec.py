"""Snapshots of the partition state: its parts, their records, and restoring from them.

State is made durable in parts (one per live window, per event-time minute of dedup ids, per
lead and opportunity bucket, per label set, and ``meta``), written to a changelog only when
dirty. A part records the partition offset it reflects (its stamp, the first field of every
record); ``meta`` is written after every part, deletions of expired parts after it. The record
formats are the changelog's: restoring an older snapshot must keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from metrics.catalog import Catalog
from metrics.dedup import ID_PART
from metrics.leads import Lead
from metrics.state.roster import RosterEntry
from metrics.state.sightings import SEQ_BITS
from metrics.state.windows import WindowPart
from metrics.windows import Calendar

if TYPE_CHECKING:  # pragma: no cover
    from metrics.state.partition import PartitionState

META_KEY = "meta"


class _WindowRecord(msgspec.Struct, array_like=True):
    stamp: int
    kind: int
    start: float
    end: float
    keys: list[tuple]  # (kpi, rep, team, *dims), parallel to values
    values: list[float]
    samples: list[tuple[str, str | None, str, list[float]]] = []


class _LeadRecord(msgspec.Struct, array_like=True):
    stamp: int
    leads: dict[str, Lead]


class _LabelsRecord(msgspec.Struct, array_like=True):
    stamp: int
    label: str
    values: list[str]  # admitted, in the order they were admitted


class _MetaRecord(msgspec.Struct, array_like=True):
    stamp: int
    watermark: float
    roster: dict[str, RosterEntry]
    sources: list[tuple[str, int, int, int]]
    source_times: list[tuple[str, int, int, float]] = []
    epoch: int = 0  # see PartitionState.epoch


class _Stamped(msgspec.Struct, array_like=True):
    """The leading field every part record shares; the rest is skipped when decoding."""

    stamp: int


_ENC = msgspec.msgpack.Encoder()
_DEC_STAMP = msgspec.msgpack.Decoder(_Stamped)
_DEC_WINDOW = msgspec.msgpack.Decoder(_WindowRecord)
_DEC_META = msgspec.msgpack.Decoder(_MetaRecord)
_DEC_LEADS = msgspec.msgpack.Decoder(_LeadRecord)
_DEC_LABELS = msgspec.msgpack.Decoder(_LabelsRecord)


def part_stamp(raw: bytes) -> int:
    """The partition offset a serialised part (any kind) reflects, without decoding the rest."""
    return _DEC_STAMP.decode(raw).stamp


class Codec:
    """Snapshots and restore of :class:`metrics.state.PartitionState`."""

    @property
    def dirty(self) -> bool:
        return (
            bool(self._dirty_parts or self._deleted or self.leads.dirty_parts
                 or self.opportunities.dirty_parts or self.dedup.dirty)
            or self.applied > self.meta_stamp
        )

    def snapshot(self) -> list[tuple[str, bytes | None]]:
        """Serialise what changed since the last snapshot, ``meta`` after the parts it covers,
        then deletions (``None``) of expired parts.

        The caller writes the parts in this order to one changelog partition and, once they
        are all durable, acknowledges the records up to :attr:`applied`.
        """
        self._fold_pending()
        stamp = self.applied
        out: list[tuple[str, bytes | None]] = []
        # Windows before seen ids before leads, meta last: a snapshot cut short leaves a prefix,
        # and a replayed lead event re-files its response only into windows that lack it.
        for key in sorted(self._dirty_parts):
            part = self._dirty_parts[key]
            part.stamp = stamp
            samples = [(*k, v) for k, v in part.samples.items() if v]
            rec: Any = _WindowRecord(
                stamp, part.kind, part.start, part.end,
                list(part.values), list(part.values.values()), samples,
            )
            out.append((key, _ENC.encode(rec)))
        out.extend(self.dedup.snapshot(stamp, (stamp + 1) << SEQ_BITS))
        for lead_part_no, leads in self.leads.parts(sorted(self.leads.dirty_parts)):
            self.lead_stamps[lead_part_no] = stamp
            out.append((f"l/{lead_part_no}", _ENC.encode(_LeadRecord(stamp, leads))))
        self.leads.dirty_parts.clear()
        out.extend(self.opportunities.parts(stamp))
        for label in sorted(self._dirty_labels):
            out.append((f"g/{label}", _ENC.encode(_LabelsRecord(stamp, label, list(self.labels[label])))))
        self._dirty_labels.clear()
        meta = _MetaRecord(
            stamp,
            self.watermark,
            self.roster,
            [(t, p, lane, o) for (t, p, lane), o in self.sources.items()],
            [(t, p, lane, w) for (t, p, lane), w in self.source_times.items()],
            self.epoch,
        )
        out.append((META_KEY, _ENC.encode(meta)))
        # Deletions of expired parts go after meta: written before it, a cut-short snapshot
        # could drop a dedup minute that the records replayed after the crash still need.
        # Expired parts that survive a crash are harmless and expire again.
        out.extend((k, None) for k in sorted(self._deleted) if k not in self._dirty_parts)
        self._dirty_parts.clear()
        self._deleted.clear()
        self.meta_stamp = stamp
        # Parts restored from a cut-short snapshot may hold records beyond this stamp: keep
        # replaying (per-part) until they are passed.
        self.max_stamp = max(self.max_stamp, stamp)
        return out

    @classmethod
    def restore(
        cls, parts: Iterable[tuple[str, bytes]], catalog: Catalog, calendar: Calendar, **kw: Any
    ) -> PartitionState:
        """Rebuild from the latest value of every part (what changelog recovery yields)."""
        state = cls(catalog, calendar, **kw)
        state.epoch = 1
        keys, strings = state._keys, {}

        def shared(key: list) -> tuple:
            """The one tuple of a restored key, its strings shared too (each window's part
            decodes its own): as the fast path's keys are (metrics.state.windows)."""
            t = tuple(key)
            hit = keys.get(t)
            if hit is None:
                hit = keys[t] = tuple(strings.setdefault(x, x) if type(x) is str else x for x in t)
            return hit

        for key, raw in parts:
            if raw is None:
                continue
            if key == META_KEY:
                meta = _DEC_META.decode(raw)
                state.epoch = meta.epoch + 1
                state.meta_stamp = meta.stamp
                state.watermark = meta.watermark
                state.roster = dict(meta.roster)
                state.sources = {(t, p, lane): o for t, p, lane, o in meta.sources}
                state.source_times = {(t, p, lane): w for t, p, lane, w in meta.source_times}
            elif key.startswith("w/"):
                w = _DEC_WINDOW.decode(raw)
                part = WindowPart(w.kind, w.start, w.end, w.stamp)
                part.values = dict(zip(map(shared, w.keys), w.values, strict=True))
                part.samples = {tuple(r[:-1]): list(r[-1]) for r in w.samples}
                state._windows[(w.kind, w.start)] = part
                state.max_stamp = max(state.max_stamp, w.stamp)
            elif key.startswith("l/"):
                rec = _DEC_LEADS.decode(raw)
                state.leads.load(rec.leads)
                state.lead_stamps[int(key[2:])] = rec.stamp
                state.max_stamp = max(state.max_stamp, rec.stamp)
            elif key.startswith("o/"):
                state.max_stamp = max(state.max_stamp, state.opportunities.load(key, raw))
            elif key.startswith("g/"):
                g = _DEC_LABELS.decode(raw)
                state.labels[g.label] = {v: v for v in g.values}
            elif key.startswith(ID_PART):
                state.dedup.load(key, raw)
            elif key.startswith("s/"):
                state._deleted.add(key)  # a dedup minute of the former format: not readable
        state.dedup.loaded((state.meta_stamp + 1) << SEQ_BITS)
        state.applied = state.meta_stamp
        state.max_stamp = max(state.max_stamp, state.meta_stamp)
        state._mark_all(state._windows)  # publish all once: the last owner may not have
        state._keys_kept = len(keys)
        return state
