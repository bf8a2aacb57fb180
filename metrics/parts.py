"""State parts split into changelog records of bounded size, and reassembled exactly.

A part (``metrics.state``: a window, a dedup chunk, a lead bucket, a label set, ``meta``) has
no size bound of its own: a window holds every key it saw, ``meta`` the whole roster. A
changelog record does (the topic's ``max.message.bytes``); one over it is refused by the
broker, stops the worker, and the restart rebuilds the same part: a crash loop.

So a part whose encoding is larger than the bound is written as *chunks*: records
``<part>~<generation>~<index>``, each holding ``[stamp, generation, index, count, bytes]``
(the stamp first, like every part, for :func:`metrics.state.part_stamp`). A part that fits is
written as before, under its own key, in one record.

A snapshot cut short (a crash after some of its records reached the changelog) must never
restore a mix of two versions of a part. Chunks of a new version go under a new generation
(a per-partition counter, never reused), so they overwrite nothing; the keys of the version
they replace are deleted only after ``meta`` (the end of the snapshot). Restore takes, per part,
the newest *complete* version: the plain record or a generation with all its chunks, ordered
by stamp; on equal stamps the plain record is the newer (a part grows only by applying records,
so a part that became chunked has a larger stamp than its plain predecessor), then the higher
generation. Incomplete and superseded versions are deleted by the next snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from metrics.state import part_stamp

SEPARATOR = "~"  # no part key contains it (see metrics.state)
#: The smallest bound accepted (the worker's setting has a higher floor, 4 KiB): below it,
#: chunk overhead would dominate.
MIN_PART_BYTES = 64


class _Chunk(msgspec.Struct, array_like=True):
    stamp: int
    generation: int
    index: int
    count: int
    data: bytes


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(_Chunk)


class PartSplitter:
    """The chunked parts of one partition's changelog, and how to write the next snapshot."""

    def __init__(self, bound: int, generation: int = 0) -> None:
        if bound < MIN_PART_BYTES:
            raise ValueError(f"part bound {bound} is below {MIN_PART_BYTES} bytes")
        self.bound = bound
        self.generation = generation
        #: part -> the chunk keys of its current version (chunked parts only)
        self.chunked: dict[str, list[str]] = {}
        #: keys to delete at the end of the next snapshot (left over by a cut-short one)
        self.stale: set[str] = set()

    def split(self, parts: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
        """Changelog records for a snapshot's parts (in order; ``None`` deletes a part): every
        record at most :attr:`bound` bytes of part data; replaced versions deleted last."""
        out: list[tuple[str, bytes | None]] = []
        later: list[str] = []
        bound = self.bound
        for key, raw in parts:
            old = self.chunked.pop(key, None)
            if raw is None:
                out.append((key, None))
                out.extend((k, None) for k in old or ())
                continue
            if len(raw) <= bound:
                out.append((key, raw))
                later.extend(old or ())
                continue
            self.generation += 1
            gen = self.generation
            stamp = part_stamp(raw)
            count = -(-len(raw) // bound)
            keys = [f"{key}{SEPARATOR}{gen}{SEPARATOR}{i}" for i in range(count)]
            for i, ckey in enumerate(keys):
                out.append((ckey, _ENC.encode(_Chunk(stamp, gen, i, count, raw[i * bound:(i + 1) * bound]))))
            self.chunked[key] = keys
            later.extend(old if old is not None else (key,))  # the previous version, plain or not
        later.extend(self.stale)
        self.stale.clear()
        written = {k for k, v in out if v is not None}
        out.extend((k, None) for k in dict.fromkeys(later) if k not in written)
        return out

    @classmethod
    def assemble(
        cls, records: Iterable[tuple[str, bytes | None]], bound: int
    ) -> tuple[PartSplitter, list[tuple[str, bytes]]]:
        """The parts (newest complete version of each) from the latest value of every changelog
        record, and the splitter that continues writing that changelog."""
        plain: dict[str, bytes] = {}
        groups: dict[tuple[str, int], dict[int, _Chunk]] = {}
        top = 0
        for key, raw in records:
            if raw is None:
                continue
            if SEPARATOR not in key:
                plain[key] = raw
                continue
            part, _, _ = key.rsplit(SEPARATOR, 2)
            chunk = _DEC.decode(raw)
            top = max(top, chunk.generation)
            groups.setdefault((part, chunk.generation), {})[chunk.index] = chunk
        splitter = cls(bound, top)
        # part -> (rank, chunk keys or None for the plain record); the best rank wins
        best: dict[str, tuple[tuple[int, int, int], list[str] | None]] = {
            key: ((part_stamp(raw), 1, 0), None) for key, raw in plain.items()
        }
        for (part, gen), chunks in groups.items():
            keys = [f"{part}{SEPARATOR}{gen}{SEPARATOR}{i}" for i in sorted(chunks)]
            first = next(iter(chunks.values()))
            complete = len(chunks) == first.count and all(
                c.count == first.count and c.stamp == first.stamp for c in chunks.values()
            ) and set(chunks) == set(range(first.count))
            if not complete:
                splitter.stale.update(keys)
                continue
            rank = (first.stamp, 0, gen)
            current = best.get(part)
            if current is None or rank > current[0]:
                if current is not None:
                    splitter.stale.update(current[1] or (part,))
                best[part] = (rank, keys)
            else:
                splitter.stale.update(keys)
        parts: list[tuple[str, bytes]] = []
        for part, (_, keys) in best.items():
            if keys is None:
                parts.append((part, plain[part]))
                continue
            chunks = groups[(part, int(keys[0].rsplit(SEPARATOR, 2)[1]))]
            parts.append((part, b"".join(chunks[i].data for i in range(len(keys)))))
            splitter.chunked[part] = keys
        return splitter, parts
