"""What one live output round costs per window, step by step, without Kafka or Redis.

``python -m streams.bench.rounds [--reps 1000] [--teams 40] [--runs 3]``: builds the state of
a worker with every keyed partition (``SALESPULSE_PARTITIONS``, 4) from a backlog of demo
events (:class:`streams.demo.mix.SalesFloor`, routed and bundled by the real ingest stage,
applied by :class:`metrics.state.PartitionState`), runs one output round on it (every index
built, every window read), and then times live rounds: between two rounds ``--rate`` events/s
arrive for ``--spacing`` seconds of their event time (at 34,000 events/s and 0.5 s nearly
every rep has an event, so nearly all of its six windows changed: what a worker sees at half
its maximum rate). Each round runs what the worker runs, on the event loop, in order:

* ``state fold``: the aggregate state folds what was applied since the last round into its
  windows (``PartitionState.windows``, the capture's first step: the hot path's deferred work);
* ``publisher``: the rest of :meth:`streams.publisher.Publisher.capture` of every partition
  (split of the changed windows by rep and team, partials encoded);
* ``rollup apply``: :meth:`streams.rollup.RollupStage.local` of the round's records (partials
  decoded, put in their scope windows); ``rollup echo``: their copies read back from the topic
  and skipped;
* ``finish``: the KPI values of every changed scope window (``ScopeWindow.values``:
  :func:`metrics.rollup.finish`; the first reader of a round pays it);
* ``readout``: a sink's :meth:`streams.readout.Reader.changed` (values already finished);
* ``sales.metrics``: the sink's records (key and JSON value) of the round's windows;
* ``redis``: the sink's script calls of the round's windows (:data:`WRITE_WINDOWS`), no I/O;
  ``redis boards``: its leaderboard changes (``_rank``; a worker writes them at most every
  ``SALESPULSE_REDIS_BOARD_INTERVAL_SECONDS``, with the latest values of the windows changed);
* ``/metrics``: a scrape after the round (``KpiRenderer.capture`` on the loop and ``render``).

Figures are microseconds per changed scope window (rep, team and org windows the readout
gives), the median over ``--runs`` runs of ``--rounds`` timed rounds each; each run builds
its state again from the same seed, so two versions of the code compare run by run. The box
is shared: interleave runs of the two versions and say the load average (printed).
The garbage collector is tuned as in a worker (``streams.cli``); its passes are a row of their
own (``gc.callbacks``): which step pays for one depends on what all the steps before it
allocated. ``--profile FILE`` writes a cProfile of the timed rounds. ``--digest`` prints a
digest of the reps' outputs of the timed rounds (roll-up records, ``sales.metrics`` records,
Redis calls and leaderboard changes, /metrics lines, each sorted): a change that keeps them
must keep it (run with ``PYTHONHASHSEED=0``; teams' and the organisation's sums are moved by
differences in an order that varies between processes, so they are equal only up to rounding).
``--memory`` traces allocations from the first round on and prints what the rounds left held
(the publisher's split indexes, the roll-up stage's partials and values, the sinks' copies), by
file and by line: deterministic, unlike a worker's snapshot (which catches whatever round is in
flight); its timings are then tracemalloc's.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import json
import os
import statistics
import time
import tracemalloc
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from metrics.catalog import Catalog
from metrics.events import BUNDLE_DECODER, Validator
from metrics.snapshots import SnapshotFormat
from metrics.state import PartitionState
from metrics.windows import Calendar
from streams.cli import _tune_gc
from streams.demo.mix import SalesFloor
from streams.ingest import IngestStage
from streams.publisher import Publisher
from streams.readout import Readout
from streams.redis_layout import Layout
from streams.rollup import RollupStage
from streams.settings import Settings
from streams.sinks import redis as redis_sink
from streams.sinks.prometheus import KpiRenderer

#: the backlog's last event; mid-minute, so that the timed rounds stay in one minute window
NOW = datetime(2026, 5, 6, 14, 30, 5, tzinfo=UTC).timestamp()
STEPS = ("state fold", "publisher", "rollup apply", "rollup echo", "finish", "readout",
         "sales.metrics", "redis", "redis boards", "/metrics capture", "/metrics render")
#: the garbage collector's passes during a round, taken out of the steps they fell in (which
#: step pays for one depends on the allocations of all the steps before it)
GC = "gc (all steps)"


DIGESTS = ("rollup", "sales.metrics", "redis", "boards", "/metrics")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Floor:
    """A worker's aggregate and roll-up stages and its sinks, fed by the demo floor in process."""

    def __init__(self, reps: int, teams: int, backlog: int, settings: Settings,
                 behind: bool = False) -> None:
        self.catalog, self.calendar = Catalog(), Calendar("UTC")
        self.partitions = settings.partitions
        grace = settings.grace_seconds
        self.clock = Clock(NOW)
        self.validator = Validator()
        self.sent: list[tuple[int, bytes]] = []
        self.ingest = IngestStage(self.validator, self._send, keyed_topic="k",
                                  partitions=self.partitions, dlq_topic="dlq",
                                  clock=lambda: self.clock.t + 1.0)
        self.states = {p: PartitionState(self.catalog, self.calendar, grace_seconds=grace)
                       for p in range(self.partitions)}
        self.offsets = dict.fromkeys(self.states, 0)
        self.input_offsets: dict[str, int] = {}
        self.publisher = Publisher(partitions=self.partitions, rollup_topic="rollup",
                                   interval=settings.rollup_interval_seconds, clock=self.clock,
                                   team_interval=settings.rollup_team_interval_seconds,
                                   behind=lambda: behind)
        self.stage = RollupStage(self.catalog, topic="rollup", partitions=self.partitions,
                                 grace_seconds=grace, consumer_factory=None,  # type: ignore[arg-type]
                                 clock=self.clock)
        self.stage._assigned = set(range(self.partitions))  # one worker owns every partition
        self.readout = Readout(self.stage, grace_seconds=grace, clock=self.clock)
        fmt = SnapshotFormat(self.catalog, self.calendar)
        self.fmt = fmt
        self.metrics_reader = self.readout.reader("sales.metrics")
        self.redis_reader = self.readout.reader("redis")
        # a client that is never used: the sink only builds its commands here
        self.redis = redis_sink.RedisSink(
            self.redis_reader, self.readout, redis_sink.client("redis://127.0.0.1:1/0", 1.0),
            Layout(settings.app_id), fmt, self.catalog, interval=1.0, grace_seconds=grace,
            overdue=dict, clock=self.clock)
        self.redis._script_sha = self.redis._boards_sha = "0" * 40
        self.digest: Any = None  # output -> hashlib object: --digest
        self.renderer = KpiRenderer(self.catalog, self.calendar, self.readout, clock=self.clock)
        self.floor = SalesFloor(reps, teams, seed=7,
                                start=datetime.fromtimestamp(NOW - backlog * 0.01 - 2, UTC))
        self.feed(self.floor.events(backlog, clock=self.clock))

    async def _send(self, topic: str, *, key: Any, value: bytes, partition: int) -> None:
        self.sent.append((partition, value))

    def feed(self, records: Any) -> int:
        """Route, bundle and apply ``records`` as the ingest and aggregate stages do."""
        by_topic: dict[str, list[Any]] = {}
        n = 0
        for rec in records:
            offset = self.input_offsets.get(rec.topic, 0)
            self.input_offsets[rec.topic] = offset + 1
            by_topic.setdefault(rec.topic, []).append(
                SimpleNamespace(key=rec.key, value=rec.value, offset=offset, headers=()))
            n += 1

        async def ingest() -> None:
            for topic, batch in by_topic.items():
                for i in range(0, len(batch), 500):  # a poll's worth
                    await self.ingest.process(topic, 0, batch[i:i + 500])

        asyncio.run(ingest())
        for partition, value in self.sent:
            self.states[partition].apply(BUNDLE_DECODER.decode(value), self.offsets[partition])
            self.offsets[partition] += 1
        self.sent.clear()
        # the feed's garbage (its event loop's cycles, the records) is not the next round's
        gc.collect()
        return n

    def arrive(self, events: int, seconds: float) -> None:
        """``events`` live events spread over the next ``seconds`` of event (and wall) time."""
        start = self.clock.t
        step = seconds / events
        tick = Clock(start)

        def stamped() -> Any:
            for i, rec in enumerate(self.floor.events(events, rate=1.0, clock=tick)):
                tick.t = start + (i + 1) * step
                yield rec

        self.feed(stamped())
        self.clock.t = start + seconds

    def round(self, timings: dict[str, float] | None) -> dict[str, int]:
        """One output round; ``timings``: add each step's seconds to it."""
        t = time.perf_counter
        passes: list[float] = []  # the collector's start and stop times, in pairs

        def collected(phase: str, info: dict) -> None:
            passes.append(t())

        gc.callbacks.append(collected)
        try:
            return self._round(timings, passes)
        finally:
            gc.callbacks.remove(collected)

    def _round(self, timings: dict[str, float] | None, passes: list[float]) -> dict[str, int]:
        t = time.perf_counter
        times = [t()]
        for state in self.states.values():
            state.windows  # noqa: B018 - folds what was applied (the capture's first step)
        times.append(t())
        records = []
        for partition in range(self.partitions):
            records += self.publisher.capture(partition, self.states[partition])
        times.append(t())
        self.stage.local(records)
        times.append(t())
        for _, key, value, partition in records:  # their copies come back from the topic
            self.stage._apply(partition, key, value)  # type: ignore[arg-type]
        times.append(t())
        catalog = self.catalog
        changed = self.stage.changed_since(self.metrics_reader.seen)
        for _, window in changed:
            window.values(catalog)
        times.append(t())
        updates = self.metrics_reader.changed()
        times.append(t())
        fmt, now = self.fmt, self.clock.t
        metrics_records = [(fmt.key(u.scope, u.id, u.kind, u.start),
                            fmt.value(u.scope, u.id, u.team, u.kind, u.start, u.end, u.values,
                                      final=u.final, now=now)) for u in updates]
        times.append(t())
        sink = self.redis
        redis_updates = self.redis_reader.changed()
        scopes: dict[tuple[str, str], list[Any]] = {}
        for u in redis_updates:
            if not u.final:
                scopes.setdefault((u.scope, u.id), []).append(u)
        calls = [sink._call(group, now) for group in scopes.values()]
        times.append(t())
        boards: list[tuple[str, int, list[Any]]] = []
        for u in redis_updates:
            if u.scope == "rep" and not u.final:
                changes: list[Any] = []
                sink._rank(u, changes)
                boards.append((u.id, u.kind, changes))
        times.append(t())
        captured = self.renderer.capture()
        times.append(t())
        body = self.renderer.render(captured)
        times.append(t())
        if timings is not None:
            spans = list(zip(passes[::2], passes[1::2], strict=False))
            for name, a, b in zip(STEPS, times, times[1:], strict=False):
                in_gc = sum(stop - start for start, stop in spans if a <= start < b)
                timings[name] = timings.get(name, 0.0) + (b - a) - in_gc
                timings[GC] = timings.get(GC, 0.0) + in_gc
        if self.digest is not None:
            # What every rep's outputs of the round hold, each sorted: the order of reps in
            # a round follows sets of (rep, team) pairs, whose order varies from one process
            # to the next (hash(None)). Not those of teams and the organisation: their sums
            # are moved by differences in that order, so they are equal up to rounding only.
            digest = self.digest
            for line in sorted(b"%d %s %s\n" % (partition, key, value or b"-")
                               for _, key, value, partition in records if key.startswith(b"rep/")):
                digest["rollup"].update(line)
            for key, value in sorted(r for r in metrics_records if r[0].startswith(b"rep/")):
                digest["sales.metrics"].update(key + b" " + value + b"\n")
            for line in sorted(repr(c).encode() for c in calls if "rep" in c[2]):
                digest["redis"].update(line)
            for line in sorted(repr(b).encode() for b in boards):
                digest["boards"].update(line)
            for line in sorted(x for x in body.splitlines(keepends=True) if b'rep="' in x):
                digest["/metrics"].update(line)
        size = sum(len(k) + len(v) for k, v in metrics_records)
        return {"records": len(records), "record_bytes": sum(len(r[2] or b"") for r in records),
                "windows": len(updates), "rep_windows": sum(u.scope == "rep" for u in updates),
                "metrics_bytes": size, "redis_calls": len(calls),
                "board_args": sum(len(b[2]) for b in boards),
                "body_bytes": len(body)}


