"""msgspec twins of the hot input events, for decoding batches at JSON speed.

The pydantic models in ``schemas.events`` are the contract: they define what is
valid, give the error messages and the JSON Schema. Validating 500-event
batches with them costs about 3.4 us an event, five times what parsing the JSON
costs; msgspec parses and validates these shapes in one pass at orjson's speed.

So the codec tries these first and, when msgspec refuses a message for any
reason, validates it again with pydantic, which decides and explains
(``agents.inputs.codec``). The rule that keeps one contract: **anything accepted here
must be accepted by the pydantic model with the same values**. Where msgspec
is more lenient than pydantic or reads a value differently, the type here is
narrower (a refusal only costs the slow path). Two things it leaves to pydantic:

* ``ts`` given as text is checked and parsed by pydantic (``EventTime``), in one
  call per message; numbers (epoch seconds, or milliseconds above 2e10, as
  pydantic reads them) are converted here by ``epoch_ms``, an exact replica
  of pydantic's conversion (tests/schemas/test_fast_rows.py).
* Lax coercions (``"true"`` for a boolean, a number in a string): not accepted
  here, so such messages take the pydantic path and get its reading.

``tests/schemas/test_fast_rows.py`` checks, on generated events, that every
event accepted here is accepted by the model with equal values, and that the
fields match the models'.
"""

import re
from typing import Annotated, Any, Literal, NotRequired, TypedDict, get_args, get_type_hints

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.events import FeatureEvent, LabelEvent, PredictionEvent

_MAX = 1.7976931348623157e308
#: A float that is not infinite (JSON cannot spell NaN; msgspec refuses 1e999).
Finite = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
#: Epoch seconds (|x| <= 2e10) or milliseconds, as far as pydantic reads them:
#: years 1336 to 9892. Text is checked by pydantic (see the module docstring).
EpochOrText = Annotated[float, msgspec.Meta(ge=-2e10, le=2.5e14)] | str
FeatureValue = bool | float | str | None
Variant = Literal["champion", "canary", "challenger", "shadow"]


class PredictionRow(TypedDict):
    request_id: Name
    model: Name
    model_version: Name
    ts: EpochOrText
    prediction: bool | float | str
    score: NotRequired[Finite | None]
    probabilities: NotRequired[dict[str, Finite] | None]
    features: NotRequired[dict[str, FeatureValue]]
    variant: NotRequired[Variant]
    latency_ms: NotRequired[Annotated[float, msgspec.Meta(ge=0, le=_MAX)] | None]
    error: NotRequired[bool]
    segment: NotRequired[dict[str, str] | None]


class FeatureRow(TypedDict):
    request_id: Name
    model: Name
    ts: EpochOrText
    features: dict[str, FeatureValue]
    model_version: NotRequired[Name | None]


class LabelRow(TypedDict):
    request_id: Name
    model: Name
    ts: EpochOrText
    label: bool | float | str


class PredictionBatch(TypedDict):
    events: list[PredictionRow]


class FeatureBatch(TypedDict):
    events: list[FeatureRow]


class LabelBatch(TypedDict):
    events: list[LabelRow]


#: model -> (its row twin, the ``{"events": [...]}`` envelope of them)
ROWS: dict[type, tuple[Any, Any]] = {
    PredictionEvent: (PredictionRow, PredictionBatch),
    FeatureEvent: (FeatureRow, FeatureBatch),
    LabelEvent: (LabelRow, LabelBatch),
}


def decoders(model: type) -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]] | None:
    """``(batch, single)`` decoders for ``model``'s messages, or None if it has no twin."""
    if model not in ROWS:
        return None
    row, batch = ROWS[model]
    return msgspec.json.Decoder(batch), msgspec.json.Decoder(row)


