"""The policy's window forms (schemas/windows.py): durations, calendar periods, counts."""

from __future__ import annotations

import pytest

from schemas.export import json_schemas
from schemas.policy import Policy, PolicyError, parse_policy
from schemas.windows import CalendarWindow, CountWindow

FORMS = """
drift: {window: {calendar: week, time_zone: America/New_York}}
kpi: {window: {calendar: month, time_zone: Europe/Paris}}
models:
  fraud: {drift: {window: {events: 5000}}, kpi: {window: {events: 2000}}}
  loans: {drift: {window: 10m, hop: 5m}}
"""


def test_the_three_forms_load_and_dump_back_unchanged() -> None:
    policy = parse_policy(FORMS)
    assert policy.drift.window == CalendarWindow(calendar="week", time_zone="America/New_York")
    assert policy.kpi.window == CalendarWindow(calendar="month", time_zone="Europe/Paris")
    assert policy.drift_for("fraud").window == CountWindow(events=5000)
    assert policy.drift_for("loans").window == 600_000
    assert policy.kpi_for("fraud").window == CountWindow(events=2000)
    dumped = policy.model_dump(mode="json")
    assert dumped["drift"]["window"] == {"calendar": "week", "time_zone": "America/New_York"}
    assert dumped["models"]["fraud"]["drift"]["window"] == {"events": 5000}
    assert dumped["models"]["fraud"]["kpi"]["window"] == {"events": 2000}
    assert dumped["models"]["loans"]["drift"]["window"] == "10m"
    assert Policy.model_validate(dumped) == policy
    assert parse_policy("drift: {window: {calendar: day}}").drift.window.time_zone == "UTC"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("drift:\n  window: {calendar: day, time_zone: Europe/Pariss}\n",
         "p.yaml:2: drift.window: Value error, time_zone: 'Europe/Pariss' is not a time zone "
         "of the IANA database"),
        ("drift: {window: {calendar: fortnight}}",
         "drift.window: Value error, calendar: Input should be 'day', 'week' or 'month'"),
        ("drift: {window: {calendar: day, zone: UTC}}",
         "drift.window: Value error, zone: Extra inputs are not permitted"),
        ("drift: {window: {calendar: day}, hop: 1h}",
         "drift.hop: hopping windows need a duration window; calendar windows are tumbling"),
        ("drift: {window: {events: 1000}, hop: 1h}",
         "drift.hop: hopping windows need a duration window; count windows are tumbling"),
        ("drift: {window: {events: 50}}",
         "drift.window.events: a window of 50 events is never judged: min_window_events is 200"),
        ("drift: {window: {events: 0}}",
         "drift.window: Value error, events: Input should be greater than or equal to 1"),
        ("kpi: {window: {events: 50}}",
         "kpi.window.events: a window of 50 predictions never has min_labeled \\(100\\) labels"),
        ("kpi: {window: {events: 0}}",
         "kpi.window: Value error, events: Input should be greater than or equal to 1"),
        ("kpi: {window: {events: 100000001}}",
         "kpi.window: Value error, events: Input should be less than or equal to 100000000"),
        ("kpi: {window: 0s}", "kpi.window: Value error, '0s' is not a positive duration"),
    ],
)
def test_a_bad_window_is_refused_naming_the_field_and_the_reason(text: str, said: str) -> None:
    with pytest.raises(PolicyError, match=said):
        parse_policy(text, source="p.yaml")


def test_the_json_schema_offers_every_form() -> None:
    defs = json_schemas()["Policy"]["$defs"]
    drift = defs["DriftPolicy"]["properties"]["window"]["anyOf"]
    kpi = defs["KpiPolicy"]["properties"]["window"]["anyOf"]
    objects = [set(o["properties"]) for o in drift if o.get("type") == "object"]
    assert objects == [{"calendar", "time_zone"}, {"events"}]
    assert [set(o["properties"]) for o in kpi if o.get("type") == "object"] == [
        {"calendar", "time_zone"}, {"events"}
    ]
    assert {"type": "number"} in drift and {"type": "number"} in kpi
    index = json_schemas()["DriftReport"]["properties"]["window_index"]
    assert {"type": "integer"} in index["anyOf"]
