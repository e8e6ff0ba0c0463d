"""Which models a handler tracks: the bound on the number of models per handler.

Every handler keeps state per model (windows, joins, guards, decisions), so a
producer that publishes ever-new ``model`` names (a bug, or an attacker) would
grow memory and table state without bound. A handler therefore *admits* a
model before it keeps anything for it:

* models named in the policy file's ``models:`` section are always admitted
  and do not count against the limit: the policy file bounds them already,
  and names an operator wrote down must never be shut out by whatever names
  arrived first;
* any other model is admitted while fewer than ``max_models``
  (``DRIFTLINE_MAX_MODELS``) other models are admitted on its partition, and
  then stays admitted (no eviction: dropping a model's state is an operator's
  decision, and a limit reached is a message in ``deadletter``);
* the events of a model beyond the limit are dead-lettered with a sentence
  saying so and counted in ``driftline_untracked_events_total``; the rest of
  the message goes on. ``max_models=0`` tracks the policy's models only.

The admitted models are recorded in the handler's table, under
``models_key(partition)``, so the set survives a restart and a replay admits
the same models in the same order. It is kept per partition because a Faust
table writes every key to the changelog partition of the message being
handled: one key written from every partition would hold only some of its
writes after recovery. So the limit counts per partition of the table: a
worker holding ``P`` partitions tracks at most ``P x max_models`` models, plus
the policy's (with the default single partition, ``max_models``). A model
whose references land on another partition than its events (``references``
is keyed by ``model@version``) takes a place on both.

Bounds: one table key per partition of at most ``max_models`` names (200
characters each at most); in memory, the decoded set of each partition this
handler saw, and up to ``MAX_WARNED`` refused names (each logged once while
remembered, so a flood of names logs at most one line per message, never one
per event).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping

import orjson

from agents import metrics
from agents.config import DEFAULT_MAX_MODELS
from agents.inputs.codec import MODEL, Decoded, Origin, Row, dead_letter
from schemas.reports import DeadLetter

logger = logging.getLogger(__name__)

#: refused model names remembered so that each is logged once
MAX_WARNED = 1024


def models_key(partition: int) -> bytes:
    """The table key of the models admitted on ``partition`` (``\\x00``: driftline's own)."""
    return b"\x00driftline|models|%d" % partition


class Admission:
    """The models one handler tracks, read from and recorded in its table.

    >>> gate = Admission(agent="drift", max_models=1, listed=["vip"])
    >>> table: dict[bytes, bytes] = {}
    >>> origin = Origin("predictions", 0, 0)
    >>> [gate.admit(m, origin, table) for m in ("a", "b", "vip", "a")]
    [True, False, True, True]
    >>> table
    {b'\\x00driftline|models|0': b'["a"]'}
    """

    def __init__(self, *, agent: str, max_models: int = DEFAULT_MAX_MODELS,
                 listed: Iterable[str] = ()) -> None:
        if max_models < 0:
            raise ValueError(f"max_models must be 0 or more, got {max_models}")
        self.agent = agent
        self.max_models = max_models
        self.listed = frozenset(listed)
        # per partition: the stored bytes and the names they hold (a cache of the table)
        self._known: dict[int, tuple[bytes, frozenset[str]]] = {}
        self._warned: dict[str, None] = {}  # insertion-ordered, at most MAX_WARNED

    def admitted(self, partition: int, table: MutableMapping[bytes, bytes]) -> frozenset[str]:
        """The models admitted on ``partition`` (not counting the policy's)."""
        raw = table.get(models_key(partition))
        if raw is None:
            return frozenset()
        known = self._known.get(partition)
        if known is None or known[0] != raw:
            known = self._known[partition] = (raw, frozenset(orjson.loads(raw)))
            metrics.TRACKED_MODELS.labels(self.agent, str(partition)).set(len(known[1]))
        return known[1]

    def admit(self, model: str, origin: Origin, table: MutableMapping[bytes, bytes]) -> bool:
        """True when ``model`` is tracked; admits it (a table write) while there is room."""
        if model in self.listed:
            return True
        admitted = self.admitted(origin.partition, table)
        if model in admitted:
            return True
        if len(admitted) >= self.max_models:
            return False
        key = models_key(origin.partition)
        stored = table.get(key)
        names = [*(orjson.loads(stored) if stored is not None else []), model]  # in order
        raw = table[key] = orjson.dumps(names)
        self._known[origin.partition] = (raw, admitted | {model})
        metrics.TRACKED_MODELS.labels(self.agent, str(origin.partition)).set(len(names))
        return True

    def refusal(self, models: list[str], origin: Origin,
                table: MutableMapping[bytes, bytes]) -> str:
        """Why events of ``models`` are not tracked, in a sentence a person can act on."""
        shown = ", ".join(repr(m) for m in models[:3])
        if len(models) > 3:
            shown += f" and {len(models) - 3} more"
        what = f"model {shown} is" if len(models) == 1 else f"models {shown} are"
        tracked = len(self.admitted(origin.partition, table))
        return (f"{what} not tracked: the {self.agent} agent already tracks {tracked} models "
                f"on partition {origin.partition}, its limit (DRIFTLINE_MAX_MODELS="
                f"{self.max_models}, per partition, the policy file's models not counted); "
                "raise the limit, list the model under `models:` in the policy file, or check "
                "the producer's model names")

    def split(
        self, rows: list[Row], decoded: Decoded, raw: bytes | None, origin: Origin,
        table: MutableMapping[bytes, bytes],
    ) -> tuple[list[Row], list[DeadLetter]]:
        """The rows of tracked models, and dead letters for the others.

        A message whose events are all refused (the usual case: messages are
        keyed by model) becomes one dead letter holding its bytes, never one per
        event; otherwise each refused event gets its own, with its position.
        ``decoded`` is what ``rows`` came from (after ``keyed_events``), its
        ``dead`` the dead letters of the message so far."""
        # In order of first appearance, so a replay admits the same models (a set's
        # order of strings changes from one process to the next).
        models = dict.fromkeys(map(MODEL, rows))
        refused = {m: "" for m in models if not self.admit(m, origin, table)}
        if not refused:
            return rows, []
        self._log(list(refused), origin, table)
        kept = [r for r in rows if r["model"] not in refused]
        metrics.UNTRACKED_EVENTS.labels(origin.topic, self.agent).inc(len(rows) - len(kept))
        if not kept and not decoded.dead:
            return [], [dead_letter(origin, self.refusal(list(refused), origin, table),
                                    raw or b"", agent=self.agent)]
        for model in refused:
            refused[model] = self.refusal([model], origin, table)
        position = {id(e): i for i, e in zip(decoded.positions, decoded.events, strict=True)}
        dead = []
        for row in rows:
            if row["model"] in refused:
                encoded = orjson.dumps(row)  # datetimes as RFC 3339 strings
                dead.append(dead_letter(origin, refused[row["model"]], encoded,
                                        agent=self.agent, index=position.get(id(row)),
                                        event=orjson.loads(encoded)))
        return kept, dead

    def refuse_one(self, model: str, raw: bytes | None, origin: Origin,
                   table: MutableMapping[bytes, bytes]) -> DeadLetter | None:
        """For a message holding one object of ``model``: None when tracked, else its
        dead letter."""
        if self.admit(model, origin, table):
            return None
        self._log([model], origin, table)
        metrics.UNTRACKED_EVENTS.labels(origin.topic, self.agent).inc()
        return dead_letter(origin, self.refusal([model], origin, table), raw or b"",
                           agent=self.agent)

    def _log(self, refused: list[str], origin: Origin,
             table: MutableMapping[bytes, bytes]) -> None:
        new = [m for m in refused if m not in self._warned]
        if not new:
            return
        for model in new:
            if len(self._warned) >= MAX_WARNED:
                self._warned.pop(next(iter(self._warned)))
            self._warned[model] = None
        logger.warning("%s: %s (seen at %s[%d]@%d; logged once per model, further events "
                       "are only dead-lettered)", self.agent,
                       self.refusal(new, origin, table), origin.topic, origin.partition,
                       origin.offset)
