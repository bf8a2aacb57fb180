"""What `salespulse bench` prints: the contenders' table, every figure of SPEC section 7 with its
goal and verdict, and the whole report."""

from __future__ import annotations

import subprocess
from typing import Any

from streams.bench.plumbing import PROBE_METRIC, PROBE_POLL, REPO_ROOT, Result, say

# ------------------------------------------------------------------------------ the contenders' table


def git_state() -> dict[str, Any]:
    """Which code the workers ran: HEAD and the files that differ from it. The worker is
    imported from the work tree at each launch, so an edit during a run changes what runs."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "head": git("rev-parse", "--short", "HEAD") or None,
        "modified": [line[3:] for line in status.splitlines() if line.strip()],
    }


def fmt_rate(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "-"


def render_table(results: list[Result]) -> str:
    base = next((r.rate for r in results if r.key == "a"), None)
    rows = [("contender", "events", "seconds", "events/s", "ratio to (a)")]
    for r in results:
        rate = r.rate
        rows.append(
            (
                r.label,
                f"{r.events:,}",
                f"{r.seconds:.2f}" if r.ok and r.seconds is not None else "-",
                fmt_rate(rate),
                f"{rate / base:.3f}" if rate is not None and base else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ SPEC section 7

GOAL_RATIO = 0.6
GOAL_RSS_MB = 150.0
GOAL_LATENCY_MS = 250.0
GOAL_RENDER_MS = 100.0
GOAL_RECOVERY_S = 10.0
RECOVERY_KEYS = 100_000


def _verdict(value: float | None, goal: float, *, at_least: bool = False) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= goal if at_least else value < goal) else "NOT MET"


def spec_rows(report: dict[str, Any], results: list[Result]) -> list[tuple[str, str, str, str]]:
    """SPEC section 7's figures of one run: (figure, goal, measured, verdict) per line."""
    rows: list[tuple[str, str, str, str]] = []
    by_key = {r.key: r for r in results}
    b2 = by_key.get("b2")
    # The bare consumer runs first (a) and last (a'); the box drifts in between (other work on
    # it), so the ratio is judged against the faster of the two: it is the lower ratio.
    bare = {k: by_key[k].rate for k in ("a", "a2") if k in by_key and by_key[k].rate}
    base = max(bare.values(), default=None)
    ratio = b2.rate / base if b2 is not None and b2.rate is not None and base else None
    measured = fmt_num(ratio, ".3f")
    if ratio is not None:
        upper = b2.details.get("rate_until_ingest_done")  # type: ignore[union-attr]
        names = {"a": "(a)", "a2": "(a')"}
        runs = ", ".join(f"{names[k]} {fmt_rate(v)}/s" for k, v in bare.items())
        measured += (f" ({fmt_rate(b2.rate)}/s; bare {runs}; "  # type: ignore[union-attr]
                     f"ingest done {fmt_num(upper / base if upper else None, '.2f')})")
        if "a" in bare and bare["a"] * 1.2 < base:  # (a) ran on a busier box than (a')
            measured += f"; to (a) alone {b2.rate / bare['a']:.3f}"  # type: ignore[union-attr]
        cpu = _cpu_ratio(_bare_cpu(results), b2.details.get("cpu_us_per_event"))  # type: ignore[union-attr]
        if cpu is not None:
            measured += f"; CPU per event, bare / worker {cpu:.3f}"
    rows.append(("throughput (b'), until durable and committed, to bare",
                 f">= {GOAL_RATIO:g}", measured, _verdict(ratio, GOAL_RATIO, at_least=True)))

    rss = b2.details.get("rss_peak_mb") if b2 is not None else None
    rows.append(("peak RSS, backlog phase ((b'), 1 worker)", f"< {GOAL_RSS_MB:.0f} MB",
                 f"{fmt_num(rss, '.0f')} MB", _verdict(rss, GOAL_RSS_MB)))
    lat = report.get("latency") or {}
    rss = lat.get("rss_peak_mb")
    rows.append(("peak RSS, sustained-load phase (latency)", f"< {GOAL_RSS_MB:.0f} MB",
                 f"{fmt_num(rss, '.0f')} MB", _verdict(rss, GOAL_RSS_MB)))

    rate = lat.get("target_rate")
    at = f" at {fmt_rate(rate)}/s" if rate else ""
    poll = lat.get("probe_poll_s", PROBE_POLL) * 1000
    for kind, what in (("poll", f"/metrics (name[] poll every {poll:.0f} ms)"),
                       ("redis", "Redis (update channel)"), ("sse", "SSE (/api/v1/stream)")):
        p50, p99 = lat.get(f"{kind}_p50_ms"), lat.get(f"{kind}_p99_ms")
        seen = lat.get(f"{kind}_seen")
        measured = (f"p50 {fmt_num(p50, '.0f')} ms, p99 {fmt_num(p99, '.0f')} ms "
                    f"({seen} of {lat.get('probes_sent')} seen{at})") if seen else "-"
        rows.append((f"end-to-end p99 to {what}", f"< {GOAL_LATENCY_MS:.0f} ms", measured,
                     _verdict(p99 if seen else None, GOAL_LATENCY_MS)))
    p50, p99 = lat.get("scrape_p50_ms"), lat.get("scrape_p99_ms")
    interval = lat.get("scrape_interval_s")
    rows.append((f"  the same as Prometheus sees it (full scrape every {fmt_num(interval, 'g')} s)",
                 "-", f"p50 {fmt_num(p50, '.0f')} ms, p99 {fmt_num(p99, '.0f')} ms"
                 if p99 is not None else "-", "(includes the wait for the next scrape)"))

    render = (report.get("render") or {}).get("scrapes") or {}
    worst = render.get("every rep changed") or {}
    idle = render.get("nothing changed") or {}
    total = worst.get("total_ms")
    reps = (report.get("render") or {}).get("reps", report.get("reps"))
    rows.append((f"/metrics render, {reps:,} reps alone, every rep changed",
                 f"< {GOAL_RENDER_MS:.0f} ms",
                 f"{fmt_num(total, '.0f')} ms ({fmt_num(worst.get('mb'), '.1f')} MB; nothing changed "
                 f"{fmt_num(idle.get('total_ms'), '.0f')} ms)" if total is not None else "-",
                 _verdict(total, GOAL_RENDER_MS)))
    med, p99 = lat.get("scrape_render_ms_median"), lat.get("scrape_render_ms_p99")
    rows.append(("/metrics full scrape of the worker under that load, median",
                 f"< {GOAL_RENDER_MS:.0f} ms",
                 f"{fmt_num(med, '.0f')} ms (p99 {fmt_num(p99, '.0f')} ms, "
                 f"{lat.get('scrape_requests', 0)} scrapes)" if med is not None else "-",
                 _verdict(med, GOAL_RENDER_MS)))

    for r in (report.get("group") or {}).get("restarts") or []:
        keys = r.get("state_keys_after") or r.get("state_keys_before")
        secs = r.get("metrics_s")
        verdict = _verdict(secs, GOAL_RECOVERY_S)
        if keys is not None and keys < RECOVERY_KEYS and verdict != "not measured":
            verdict += f" (< {RECOVERY_KEYS:,} keys)"
        how = ", static membership" if r.get("static") else ""
        rows.append((f"recovery: restarted after {r.get('signal')}{how}, serving /metrics again",
                     f"< {GOAL_RECOVERY_S:.0f} s", f"{fmt_num(secs, '.2f')} s with "
                     f"{fmt_num(keys, ',')} state keys (all assigned after "
                     f"{fmt_num(r.get('assigned_s'), '.1f')} s)", verdict))
    if not (report.get("group") or {}).get("restarts"):
        rows.append(("recovery: a restarted worker serving again", f"< {GOAL_RECOVERY_S:.0f} s",
                     "-", "not measured"))
    return rows


