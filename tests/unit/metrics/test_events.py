"""The input event contract (SPEC section 2), checked against the SPEC table written out here.

The table below is transcribed from the SPEC (required fields are the bold ones), not taken from
``metrics.events``, so a drift between the SPEC and the structs shows up as a failing test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from metrics.events import (
    BUNDLE_DECODER,
    BUNDLE_ENCODER,
    DATA_TYPES,
    Bundle,
    Event,
    RejectedEvent,
    Validator,
)

NOW_DT = datetime(2026, 11, 22, 14, 3, 11, 250000, tzinfo=UTC)
NOW = NOW_DT.timestamp()
TIME = "2026-11-22T14:03:11.250Z"

# type -> (required fields with a valid value, optional fields with a valid value)
SPEC: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "call.completed": (
        {"rep_id": "rep-17", "direction": "outbound", "outcome": "connected"},
        {"team_id": "team-east", "lead_id": "lead-991", "customer_id": "cust-1",
         "talk_seconds": 184, "wrap_seconds": 40},
    ),
    "email.sent": (
        {"rep_id": "rep-1"},
        {"team_id": "team-east", "lead_id": "lead-1", "customer_id": "cust-1", "automated": True},
    ),
    "meeting.scheduled": (
        {"rep_id": "rep-1"},
        {"team_id": "t", "lead_id": "l", "customer_id": "c", "opportunity_id": "opp-1"},
    ),
    "conversation.held": (
        {"rep_id": "rep-1"},
        {"team_id": "t", "lead_id": "l", "customer_id": "c", "channel": "video",
         "duration_seconds": 620.5},
    ),
    "crm.record_updated": (
        {"rep_id": "rep-1", "object": "opportunity", "action": "created"},
        {"team_id": "t"},
    ),
    "tool.used": ({"rep_id": "rep-1", "tool": "linkedin-sales-nav"}, {"team_id": "t"}),
    "lead.created": (
        {"lead_id": "lead-1"},
        {"rep_id": "rep-1", "team_id": "t", "source": "webinar", "region": "emea"},
    ),
    "lead.assigned": ({"lead_id": "lead-1", "rep_id": "rep-2"}, {"team_id": "t"}),
    "lead.qualified": ({"lead_id": "lead-1", "stage": "sql"}, {"rep_id": "r", "team_id": "t"}),
    "lead.converted": (
        {"lead_id": "lead-1"},
        {"rep_id": "r", "team_id": "t", "customer_id": "c", "opportunity_id": "o"},
    ),
    "lead.lost": (
        {"lead_id": "lead-1", "reason": "no_decision"},
        {"rep_id": "r", "team_id": "t"},
    ),
    "opportunity.created": (
        {"opportunity_id": "opp-1", "rep_id": "rep-1"},
        {"team_id": "t", "lead_id": "l", "customer_id": "c", "amount": 12000.5,
         "currency": "USD", "region": "amer"},
    ),
    "opportunity.stage_changed": (
        {"opportunity_id": "opp-1", "to_stage": "proposal"},
        {"rep_id": "r", "team_id": "t", "from_stage": "discovery"},
    ),
    "opportunity.won": (
        {"opportunity_id": "opp-1", "rep_id": "rep-1", "amount": 5000},
        {"team_id": "t", "currency": "USD", "customer_id": "c", "region": "apac",
         "deal_type": "cross_sell"},
    ),
    "opportunity.lost": (
        {"opportunity_id": "opp-1", "rep_id": "rep-1"},
        {"team_id": "t", "reason": "price"},
    ),
    "nps.responded": (
        {"score": 9},
        {"customer_id": "c", "rep_id": "r", "team_id": "t", "region": "emea"},
    ),
    "enps.responded": ({"score": 3, "team_id": "team-west"}, {}),
    "spend.recorded": (
        {"amount": 250.75, "category": "marketing"},
        {"currency": "USD", "team_id": "t"},
    ),
    "rep.updated": (
        {"rep_id": "rep-1"},
        {"team_id": "t", "region": "emea",
         "targets": {"calls_made": {"day": 60}, "revenue": {"quarter": 150000}}},
    ),
}

# Enumerated fields of the SPEC table: type -> field -> allowed values.
ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "call.completed": {
        "direction": ("outbound", "inbound"),
        "outcome": ("connected", "no_answer", "voicemail", "busy", "failed"),
    },
    "crm.record_updated": {
        "object": ("lead", "contact", "account", "opportunity", "note", "task"),
        "action": ("created", "updated"),
    },
    "lead.qualified": {"stage": ("mql", "sql")},
    "lead.lost": {"reason": ("competitor", "no_decision", "unqualified", "unresponsive", "other")},
    "opportunity.won": {"deal_type": ("new", "upsell", "cross_sell", "renewal")},
    "spend.recorded": {"category": ("sales", "marketing")},
}

NUMERIC = {"talk_seconds", "wrap_seconds", "duration_seconds", "amount", "score"}

REQUIRED_CASES = [(t, f) for t, (req, _) in SPEC.items() for f in req]


def envelope(etype: str, data: Any = None, **attrs: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "specversion": "1.0",
        "id": "5f0c2a1e-0001",
        "source": "dialer/acme",
        "type": etype,
        "time": TIME,
    }
    if data is not None:
        env["data"] = data
    env.update(attrs)
    return env


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode(value: bytes | None, validator: Validator | None = None, now: float = NOW) -> Event:
    return (validator or Validator()).decode(value, 42, now)


def rejected(value: bytes | None, validator: Validator | None = None, now: float = NOW) -> RejectedEvent:
    with pytest.raises(RejectedEvent) as info:
        decode(value, validator, now)
    return info.value


# -- valid events ------------------------------------------------------------------------------


def test_the_service_knows_exactly_the_spec_types():
    assert set(DATA_TYPES) == set(SPEC)


@pytest.mark.parametrize("etype", sorted(SPEC))
def test_minimal_event_of_every_type_decodes(etype):
    required, optional = SPEC[etype]
    ev = decode(raw(envelope(etype, dict(required))))
    assert ev.type == etype
    assert ev.offset == 42
    assert ev.source == "dialer/acme"
    assert ev.id == "5f0c2a1e-0001"
    assert ev.time == pytest.approx(NOW, abs=1e-6)
    for field, value in required.items():
        assert getattr(ev.data, field) == value
    # optional id-like fields default to "absent"
    for field in optional:
        if field not in NUMERIC and field not in ("automated", "deal_type"):
            assert getattr(ev.data, field) is None, field


@pytest.mark.parametrize("etype", sorted(SPEC))
def test_full_event_of_every_type_decodes_every_field(etype):
    required, optional = SPEC[etype]
    ev = decode(raw(envelope(etype, {**required, **optional})))
    for field, value in {**required, **optional}.items():
        assert getattr(ev.data, field) == value, field


def test_defaults():
    call = decode(raw(envelope("call.completed", SPEC["call.completed"][0]))).data
    assert call.talk_seconds == 0 and call.wrap_seconds == 0
    email = decode(raw(envelope("email.sent", {"rep_id": "r"}))).data
    assert email.automated is False
    won = decode(raw(envelope("opportunity.won", SPEC["opportunity.won"][0]))).data
    assert won.deal_type == "new"
    assert won.currency is None


def test_the_spec_example_decodes():
    example = (
        b'{"specversion": "1.0", "id": "5f0c2a1e-x", "source": "dialer/acme", '
        b'"type": "call.completed", "time": "2026-11-22T14:03:11.250Z", '
        b'"data": {"rep_id": "rep-17", "team_id": "team-east", "lead_id": "lead-991", '
        b'"direction": "outbound", "outcome": "connected", "talk_seconds": 184, "wrap_seconds": 40}}'
    )
    ev = decode(example)
    assert (ev.data.rep_id, ev.data.team_id, ev.data.lead_id) == ("rep-17", "team-east", "lead-991")
    assert (ev.data.talk_seconds, ev.data.wrap_seconds) == (184, 40)
    assert ev.time == NOW


def test_unknown_data_fields_and_extension_attributes_are_ignored():
    data = {**SPEC["call.completed"][0], "sentiment": {"score": 0.8}, "new_field": [1, 2, 3]}
    env = envelope(
        "call.completed",
        data,
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        partitionkey="rep-17",
        datacontenttype="application/json",
        subject="call-1",
        dataschema="https://example.com/schema",
        someextension=12,
    )
    ev = decode(raw(env))
    assert ev.type == "call.completed"
    assert ev.data.rep_id == "rep-17"
    assert not hasattr(ev.data, "sentiment")


def test_validated_events_survive_the_hop_between_stages():
    events = [
        decode(raw(envelope(t, {**req, **opt}, id=f"id-{i}")))
        for i, (t, (req, opt)) in enumerate(sorted(SPEC.items()))
    ]
    bundle = BUNDLE_DECODER.decode(BUNDLE_ENCODER.encode(Bundle("sales.activities", 3, events)))
    assert bundle.topic == "sales.activities" and bundle.partition == 3
    assert bundle.events == events
    assert [e.type for e in bundle.events] == sorted(SPEC)


# -- field-level rejections ------------------------------------------------------------------


@pytest.mark.parametrize(("etype", "field"), REQUIRED_CASES)
def test_missing_required_field(etype, field):
    required, optional = SPEC[etype]
    data = {**required, **optional}
    del data[field]
    err = rejected(raw(envelope(etype, data)))
    assert err.reason == "missing_field"
    assert field in err.message


def _wrong_type_value(value: Any) -> Any:
    if isinstance(value, str):
        return 12345  # a number where a string (or enum string) is expected
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "many"  # a string where a number is expected
    return "not-an-object"


WRONG_TYPE_CASES = [
    (t, f, v) for t, (req, opt) in SPEC.items() for f, v in {**req, **opt}.items()
]


@pytest.mark.parametrize(("etype", "field", "value"), WRONG_TYPE_CASES)
def test_wrong_type(etype, field, value):
    required, optional = SPEC[etype]
    data = {**required, **optional, field: _wrong_type_value(value)}
    err = rejected(raw(envelope(etype, data)))
    assert err.reason == "invalid_type"
    assert field in err.message


@pytest.mark.parametrize(
    ("etype", "field", "value"),
    [
        ("nps.responded", "score", 5.5),
        ("nps.responded", "score", True),
        ("call.completed", "talk_seconds", [1]),
        ("call.completed", "talk_seconds", False),
        ("rep.updated", "targets", {"calls_made": {"day": "sixty"}}),
        ("rep.updated", "targets", {"calls_made": 60}),
        ("call.completed", "rep_id", None),
        ("email.sent", "automated", 1),
    ],
)
def test_wrong_type_more(etype, field, value):
    required, optional = SPEC[etype]
    data = {**required, **optional, field: value}
    err = rejected(raw(envelope(etype, data)))
    assert err.reason == "invalid_type"
    assert field in err.message


def test_an_optional_id_may_be_null():
    data = {**SPEC["lead.created"][0], "rep_id": None, "region": None}
    ev = decode(raw(envelope("lead.created", data)))
    assert ev.data.rep_id is None and ev.data.region is None


def test_data_that_is_not_an_object():
    for data in ([], "call", 3):
        err = rejected(raw(envelope("call.completed", data)))
        assert err.reason == "invalid_type"


def test_missing_data_is_a_missing_field():
    err = rejected(raw(envelope("call.completed")))
    assert err.reason == "missing_field"
    assert "data" in err.message


@pytest.mark.parametrize(
    ("etype", "field", "value"),
    [
        ("call.completed", "talk_seconds", -1),
        ("call.completed", "wrap_seconds", -0.5),
        ("conversation.held", "duration_seconds", -3),
        ("opportunity.created", "amount", -100),
        ("opportunity.won", "amount", -0.01),
        ("spend.recorded", "amount", -1),
        ("nps.responded", "score", 11),
        ("nps.responded", "score", -1),
        ("enps.responded", "score", 11),
        ("call.completed", "rep_id", "r" * 129),
        ("call.completed", "rep_id", ""),
        ("call.completed", "team_id", "t" * 129),
        ("lead.created", "lead_id", ""),
        ("opportunity.won", "opportunity_id", "o" * 200),
        ("tool.used", "tool", ""),
    ],
)
def test_out_of_range(etype, field, value):
    required, optional = SPEC[etype]
    data = {**required, **optional, field: value}
    err = rejected(raw(envelope(etype, data)))
    assert err.reason == "out_of_range"
    assert field in err.message


@pytest.mark.parametrize(
    ("etype", "field", "value"),
    [
        ("call.completed", "rep_id", "r" * 128),
        ("call.completed", "rep_id", "r"),
        ("nps.responded", "score", 0),
        ("nps.responded", "score", 10),
        ("call.completed", "talk_seconds", 0),
        ("opportunity.won", "amount", 0),
    ],
)
def test_range_limits_are_inclusive(etype, field, value):
    required, optional = SPEC[etype]
    ev = decode(raw(envelope(etype, {**required, **optional, field: value})))
    assert getattr(ev.data, field) == value


ENUM_CASES = [(t, f) for t, fields in ENUMS.items() for f in fields]


@pytest.mark.parametrize(("etype", "field"), ENUM_CASES)
def test_every_enum_value_is_accepted(etype, field):
    required, optional = SPEC[etype]
    for value in ENUMS[etype][field]:
        ev = decode(raw(envelope(etype, {**required, **optional, field: value})))
        assert getattr(ev.data, field) == value


@pytest.mark.parametrize(("etype", "field"), ENUM_CASES)
def test_bad_enum_value(etype, field):
    required, optional = SPEC[etype]
    data = {**required, **optional, field: "definitely-not-allowed"}
    err = rejected(raw(envelope(etype, data)))
    assert err.reason == "invalid_value"
    assert field in err.message


def test_enum_values_are_case_sensitive():
    data = {**SPEC["call.completed"][0], "direction": "Outbound"}
    assert rejected(raw(envelope("call.completed", data))).reason == "invalid_value"


# -- record-level rejections -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"{", b"", b"not json", b'{"specversion": "1.0",}', b"{'single': 'quotes'}", b"\x00\x01"],
)
def test_invalid_json(value):
    assert rejected(value).reason == "invalid_json"


def test_tombstone_is_rejected():
    assert rejected(None).reason == "invalid_json"


@pytest.mark.parametrize(
    "value",
    [
        json.dumps(
            envelope("call.completed", SPEC["call.completed"][0], source="dialer/café"),
            ensure_ascii=False,
        ).encode("latin-1"),
        json.dumps(envelope("call.completed", SPEC["call.completed"][0])).encode("utf-16"),
        b"\xff\xfe\xfa",
    ],
)
def test_not_utf8(value):
    assert rejected(value).reason == "invalid_encoding"


@pytest.mark.parametrize(
    "where",
    ["data", "source", "id", "type", "time"],
)
def test_invalid_utf8_inside_a_string_is_rejected_not_raised(where):
    """A single bad byte inside an otherwise valid JSON string must become a dead letter.

    (Anything but RejectedEvent escaping from decode would stop the ingest stage, and it would
    stop again on the same record after every restart.)
    """
    good = raw(envelope("call.completed", SPEC["call.completed"][0]))
    marker = {
        "data": b'"rep-17"',
        "source": b'"dialer/acme"',
        "id": b'"5f0c2a1e-0001"',
        "type": b'"call.completed"',
        "time": f'"{TIME}"'.encode(),
    }[where]
    assert marker in good
    bad = good.replace(marker, marker[:-1] + b"\xff" + marker[-1:])
    assert rejected(bad).reason == "invalid_encoding"


@pytest.mark.parametrize("value", [b"[1, 2]", b'"call.completed"', b"12", b"1.5", b"null", b"true"])
def test_json_that_is_not_an_object(value):
    err = rejected(value)
    assert err.reason == "not_cloudevent"


@pytest.mark.parametrize("attr", ["specversion", "id", "source", "type", "time"])
def test_missing_required_cloudevent_attribute(attr):
    env = envelope("call.completed", SPEC["call.completed"][0])
    del env[attr]
    err = rejected(raw(env))
    assert err.reason == "not_cloudevent"
    assert attr in err.message


@pytest.mark.parametrize(
    "attrs",
    [
        {"specversion": "0.3"},
        {"specversion": "2.0"},
        {"specversion": 1.0},
        {"id": ""},
        {"source": ""},
        {"type": 7},
        {"time": 1795356191},
    ],
)
def test_bad_cloudevent_attribute(attrs):
    env = envelope("call.completed", SPEC["call.completed"][0], **attrs)
    assert rejected(raw(env)).reason == "not_cloudevent"


@pytest.mark.parametrize("etype", ["call.started", "Call.Completed", "", "lead.created.v2"])
def test_unknown_type(etype):
    env = envelope(etype, {"rep_id": "r"})
    if etype == "":
        assert rejected(raw(env)).reason == "not_cloudevent"  # type must be non-empty
        return
    err = rejected(raw(env))
    assert err.reason == "unknown_type"
    assert etype in err.message


def _padded(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes (padding in an ignored extension attribute)."""
    base = envelope("call.completed", SPEC["call.completed"][0], pad="")
    value = raw(base)
    value = raw({**base, "pad": "x" * (size - len(value))})
    assert len(value) == size
    return value


