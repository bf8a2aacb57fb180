"""Remembered event identities (``source`` + ``id``, SPEC section 2), packed: 18 bytes per id.

An identity is the 128-bit XXH3 hash of ``<length of source>:<source><id>`` (a separator
alone would be ambiguous: CloudEvents allow any character, NUL included, in both). 112 of its
bits are kept, followed by the event-time minute of the first sighting (a signed 32-bit
number). The records live in buckets picked by the hash's first 16 bits (see below); a bucket
is one ``bytes`` of such 18-byte records, searched with ``bytes.find`` (C speed): no Python
object per id.

The number of buckets grows with the number of ids (linear hashing): it starts at
:data:`MIN_BUCKETS`, and whenever there are more than :data:`FILL` records per bucket on
average the next bucket in turn is split in two, up to 65,536 buckets. So a bucket holds about
``FILL`` records whatever the number of ids (one object header per ~20 ids, not per id: a
fixed 65,536 buckets held one or two ids each at 50,000 ids per partition, ~60 bytes per id),
and a split moves one bucket's records, never all of them at once.

Exact, not probabilistic: two different identities are taken for one only if 112 bits of
their hashes agree. For the largest deployment one can think of (10,000 events/s for 10 years,
a day's 864 million ids remembered at every moment) the chance that this ever happens is below
10^-12, orders of magnitude below the rate of undetected hardware faults that any count relies
on (Kafka's own record checksums are 32 bits). A probabilistic filter (Bloom, cuckoo, quotient)
drops real events at a designed rate, typically 10^-2 to 10^-6 of lookups; this does not.
Deliberate collisions give a hostile producer nothing: one that can write the input can send
the same ``source`` + ``id`` as a real event anyway, which the contract makes a duplicate.

A record is live while its minute lies within the dedup horizon behind the watermark (the
caller passes the first live minute); an expired record is ignored by lookups and reused by a
new sighting of the same identity, so the outcome never depends on when memory is reclaimed.
:meth:`RememberedIds.purge` reclaims it, per bucket, from the front (records are appended
roughly in event-time order), once per interval: never work per record on the hot path.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

import msgspec
from xxhash import xxh3_128_digest

IDENT = 16  # bytes of an identity (the whole hash), as the changelog holds it
KEPT = 14  # bytes of the hash kept per id in memory (112 bits)
RECORD = KEPT + 4  # bytes per remembered id: the kept hash, then the minute
MIN_BUCKETS = 4096  # buckets of an empty set (a power of two): no split below ~100,000 ids
MAX_BUCKETS = 1 << 16  # picked by the first 16 bits of the hash at most
FILL = 24  # records per bucket, on average, before the next bucket is split (~430 bytes)


def identity(source: str, event_id: str, salt: int = 0) -> bytes:
    """16 bytes: the 128-bit XXH3 hash of the event's identity (``salt`` keeps lanes apart)."""
    return xxh3_128_digest(f"{len(source)}:{source}{event_id}".encode(), salt)


def minute_bytes(minute: int) -> bytes:
    return minute.to_bytes(4, "big", signed=True)


