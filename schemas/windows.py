"""The forms of a policy's ``window``: a duration, a calendar period, or a count of events.

* ``window: 5m`` -- a duration of event time, windows aligned to the epoch (as before);
* ``window: {calendar: day, time_zone: Europe/Paris}`` -- the days (``week``: ISO
  weeks, Monday first; ``month``) of an IANA time zone (``streams.calendar``); a
  window lasts from its local midnight to the next, in UTC ms (23 or 25 h on a DST
  change). Event-time windows like the durations: watermark, ``allowed_lateness``
  and late events apply the same way. Tumbling only;
* ``window: {events: 1000}`` -- every N events of a model version, in the order the
  agent reads them (offset order of the model's partition), as NannyML's chunk
  size: a window closes with its Nth event, nothing is late. Drift and KPI (every N
  predictions of a version and variant, ``streams.kpi.series``).

A bad form is refused at start naming the field and the reason, e.g.
``drift.window: Value error, time_zone: 'Mars/Olympus' is not a time zone ...``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from schemas.durations import DurationMs, format_duration_ms, parse_duration_ms

#: Bound on ``window.events``: a chunk's summaries do not grow with it, but a count
#: window that never fills never reports.
MAX_COUNT_WINDOW = 100_000_000


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError saying why it cannot be used.

    >>> zone("Europe/Paris").key
    'Europe/Paris'
    >>> zone("Europe/Pariss")
    Traceback (most recent call last):
    ...
    ValueError: 'Europe/Pariss' is not a time zone of the IANA database (e.g. Europe/Paris, UTC)
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"{name!r} is not a time zone of the IANA database (e.g. Europe/Paris, UTC)"
        ) from exc


class CalendarWindow(BaseModel):
    """Calendar periods of a time zone: ``{calendar: day, time_zone: Europe/Paris}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calendar: Literal["day", "week", "month"] = Field(
        description="day, week (ISO: Monday to Sunday) or month"
    )
    time_zone: str = Field(
        default="UTC", description="IANA time zone of the periods, e.g. Europe/Paris"
    )

    @field_validator("time_zone")
    @classmethod
    def _known(cls, value: str) -> str:
        zone(value)  # ValueError naming the zone and why
        return value


class CountWindow(BaseModel):
    """Every ``events`` events of a model version: ``{events: 1000}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: int = Field(ge=1, le=MAX_COUNT_WINDOW, description="events per window")


def _form(value: Any) -> int | CalendarWindow | CountWindow:
    if isinstance(value, CalendarWindow | CountWindow):
        model: type[BaseModel] = type(value)
        value = value.model_dump()
    if isinstance(value, dict):
        model = CountWindow if "events" in value else CalendarWindow
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise ValueError("; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )) from None
    ms = parse_duration_ms(value)
    if ms <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return ms


def _dump(value: int | CalendarWindow | CountWindow) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else format_duration_ms(value)


def _schema(events: str) -> dict[str, Any]:
    duration = DurationMs.__metadata__[-1].json_schema  # type: ignore[attr-defined]
    calendar = {
        "type": "object",
        "properties": {
            "calendar": {"enum": ["day", "week", "month"]},
            "time_zone": {"type": "string", "default": "UTC",
                          "description": "IANA time zone, e.g. Europe/Paris"},
        },
        "required": ["calendar"],
        "additionalProperties": False,
        "description": "calendar periods of a time zone (weeks start on Monday)",
    }
    count = {
        "type": "object",
        "properties": {"events": {"type": "integer", "minimum": 1,
                                  "maximum": MAX_COUNT_WINDOW}},
        "required": ["events"],
        "additionalProperties": False,
        "description": f"every N {events} of a model version, in offset order",
    }
    return {"anyOf": [*duration["anyOf"], calendar, count],
            "description": "a duration like 5m, a calendar period "
            f"{{calendar: day|week|month, time_zone: ...}}, or a count of {events} "
            "{events: N}"}


def _window_type(events: str) -> Any:
    return Annotated[
        int | CalendarWindow | CountWindow,
        PlainValidator(_form),
        PlainSerializer(_dump),
        WithJsonSchema(_schema(events)),
    ]


#: drift.window: a duration, a calendar period or a count of events
DriftWindowForm = _window_type("events")
#: kpi.window: a duration, a calendar period or a count of predictions (and variant)
KpiWindowForm = _window_type("predictions (and variant)")
