"""The roll-up wire format: one keyed partition's parts of one scope (a rep, a team or the org)
in one window.

The aggregate stage publishes, for every window that changed, one :class:`Partial` per rep
whose parts changed, per team and one for the organisation, keyed ``<scope>/<id>/<kind>/<window start>/<source partition>`` on a
compacted internal topic; the roll-up stage keeps the latest partial of every source partition
and merges them (:func:`metrics.rollup.merge`). ``version`` is the source partition's offset
that the partial reflects, ``epoch`` how many times the partition was restored: the newest
``(epoch, version)`` of a source wins. An owner publishes state that is not durable yet only
once its epoch is durable (see :mod:`streams.aggregate`): after a crash the next owner restores
a later epoch, and its partials replace the lost owner's, which it reproduces by replaying the
same records. A stale copy (a worker that has not yet noticed it lost the partition) carries
an earlier epoch, or an older version, and is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from metrics.rollup import Parts
from metrics.sketch import Sketch

ORG_ID = "org"


class Partial(msgspec.Struct, array_like=True):
    scope: str  # "team" or "org"
    id: str
    kind: int  # index into metrics.windows.WINDOW_KINDS
    start: float
    end: float
    source: int  # keyed-events partition
    version: int
    keys: list[tuple]  # (kpi, *dims), parallel to values
    values: tuple[float, ...]  # (a tuple: the roll-up stage holds it, untracked by the GC)
    sketches: list[tuple[str, list[int], list[int], int, float]] = []
    samples: list[tuple[str, list[float]]] = []  # a rep's raw observations (exact quantiles)
    team: str | None = None  # a rep's team label
    #: the source partition's restore count (metrics.state.PartitionState.epoch): a partial of
    #: a later epoch replaces one of an earlier epoch whatever their versions
    epoch: int = 0

    @property
    def parts(self) -> Parts:
        """The parts, keyed by shared key tuples (see :func:`shared_key`)."""
        return Parts(
            sums=dict(zip(_shared_keys(self.keys), self.values, strict=True)),
            samples=dict(self.samples) if self.samples else {},
            sketches={s[0]: Sketch.decode(s[1:]) for s in self.sketches} if self.sketches else {},
        )

    def held(self) -> Held:
        """The parts as the roll-up stage holds them (:class:`Held`)."""
        team = self.team
        return Held(
            self.epoch, self.version, None if team is None else shared_label(team),
            tuple(_shared_keys(self.keys)), self.values,
            dict(self.samples) if self.samples else None,
            {s[0]: Sketch.decode(s[1:]) for s in self.sketches} if self.sketches else None,
        )


class Held:
    """One source partition's partial of a scope window, as the roll-up stage keeps it until the
    next one replaces it: the keys (shared tuples, :func:`shared_key`) beside the decoded tuple
    of their sums (16 bytes a key, where a dict takes ~40 more; a tuple of floats, unlike a
    list, is untracked by the garbage collector, whose full collections then do not walk it),
    its raw observations (a rep's) and sketches (a team's, the organisation's), its epoch and
    version and its team label (one shared ``str`` per label). A merge reads it as (key, sum) pairs (:meth:`mergeable`); a
    window of one source (most rep windows) finishes to values that share the sums' float
    objects, so its values are held once. :meth:`parts` gives the dict form of one partial."""

    __slots__ = ("epoch", "version", "team", "keys", "sums", "samples", "sketches")

    def __init__(self, epoch: int, version: int, team: str | None, keys: tuple[tuple, ...],
                 sums: tuple[float, ...], samples: dict[str, list[float]] | None,
                 sketches: dict[str, Sketch] | None) -> None:
        self.epoch = epoch
        self.version = version
        self.team = team
        self.keys = keys
        self.sums = sums  # parallel to keys
        self.samples = samples
        self.sketches = sketches

    def parts(self) -> Parts:
        """This partial's parts as :class:`Parts` (new dicts; the stage itself reads
        :meth:`mergeable`): what the partial carried, for a reader of one source's share."""
        return Parts(dict(zip(self.keys, self.sums, strict=True)),
                     self.samples or {}, self.sketches or {})

    def mergeable(self) -> tuple[zip, dict[str, list[float]], dict[str, Sketch]]:
        """What :func:`metrics.rollup.merge_pairs` adds up: (key, sum) pairs, samples, sketches."""
        return zip(self.keys, self.sums, strict=True), self.samples or {}, self.sketches or {}


#: One tuple per distinct value key (kpi, *dims): a decoded partial's keys are new strings each
#: time, and the roll-up stage keeps a partial of every scope, window and source (tens of
#: thousands with 1,000 reps, ~50 keys each): sharing them holds each key once, not once per
#: partial. Keys are bounded by the catalog and its dimensions' cardinality bounds; the table is
#: emptied if it ever grows past :data:`SHARED_KEYS_MAX` (only sharing is lost).
_SHARED: dict[tuple, tuple] = {}
SHARED_KEYS_MAX = 200_000


#: One ``str`` per label the roll-up stage holds (team labels, scopes' ids: a decoded partial's
#: are new strings each time, and a rep's are held by a dozen windows); emptied past
#: :data:`LABELS_MAX` (only sharing is lost).
_LABELS: dict[str, str] = {}
LABELS_MAX = 200_000


def _share(table: dict, value: Any, limit: int) -> Any:
    """The one object in ``table`` equal to ``value`` (``value`` itself the first time)."""
    hit = table.get(value)
    if hit is not None:
        return hit
    if len(table) >= limit:
        table.clear()
    table[value] = value
    return value


def shared_label(label: str) -> str:
    """The one shared ``str`` equal to ``label``."""
    return _share(_LABELS, label, LABELS_MAX)


def _shared_keys(keys: list[tuple]) -> Iterator[tuple]:
    """The shared tuple of each of a decoded partial's keys (decoded keys are tuples: each is
    taken as the shared one, or made it, in C); the table is emptied first if they could take
    it past :data:`SHARED_KEYS_MAX`."""
    if len(_SHARED) + len(keys) > SHARED_KEYS_MAX:
        _SHARED.clear()
    return map(_SHARED.setdefault, keys, keys)


def shared_key(key: tuple | list) -> tuple:
    """The one shared tuple equal to ``key``."""
    return _share(_SHARED, tuple(key), SHARED_KEYS_MAX)


def partial_key(scope: str, scope_id: str, kind: int, start: float, source: int) -> bytes:
    return f"{scope}/{scope_id}/{kind}/{int(start)}/{source}".encode()


def make_partial(scope: str, scope_id: str, kind: int, start: float, end: float, source: int,
                 version: int, parts: Parts, team: str | None = None, epoch: int = 0) -> Partial:
    return Partial(
        scope, scope_id, kind, start, end, source, version,
        list(parts.sums), tuple(parts.sums.values()),
        [(series, *s.encode()) for series, s in parts.sketches.items()],
        list(parts.samples.items()),
        team,
        epoch,
    )


#: Closing windows by event time, each source partition also writes, after its partials of a
#: round, its watermark to every roll-up partition under this key (+ its number): read in
#: order with the partials, it tells the roll-up stage that the source's partials for windows
#: ending before it are all in.
WATERMARK_KEY = "~wm/"


def watermark_key(source: int) -> bytes:
    return f"{WATERMARK_KEY}{source}".encode()


ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(Partial)