class RememberedIds:
    """A packed set of identities, each with the event-time minute of its first sighting.

    A bucket is an immutable ``bytes``: its records lie inline with the object header (one
    memory access fewer than a ``bytearray``, no growth slack), and an insert copies the bucket
    (a few hundred bytes, ~1 KB beyond 1.5 million ids), which costs about as much as the search
    before it.

    Linear hashing on the hash's first 16 bits ``h``: with ``n`` buckets, ``2 ** level <= n``,
    an identity is in bucket ``h & (2 ** level - 1)``, or ``h & (2 ** (level + 1) - 1)`` when
    that first one was already split (it lies below ``split = n - 2 ** level``).
    """

    __slots__ = ("buckets", "size", "mask", "wide", "split", "limit")

    def __init__(self) -> None:
        #: one per bucket; None until its first record
        self.buckets: list[bytes | None] = [None] * MIN_BUCKETS
        self.size = 0  #: records held, live or not yet reclaimed
        self.mask = MIN_BUCKETS - 1  # 2 ** level - 1
        self.wide = self.mask << 1 | 1  # 2 ** (level + 1) - 1
        self.split = 0  # buckets of this level split so far
        self.limit = FILL * MIN_BUCKETS  # records beyond which the next bucket splits

    @property
    def count(self) -> int:
        """Records held, live or not yet reclaimed."""
        return self.size

    def bucket_of(self, ident: bytes) -> int:
        """The index of the bucket that holds ``ident`` (16 bytes, or the kept 14)."""
        h = ident[0] << 8 | ident[1]
        key = h & self.mask
        return h & self.wide if key < self.split else key

    def grow(self) -> None:
        """Split the next bucket, as long as there are more than :data:`FILL` records per
        bucket (one split per insert in steady growth)."""
        buckets = self.buckets
        while self.size > self.limit and len(buckets) < MAX_BUCKETS:
            old = self.split
            bit = self.mask + 1  # the hash bit that tells the two halves apart
            buf = buckets[old]
            keep: list[bytes] = []
            move: list[bytes] = []
            if buf is not None:
                # that bit of each record's hash, from its first or second byte (one C slice)
                flags = buf[1::RECORD] if bit < 256 else buf[0::RECORD]
                flag = bit if bit < 256 else bit >> 8
                pos = 0
                for byte in flags:
                    (move if byte & flag else keep).append(buf[pos : pos + RECORD])
                    pos += RECORD
            buckets[old] = b"".join(keep) or None
            buckets.append(b"".join(move) or None)
            wide = self.wide
            self.split = old + 1
            if self.split > self.mask:  # every bucket of the level split: the next level
                self.mask = wide
                self.wide = wide << 1 | 1
                self.split = 0
            self.limit = FILL * len(buckets)

    def _find(self, ident: bytes, live_from: float) -> tuple[bool, int]:
        """(live record found, position of an expired record of ``ident`` or -1)."""
        buf = self.buckets[self.bucket_of(ident)]
        if buf is None:
            return False, -1
        needle = ident[:KEPT]
        expired = -1
        pos = buf.find(needle)
        while pos >= 0:
            if pos % RECORD == 0:
                if int.from_bytes(buf[pos + KEPT : pos + RECORD], "big", signed=True) >= live_from:
                    return True, -1
                expired = pos
            pos = buf.find(needle, pos + 1)
        return False, expired

    def seen(self, ident: bytes, live_from: float) -> bool:
        """Whether ``ident`` was sighted in a minute from ``live_from`` on."""
        buf = self.buckets[self.bucket_of(ident)]
        if buf is None or buf.find(ident[:KEPT]) < 0:
            return False  # the usual answer for a new event: one C-level search
        return self._find(ident, live_from)[0]

    def add(self, ident: bytes, minute: int, live_from: float) -> bool:
        """Remember ``ident`` as sighted in ``minute``, unless it already is (live): whether it
        is new."""
        key = self.bucket_of(ident)
        buf = self.buckets[key]
        record = ident[:KEPT] + minute_bytes(minute)
        if buf is None:
            self.buckets[key] = record
        else:
            if buf.find(ident[:KEPT]) >= 0:
                live, expired = self._find(ident, live_from)
                if live:
                    return False
                if expired >= 0:  # a sighting beyond the horizon: reuse its record
                    self.buckets[key] = buf[:expired] + record + buf[expired + RECORD :]
                    return True
            self.buckets[key] = buf + record
        self.size += 1
        if self.size > self.limit:
            self.grow()
        return True

    def purge(self, live_from: float) -> int:
        """Reclaim expired records at the front of every bucket; how many. One pass over the
        buckets, and a few operations per reclaimed record. (Buckets are not merged again: at
        most one empty ``None`` slot per bucket of the largest size reached.)"""
        dropped = 0
        buckets = self.buckets
        for key, buf in enumerate(buckets):
            if buf is None:
                continue
            end = 0
            size = len(buf)
            while end < size and int.from_bytes(buf[end + KEPT : end + RECORD], "big", signed=True) < live_from:
                end += RECORD
            if end:
                buckets[key] = buf[end:] or None
                dropped += end // RECORD
        self.size -= dropped
        return dropped

    def live(self, live_from: float) -> Iterator[tuple[bytes, int]]:
        """(stored identity bits, minute) of every live record: for tests and inspection."""
        for buf in self.buckets:
            for pos in range(0, len(buf) if buf else 0, RECORD):
                minute = int.from_bytes(buf[pos + KEPT : pos + RECORD], "big", signed=True)  # type: ignore[index]
                if minute >= live_from:
                    yield buf[pos : pos + KEPT], minute  # type: ignore[index]

    def load(self, chunks: Iterable[tuple[bytes, int]]) -> None:
        """Append the records of restored chunks, unchecked: ``(idents, minute)``, 16 bytes of
        identity each, as written."""
        records = [(idents[pos : pos + KEPT] + mbytes)
                   for idents, minute in chunks for mbytes in (minute_bytes(minute),)
                   for pos in range(0, len(idents), IDENT)]
        self.size += len(records)
        self.grow()  # first the number of buckets for them all, then each in its bucket
        pending: dict[int, list[bytes]] = {}
        for record in records:
            pending.setdefault(self.bucket_of(record), []).append(record)
        buckets = self.buckets
        for key, parts in pending.items():
            buckets[key] = (buckets[key] or b"") + b"".join(parts)