def test_too_large():
    v = Validator(max_bytes=400)
    assert decode(_padded(400), v).data.rep_id == "rep-17"
    err = rejected(_padded(401), v)
    assert err.reason == "too_large"
    assert "401" in err.message


def test_default_size_limit_is_64_kib():
    assert decode(_padded(65536)).type == "call.completed"
    assert rejected(_padded(65537)).reason == "too_large"


def test_too_large_wins_over_invalid_json():
    assert rejected(b"{" * 70000).reason == "too_large"


# -- time --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T14:03:11.250Z", datetime(2026, 11, 22, 14, 3, 11, 250000, tzinfo=UTC)),
        ("2026-11-22T14:03:11z", datetime(2026, 11, 22, 14, 3, 11, tzinfo=UTC)),
        ("2026-11-22T16:03:11+02:00", datetime(2026, 11, 22, 14, 3, 11, tzinfo=UTC)),
        ("2026-11-22T09:03:11-05:00", datetime(2026, 11, 22, 14, 3, 11, tzinfo=UTC)),
        ("2026-11-22T19:33:11+05:30", datetime(2026, 11, 22, 14, 3, 11, tzinfo=UTC)),
        ("2026-11-23T00:03:11+10:00", datetime(2026, 11, 22, 14, 3, 11, tzinfo=UTC)),
        ("2026-11-22T14:03:11.5+00:00", datetime(2026, 11, 22, 14, 3, 11, 500000, tzinfo=UTC)),
        ("2026-11-22 14:03:11Z", datetime(2026, 11, 22, 14, 3, 11, tzinfo=UTC)),
        ("2025-11-22T14:03:11Z", datetime(2025, 11, 22, 14, 3, 11, tzinfo=UTC)),  # past is fine
    ],
)
def test_time_with_offset_parses_to_the_right_instant(text, expected):
    ev = decode(raw(envelope("email.sent", {"rep_id": "r"}, time=text)))
    assert ev.time == pytest.approx(expected.timestamp(), abs=1e-6)


