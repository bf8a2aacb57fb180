"""Redis keys: ids with ':' and glob characters round-trip, patterns match only literally."""

from __future__ import annotations

from fnmatch import fnmatchcase

from streams.redis_layout import KpiKey, Layout
from streams.sinks.redis import redacted


def test_keys_parse_back_with_ids_that_contain_colons() -> None:
    layout = Layout("app:1")
    key = layout.kpis("day", 1795910400.0, "rep", "acme:rep:17")
    assert layout.parse_kpis(key) == KpiKey("day", 1795910400, "rep", "acme:rep:17")
    assert layout.parse_kpis(layout.kpis("year", 0, "rep", "x")) is None
    assert layout.parse_kpis("other:kpis:day:0:rep:x") is None
    board = layout.board("week", 1795392000, "calls_made", "team:east")
    assert layout.parse_board(board) == ("week", 1795392000, "calls_made", "team:east")
    assert layout.parse_board(layout.board("week", 1795392000, "calls_made")) == \
        ("week", 1795392000, "calls_made", None)


def test_channel_patterns_match_literally() -> None:
    layout = Layout("a*p")
    exact = layout.channel("team", "day", "t[1]")
    # Redis globs treat a backslash as an escape like fnmatch treats [x]: compare by hand
    pattern = layout.channel_pattern("team", "day", "t[1]")
    assert pattern == "a\\*p:updates:team:day:t\\[1\\]"
    assert fnmatchcase(exact, layout.channel_pattern().replace("\\*", "[*]"))
    assert layout.channel_pattern("org") == "a\\*p:updates:org:*:*"


def test_logged_urls_carry_no_password() -> None:
    assert redacted("rediss://svc:s3cret@redis.internal:6380/0") == "rediss://svc:***@redis.internal:6380/0"
    assert redacted("redis://localhost:6379/0") == "redis://localhost:6379/0"