def epoch_ms(numbers: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Epoch milliseconds of numeric event times, as pydantic reads them.

    Pydantic reads a number as seconds when |x| <= 2e10 and as milliseconds
    above, splits it into a whole part and a fraction, and rounds the fraction
    to the microsecond; the event time is that datetime floored to the
    millisecond (``schemas.events.datetime_ms``). This is the same arithmetic,
    vectorised (checked against pydantic in tests/schemas/test_fast_rows.py).

    >>> epoch_ms([1_800_000_000.001, 1_800_000_000_000.9999, -1.5]).tolist()
    [1800000000001, 1800000000001, -1500]
    """
    a = np.asarray(numbers, dtype=np.float64)
    per_unit = np.where(np.abs(a) <= 2e10, 1_000_000, 1000)  # microseconds per unit
    whole = np.floor(a)
    micros = whole.astype(np.int64) * per_unit + np.round((a - whole) * per_unit).astype(np.int64)
    return micros // 1000


#: Layouts with more feature names than this are decoded into dicts (``layout_batch``).
MAX_LAYOUT_FEATURES = 1000
#: What msgspec refuses in a field's (renamed) name: a backslash, a double quote, a
#: control character. Features so named are decoded into dicts (``layout_batch``).
_UNNAMEABLE = re.compile(r'[\\"\x00-\x1f]')


#: What a layout's feature slot accepts (``layout_batch``): a number or null, text or
#: null, or any feature value.
NUMBER: Any = float | None
TEXT: Any = str | None
ANY: Any = FeatureValue


def layout_batch(model: type, names: tuple[str, ...], kinds: tuple[Any, ...] | None = None) -> Any:
    """The ``{"events": [...]}`` envelope of ``model``'s events as msgspec Structs whose
    ``features`` carry exactly ``names``: no name more, none missing (each may be null).

    For batches whose events all carry one set of features (a serving app sends
    what its model reads), this is the cheapest shape msgspec decodes to: a Struct
    holds its fields in slots instead of a hash table and is not tracked by the
    garbage collector, and ``msgspec.structs.astuple`` gives an event's features
    in the order of ``names``, ready to be transposed into columns. Every other
    field has the type of the row twin above, so this accepts an event only if
    the twin does, with the same values (``tests/agents/drift/test_columns.py``);
    an absent optional field reads None, which is what ``row.get(field)`` gives.
    ``kinds`` narrows each feature's slot (``NUMBER``, ``TEXT`` or ``ANY``, the
    default): a value of another kind refuses the message, which then takes the usual
    way (a JSON integer in a ``NUMBER`` slot reads as a float, as in ``ANY``).
    (``gc=False`` is safe: decoded JSON cannot hold a reference cycle.)
    None for models without features, for more than ``MAX_LAYOUT_FEATURES`` names
    and for names msgspec cannot give a field (a backslash, a double quote or a
    control character in them).

    >>> batch = msgspec.json.Decoder(layout_batch(FeatureEvent, ("a", "b-c")))
    >>> event = batch.decode(b'{"events": [{"request_id": "r", "model": "m", "ts": 1,'
    ...                      b' "features": {"b-c": "x", "a": 2}}]}').events[0]
    >>> msgspec.structs.astuple(event.features), event.model_version
    ((2.0, 'x'), None)
    """
    row = ROWS.get(model, (None, None))[0]
    if row is None or "features" not in row.__annotations__ or len(names) > MAX_LAYOUT_FEATURES:
        return None
    if any(map(_UNNAMEABLE.search, names)):
        return None
    slots = [f"f{i}" for i in range(len(names))]  # names need not be identifiers
    features = msgspec.defstruct(
        "Features", list(zip(slots, kinds or (ANY,) * len(names), strict=True)),
        rename=dict(zip(slots, names, strict=True)),
        forbid_unknown_fields=True, gc=False)
    fields: list[Any] = []
    for name, kind in get_type_hints(row, include_extras=True).items():
        if name == "features":
            fields.append((name, features))
        elif name in row.__required_keys__:
            fields.append((name, kind))
        else:
            fields.append((name, get_args(kind)[0], None))  # NotRequired[T] -> T, None if absent
    event = msgspec.defstruct(f"{row.__name__}Struct", fields, kw_only=True, gc=False)
    return msgspec.defstruct(f"{row.__name__}Batch", [("events", list[event])], gc=False)  # type: ignore[valid-type]