def test_nanosecond_precision_is_accepted():
    ev = decode(raw(envelope("email.sent", {"rep_id": "r"}, time="2026-11-22T14:03:11.123456789Z")))
    assert ev.time == pytest.approx(NOW - 0.25 + 0.123456789, abs=1e-5)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T14:03:11",  # no offset
        "2026-11-22T14:03:11.250",
        "2026-11-22",
        "14:03:11Z",
        "yesterday",
        "",
        "2026-02-30T10:00:00Z",  # no such date
        "2026-11-22T25:00:00Z",
        "1795356191",
    ],
)
def test_invalid_time(text):
    err = rejected(raw(envelope("email.sent", {"rep_id": "r"}, time=text)))
    assert err.reason == "invalid_time"
    assert "time" in err.message


def _at(delta: float) -> str:
    return (NOW_DT + timedelta(seconds=delta)).isoformat()


def test_future_time():
    ok = decode(raw(envelope("email.sent", {"rep_id": "r"}, time=_at(299))))
    assert ok.time == pytest.approx(NOW + 299, abs=1e-6)
    err = rejected(raw(envelope("email.sent", {"rep_id": "r"}, time=_at(301))))
    assert err.reason == "future_time"
    err = rejected(raw(envelope("email.sent", {"rep_id": "r"}, time=_at(86400))))
    assert err.reason == "future_time"