def render_spec(report: dict[str, Any], results: list[Result]) -> str:
    """The SPEC section 7 block: one line per figure, goal, measured, verdict."""
    load = [x[0] for x in (report.get("loadavg_start"), report.get("loadavg_end")) if x]
    context = (f"one run: {report.get('events', 0):,} events, {report.get('mix', 'demo')} mix, "
               f"{report.get('reps')} reps; load avg "
               f"{' -> '.join(f'{x:.1f}' for x in load) or '-'} on {report.get('cpu_count')} CPUs")
    rows = [("figure", "goal", "measured", "verdict"), *spec_rows(report, results)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"SPEC section 7 ({context})"]
    for i, (figure, goal, measured, verdict) in enumerate(rows):
        lines.append(f"{figure.ljust(widths[0])}  {goal.ljust(widths[1])}  "
                     f"{measured.ljust(widths[2])}  {verdict}".rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -------")
    return "\n".join(lines)




def _bare_cpu(results: list[Result]) -> float | None:
    """The bare consumer's CPU per event (µs): the cheaper of its two runs."""
    return min((r.details["cpu_us_per_event"] for r in results
                if r.key in ("a", "a2") and r.details.get("cpu_us_per_event")), default=None)


def _cpu_ratio(bare: float | None, worker: float | None) -> float | None:
    """Bare CPU per event over the worker's: the throughput ratio CPU-bound work would have."""
    return bare / worker if bare and worker else None


def print_report(report: dict[str, Any], results: list[Result], lat: dict[str, Any] | None) -> None:
    """Everything a person needs to judge the run, as plain text."""
    say("")
    say(f"salespulse bench {report['runid']}  ({report['events']:,} events, "
        f"{report['reps']} reps, {report['teams']} teams, {report['partitions']} partitions/topic; "
        f"load avg {report['loadavg_start'][0]:.1f} -> {report['loadavg_end'][0]:.1f} "
        f"on {report['cpu_count']} CPUs)")
    g0, g1 = report.get("git_start") or {}, report.get("git_end") or {}
    changed = "" if g0 == g1 else "; the work tree CHANGED during the run"
    say(f"code: HEAD {g0.get('head')}, {len(g0.get('modified', []))} modified tracked files{changed}")
    redis = report.get("redis") or {}
    say(f"mix: {report.get('mix', 'demo')} ({fmt_num(report.get('lead_lane_share'), '.0%')} of the "
        f"events also travel the lead lane); Redis: {redis.get('url') or 'none'}"
        f"{' (started by the bench)' if redis.get('started') else ''}")
    say(render_table(results))
    bare_cpu = _bare_cpu(results)
    if report["stock_events"] < report["events"]:
        slow = [r.key for r in results if r.key in ("b", "c", "d")]
        if slow:
            say(f"({'), ('.join(slow)}) read the first {report['stock_events']:,} of the same "
                f"records (own topics); rates are events/s all the same.")
    for r in results:
        if r.note:
            say(f"note {r.key}: {r.note}")
    for r in results:
        d = r.details
        if r.key == "b":
            say("")
            say(r.label)
            say(f"  peak RSS while processing: {fmt_num(d.get('rss_peak_mb'), '.0f')} MB "
                f"(whole life: {fmt_num(d.get('rss_peak_overall_mb'), '.0f')} MB)")
            say(f"  launch -> first record processed: {fmt_num(d.get('startup_s'), '.1f')} s")
            say(f"  all events in -> lag 0 on /metrics: +{fmt_num(d.get('lag_zero_after_s'), '.2f')} s;"
                f" keyed-events commits at end offsets (broker): "
                f"+{fmt_num(d.get('keyed_commits_after_s'), '.2f')} s;"
                f" input commits: +{fmt_num(d.get('input_commits_after_s'), '.2f')} s")
            say(f"  rate until durable (first record -> commits caught up): "
                f"{fmt_rate(d.get('rate_until_durable'))} events/s")
            say(f"  counters: {fmt_counters(d.get('final'))}")
            share = d.get("scrape_share_of_timed")
            say(f"  /metrics scrapes: {d.get('scrapes', 0)}, median "
                f"{fmt_num(d.get('scrape_ms_median'), '.1f')} ms; while timed: "
                f"{d.get('scrapes_while_timed', 0)}, median "
                f"{fmt_num(d.get('scrape_ms_median_while_timed'), '.1f')} ms, "
                f"{fmt_num(share * 100 if share is not None else None, '.0f')}% of the timed "
                f"interval spent inside scrapes")
            if share is not None and share > 0.2:
                say("  WARNING: the worker renders /metrics on its event loop; with this share "
                    "of the interval inside scrapes, (b) measures the observer. See (b').")
            log_lines("worker stderr", d.get("log"))
        elif r.key == "b2":
            say("")
            say(r.label)
            say(f"  launch -> first bundle forwarded: {fmt_num(d.get('startup_s'), '.1f')} s; "
                f"ingest done +{fmt_num(d.get('ingest_done_s'), '.2f')} s "
                f"({fmt_rate(d.get('rate_until_ingest_done'))} events/s, an upper bound); "
                f"input commits +{fmt_num(d.get('input_commits_s'), '.2f')} s; "
                f"durable +{fmt_num(r.seconds, '.2f')} s (the table's figure, a lower bound)")
            say(f"  CPU until durable: {fmt_num(d.get('cpu_us_per_event'), '.1f')} µs per event, all "
                f"threads (bare (a): {fmt_num(bare_cpu, '.1f')} µs; ratio "
                f"{fmt_num(_cpu_ratio(bare_cpu, d.get('cpu_us_per_event')), '.3f')}): less moved "
                f"by other load on the box than the rates")
            say(f"  check scrape afterwards ({fmt_num(d.get('check_scrape_ms'), '.0f')} ms): "
                f"{fmt_counters(d.get('final'))}")
            say(f"  peak RSS while processing: {fmt_num(d.get('rss_peak_mb'), '.0f')} MB "
                f"(whole life incl. latency phase: {fmt_num(d.get('rss_peak_overall_mb'), '.0f')} MB)")
            log_lines("worker stderr", d.get("log"))
        elif r.key in ("c", "d"):
            extra = ""
            if d.get("rate_until_changelog_flushed"):
                extra = f", until changelog flushed {fmt_rate(d['rate_until_changelog_flushed'])}/s"
            say(f"{r.label}: start-up {fmt_num(d.get('startup_s'), '.1f')} s, "
                f"peak RSS {fmt_num(d.get('rss_peak_mb'), '.0f')} MB{extra}")
            log_lines(f"stock-{r.key} log", d.get("log"))
    if report.get("group") is not None:
        from streams.bench.group import print_group

        print_group(next((r for r in results if r.key == "g"), None), report["group"])
    if lat is not None:
        say("")
        say("end-to-end latency (probe send -> first observation showing it, day window of "
            "calls_made)")
        if lat.get("probes_sent") is None:
            say(f"  not measured: {lat.get('note')}")
        else:
            load = lat.get("load") or {}
            say(f"  background load ({report.get('mix', 'demo')} mix): target "
                f"{fmt_rate(lat['target_rate'])}/s (half of {lat.get('rate_from', '?')}), "
                f"achieved {fmt_rate(load.get('rate'))}/s ({load.get('sent', 0):,} events)")
            what = {
                "poll": f"/metrics?name[]={PROBE_METRIC} every "
                        f"{lat['probe_poll_s'] * 1000:.0f} ms (visible on /metrics)",
                "scrape": f"full /metrics scrape every {lat['scrape_interval_s']:g} s "
                          "(as Prometheus sees it)",
                "redis": "Redis, update message on the probe rep's channel",
                "sse": "/api/v1/stream (SSE) update event",
            }
            for kind, label in what.items():
                say(f"  {label}: {lat.get(f'{kind}_seen')} of {lat['probes_sent']} seen; "
                    f"p50 {fmt_num(lat.get(f'{kind}_p50_ms'), '.0f')} ms, "
                    f"p99 {fmt_num(lat.get(f'{kind}_p99_ms'), '.0f')} ms, "
                    f"max {fmt_num(lat.get(f'{kind}_max_ms'), '.0f')} ms")
            if not lat.get("redis"):
                say("  (no Redis: Redis and SSE not measured)")
            say(f"  waited {fmt_num(lat.get('drain_s'), '.1f')} s after the last probe; /metrics "
                f"shows {fmt_num(lat.get('probe_count_at_end'), 'd')} of {lat['probes_sent']} "
                "probes after the load")
            say(f"  request -> body: polls median {fmt_num(lat.get('poll_render_ms_median'), '.1f')} "
                f"ms, p99 {fmt_num(lat.get('poll_render_ms_p99'), '.1f')} ms "
                f"({lat.get('poll_requests')}); full scrapes median "
                f"{fmt_num(lat.get('scrape_render_ms_median'), '.1f')} ms, p99 "
                f"{fmt_num(lat.get('scrape_render_ms_p99'), '.1f')} ms ({lat.get('scrape_requests')})")
            say(f"  worker kept up: {'yes' if lat['worker_kept_up'] else 'NO'} "
                f"({lat['worker_accounted_total']:,} of {lat['worker_expected_total']:,} accounted, "
                f"{lat['worker_backlog_drain_s']:.1f} s after the load); "
                f"peak RSS {fmt_num(lat.get('rss_peak_mb'), '.0f')} MB")
            if lat.get("day_window_rolled_over"):
                say("  WARNING: the day window rolled over during the probes: latencies unreliable")
            for key in ("note", "note_watch_redis", "note_watch_sse"):
                if lat.get(key):
                    say(f"  {key.replace('_', ' ')}: {lat[key]}")
    render = report.get("render")
    if render:
        say("")
        if render.get("scrapes"):
            say(f"/metrics render alone (streams.bench.render, {render.get('reps')} reps, "
                f"{render.get('windows'):,} windows, median of {render.get('rounds')}): capture "
                "on the loop + render in a thread + the body's writes on the loop")
            for name, f in render["scrapes"].items():
                say(f"  {name:<22} {f['capture_ms']:7.1f} + {f['render_ms']:7.1f} + "
                    f"{f.get('write_ms', 0.0):5.1f} ms = {f['total_ms']:7.1f} ms, {f['mb']:.1f} MB")
        else:
            say(f"/metrics render alone: {render.get('note')}")
    memory = report.get("memory")
    if memory:
        say("")
        say(f"(m) largest allocation sites of a worker after the backlog (tracemalloc, "
            f"{fmt_num(memory.get('state_keys'), ',')} state keys): traced "
            f"{fmt_num(memory.get('traced_mb'), '.1f')} MB, peak "
            f"{fmt_num(memory.get('traced_peak_mb'), '.1f')} MB")
        for row in (memory.get("by_line") or [])[:10]:
            say(f"  {row['mb']:8.1f} MB  {row['blocks']:>10,} blocks  {row['site']}")
        if memory.get("note"):
            say(f"  note: {memory['note']}")
        if memory.get("path"):
            say(f"  top 20 by line and by file: {memory['path']}")
    say("")
    say(render_spec(report, results))
    if report.get("error"):
        say(f"\nERROR: {report['error']}")
    say(f"\nlogs: {report['workdir']}")


def fmt_num(x: float | None, fmt: str) -> str:
    return format(x, fmt) if x is not None else "-"


def fmt_counters(final: dict[str, Any] | None) -> str:
    """A worker's event counters as its last scrape showed them."""
    fin = final or {}
    return (f"processed {fin.get('processed', 0):,}, duplicate {fin.get('duplicate', 0):,}, "
            f"rejected {fin.get('rejected', 0):,}, late {fin.get('late', 0):,}")


def log_lines(what: str, scan: dict[str, Any] | None) -> None:
    if not scan:
        return
    counts = scan.get("counts") or {}
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no warnings or errors"
    say(f"  {what} ({scan['path']}): {summary}")
    for kind in (scan.get("messages") or [])[:6]:
        say(f"    {kind['count']:>4} x {kind['kind']}")
    for line in (scan.get("errors") or [])[:5]:
        say(f"    | {line}")