SEAL_IDS = 16384  # ids per durable chunk (24 bytes each in the changelog: 384 KiB)
ID_PART = "d/"


class _IdsRecord(msgspec.Struct, array_like=True):
    stamp: int
    minute: int
    idents: bytes  # IDENT bytes per id
    seqs: bytes  # int64 per id: the sequence (offset, index) of its first sighting


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(_IdsRecord)


class _Chunk:
    __slots__ = ("index", "idents", "seqs", "written")

    def __init__(self, index: int) -> None:
        self.index = index
        self.idents = bytearray()
        self.seqs = array("q")
        self.written = 0  # ids in the changelog's copy of this chunk


class DedupLedger:
    """The producer-duplicate memory of one partition (SPEC section 2: ``source`` + ``id``,
    whatever the event's ``time``), and how it is made durable.

    Lookups go to :class:`RememberedIds`. Durability is append-only: the ids first sighted in
    an event-time minute are written in chunks ``d/<minute>/<n>`` of at most :data:`SEAL_IDS`
    ids. A snapshot rewrites only the open chunk of each minute that got new ids; a chunk not
    changed since the last snapshot (or full) is sealed: durable, dropped from memory, and the
    minute's next id opens a new one. A minute's chunks are deleted a horizon after it.

    Each id's sequence (``offset << 20 | index``) is written beside it, so that after a crash
    the records replayed past ``meta`` (whose ids a cut-short snapshot may have written) are
    told from duplicates: their own ids are kept in :attr:`recent` until a snapshot passes them.
    """

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.ids = RememberedIds()
        self._buckets = self.ids.buckets
        self.recent: dict[bytes, int] = {}  # ident -> sequence, ids beyond the durable meta
        self.open: dict[int, _Chunk] = {}  # minute -> its open chunk
        self.chunks: dict[int, int] = {}  # minute -> chunks it has (written, or the open one)
        self.next_expiry = float("inf")
        self._purged_at = float("-inf")
        self._loaded: list[tuple[int, int, bytes, bytes]] = []
        self._minute_bytes: dict[int, bytes] = {}
        # the minute of the last new id, its 4 bytes and its open chunk: a bundle's events
        # mostly share a minute (forgotten whenever open chunks are sealed or dropped)
        self._at: int | None = None
        self._at_bytes = b""
        self._at_chunk: _Chunk | None = None

    def live_from(self, watermark: float) -> float:
        """The first event-time minute whose ids are still remembered."""
        return (watermark - self.horizon) // 60.0 if watermark != float("-inf") else watermark

    @property
    def dirty(self) -> bool:
        return any(len(c.seqs) != c.written for c in self.open.values())

    def first(self, source: str, event_id: str, salt: int, minute: int, seq: int, watermark: float) -> bool:
        """Record a sighting, in event-time ``minute``, of the event ``source`` + ``event_id``
        (``salt``: its lane, see :func:`identity`); False when it is a duplicate of an earlier
        record. The hot path: one hash, one bucket search, and three appends for a new id."""
        ident = xxh3_128_digest(f"{len(source)}:{source}{event_id}".encode(), salt)
        if self.recent:
            first = self.recent.get(ident)
            if first is not None:
                return first >= seq  # its own record replayed (already durable), or a duplicate
        if minute != self._at:
            self._at_minute(minute)
        mbytes = self._at_bytes
        ids = self.ids
        h = ident[0] << 8 | ident[1]
        key = h & ids.mask
        if key < ids.split:
            key = h & ids.wide
        stored = ident[:KEPT]
        buckets = self._buckets
        buf = buckets[key]
        if buf is None:
            buckets[key] = stored + mbytes
            ids.size += 1
        elif buf.find(stored) < 0:
            buckets[key] = buf + (stored + mbytes)
            ids.size += 1
        elif not ids.add(ident, minute, self.live_from(watermark)):
            return False
        if ids.size > ids.limit:
            ids.grow()
        chunk = self._at_chunk
        if chunk is None:
            chunk = self._at_chunk = self._open_chunk(minute)
        chunk.idents += ident
        chunk.seqs.append(seq)
        return True

    def _at_minute(self, minute: int) -> None:
        """Make ``minute`` the one whose bytes and open chunk (None until its first new id)
        :meth:`first` has at hand."""
        mbytes = self._minute_bytes.get(minute)
        if mbytes is None:
            mbytes = self._minute_bytes[minute] = minute_bytes(minute)
        self._at, self._at_bytes, self._at_chunk = minute, mbytes, self.open.get(minute)

    def _open_chunk(self, minute: int) -> _Chunk:
        n = self.chunks.get(minute, 0)
        chunk = self.open[minute] = _Chunk(n)
        self.chunks[minute] = n + 1
        expiry = (minute + 1) * 60.0 + self.horizon
        if expiry < self.next_expiry:
            self.next_expiry = expiry
        return chunk

    def known(self, source: str, event_id: str, salt: int, watermark: float) -> bool:
        """Whether the event was sighted within the horizon."""
        return self.ids.seen(identity(source, event_id, salt), self.live_from(watermark))

    # -- durability ----------------------------------------------------------------------------
    def snapshot(self, stamp: int, next_seq: int) -> list[tuple[str, bytes]]:
        """The open chunks that got ids, as parts; seals the rest. ``next_seq``: the first
        sequence of the records after ``stamp``."""
        out = []
        self._at = None  # chunks may be sealed
        for minute in sorted(self.open):
            chunk = self.open[minute]
            n = len(chunk.seqs)
            if n == chunk.written or n >= SEAL_IDS:
                del self.open[minute]  # sealed: durable as it is
            if n != chunk.written:
                rec = _IdsRecord(stamp, minute, bytes(chunk.idents), chunk.seqs.tobytes())
                out.append((f"{ID_PART}{minute}/{chunk.index}", _ENC.encode(rec)))
                chunk.written = n
        if self.recent:
            self.recent = {i: s for i, s in self.recent.items() if s >= next_seq}
        return out

    def expire(self, watermark: float) -> list[str]:
        """Forget the minutes a horizon behind ``watermark``: the keys of their chunks. Memory
        of their ids is reclaimed at most once per sixteenth of a horizon (or minute)."""
        if watermark < self.next_expiry:
            return []
        self._at = None  # chunks may be dropped
        keys = []
        for minute in [m for m in self.chunks if (m + 1) * 60.0 + self.horizon <= watermark]:
            keys.extend(f"{ID_PART}{minute}/{n}" for n in range(self.chunks.pop(minute)))
            self.open.pop(minute, None)
        self._minute_bytes = {m: b for m, b in self._minute_bytes.items() if m in self.chunks}
        self.next_expiry = min(((m + 1) * 60.0 + self.horizon for m in self.chunks), default=float("inf"))
        if watermark >= self._purged_at + max(60.0, self.horizon / 16):
            self._purged_at = watermark
            self.ids.purge(self.live_from(watermark))
        return keys

    def minutes(self) -> list[int]:
        return list(self.chunks)

    def load(self, key: str, raw: bytes) -> None:
        """Take one restored ``d/`` part (any order); :meth:`loaded` finishes."""
        rec = _DEC.decode(raw)
        n = int(key.rsplit("/", 1)[1]) + 1
        if n > self.chunks.get(rec.minute, 0):
            self.chunks[rec.minute] = n
        self._loaded.append((rec.minute, rec.stamp, rec.idents, rec.seqs))

    def loaded(self, next_seq: int) -> None:
        """Every part is loaded; ``next_seq`` is the first sequence not covered by ``meta``."""
        self.ids.load((idents, minute) for minute, _, idents, _ in self._loaded)
        for _, _, idents, seqs in self._loaded:
            for pos, seq in enumerate(array("q", seqs)):
                if seq >= next_seq:
                    self.recent[idents[pos * IDENT : (pos + 1) * IDENT]] = seq
        self._loaded.clear()
        self.next_expiry = min(((m + 1) * 60.0 + self.horizon for m in self.chunks), default=float("inf"))