def test_future_time_uses_the_configured_limit_and_the_given_clock():
    v = Validator(max_future_seconds=10)
    body = raw(envelope("email.sent", {"rep_id": "r"}, time=_at(11)))
    assert rejected(body, v).reason == "future_time"
    assert decode(body, v, now=NOW + 5).time == pytest.approx(NOW + 11, abs=1e-6)


def test_future_time_is_judged_on_the_offset_corrected_instant():
    # 14:05 at +02:00 is 12:05 UTC: two hours in the past, not in the future
    local = (NOW_DT + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=2)))
    text = local.replace(tzinfo=None).isoformat() + "-02:00"  # same wall clock, 4 h later
    assert rejected(raw(envelope("email.sent", {"rep_id": "r"}, time=text))).reason == "future_time"
    text = (NOW_DT + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert decode(raw(envelope("email.sent", {"rep_id": "r"}, time=text))).type == "email.sent"


# -- currency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("etype", ["opportunity.created", "opportunity.won", "spend.recorded"])
def test_currency_mismatch(etype):
    required, _ = SPEC[etype]
    err = rejected(raw(envelope(etype, {**required, "currency": "EUR"})))
    assert err.reason == "currency_mismatch"
    assert "EUR" in err.message and "USD" in err.message
    assert decode(raw(envelope(etype, {**required, "currency": "USD"}))).data.currency == "USD"
    assert decode(raw(envelope(etype, dict(required)))).data.currency is None


def test_reporting_currency_is_configurable():
    v = Validator(currency="EUR")
    body = raw(envelope("opportunity.won", {**SPEC["opportunity.won"][0], "currency": "EUR"}))
    assert decode(body, v).data.amount == 5000
    body = raw(envelope("opportunity.won", {**SPEC["opportunity.won"][0], "currency": "USD"}))
    assert rejected(body, v).reason == "currency_mismatch"


def test_a_long_cloudevent_id_is_accepted_the_128_limit_is_for_data_ids():
    ev = decode(raw(envelope("email.sent", {"rep_id": "r"}, id="x" * 300)))
    assert ev.id == "x" * 300


def test_invalid_utf8_in_an_ignored_extension_attribute_is_rejected():
    body = raw(envelope("email.sent", {"rep_id": "r"}, ext="PLACEHOLDER"))
    value = body.replace(b"PLACEHOLDER", b"\xc3\x28")  # an invalid 2-byte sequence
    assert rejected(value).reason == "invalid_encoding"


def test_non_ascii_utf8_is_fine():
    ev = decode(raw(envelope("email.sent", {"rep_id": "rép-ü"}, ext="ünïcode")))
    assert ev.data.rep_id == "rép-ü"


def test_an_offset_without_colon_is_accepted_it_is_unambiguous():
    # Strict RFC 3339 wants "+02:00"; msgspec's parser also takes ISO 8601's "+0200", which
    # names the same instant, so the service accepts it rather than dead-lettering the event.
    ev = decode(raw(envelope("email.sent", {"rep_id": "r"}, time="2026-11-22T14:03:11+0200")))
    assert ev.time == datetime(2026, 11, 22, 12, 3, 11, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", [
    "0001-01-01T00:00:00+14:00",  # year 0 in UTC: crashed the worker downstream
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "1900-06-01T12:00:00-05:00",
])
def test_times_before_the_epoch_are_out_of_range(text):
    err = rejected(raw(envelope("email.sent", {"rep_id": "r"}, time=text)))
    assert err.reason == "out_of_range"
    assert "1970" in err.message


