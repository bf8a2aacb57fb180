"""CPU cost of the two stages per event, in process, without Kafka: ``python -m
streams.bench.contenders.hotpath``.

The same events as `salespulse bench` (:func:`streams.bench.data.generate`: the demo floor, 1,000
reps, 40 teams, seed 7) go through a worker's real stage objects (those of
:class:`streams.app.Service`, built from the default :class:`streams.settings.Settings`):

* ingest: ``IngestStage.process`` of each source partition's polls (validate, route, bundle);
* apply: ``AggregateStage.apply`` of the bundles the ingest stage forwarded, one keyed
  partition's bundles of a poll at a time, as the aggregate agent gets them;
* fold: folding the pending hits into the windows, ``--folds`` times along the way and once
  at the end (a backlog's flushes and publication rounds fold as they go);
* snapshot: one full snapshot of every partition at the end (``expire``, ``snapshot``, split
  into changelog parts), as a flush does.

Records are cut into polls of ``--poll`` records per source partition (a backlog's fetch holds
about 3,000). Each figure is process CPU time (``time.process_time``), best of ``--repeat``:
far steadier than wall time on a shared machine. The garbage collector is tuned as a worker's
(``streams.cli``). Nothing is sent anywhere: the sends collect the bundles. The events the
states processed are counted, and a run in which any went missing fails (exit status 1): a
faster path that dropped events would show.

Instructions instead of time: ``--upto`` stops a single run after a stage (``setup``: only the
events and the service are made), so that the instruction counts of runs under valgrind
(``valgrind --tool=cachegrind --cache-sim=no python -m streams.bench.contenders.hotpath
--repeat 1 --upto ...``) differ by exactly one stage's work. Counts move by well under 1 %
between runs however loaded the machine is (docs/benchmark.md, "Both stages cheaper per
event").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections import defaultdict
from typing import Any
from zlib import crc32

from aiokafka.structs import ConsumerRecord

from streams.bench.data import generate
from streams.bench.plumbing import PARTITIONS
from streams.cli import _tune_gc
from streams.settings import Settings


def record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes) -> ConsumerRecord:
    """A record as aiokafka's consumer hands it out."""
    return ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, len(key or b""),
                          len(value), ())


def polls(records: list[Any], poll: int) -> list[tuple[str, int, list[ConsumerRecord]]]:
    """(topic, partition, records) per poll: each source partition's records in offset order,
    cut every ``poll`` records, interleaved across partitions like a consumer's fetches."""
    by_tp: dict[tuple[str, int], list[ConsumerRecord]] = defaultdict(list)
    for rec in records:
        partition = crc32(rec.key) % PARTITIONS
        recs = by_tp[(rec.topic, partition)]
        recs.append(record(rec.topic, partition, len(recs), rec.key, rec.value))
    cut = {tp: [recs[i : i + poll] for i in range(0, len(recs), poll)] for tp, recs in by_tp.items()}
    out = []
    for i in range(max(len(c) for c in cut.values())):
        for (topic, partition), chunks in cut.items():
            if i < len(chunks):
                out.append((topic, partition, chunks[i]))
    return out


def service() -> Any:
    from streams.app import Service

    return Service(Settings())


UPTO = ("setup", "ingest", "apply", "fold", "snapshot")


async def run_once(batches: list[tuple[str, int, list[ConsumerRecord]]], folds: int,
                   upto: str = "snapshot") -> dict[str, float]:
    """Time each stage (process CPU); stop after stage ``upto`` (:data:`UPTO`)."""
    svc = service()
    if upto == "setup":
        gc.collect()
        return {}
    ingest, aggregate = svc.ingest, svc.aggregate
    aggregate.publisher = None
    forwarded: list[tuple[int, bytes]] = []

    async def send(topic: str, *, key: Any, value: bytes, partition: int | None = None, **_: Any) -> None:
        forwarded.append((partition, value))  # type: ignore[arg-type]

    ingest.send = send
    clock = time.process_time
    gc.collect()
    began = clock()
    keyed: list[list[tuple[int, list[ConsumerRecord]]]] = []
    for topic, partition, recs in batches:
        await ingest.process(topic, partition, recs)
        # the bundles of one poll, per keyed partition: what the aggregate agent gets
        keyed.append(_by_partition(forwarded))
        forwarded.clear()
    t_ingest = clock() - began
    if upto == "ingest":
        return {"ingest": t_ingest}
    offsets = [0] * PARTITIONS
    deliveries = []
    for poll in keyed:
        for partition, values in poll:
            recs = []
            for value in values:
                recs.append(record("keyed", partition, offsets[partition], None, value))
                offsets[partition] += 1
            deliveries.append((partition, recs))
    gc.collect()
    t_apply = t_fold = 0.0
    every = max(1, len(deliveries) // (folds + 1))
    for i in range(0, len(deliveries), every):
        began = clock()
        for partition, recs in deliveries[i : i + every]:
            aggregate.apply(partition, recs)
        t_apply += clock() - began
        if upto == "apply":
            continue
        began = clock()
        for state in aggregate.states.values():
            _ = state.windows  # folds the pending hits, as a flush or a publication round does
        t_fold += clock() - began
    if upto in ("apply", "fold"):
        return {"apply": t_apply, "fold": t_fold}
    gc.collect()
    began = clock()
    parts = 0
    for partition, state in aggregate.states.items():
        state.expire(time.time())
        parts += len(aggregate.splitters[partition].split(state.snapshot()))
    t_snapshot = clock() - began
    processed = sum(aggregate.processed.values())
    return {"ingest": t_ingest, "apply": t_apply, "fold": t_fold, "snapshot": t_snapshot,
            "processed": processed, "parts": parts, "bundles": sum(offsets)}


def _by_partition(forwarded: list[tuple[int, bytes]]) -> list[tuple[int, list[bytes]]]:
    out: dict[int, list[bytes]] = {}
    for partition, value in forwarded:
        out.setdefault(partition, []).append(value)
    return sorted(out.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--poll", type=int, default=3000, help="records per source poll")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folds", type=int, default=8,
                        help="fold the pending hits this many times during the apply (8)")
    parser.add_argument("--upto", choices=UPTO, default="snapshot",
                        help="stop each run after this stage (for instruction counts, see above)")
    args = parser.parse_args()
    _tune_gc()  # as a worker does (streams.cli)
    batches = polls(generate(args.events, 1000, 40), args.poll)
    if args.upto != "snapshot":
        for _ in range(args.repeat):
            print(asyncio.run(run_once(batches, args.folds, args.upto)))
        return
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        out = asyncio.run(run_once(batches, args.folds))
        for key, value in out.items():
            best[key] = min(best.get(key, value), value)
    print(f"events {args.events}, polls {len(batches)}, bundles {best['bundles']:.0f}, "
          f"processed {best['processed']:.0f}, parts {best['parts']:.0f}")
    if best["processed"] != args.events:
        print(f"FAILED: {best['processed']:.0f} of {args.events} events processed")
        raise SystemExit(1)
    stages = ("ingest", "apply", "fold", "snapshot")
    total = sum(best[key] for key in stages)
    for key in stages:
        print(f"{key:9s} {best[key]:6.3f} s CPU  {best[key] / args.events * 1e6:5.2f} us/event")
    print(f"{'total':9s} {total:6.3f} s CPU  {total / args.events * 1e6:5.2f} us/event")


if __name__ == "__main__":
    main()
