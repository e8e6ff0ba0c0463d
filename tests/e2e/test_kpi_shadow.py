"""End to end: a shadow beside the champion on the real worker and broker.

The simulator answers each request with the champion and with a shadow (same
request id, variant "shadow"). The KPI agent joins the one label to both, so
each version's reports count all its labeled predictions, and the shadow's
reports carry the comparison with the champion on the same request ids: every
request paired, agreement and score differences as counted from the events,
and both versions' accuracy on the same labeled requests.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from agents.dev import simulate
from agents.operator import tail
from tests.e2e.test_kpi_quiet import MODEL, POLICY, T0, _latest, _show, _start

pytestmark = pytest.mark.e2e

PER_WINDOW = 1000
WINDOWS = 3  # the predictions' clock ends in window 2: windows 0 and 1 are closed


def _traffic() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    gen = simulate.FraudTraffic(seed=41)
    shadow = simulate.FraudTraffic(seed=42, version="v2", bad=True)
    preds: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for w in range(WINDOWS):
        p, lab = gen.events_with_labels(
            PER_WINDOW,
            start_s=T0 + 60 * w,
            span_s=60,
            label_delay_s=2.0,
            label_share=0.9,
            shadow=shadow,
        )
        preds += p
        labels += lab
    return preds, sorted(labels, key=lambda e: e["ts"])


def _expected(preds: list[dict[str, Any]], labels: list[dict[str, Any]], w: int) -> dict[str, Any]:
    truth = {e["request_id"]: e["label"] for e in labels}
    mine = [e for e in preds if int((e["ts"] - T0) // 60) == w]
    served = {e["request_id"]: e for e in mine if e["variant"] == "champion"}
    shadow = {e["request_id"]: e for e in mine if e["variant"] == "shadow"}
    labeled = [r for r in shadow if r in truth]
    diffs = np.array([shadow[r]["score"] - served[r]["score"] for r in shadow])

    def accuracy(side: dict[str, dict[str, Any]]) -> float:
        return float(np.mean([side[r]["prediction"] == truth[r] for r in labeled]))

    return {
        "pairs": len(shadow),
        "labeled_pairs": len(labeled),
        "agreement": float(
            np.mean([shadow[r]["prediction"] == served[r]["prediction"] for r in shadow])
        ),
        "score_mean_abs_diff": float(np.abs(diffs).mean()),
        "score_max_abs_diff": float(np.abs(diffs).max()),
        "served_accuracy": accuracy(served),
        "shadow_accuracy": accuracy(shadow),
    }


def test_the_kpi_agent_pairs_the_shadow_with_the_champion(worker_factory: Any) -> None:
    worker = worker_factory(POLICY, agents="kpi")
    s = worker.settings
    preds, labels = _traffic()
    published = worker.publish_predictions_then_labels(
        MODEL, list(simulate.batches(preds, 500)), list(simulate.batches(labels, 500)))
    closed = [0, 1]
    want = {_start(w): _expected(preds, labels, w) for w in closed}

    def by_variant(seen: list[dict[str, Any]], variant: str) -> dict[str, dict[str, Any]]:
        return _latest([r for r in seen if r["variant"] == variant])

    def compared(seen: list[dict[str, Any]]) -> bool:
        last, served = by_variant(seen, "shadow"), by_variant(seen, "champion")
        return all(
            w in last
            and last[w].get("shadow")
            and last[w]["shadow"][0]["labeled_pairs"] == want[w]["labeled_pairs"]
            and w in served
            and served[w]["n_labeled"] == want[w]["labeled_pairs"]
            for w in want
        )

    kpi = tail.collect(s.bootstrap, worker.topic("kpi"), compared, timeout_s=120)
    took = time.monotonic() - published
    assert compared(kpi), f"{_show(kpi)}\n{worker.log()[-3000:]}"
    print(f"shadow comparisons with every label {took:.1f} s after the labels were published")
    shadow, champion = by_variant(kpi, "shadow"), by_variant(kpi, "champion")
    for w, expected in want.items():
        (c,) = shadow[w]["shadow"]
        assert (c["versus"], c["pairs"], c["labeled_pairs"]) == (
            "v1",
            expected["pairs"],
            expected["labeled_pairs"],
        )
        assert c["agreement"] == pytest.approx(expected["agreement"])
        assert c["score_mean_abs_diff"] == pytest.approx(expected["score_mean_abs_diff"])
        assert c["score_max_abs_diff"] == pytest.approx(expected["score_max_abs_diff"])
        assert c["served_metrics"]["accuracy"] == pytest.approx(expected["served_accuracy"])
        assert c["shadow_metrics"]["accuracy"] == pytest.approx(expected["shadow_accuracy"])
        # each version's own report: every labeled prediction joined (none a duplicate)
        assert shadow[w]["n_labeled"] == expected["labeled_pairs"]
        assert shadow[w]["metrics"]["accuracy"] == pytest.approx(expected["shadow_accuracy"])
        assert w in champion and "shadow" not in champion[w]
        assert champion[w]["metrics"]["accuracy"] == pytest.approx(expected["served_accuracy"])
    assert all(r["model_version"] == "v2" for r in kpi if r["variant"] == "shadow")
