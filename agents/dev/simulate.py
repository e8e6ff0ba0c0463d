"""A realistic serving app: a binary fraud classifier publishing batched predictions.

Traffic is generated with numpy from a seed, so a test can ask for the exact
events it needs; ``run`` publishes it in real time through confluent-kafka.
Event time can run faster than wall time (``time_scale``) so that a demo shows
many windows in a minute.

Scenarios:

* ``none``   stationary traffic;
* ``drift``  from ``shift_at`` on, ``amount`` rises by about 80 % and customers
  transact about one standard deviation further from home: the two shifted
  features a drift monitor must flag, and only those.
* ``concept`` from ``shift_at`` on, fraud changes its pattern (P(y|x)), not
  the traffic (P(x)): risky devices and IPs stop predicting fraud and new
  accounts start to. No feature drifts; the model's KPIs fall once labels
  arrive, and a concept-drift detector must say so.

Labels: the true outcome of each prediction is drawn from the fraud
probability (the model is calibrated before a concept change); a share
``label_share`` of them is published on ``labels`` after an exponential delay
of event time (mean ``label_delay_s``), as chargebacks and reviews come in.

Predictions and labels go out as ``{"events": [...]}`` JSON batches, or
(``form="arrow"``, ``driftline simulate --format arrow``) as Arrow IPC streams
with the header ``content-type: application/vnd.apache.arrow.stream``
(``schemas.arrow``): the same events, as a high-volume producer sends them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from agents.kafka import client_config
from schemas import arrow
from schemas.errors import DriftlineError

logger = logging.getLogger(__name__)

NUMERIC = (
    "amount",
    "account_age_days",
    "txn_count_1h",
    "txn_count_24h",
    "avg_amount_30d",
    "distance_from_home_km",
    "distance_from_last_km",
    "time_since_last_s",
    "card_age_days",
    "merchant_risk",
    "device_risk",
    "ip_risk",
    "velocity_score",
    "failed_logins_24h",
    "chargebacks_90d",
    "hour_of_day",
    "basket_items",
    "discount_pct",
    "shipping_days",
    "customer_tenure_months",
)
CATEGORICAL = {
    "merchant_category": (
        [
            "grocery",
            "electronics",
            "travel",
            "fashion",
            "gaming",
            "fuel",
            "restaurants",
            "pharmacy",
        ],
        [0.25, 0.12, 0.08, 0.15, 0.05, 0.15, 0.15, 0.05],
    ),
    "channel": (["web", "app", "pos", "phone"], [0.35, 0.4, 0.2, 0.05]),
    "country": (
        ["DE", "FR", "NL", "ES", "IT", "PL", "US", "other"],
        [0.3, 0.18, 0.1, 0.12, 0.1, 0.08, 0.07, 0.05],
    ),
    "device_type": (["ios", "android", "desktop", "unknown"], [0.35, 0.35, 0.25, 0.05]),
    "payment_method": (["card", "wallet", "bank_transfer", "bnpl"], [0.6, 0.25, 0.1, 0.05]),
}
SCENARIOS = ("none", "drift", "concept", "poisoning")
SHIFTED = ("amount", "distance_from_home_km")
# Predictions whose features wait for a label (to become TrainingRecords).
MAX_AWAITING_LABEL = 200_000


@dataclass(frozen=True)
class Shift:
    """How far the drift scenario moves its two features."""

    amount_factor: float = 1.8
    distance_add_km: float = 6.5  # about one standard deviation of distance_from_home_km


class FraudTraffic:
    """Deterministic generator of PredictionEvent dicts for one model version.

    >>> events = FraudTraffic(seed=1).events(3, start_s=1_700_000_000.0, span_s=1.0)
    >>> len(events[0]["features"]), events[0]["model"], 0 <= events[0]["score"] <= 1
    (25, 'fraud-detector', True)
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        model: str = "fraud-detector",
        version: str = "v1",
        variant: str = "champion",
        bad: bool = False,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        # Outcomes and label delays draw from their own stream, so asking for
        # labels does not change the features of a seed.
        self.label_rng = np.random.default_rng([seed, 1])
        self.model = model
        self.version = version
        self.variant = variant
        # A bad version (the "bad canary" scenario): its scores carry noise and a
        # bias, so it flags many honest transactions; accuracy falls ~0.97 -> ~0.8.
        self.bad = bad
        self._seq = 0

    def columns(
        self, n: int, *, shifted: bool = False, shift: Shift = Shift(), concept: bool = False
    ) -> dict[str, Any]:
        r = self.rng
        amount = r.lognormal(3.6, 0.9, n) * (shift.amount_factor if shifted else 1.0)
        distance = r.gamma(2.0, 4.5, n) + (shift.distance_add_km if shifted else 0.0)
        cols: dict[str, Any] = {
            "amount": np.round(amount, 2),
            "account_age_days": r.gamma(2.0, 300.0, n).round(),
            "txn_count_1h": r.poisson(1.2, n).astype(float),
            "txn_count_24h": r.poisson(6.0, n).astype(float),
            "avg_amount_30d": np.round(r.lognormal(3.5, 0.6, n), 2),
            "distance_from_home_km": np.round(distance, 2),
            "distance_from_last_km": np.round(r.exponential(12.0, n), 2),
            "time_since_last_s": r.exponential(36_000.0, n).round(),
            "card_age_days": r.gamma(2.5, 250.0, n).round(),
            "merchant_risk": r.beta(2, 8, n).round(4),
            "device_risk": r.beta(1.5, 10, n).round(4),
            "ip_risk": r.beta(1.2, 12, n).round(4),
            "velocity_score": r.normal(0.0, 1.0, n).round(4),
            "failed_logins_24h": r.poisson(0.3, n).astype(float),
            "chargebacks_90d": r.poisson(0.05, n).astype(float),
            "hour_of_day": r.integers(0, 24, n).astype(float),
            "basket_items": (r.poisson(2.5, n) + 1).astype(float),
            "discount_pct": np.clip(r.normal(5.0, 5.0, n), 0, 60).round(1),
            "shipping_days": r.integers(0, 8, n).astype(float),
            "customer_tenure_months": r.gamma(2.0, 18.0, n).round(),
        }
        for name, (values, probs) in CATEGORICAL.items():
            cols[name] = r.choice(values, size=n, p=probs)
        logit = (
            -4.2
            + 0.45 * np.log(amount / 40.0)
            + 0.05 * (distance - 9.0)
            + 6.0 * cols["device_risk"]
            + 5.0 * cols["ip_risk"]
            + 0.6 * cols["velocity_score"]
            + 0.5 * cols["failed_logins_24h"]
            - 0.0008 * cols["account_age_days"]
            + 0.8 * (cols["merchant_category"] == "gaming")
        )
        served = logit + (r.normal(1.5, 2.5, n) if self.bad else 0.0)
        cols["@score"] = 1.0 / (1.0 + np.exp(-served))
        cols["@logit"] = logit  # what any version sees in the request, before its own noise
        # After a concept change, fraud follows another rule than the model learnt.
        true_logit = (
            logit
            if not concept
            else (
                -3.0
                + 0.45 * np.log(amount / 40.0)
                - 6.0 * cols["device_risk"]
                - 5.0 * cols["ip_risk"]
                - 0.6 * cols["velocity_score"]
                + 2.0 * (cols["account_age_days"] < 120)
            )
        )
        cols["@label"] = (self.label_rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit))).astype(int)
        return cols

    def events(
        self, n: int, *, start_s: float, span_s: float, shifted: bool = False
    ) -> list[dict[str, Any]]:
        """``n`` events with event times spread evenly over ``[start_s, start_s + span_s)``."""
        return self.events_with_labels(n, start_s=start_s, span_s=span_s, shifted=shifted)[0]

    def events_with_labels(
        self,
        n: int,
        *,
        start_s: float,
        span_s: float,
        shifted: bool = False,
        concept: bool = False,
        label_delay_s: float = 300.0,
        label_share: float = 1.0,
        shadow: FraudTraffic | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Predictions as :meth:`events`, and LabelEvents for ``label_share`` of them,
        each ``ts`` an exponential delay (mean ``label_delay_s``) after its prediction.

        With ``shadow`` (another version's generator), each request is answered by
        that version too: after this version's predictions come the shadow's, one per
        request, with the same ``request_id``, ``ts`` and features and ``variant``
        "shadow" (its answers are not served; a KPI comparison joins them by request
        id). The shadow draws its own noise and latency, so this version's events are
        the same with or without it."""
        cols = self.columns(n, shifted=shifted, concept=concept)
        ts = start_s + np.arange(n) * (span_s / max(n, 1))
        scores = cols.pop("@score")
        logits = cols.pop("@logit")
        truth = cols.pop("@label").tolist()
        delays = self.label_rng.exponential(label_delay_s, n) if label_delay_s > 0 else np.zeros(n)
        labeled = (self.label_rng.random(n) < label_share).tolist()
        names = list(cols)
        values = [cols[k].tolist() for k in names]
        country, channel = cols["country"].tolist(), cols["channel"].tolist()
        out: list[dict[str, Any]] = []
        labels: list[dict[str, Any]] = []
        for i in range(n):
            self._seq += 1
            score = round(float(scores[i]), 5)
            if labeled[i]:
                labels.append(
                    {
                        "request_id": f"{self.model}-{self.version}-{self._seq}",
                        "model": self.model,
                        "ts": round(float(ts[i] + delays[i]), 3),
                        "label": truth[i],
                    }
                )
            out.append(
                {
                    "request_id": f"{self.model}-{self.version}-{self._seq}",
                    "model": self.model,
                    "model_version": self.version,
                    "variant": self.variant,
                    "ts": round(float(ts[i]), 3),
                    "prediction": int(score >= 0.5),
                    "score": score,
                    "latency_ms": round(float(self.rng.gamma(3.0, 6.0)), 2),
                    "features": {k: v[i] for k, v in zip(names, values, strict=True)},
                    "segment": {"country": country[i], "channel": channel[i]},
                }
            )
        if shadow is not None:
            out += shadow.shadow_events(out, logits)
        return out, labels

    def shadow_events(self, served: list[dict[str, Any]], logits: Any) -> list[dict[str, Any]]:
        """This version's answers to the requests of ``served`` (another version's
        predictions, whose clean logits are ``logits``), as variant "shadow"."""
        n = len(served)
        noisy = logits + (self.rng.normal(1.5, 2.5, n) if self.bad else 0.0)
        scores = (1.0 / (1.0 + np.exp(-noisy))).tolist()
        latency = self.rng.gamma(3.0, 6.0, n).tolist()
        out = []
        for event, raw, ms in zip(served, scores, latency, strict=True):
            score = round(float(raw), 5)
            out.append(
                {
                    **event,
                    "model_version": self.version,
                    "variant": "shadow",
                    "prediction": int(score >= 0.5),
                    "score": score,
                    "latency_ms": round(float(ms), 2),
                }
            )
        return out


def batches(events: list[dict[str, Any]], size: int) -> Iterator[bytes]:
    """Encode events as ``{"events": [...]}`` messages of at most ``size`` events."""
    for i in range(0, len(events), size):
        yield orjson.dumps({"events": events[i : i + size]})


#: the input forms ``run`` publishes in (``driftline simulate --format``)
FORMS = ("json", "arrow")


def encode(events: list[dict[str, Any]], size: int, *, form: str = "json") -> Iterator[bytes]:
    """Messages of at most ``size`` events: JSON batches (``batches``), or with
    ``form="arrow"`` one Arrow IPC stream per message (``schemas.arrow.to_ipc``: ``ts``
    a timestamp, features and segment structs, categories dictionary-encoded).

    >>> from schemas import arrow
    >>> events = FraudTraffic(seed=1).events(3, start_s=1_700_000_000.0, span_s=1.0)
    >>> [arrow.read(m).num_rows for m in encode(events, 2, form="arrow")]
    [2, 1]
    """
    if form == "json":
        yield from batches(events, size)
    elif form == "arrow":
        for i in range(0, len(events), size):
            yield arrow.to_ipc(events[i : i + size])
    else:
        raise ValueError(f"unknown form {form!r}; choose from {FORMS}")


def headers(form: str) -> list[tuple[str, bytes]] | None:
    """The Kafka headers a message of ``form`` carries (Arrow: its content type)."""
    return [arrow.HEADER] if form == "arrow" else None


#: seconds ``publish`` waits for the broker to confirm what it sent
DELIVERY_TIMEOUT_S = 30.0


class DeliveryFailed(DriftlineError):
    """The broker did not confirm every message in time."""


#: The producer of the simulator, the bench and the operator's commands. Idempotent:
#: a send the broker refused for a moment (a freshly created topic whose leader Apache
#: Kafka has not elected yet answers NOT_LEADER_OR_FOLLOWER) is retried in its place,
#: never after the messages sent behind it, and never twice. Without it librdkafka
#: keeps up to a million requests in flight and a retry lands out of order: seen on
#: Apache Kafka, a bench's first two windows came after its last two and were
#: counted late.
PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 5,
    "enable.idempotence": True,
    "message.max.bytes": 16 * 1024 * 1024,
}


def make_producer(bootstrap: str) -> Producer:
    return Producer({**client_config(bootstrap), **PRODUCER_CONFIG})


def publish(
    producer: Producer,
    topic: str,
    key: str,
    payloads: list[bytes],
    *,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Send messages (each with ``headers``) and wait until the broker has them all;
    raise on any failure."""
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for payload in payloads:
        while True:
            try:
                producer.produce(
                    topic, key=key.encode(), value=payload, headers=headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(DELIVERY_TIMEOUT_S)
    if remaining or errors:
        why = (
            f": {'; '.join(sorted(set(errors))[:3])}"
            if errors
            else f" within {DELIVERY_TIMEOUT_S:g} s"
        )
        raise DeliveryFailed(
            f"{remaining + len(errors)} of {len(payloads)} messages to "
            f"{topic} were not confirmed by the broker{why}"
        )


class DeploymentFollower:
    """The latest deployment state per model, read from ``deployments`` in a thread.

    The simulated serving app honours it as a real one would: canary traffic by
    the canary's weight, all traffic back on the champion after a rollback, the
    new champion after a promotion or a switch, and the shadow answering the
    champion's requests beside it.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        from agents.operator import tail

        self._states: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()

        def follow() -> None:
            for msg in tail.messages(bootstrap, topic, stop=self._stop.is_set):
                event = orjson.loads(msg.value())
                if event.get("status") == "applied":
                    self._states[event["model"]] = event["state"]

        self._thread = threading.Thread(target=follow, daemon=True, name="deployments")
        self._thread.start()

    def state(self, model: str) -> dict[str, Any] | None:
        return self._states.get(model)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def training_records(
    labels: list[dict[str, Any]], predictions: list[dict[str, Any]], *, source: str = "chargebacks"
) -> list[dict[str, Any]]:
    """TrainingRecords from labeled predictions: what a data pipeline offers for retraining."""
    features = {p["request_id"]: p["features"] for p in predictions}
    return [
        {
            "record_id": lab["request_id"],
            "model": lab["model"],
            "ts": lab["ts"],
            "source": source,
            "features": features[lab["request_id"]],
            "label": lab["label"],
        }
        for lab in labels
        if lab["request_id"] in features
    ]


def flood(record: dict[str, Any], copies: int, *, source: str = "bot") -> list[dict[str, Any]]:
    """``copies`` of one training record from ``source``, all labeled 0 (a poisoning flood)."""
    return [
        {**record, "record_id": f"{source}-{record['record_id']}-{i}", "source": source, "label": 0}
        for i in range(copies)
    ]


class _Fleet:
    """One traffic generator per model version, routed by the deployment state."""

    def __init__(
        self,
        *,
        seed: int,
        model: str,
        version: str,
        bad_versions: set[str],
        follower: DeploymentFollower | None,
    ) -> None:
        self.seed, self.model, self.default = seed, model, version
        self.bad, self.follower = bad_versions, follower
        self.traffic: dict[str, FraudTraffic] = {}

    def of(self, version: str) -> FraudTraffic:
        if version not in self.traffic:
            index = len(self.traffic)
            self.traffic[version] = FraudTraffic(
                seed=self.seed + 1000 * index,
                model=self.model,
                version=version,
                bad=version in self.bad,
            )
        return self.traffic[version]

    def split(self, n: int) -> list[tuple[FraudTraffic, str, int, FraudTraffic | None]]:
        """(generator, variant, events, shadow generator) for a batch of ``n`` events:
        the shadow (if one is deployed) answers the champion's requests too."""
        state = self.follower.state(self.model) if self.follower else None
        if not state or not state.get("champion"):
            return [(self.of(self.default), "champion", n, None)]
        canary, weight = state.get("canary"), float(state.get("canary_weight") or 0.0)
        champion = self.of(state["champion"])  # first: a version's seed is its order of arrival
        shadow = self.of(state["shadow"]) if state.get("shadow") else None
        n_canary = round(n * weight) if canary else 0
        parts = [(champion, "champion", n - n_canary, shadow)]
        if n_canary:
            parts.append((self.of(canary), "canary", n_canary, None))
        return [p for p in parts if p[2] > 0]


def run(
    *,
    bootstrap: str,
    topic: str,
    rate: float,
    duration_s: float,
    scenario: str = "none",
    shift_at: float = 0.45,
    time_scale: float = 1.0,
    batch_size: int = 500,
    seed: int = 0,
    model: str = "fraud-detector",
    version: str = "v1",
    window_s: float = 60.0,
    labels_topic: str | None = None,
    label_delay_s: float = 300.0,
    label_share: float = 0.9,
    should_stop: Any = None,
    follower: DeploymentFollower | None = None,
    bad_versions: set[str] = frozenset(),  # type: ignore[assignment]
    training_topic: str | None = None,
    flood_at: float | None = None,
    flood_copies: int = 300,
    form: str = "json",
) -> int:
    """Publish ``rate`` events/s for ``duration_s`` wall seconds; return events sent.

    Event time starts at a window boundary and runs ``time_scale`` times faster
    than wall time. With ``scenario="drift"`` or ``"concept"`` the change starts
    after ``shift_at`` of the duration. With ``labels_topic``, labels are
    published once the event time reaches their ``ts`` (like a chargeback
    feed); those still in the future when the run ends are not sent. With a
    ``follower``, traffic follows the deployment state (canary share, rollback,
    promotion); versions in ``bad_versions`` serve noisy scores. With
    ``training_topic``, each published label also goes out as a TrainingRecord,
    and with ``flood_at`` (a fraction of the duration) a source called ``bot``
    floods it with ``flood_copies`` copies of one record labeled "not fraud"
    (the poisoning scenario). ``form`` is how predictions and labels are encoded
    (``encode``: ``"json"`` batches or ``"arrow"`` IPC streams with the Arrow
    content-type header); training records are JSON batches either way (the
    ``training-data`` topic has no Arrow form).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {FORMS}")
    form_headers = headers(form)
    fleet = _Fleet(
        seed=seed, model=model, version=version, bad_versions=set(bad_versions), follower=follower
    )
    features: dict[str, dict[str, Any]] = {}  # request id -> features, until labeled
    producer = make_producer(bootstrap)
    wall0 = time.monotonic()
    event0 = math.floor(time.time() / window_s) * window_s
    tick = batch_size / rate  # wall seconds per batch
    sent = requests = 0  # events published; requests served (a shadow's answer is no request)
    due: list[tuple[float, int, dict[str, Any]]] = []  # labels by ts (a heap)
    order = itertools.count()  # ties in ts keep publication order
    while True:
        elapsed = time.monotonic() - wall0
        if elapsed >= duration_s or (should_stop is not None and should_stop()):
            break
        changed = scenario != "none" and elapsed >= shift_at * duration_s
        start_s = event0 + requests / rate * time_scale
        events, labels = [], []
        for traffic, variant, n, shadow in fleet.split(batch_size):
            traffic.variant = variant
            part, part_labels = traffic.events_with_labels(
                n,
                start_s=start_s,
                span_s=tick * time_scale,
                shifted=changed and scenario == "drift",
                concept=changed and scenario == "concept",
                label_delay_s=label_delay_s,
                label_share=label_share,
                shadow=shadow,
            )
            events += part
            labels += part_labels
        if training_topic is not None:
            features.update((e["request_id"], e) for e in events)
            while len(features) > MAX_AWAITING_LABEL:  # never-labeled ones, oldest first
                features.pop(next(iter(features)))
        publish(
            producer,
            topic,
            model,
            list(encode(events, batch_size, form=form)),
            headers=form_headers,
        )
        sent += len(events)
        requests += batch_size
        if labels_topic is not None:
            for label in labels:
                heapq.heappush(due, (label["ts"], next(order), label))
            now_s = start_s + tick * time_scale
            ready = []
            while due and due[0][0] <= now_s:
                ready.append(heapq.heappop(due)[2])
            if ready:
                publish(
                    producer,
                    labels_topic,
                    model,
                    list(encode(ready, batch_size, form=form)),
                    headers=form_headers,
                )
            if ready and training_topic is not None:
                seen = [
                    features.pop(lab["request_id"])
                    for lab in ready
                    if lab["request_id"] in features
                ]
                records = training_records(ready, seen)
                if flood_at is not None and elapsed >= flood_at * duration_s and records:
                    records += flood(records[0], flood_copies)
                    flood_at = None  # once
                publish(producer, training_topic, model, list(batches(records, batch_size)))
        pause = wall0 + requests / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the simulated serving app, not synchronisation
    producer.flush(30)
    return sent