def test_the_epoch_itself_is_accepted():
    assert decode(raw(envelope("email.sent", {"rep_id": "r"}, time="1970-01-01T00:00:00Z"))).time == 0.0


# -- a batch at once ---------------------------------------------------------------------------


class _Rec:
    def __init__(self, value: bytes | None, offset: int) -> None:
        self.value, self.offset = value, offset


def test_decode_many_decides_as_decode_does_record_by_record():
    """The batch path inlines the fast path and its checks: every record gets the same event or
    the same rejection as from :meth:`Validator.decode`, in order."""
    v = Validator(max_bytes=2048, max_future_seconds=300)
    values = [raw(envelope(t, {**SPEC[t][0], **SPEC[t][1]}, id=f"full-{t}")) for t in sorted(SPEC)]
    values += [raw(envelope(t, dict(SPEC[t][0]), id=f"min-{t}")) for t in sorted(SPEC)]
    values += [
        raw(envelope("email.sent", {"rep_id": "r"}, time=_at(301))),  # future
        raw(envelope("email.sent", {"rep_id": "r"}, time=_at(300))),  # just inside
        raw(envelope("email.sent", {"rep_id": "r"}, time="1969-12-31T23:59:59Z")),  # before 1970
        raw(envelope("email.sent", {"rep_id": "r"}, time="1970-01-01T00:00:00Z")),  # the earliest
        raw(envelope("opportunity.won", {**SPEC["opportunity.won"][0], "currency": "EUR"})),
        raw(envelope("opportunity.won", {**SPEC["opportunity.won"][0], "currency": "USD"})),
        raw(envelope("email.sent", {"rep_id": "r"}, specversion="0.3")),
        raw(envelope("email.sent", {"rep_id": "ré"})),  # not ASCII: the checked path
        raw(envelope("email.sent", {"rep_id": "r", "pad": "x" * 3000})),  # too large
        raw(envelope("no.such", {"rep_id": "r"})),
        b"not json",
        None,
        raw(envelope("email.sent", {})),  # missing rep_id
    ]
    records = [_Rec(value, 100 + i) for i, value in enumerate(values)]
    events, errors = v.decode_many(records, NOW)
    expected_events, expected_errors = [], []
    for i, rec in enumerate(records):
        try:
            expected_events.append(v.decode(rec.value, rec.offset, NOW))
        except RejectedEvent as exc:
            expected_errors.append((i, exc.reason, exc.message))
    assert events == expected_events
    assert [(i, e.reason, e.message) for i, e in errors] == expected_errors
    assert len(events) == 2 * len(SPEC) + 4 and len(expected_errors) == 9
