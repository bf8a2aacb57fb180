"""`salespulse bench`: its options, its SPEC section 7 block and its mixes (no broker, no
timing: the figures here are made up; what is checked is how they are judged and printed)."""

from __future__ import annotations

import argparse

import pytest

from streams.bench.contenders.mixes import floor, lead_lane_share
from streams.bench.plumbing import PROBE_METRIC, Result, parse_probe_count
from streams.bench.report import render_spec, spec_rows
from streams.bench.run import add_parser
from streams.demo.mix import SalesFloor


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_options_default_to_the_demo_mix_and_a_one_second_scrape() -> None:
    args = parse()
    assert args.mix == "demo" and args.scrape_interval == 1.0
    assert not args.tracemalloc and not args.skip_render
    args = parse("--mix", "lead-heavy", "--scrape-interval", "5", "--tracemalloc")
    assert args.mix == "lead-heavy" and args.scrape_interval == 5.0 and args.tracemalloc
    with pytest.raises(SystemExit):
        parse("--mix", "everything")
    with pytest.raises(SystemExit):
        parse("--latency-scrape-duty", "0.5")  # the 50% scrape duty is gone


def test_bad_intervals_are_refused_before_anything_runs() -> None:
    assert parse("--scrape-interval", "0").func(parse("--scrape-interval", "0")) == 2
    assert parse().func(parse("--metrics-interval", "-1")) == 2


def rows_of(report: dict, results: list[Result]) -> dict[str, tuple[str, str, str]]:
    return {figure: (goal, measured, verdict) for figure, goal, measured, verdict
            in spec_rows(report, results)}


def full_run() -> tuple[dict, list[Result]]:
    a = Result("a", "(a)", 200_000, seconds=1.0, ok=True)
    b2 = Result("b2", "(b')", 200_000, seconds=2.5, ok=True,
                details={"rss_peak_mb": 290.0, "rate_until_ingest_done": 100_000.0})
    report = {
        "reps": 1000,
        "latency": {
            "target_rate": 40_000.0, "probes_sent": 200, "probe_poll_s": 0.025,
            "scrape_interval_s": 1.0, "rss_peak_mb": 140.0,
            "poll_seen": 200, "poll_p50_ms": 120.0, "poll_p99_ms": 240.0,
            "scrape_seen": 200, "scrape_p50_ms": 700.0, "scrape_p99_ms": 1300.0,
            "redis_seen": 200, "redis_p50_ms": 300.0, "redis_p99_ms": 900.0,
            "sse_seen": 0,
            "scrape_render_ms_median": 80.0, "scrape_render_ms_p99": 300.0, "scrape_requests": 20,
        },
        "render": {"reps": 1000, "scrapes": {
            "every rep changed": {"total_ms": 190.0, "mb": 15.5},
            "nothing changed": {"total_ms": 15.0, "mb": 15.5}}},
        "group": {"restarts": [
            {"signal": "SIGTERM", "metrics_s": 2.1, "state_keys_after": 230_000,
             "assigned_s": 1.7},
            {"signal": "SIGKILL", "metrics_s": 11.0, "state_keys_after": 230_000},
        ]},
    }
    return report, [a, b2]


def test_every_figure_of_section_7_is_judged_against_its_goal() -> None:
    report, results = full_run()
    rows = rows_of(report, results)
    throughput = rows["throughput (b'), until durable and committed, to bare"]
    assert throughput[0] == ">= 0.6" and throughput[1].startswith("0.400 ")
    assert "ingest done 0.50" in throughput[1] and throughput[2] == "NOT MET"
    assert "to (a) alone" not in throughput[1]  # no (a'): nothing to compare

    assert rows["peak RSS, backlog phase ((b'), 1 worker)"][1:] == ("290 MB", "NOT MET")
    assert rows["peak RSS, sustained-load phase (latency)"][1:] == ("140 MB", "met")
    poll = rows["end-to-end p99 to /metrics (name[] poll every 25 ms)"]
    assert poll[0] == "< 250 ms" and "p99 240 ms" in poll[1] and poll[2] == "met"
    assert rows["end-to-end p99 to Redis (update channel)"][2] == "NOT MET"
    assert rows["end-to-end p99 to SSE (/api/v1/stream)"][1:] == ("-", "not measured")
    prometheus = rows["  the same as Prometheus sees it (full scrape every 1 s)"]
    assert prometheus[1] == "p50 700 ms, p99 1300 ms" and "next scrape" in prometheus[2]
    render = rows["/metrics render, 1,000 reps alone, every rep changed"]
    assert render[1].startswith("190 ms") and "nothing changed 15 ms" in render[1]
    assert render[2] == "NOT MET"
    assert rows["/metrics full scrape of the worker under that load, median"][2] == "met"
    assert rows["recovery: restarted after SIGTERM, serving /metrics again"][1:] == (
        "2.10 s with 230,000 state keys (all assigned after 1.7 s)", "met")
    assert rows["recovery: restarted after SIGKILL, serving /metrics again"][2] == "NOT MET"


