"""The drift agent's fast lane: a batch of one model version, decoded straight into columns.

The drift agent reads six fields of an event, and most of its time per message
went into building two dicts per event (the event and its features) and
taking them apart again into columns. When every event of a batch carries the
same feature names, msgspec decodes each event into a Struct of exactly those
names (``schemas.fast_rows.layout_batch``) and the features come out as tuples,
transposed into columns at C speed: about half the decoding time of dicts, and
nothing for the garbage collector to track.

The columns come out in the forms the kernels count fastest, as Arrow's do
(``streams.batch``): a feature that held only numbers (or nulls) in the message
the layout was learnt from gets a ``NUMBER`` slot and comes out as a float64
array (null: NaN); one that held only text, a ``TEXT`` slot and ``Categories``
(integer codes, counted with ``bincount`` instead of hashing each string); any
other (booleans, mixed, all null) stays a tuple of values. The kernels read
each form as they read the values themselves (``numeric_column``,
``categorical_column``), so the reports do not change. A later message with a
value of another kind in a narrowed slot is refused by the parse and takes the
usual way; a name seen with two kinds is not narrowed again.

A message takes this lane only when all of this holds; otherwise it takes the
usual way (``agents.inputs.codec``), which gives the same columns, so a message's
reports do not depend on the lane (tests/agents/drift/test_columns.py):

* its key has a layout, learnt from an earlier message under that key whose
  events all carried the same feature names (``learn``);
* it is a ``{"events": [...]}`` batch of valid events that all carry exactly
  the layout's names, of one model (the key's) and one model version (event
  times given as text are parsed by pydantic, as on the usual way);
* none of the names is one the policy marks as PII (those are pseudonymised
  on the usual way), or one msgspec cannot give a field (a backslash, a double
  quote or a control character in it; ``schemas.fast_rows.layout_batch``).

A message the lane refuses costs a failed msgspec parse (stopped at the first
event that does not fit) on top of the usual way; so does, after a whole
parse, a message of a model the agent does not track (``agents.inputs.admission``),
which the usual way dead-letters.

Bounds: ``MAX_LAYOUTS`` keys with a layout, and as many decoders kept for reuse
(a few KB each), the least recently learnt forgotten first; a key holds on to
its own decoder, so at most ``2 * MAX_LAYOUTS`` decoders live.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from agents.inputs.codec import Origin, Row, event_times_ms
from schemas import fast_rows
from schemas.fast_rows import ANY, NUMBER, TEXT
from streams.batch import Categories, FeatureBatch
from streams.drift.state import PREDICTION, SCORE

MAX_LAYOUTS = 64

_MODEL = attrgetter("model")
_VERSION = attrgetter("model_version")
_TS = attrgetter("ts")
_FEATURES = attrgetter("features")
_SCORE = attrgetter("score")
_PREDICTION = attrgetter("prediction")
Decoder = msgspec.json.Decoder


@dataclass(frozen=True)
class Columns:
    """A batch of one model version's events, as the drift monitor reads them."""

    model: str
    version: str | None
    batch: FeatureBatch


