"""The bench's group phase: how /healthz answers and /metrics counters are judged (no broker,
no timing)."""

from __future__ import annotations

from streams.bench.group import group_ok, group_settled, serves_all
from streams.bench.plumbing import Health, merge_health, parse_health


def test_serves_all_needs_every_partition_assigned_and_restored() -> None:
    assert serves_all(None, 4) == (False, False)
    assert serves_all({"assigned": [0, 1, 2], "partitions": [0, 1, 2]}, 4) == (False, False)
    assert serves_all({"assigned": [0, 1, 2, 3], "partitions": [0, 1]}, 4) == (True, False)
    assert serves_all({"assigned": [0, 1, 2, 3], "partitions": [0, 1, 2, 3]}, 4) == (True, True)


def test_group_settled_when_partitions_are_split_once_and_restored() -> None:
    a = {"assigned": [0, 1], "partitions": [0, 1]}
    b = {"assigned": [2, 3], "partitions": [2, 3]}
    assert group_settled([a, b], 4)
    assert not group_settled([a, None], 4)  # one does not serve yet
    assert not group_settled([a, {"assigned": [], "partitions": []}], 4)  # one owns nothing
    assert not group_settled([a, {"assigned": [1, 2, 3], "partitions": [1, 2, 3]}], 4)
    assert not group_settled([a, {"assigned": [2, 3], "partitions": [2]}], 4)  # not restored


def test_state_keys_are_parsed_and_summed_over_workers() -> None:
    body = (
        b"# HELP salespulse_events_processed_total x\n"
        b'salespulse_events_processed_total{type="call.completed"} 5.0\n'
        b'salespulse_consumer_lag_records{topic="t",partition="0"} 0.0\n'
        b"salespulse_state_keys 123456.0\n"
    )
    one = parse_health(body)
    assert one.state_keys == 123456 and one.processed == 5 and one.caught_up
    both = merge_health([one, Health(processed=2, state_keys=4, lag=[3])])
    assert both.state_keys == 123460 and both.processed == 7 and not both.caught_up


def test_the_group_phase_is_ok_when_the_kill_and_all_three_restarts_are() -> None:
    """The survivor restarts three times (SIGTERM, SIGKILL, SIGKILL under static membership);
    the bench exited 1 after every complete group phase while this asked for two."""
    ok = {"ok": True}
    assert group_ok({"kill": ok, "restarts": [ok, ok, ok]})
    assert not group_ok({"kill": ok, "restarts": [ok, ok]})  # one restart did not run
    assert not group_ok({"kill": ok, "restarts": [ok, {"ok": False}, ok]})
    assert not group_ok({"kill": {"ok": False}, "restarts": [ok, ok, ok]})
    assert not group_ok({})