def test_throughput_is_judged_against_the_faster_bare_run() -> None:
    report, results = full_run()
    # the box was busy during (a): (b') looks like 0.8 of it, but only 0.4 of (a')
    results[0].seconds = 2.0
    results.append(Result("a2", "(a')", 200_000, seconds=1.0, ok=True))
    goal, measured, verdict = rows_of(report, results)[
        "throughput (b'), until durable and committed, to bare"]
    assert measured.startswith("0.400 (80,000/s; bare (a) 100,000/s, (a') 200,000/s;")
    assert measured.endswith("; to (a) alone 0.800") and verdict == "NOT MET"
    results[0].seconds = 0.5  # (a) the faster one: judged against it
    goal, measured, verdict = rows_of(report, results)[
        "throughput (b'), until durable and committed, to bare"]
    assert measured.startswith("0.200 ") and "to (a) alone" not in measured


def test_a_recovery_below_100k_keys_says_so_and_missing_phases_are_not_measured() -> None:
    report, results = full_run()
    report["group"]["restarts"][0]["state_keys_after"] = 50_000
    rows = rows_of(report, results)
    assert rows["recovery: restarted after SIGTERM, serving /metrics again"][2] == (
        "met (< 100,000 keys)")
    rows = rows_of({"reps": 1000}, results[:1])  # only (a) ran
    assert rows["throughput (b'), until durable and committed, to bare"][2] == "not measured"
    assert rows["recovery: a restarted worker serving again"][2] == "not measured"
    assert all(verdict == "not measured" for figure, (_, _, verdict) in rows.items()
               if not figure.startswith("  "))


def test_the_block_has_one_aligned_line_per_figure() -> None:
    report, results = full_run()
    report.update(events=200_000, mix="lead-heavy", cpu_count=2, loadavg_start=(2.31, 1, 1),
                  loadavg_end=(2.8, 1, 1))
    lines = render_spec(report, results).splitlines()
    assert lines[0] == ("SPEC section 7 (one run: 200,000 events, lead-heavy mix, 1000 reps; "
                        "load avg 2.3 -> 2.8 on 2 CPUs)")
    assert lines[1].startswith("figure") and set(lines[2]) <= {"-", " "}
    assert len(lines) == 3 + len(spec_rows(report, results))
    goal_column = lines[1].index("goal")
    assert all(line[goal_column - 2:goal_column] == "  " for line in lines[3:])
    assert lines[3].rstrip().endswith("NOT MET")


def test_the_probe_count_is_read_from_a_name_filtered_body() -> None:
    body = (f"# HELP {PROBE_METRIC} x\n# TYPE {PROBE_METRIC} gauge\n"
            f'{PROBE_METRIC}{{rep="rep-0001",team="t",window="day"}} 9.0\n'
            f'{PROBE_METRIC}{{rep="rep-probe",team="team-probe",window="minute"}} 2.0\n'
            f'{PROBE_METRIC}{{rep="rep-probe",team="team-probe",window="day"}} 17.0\n').encode()
    assert parse_probe_count(body) == 17
    assert parse_probe_count(body.replace(b"rep-probe", b"rep-other")) == 0


def test_the_demo_mix_is_the_demo_floor_unchanged() -> None:
    assert type(floor("demo", 50, 5, 3)) is SalesFloor
    with pytest.raises(ValueError):
        floor("everything", 50, 5, 3)


def test_the_lead_heavy_mix_sends_about_40_percent_through_the_lead_lane() -> None:
    demo = lead_lane_share(floor("demo", 200, 10, 7).events(40_000))
    heavy = lead_lane_share(floor("lead-heavy", 200, 10, 7).events(40_000))
    assert 0.2 < demo < 0.3
    assert 0.35 < heavy < 0.45


def test_tracemalloc_summary_names_the_largest_site_first() -> None:
    import tracemalloc

    from streams.bench.contenders.traced_worker import as_text, summary

    tracemalloc.start(1)
    try:
        big = [bytes(1000) for _ in range(20_000)]  # ~20 MB at this line
        figures = summary(tracemalloc.take_snapshot(), top=4)
    finally:
        tracemalloc.stop()
    assert len(big) == 20_000
    top = figures["by_line"][0]
    assert top["site"].startswith("tests/unit/streams/bench/test_report.py:")
    assert top["mb"] > 19 and top["blocks"] >= 20_000
    assert figures["by_file"][0]["site"] == "tests/unit/streams/bench/test_report.py"
    assert len(figures["by_line"]) <= 4 and figures["traced_peak_mb"] >= figures["traced_mb"]
    assert top["site"] in as_text(figures)