def run_once(args: argparse.Namespace, settings: Settings,
             profile: cProfile.Profile | None) -> dict[str, Any]:
    began = time.perf_counter()
    floor = Floor(args.reps, args.teams, args.backlog, settings, behind=args.behind)
    if args.digest:
        floor.digest = {k: hashlib.sha256() for k in DIGESTS}
    if args.memory:
        gc.collect()
        tracemalloc.start(1)
        traced_from = tracemalloc.get_traced_memory()[0]
    floor.round(None)  # the first round: every window read whole, indexes built
    floor.arrive(int(args.rate * args.spacing), args.spacing)
    floor.round(None)  # the first live round: what a backlog leaves behind is read
    setup = time.perf_counter() - began
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        floor.arrive(int(args.rate * args.spacing), args.spacing)
        if profile is not None:
            profile.enable()
        got = floor.round(timings)
        if profile is not None:
            profile.disable()
        for k, v in got.items():
            counts[k] = counts.get(k, 0) + v
    windows = counts["windows"]
    memory = _memory(traced_from) if args.memory else None
    held = len(floor.stage.windows)
    return {"setup_s": setup, "rounds": args.rounds, "memory": memory, "windows": held,
            "digest": " ".join(f"{k}={floor.digest[k].hexdigest()[:12]}" for k in DIGESTS)
            if floor.digest is not None else None,
            "counts": {k: v / args.rounds for k, v in counts.items()},
            "us_per_window": {k: v / windows * 1e6 for k, v in timings.items()},
            "ms_per_round": {k: v / args.rounds * 1e3 for k, v in timings.items()}}