class ColumnLane:
    """Per message key, the layout of its last regular batch and a decoder for it."""

    def __init__(self, model: type, *, max_message_bytes: int, pii: Collection[str] = ()) -> None:
        self.model = model
        self.max_message_bytes = max_message_bytes
        self.pii = frozenset(pii)
        self._outputs = "prediction" in model.model_fields  # type: ignore[attr-defined]
        # per key: its names, their slots' kinds and their decoder; the decoders built,
        # by names and kinds
        self._layouts: dict[bytes | None, _Layout] = {}
        self._decoders: dict[tuple[tuple[str, ...], tuple[Any, ...]], Decoder[Any]] = {}

    def decode(self, raw: bytes | None, origin: Origin) -> Columns | None:
        """The message's columns, or None when it must take the usual way."""
        layout = self._layouts.get(origin.key)
        if layout is None or not raw or len(raw) > self.max_message_bytes:
            return None
        names, kinds, decoder = layout
        try:
            events = decoder.decode(raw).events
        except (msgspec.MsgspecError, ValueError):  # ValueError: bad UTF-8
            return None
        if not events:
            return None
        models = set(map(_MODEL, events))
        versions = set(map(_VERSION, events))
        if len(models) != 1 or len(versions) != 1:
            return None
        model = models.pop()
        if origin.key is not None and origin.key != model.encode():
            return None
        ts_ms = event_times_ms(list(map(_TS, events)))  # as on the usual way
        if ts_ms is None:
            return None
        rows = map(msgspec.structs.astuple, map(_FEATURES, events))  # in the order of names
        columns: dict[str, Any] = {
            name: _FORMS[kind](values)
            for name, kind, values in zip(names, kinds, zip(*rows, strict=True), strict=True)
        }
        if self._outputs:
            columns[SCORE] = floats(list(map(_SCORE, events)))
            columns[PREDICTION] = list(map(_PREDICTION, events))
        batch = FeatureBatch(ts_ms=ts_ms, columns=columns)
        return Columns(model=model, version=versions.pop(), batch=batch)

    def learn(self, origin: Origin, events: list[Row]) -> None:
        """Remember the feature names of a message's events, if they all carry the same."""
        if not events:
            return
        first = events[0].get("features")
        if not first or not all((e.get("features") or _NO).keys() == first.keys() for e in events):
            return
        names = tuple(sorted(first))
        if self.pii.intersection(names):
            return
        kinds = tuple(kind_of([e["features"][name] for e in events]) for name in names)
        before = self._layouts.get(origin.key)
        if before is not None and before[0] == names:  # a name seen with two kinds: any
            kinds = tuple(k if k == b else ANY for k, b in zip(kinds, before[1], strict=True))
        decoder = self._decoders.get((names, kinds))
        if decoder is None:
            layout = fast_rows.layout_batch(self.model, names, kinds)
            if layout is None:  # too many names, or names msgspec cannot give a field
                return
            decoder = Decoder(layout)
            self._decoders[names, kinds] = decoder
            if len(self._decoders) > MAX_LAYOUTS:
                self._decoders.pop(next(iter(self._decoders)))
        self._layouts.pop(origin.key, None)  # most recently learnt last
        self._layouts[origin.key] = (names, kinds, decoder)
        if len(self._layouts) > MAX_LAYOUTS:
            self._layouts.pop(next(iter(self._layouts)))


_NO: dict[str, Any] = {}
_Layout = tuple[tuple[str, ...], tuple[Any, ...], Decoder[Any]]
_NUMBERS = {float, int, type(None)}
_TEXTS = {str, type(None)}


def kind_of(values: list[Any]) -> Any:
    """The slot for a feature's values: ``NUMBER`` if they are numbers (and nulls),
    ``TEXT`` if text (and nulls), else ``ANY`` (booleans, mixed, or only nulls).

    >>> [kind_of(v) is k for v, k in [([1, 2.5, None], NUMBER), (["a", None], TEXT),
    ...                               ([True, 1.0], ANY), ([None], ANY)]]
    [True, True, True, True]
    """
    types = set(map(type, values))
    if types <= _NUMBERS and types != {type(None)}:
        return NUMBER
    if types <= _TEXTS and types != {type(None)}:
        return TEXT
    return ANY


def floats(values: Any) -> npt.NDArray[np.float64]:
    """Numbers and nulls as float64 (null: NaN): ``fromiter`` when there is no null,
    about twice as fast as ``np.array``, which reads None as NaN.

    >>> floats((1.0, 2.5)).tolist(), floats([1.0, None]).tolist()
    ([1.0, 2.5], [1.0, nan])
    """
    try:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    except TypeError:  # a None
        return np.array(values, dtype=np.float64)


def codes(values: tuple[str | None, ...]) -> Categories:
    """Text and nulls as ``Categories``: the distinct values in order of first
    appearance, and each value's code (null: -1), all at C speed.

    >>> c = codes(("web", None, "app", "web"))
    >>> c.names, c.codes.tolist()
    (('web', 'app'), [0, -1, 1, 0])
    """
    names = dict.fromkeys(values)
    names.pop(None, None)
    index: dict[str | None, int] = {name: i for i, name in enumerate(names)}
    index[None] = -1
    found = np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))
    return Categories(found, tuple(names))  # type: ignore[arg-type]


_FORMS: dict[Any, Any] = {NUMBER: floats, TEXT: codes, ANY: lambda values: values}
