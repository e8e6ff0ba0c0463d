"""The KPI handler with a shadow beside the champion: both joined to the one label, the
champion's reports as without the shadow, the comparison in either arrival order."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

from agents.dev import simulate
from schemas.policy import parse_policy
from schemas.reports import KpiReport
from tests.agents.kpi.test_handler import BASE, T0, Event, Run, close_all, in_time_order

WINDOWS = 3


def traffic(*, shadow: bool, bad: bool = False, seed: int = 21) -> tuple[list[Event], list[Event]]:
    gen = simulate.FraudTraffic(seed=seed)
    other = simulate.FraudTraffic(seed=seed + 100, version="v2", bad=bad) if shadow else None
    preds: list[Event] = []
    labels: list[Event] = []
    for w in range(WINDOWS):
        p, lab = gen.events_with_labels(
            1000, start_s=T0 + 60 * w, span_s=60, label_delay_s=20.0, label_share=0.9, shadow=other
        )
        preds += p
        labels += lab
    return preds, labels


def run(preds: list[Event], labels: list[Event], *, size: int = 500) -> Run:
    r = Run(parse_policy(BASE))
    for topic, chunk in in_time_order(preds, labels, size=size):
        r.send(topic, chunk)
    close_all(r, T0 + WINDOWS * 60 + 700)
    return r


def finals(r: Run, variant: str) -> list[KpiReport]:
    return sorted(
        (x for x in r.reports if x.variant == variant and x.final), key=lambda x: x.window_start
    )


def test_the_champion_reports_the_same_with_a_shadow_beside_it() -> None:
    plain = run(*traffic(shadow=False))
    beside = run(*traffic(shadow=True))
    champion = [r for r in beside.reports if r.variant == "champion"]
    assert [r.model_dump_json() for r in champion] == [r.model_dump_json() for r in plain.reports]
    assert all(r.shadow is None and "shadow" not in r.model_dump_json() for r in champion)


def test_one_label_completes_both_and_the_comparison_equals_a_direct_count() -> None:
    preds, labels = traffic(shadow=True, bad=True)
    r = run(preds, labels)
    shadow = finals(r, "shadow")
    assert len(shadow) == WINDOWS and not r.dead
    by_id = {e["request_id"]: e["label"] for e in labels}
    for report in shadow:
        start = report.window_start.timestamp()
        mine = [e for e in preds if start <= e["ts"] < start + 60]
        served = {e["request_id"]: e for e in mine if e["variant"] == "champion"}
        answered = {e["request_id"]: e for e in mine if e["variant"] == "shadow"}
        labeled = [i for i in answered if i in by_id]
        # the shadow's own KPIs: every labeled shadow prediction joined (none a duplicate)
        assert report.n_labeled == len(labeled)
        assert report.metrics["accuracy"] == skm.accuracy_score(
            [by_id[i] for i in labeled], [answered[i]["prediction"] for i in labeled]
        )
        (c,) = report.shadow or []
        assert (c.versus, c.pairs, c.labeled_pairs) == ("v1", len(answered), len(labeled))
        same = [served[i]["prediction"] == answered[i]["prediction"] for i in answered]
        diffs = np.array([answered[i]["score"] - served[i]["score"] for i in answered])
        assert c.agreement == np.mean(same)
        assert np.isclose(c.score_mean_abs_diff or 0, np.abs(diffs).mean())
        assert np.isclose(c.score_max_abs_diff or 0, np.abs(diffs).max())
        assert np.isclose(c.score_mean_diff or 0, diffs.mean())
        for metrics, side in ((c.served_metrics, served), (c.shadow_metrics, answered)):
            assert np.isclose(
                metrics["accuracy"],
                skm.accuracy_score(
                    [by_id[i] for i in labeled], [side[i]["prediction"] for i in labeled]
                ),
            )
        # the bad shadow disagrees more than noise would and is worse on the same labels
        assert c.agreement < 0.95
        assert c.shadow_metrics["accuracy"] < c.served_metrics["accuracy"]
    champion = finals(r, "champion")
    assert [x.n_labeled for x in champion] == [
        sum(
            1
            for e in preds
            if e["variant"] == "champion"
            and e["request_id"] in by_id
            and int((e["ts"] - T0) // 60) == w
        )
        for w in range(WINDOWS)
    ]


def _shadow_first(preds: list[Event]) -> list[Event]:
    """Each window's shadow answers published before the champion's."""
    out: list[Event] = []
    for w in range(WINDOWS):
        mine = [e for e in preds if int((e["ts"] - T0) // 60) == w]
        out += [e for e in mine if e["variant"] == "shadow"]
        out += [e for e in mine if e["variant"] != "shadow"]
    return out


def test_pairs_form_in_either_arrival_order() -> None:
    preds, labels = traffic(shadow=True)

    def comparisons(events: list[Event]) -> list[Any]:
        return [x.shadow for x in finals(run(events, labels), "shadow")]

    assert comparisons(_shadow_first(preds)) == comparisons(preds)
    assert all(c and c[0].pairs > 900 for c in comparisons(preds))


def test_a_replay_and_a_restart_give_the_same_reports() -> None:
    preds, labels = traffic(shadow=True, seed=22)
    once = [x.model_dump_json() for x in run(preds, labels).reports]
    assert once == [x.model_dump_json() for x in run(preds, labels).reports]
    # the working set rebuilt from the table between every message (a restart)
    r = Run(parse_policy(BASE))
    for topic, chunk in in_time_order(preds, labels):
        r.handler.forget()
        r.send(topic, chunk)
    close_all(r, T0 + WINDOWS * 60 + 700)
    assert [x.model_dump_json() for x in r.reports] == once


def test_shadow_state_is_dropped_with_its_window() -> None:
    r = run(*traffic(shadow=True))
    assert finals(r, "shadow")
    assert not [k for k in r.table if k.startswith(b"h|")]


def test_count_windows_compare_a_shadow_window_by_its_number() -> None:
    preds, labels = traffic(shadow=True, bad=True)
    counted = BASE.replace("window: 60s\n  allowed", "window: {events: 1000}\n  allowed")
    r = Run(parse_policy(counted))
    for topic, chunk in in_time_order(preds, labels):
        r.send(topic, chunk)
    # a count window retires a label join bucket (label_ttl, 10 min, here) after its own
    close_all(r, T0 + WINDOWS * 60 + 1300)
    shadow = finals(r, "shadow")
    assert [x.window_index for x in shadow] == list(range(WINDOWS)) and not r.dead
    # each shadow window pairs its own 1,000 answers with the served ones
    assert [x.shadow[0].pairs for x in shadow] == [1000] * WINDOWS  # type: ignore[index]
    assert all(x.shadow[0].labeled_pairs > 800 for x in shadow)  # type: ignore[index]