def _memory(traced_from: int, top: int = 12) -> dict[str, Any]:
    """What the rounds left allocated (the output side: publisher index, roll-up stage, sinks'
    copies; the state was built before), by file and by line; tracing stops."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

    def rows(by: str) -> list[tuple[float, int, str]]:
        out = []
        for stat in snapshot.statistics(by)[:top]:
            frame = stat.traceback[0]
            site = frame.filename.removeprefix(root) + (f":{frame.lineno}" if by == "lineno" else "")
            out.append((stat.size / 1e6, stat.count, site))
        return out

    return {"traced_mb": (traced - traced_from) / 1e6, "peak_mb": (peak - traced_from) / 1e6,
            "by_file": rows("filename"), "by_line": rows("lineno")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=40)
    parser.add_argument("--backlog", type=int, default=50_000, help="events before the rounds")
    parser.add_argument("--rate", type=float, default=34_000.0, help="live events/s")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", metavar="FILE", help="cProfile of the timed rounds")
    parser.add_argument("--behind", action="store_true",
                        help="the publisher as in a worker that is behind (or has not settled "
                        "since it was: streams.pacing): every changed window read whole")
    parser.add_argument("--digest", action="store_true",
                        help="print a digest of every output of the timed rounds (roll-up "
                        "records, sales.metrics records, Redis calls, /metrics bodies): two "
                        "versions of the code that give the same digest output the same")
    parser.add_argument("--memory", action="store_true",
                        help="trace allocations from the first round on and print what the "
                        "rounds left (publisher index, roll-up stage, sinks), by file and line, "
                        "of the last run (the timings are then tracemalloc's, not figures)")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args(argv)
    _tune_gc()  # as a worker does
    settings = Settings()
    profile = cProfile.Profile() if args.profile else None
    runs = [run_once(args, settings, profile) for _ in range(args.runs)]
    if profile is not None:
        profile.dump_stats(args.profile)
    shown = (*STEPS, GC)
    per_window = {s: statistics.median(r["us_per_window"].get(s, 0.0) for r in runs) for s in shown}
    per_round = {s: statistics.median(r["ms_per_round"].get(s, 0.0) for r in runs) for s in shown}
    counts = runs[-1]["counts"]
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"reps": args.reps, "load": load, "counts": counts,
                          "us_per_window": per_window, "ms_per_round": per_round,
                          "runs": runs}))
        return 0
    print(f"{args.reps} reps, {args.teams} teams, {args.rate:,.0f} events/s, a round every "
          f"{args.spacing} s: {counts['windows']:,.0f} windows a round ({counts['rep_windows']:,.0f} "
          f"of reps), {counts['records']:,.0f} partials ({counts['record_bytes'] / 1e6:.1f} MB); "
          f"median of {args.runs} runs x {args.rounds} rounds; load {load[0]:.2f} {load[1]:.2f}")
    print(f"  {'step':<18}{'us/window':>10}{'ms/round':>10}   runs (us/window)")
    for s in shown:
        each = " ".join(f"{r['us_per_window'].get(s, 0.0):6.1f}" for r in runs)
        print(f"  {s:<18}{per_window[s]:10.1f}{per_round[s]:10.1f}   {each}")
    if args.digest:
        print("  digests of the outputs: " + " | ".join(sorted({r["digest"] for r in runs})))
    if args.memory:
        mem = runs[-1]["memory"]
        print(f"  traced after the rounds: {mem['traced_mb']:.1f} MB (peak {mem['peak_mb']:.1f}), "
              f"{runs[-1]['windows']:,} roll-up windows; by file, then by line:")
        for rows in (mem["by_file"], mem["by_line"]):
            for mb, blocks, site in rows:
                print(f"  {mb:8.2f} MB {blocks:>9,} blocks  {site}")
    chain = [s for s in shown if not s.startswith("/metrics") and s != "redis boards"]
    print(f"  {'round':<18}{sum(per_window[s] for s in chain):10.1f}"
          f"{sum(per_round[s] for s in chain):10.1f}   (every step above but the leaderboards "
          f"and /metrics, with the collector's passes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
