"""How long `GET /metrics` takes to render the KPI families of 1,000 reps, without Kafka.

``python -m streams.bench.render [--reps 1000] [--changed 0.1]``: fills a roll-up stage
(:mod:`streams.rollup`) with the current and previous window of every kind for every rep,
team and the organisation (the default catalog's KPIs, a few dimension values each, about
150,000 series at 1,000 reps, like ``salespulse bench``), then times what a scrape costs the
worker, as the /metrics handler (:mod:`streams.app`) runs it: ``capture`` on the event loop,
``parts`` in a thread, and the writes of the body on the loop (the cached pieces joined into
~256 KiB writes, :func:`streams.sinks.prometheus.write_pieces`; the socket's own send is not
timed). It does so for a first scrape (everything formatted), a scrape with nothing changed,
one after a share of the reps changed (every window kind of each, as an event does), one after
every rep changed, and one a minute later with nothing changed (every minute window moved on:
this minute's is last minute's). ``joined_ms`` is the measure used before 2026-11-30 (branch
``render3``): capture + parts + one ``b"".join`` of the whole body, which the handler never
makes. ``cpu_total_ms`` is the CPU time of the three steps (``time.thread_time``): on a box
shared with other work it moves less than the wall clock. The garbage collector is tuned as
in a worker (``streams.cli``: start-up objects frozen, young objects collected every 50,000
allocations), as ``streams.bench.rounds`` does: a scrape's cost is the worker's. (With
CPython's default thresholds, the measure until stop 21, an every-rep-changed scrape took
6-14 ms more in three alternating pairs.) ``salespulse bench`` times whole scrapes of a live worker; this isolates
the renderer. ``--tracemalloc`` also reports the renderer's memory in the first round (its
cache after the first scrape, and the peak of an every-rep-changed render above what was held
before it; that round's times include tracing).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
import tracemalloc

from metrics.catalog import Catalog
from metrics.partials import Held
from metrics.windows import WINDOW_KINDS, Calendar
from streams.cli import _tune_gc
from streams.readout import Readout
from streams.rollup import RollupStage, ScopeWindow
from streams.sinks.prometheus import KpiRenderer, write_pieces

NOW = 1_780_000_000.0 + 1800.0  # mid-hour, mid-minute: every kind has a previous window
DIMENSION_VALUES = ("a", "b", "c")
SHARE = 0.25  # of the KPIs with a value in a window: ~150,000 series at 1,000 reps


def _values(catalog: Catalog, scope: str, rng: random.Random) -> dict[tuple, float]:
    """One window's finished values: a share of the KPIs kept at this scope (a rep does not do
    everything in every window), up to three dimension values each."""
    out: dict[tuple, float] = {}
    for kpi in catalog.kpis:
        if scope not in kpi.scopes or rng.random() > SHARE:
            continue
        dims = catalog.dimensions_of(kpi.name)
        for value in DIMENSION_VALUES[: 3 if dims else 1]:
            out[(kpi.name, *(value for _ in dims))] = float(rng.randint(0, 500))
    return out


def populate(stage: RollupStage, calendar: Calendar, reps: int, teams: int,
             rng: random.Random) -> list[tuple]:
    """Every scope's current and previous window of every kind; returns the reps' window keys."""
    catalog = stage.catalog
    scopes = [("rep", f"rep-{i:04d}", f"team-{i % teams:02d}") for i in range(reps)]
    scopes += [("team", f"team-{t:02d}", None) for t in range(teams)] + [("org", "org", None)]
    rep_keys = []
    for kind_index, kind in enumerate(WINDOW_KINDS):
        start, end = calendar.bounds(kind, NOW)
        prev_start, _ = calendar.bounds(kind, start - 1.0)
        for scope, scope_id, team in scopes:
            for s, e in ((start, end), (prev_start, start)):
                key = (scope, scope_id, kind_index, s)
                window = ScopeWindow(0, e, key)
                window.sources[0] = Held(0, 1, team, (), [], None, None)
                window._values = _values(catalog, scope, rng)
                stage.windows[key] = window
                stage.touch(key, window)
                if scope == "rep" and s == start:
                    rep_keys.append((scope, scope_id, kind_index, s))
    return rep_keys


def change(stage: RollupStage, keys: list[tuple], rng: random.Random) -> None:
    """New values for these windows, as the stage replaces them when a partial arrives."""
    for key in keys:
        window = stage.windows[key]
        window._values = {k: v + rng.randint(1, 3) for k, v in window._values.items()}
        stage.touch(key, window)


def _scrape(renderer: KpiRenderer) -> tuple[float, ...]:
    """(capture, parts, writes, one join of the body) in seconds of the wall clock, the same
    three steps in seconds of this thread's CPU time, and the body's size."""
    c0, t0 = time.thread_time(), time.perf_counter()
    captured = renderer.capture()  # on the loop
    c1, t1 = time.thread_time(), time.perf_counter()
    parts = renderer.parts(captured)  # in a thread
    c2, t2 = time.thread_time(), time.perf_counter()
    size = 0
    for piece in write_pieces(parts):  # on the loop, as the handler writes the body
        size += len(piece)
    c3, t3 = time.thread_time(), time.perf_counter()
    b"".join(parts)  # (the measure before: one join of the whole body)
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, c1 - c0, c2 - c1, c3 - c2, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--changed", type=float, default=0.1, help="share of reps changed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also the renderer's memory (traced; slows every scrape)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON line instead of the table (for `salespulse bench`)")
    args = parser.parse_args(argv)
    _tune_gc()  # as a worker does
    rng = random.Random(7)
    catalog, calendar = Catalog(), Calendar("UTC")
    stage = RollupStage(catalog, topic="r", partitions=1, grace_seconds=300.0,
                        consumer_factory=None, clock=lambda: NOW)  # type: ignore[arg-type]
    rep_keys = populate(stage, calendar, args.reps, args.teams, rng)
    readout = Readout(stage, grace_seconds=300.0, clock=lambda: NOW)
    by_rep: dict[str, list[tuple]] = {}
    for key in rep_keys:
        by_rep.setdefault(key[1], []).append(key)
    reps = sorted(by_rep)
    few = reps[: max(1, int(len(reps) * args.changed))]
    results: dict[str, list[tuple[float, ...]]] = {}
    clock = [NOW]
    memory: dict[str, float] = {}
    for _ in range(args.rounds):
        clock[0] = NOW
        if args.tracemalloc and not memory:
            tracemalloc.start()
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
        renderer = KpiRenderer(catalog, calendar, readout, clock=lambda: clock[0])
        results.setdefault("first scrape", []).append(_scrape(renderer))
        if tracemalloc.is_tracing():
            gc.collect()
            memory["cache_mb"] = (tracemalloc.get_traced_memory()[0] - before) / 1e6
        results.setdefault("nothing changed", []).append(_scrape(renderer))
        change(stage, [k for rep in few for k in by_rep[rep]], rng)
        results.setdefault(f"{len(few)} reps changed", []).append(_scrape(renderer))
        change(stage, rep_keys, rng)
        if tracemalloc.is_tracing():
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        results.setdefault("every rep changed", []).append(_scrape(renderer))
        if tracemalloc.is_tracing():
            memory["every_rep_changed_peak_mb"] = (tracemalloc.get_traced_memory()[1] - held) / 1e6
            tracemalloc.stop()
        clock[0] = NOW + 60.0  # the minute moves on (the stage has no window of the new one)
        results.setdefault("the minute moved on", []).append(_scrape(renderer))
    figures = summarise(results)
    if args.json:
        print(json.dumps({"reps": args.reps, "windows": len(stage.windows),
                          "rounds": args.rounds, "scrapes": figures, **memory}))
        return 0
    print(f"{args.reps} reps, {len(stage.windows)} windows, median of {args.rounds} rounds")
    for name, f in figures.items():
        print(f"  {name:<20} capture (loop) {f['capture_ms']:6.1f} + render (thread) "
              f"{f['render_ms']:6.1f} + writes (loop) {f['write_ms']:5.1f} = {f['total_ms']:6.1f} ms"
              f"   (with one join: {f['joined_ms']:6.1f} ms; CPU {f['cpu_total_ms']:6.1f} ms)"
              f"   {f['mb']:.1f} MB")
    if memory:
        print(f"  memory (traced, round 1): the cache after the first scrape "
              f"{memory['cache_mb']:.1f} MB; an every-rep-changed render's peak above it "
              f"{memory['every_rep_changed_peak_mb']:.1f} MB")
    return 0


def summarise(results: dict[str, list[tuple[float, ...]]]) -> dict[str, dict[str, float]]:
    """Per kind of scrape: median capture, render (``parts``) and writes in ms, their sum
    (``total_ms``: what the scrape cost the worker), the measure before (``joined_ms``: capture,
    render and one join of the body), the three steps' CPU time (``cpu_total_ms``: less moved
    by other processes on a shared box than the wall clock), and the body's size in MB."""
    out = {}
    for name, runs in results.items():
        capture, render, write, join, *cpu = (statistics.median(r[i] for r in runs) * 1000
                                              for i in range(7))
        out[name] = {"capture_ms": capture, "render_ms": render, "write_ms": write,
                     "total_ms": capture + render + write, "joined_ms": capture + render + join,
                     "cpu_total_ms": sum(cpu), "mb": runs[0][7] / 1e6}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
