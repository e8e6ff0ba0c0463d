"""The HTML audit report: charts, commands with evidence and outcome, escaping, no network."""

from __future__ import annotations

from agents.operator.audit_report import render
from streams.policy.chain import verify_chain
from tests.agents.operator.audit_page import parse
from tests.streams.policy.cases import deployed, drift, kpi, poisoning


def test_the_report_holds_charts_commands_quarantine_and_the_chain() -> None:
    reports = [drift(i, "drift" if i > 2 else "ok") for i in range(6)]
    for r in reports:
        r.features["amount"] = r.features.get("amount") or _psi(0.01 * (r.window_start.minute))
    command = {"command_id": "c0ffee", "type": "rollback", "from_version": "v2",
               "to_version": "v1", "issued_by": "policy", "issued_at": "2026-11-01T00:10:00Z",
               "reason": "canary worse <script>alert(1)</script>",
               "evidence": [{"kind": "kpi", "model_version": "v2", "variant": "canary",
                             "window_start": 1, "status": "breach", "why": ["auc low"]}]}
    event = deployed(model="fraud").model_copy(update={"command_id": "c0ffee",
                                                       "reason": "rolled back"})
    campaign = poisoning(0, "campaign")
    campaign.sources["crm"].quarantined["duplicate_flood"] = 12
    page = render("fraud", start_ms=0, end_ms=2**62,
                  drift=[r.model_dump(mode="json") for r in reports],
                  kpi=[kpi(i).model_dump(mode="json") for i in range(6)],
                  commands=[command], deployments=[event.model_dump(mode="json")],
                  poisoning=[campaign.model_dump(mode="json")],
                  check=verify_chain([]))
    assert page.count("<svg") >= 3  # PSI, and the KPIs charted
    assert "v1 amount" in page and "v1/champion" in page
    assert "c0ffee" in page and "applied: rolled back" in page and "auc low" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "Audit chain intact" in page
    assert "src=" not in page and "href=" not in page
    # The quarantine is a table with a column per reason (it was "crm: duplicate_flood: 12").
    counts = parse(page).table("quarantine", "source")
    assert counts.headers == ["source", "seen", "passed", "duplicate_flood"]
    assert counts.rows[0] == ["crm", "1000", "1000", "12"]


def test_a_broken_chain_is_shown_as_broken() -> None:
    event = deployed().model_dump(mode="json")
    event["reason"] = "edited afterwards"
    page = render("fraud", start_ms=0, end_ms=1, drift=[], kpi=[], commands=[],
                  deployments=[], poisoning=[], check=verify_chain([event]))
    assert "Audit chain BROKEN" in page and "was altered" in page


def _psi(value: float) -> object:
    from schemas.reports import FeatureDrift

    return FeatureDrift(kind="numeric", n=100, missing=0, metrics={"psi": value}, status="ok",
                        drifted=False)


def test_the_report_charts_the_multivariate_signal_and_lists_its_reasons() -> None:
    from schemas.reports import MultivariateDrift

    reports = [drift(i) for i in range(3)]
    for i, r in enumerate(reports):
        r.multivariate = MultivariateDrift(
            n=5000, reconstruction_error=2.0, baseline=2.0, relative_change=-0.3 * (i == 2),
            z=0.0, components=2, features_used=["a", "b", "c"], beyond_limits=int(i == 1),
            status="warn" if i == 2 else "ok", drifted=False,
            reason=["", "1 event beyond the reference's limits <b>", "below its baseline"][i],
        )
    page = render("fraud", start_ms=0, end_ms=2**62,
                  drift=[r.model_dump(mode="json") for r in reports], kpi=[], commands=[],
                  deployments=[], poisoning=[], check=verify_chain([]))
    assert "Joint distribution (multivariate signal)" in page
    assert "reconstruction error, change from its baseline" in page
    assert "1 event beyond the reference&#x27;s limits &lt;b&gt;" in page  # escaped
    assert "below its baseline" in page and "-30.0%" in page


def test_the_report_shows_estimates_beside_realized_values() -> None:
    from schemas.reports import EstimatedMetric

    before = kpi(0, accuracy=None, n_labeled=0, status="breach").model_copy(update={
        "estimated": True,
        "estimated_metrics": {"roc_auc": EstimatedMetric(value=0.81, lower=0.79, upper=0.83)}})
    after = kpi(1, accuracy=0.9).model_copy(update={
        "metrics": {"roc_auc": 0.62, "accuracy": 0.9},
        "estimated_metrics": {"roc_auc": EstimatedMetric(value=0.8, lower=0.78, upper=0.82),
                              "accuracy": EstimatedMetric(value=0.89, lower=0.88, upper=0.9)}})
    command = {"command_id": "c1", "type": "retrain", "issued_by": "policy",
               "issued_at": "2026-11-01T00:10:00Z", "reason": "estimated breach",
               "evidence": [{"kind": "kpi", "model_version": "v1", "variant": "champion",
                             "window_start": 1, "status": "breach", "estimated": True,
                             "why": ["estimated roc_auc 0.61"]}]}
    page = render("fraud", start_ms=0, end_ms=2**62, drift=[],
                  kpi=[before.model_dump(mode="json"), after.model_dump(mode="json")],
                  commands=[command], deployments=[], poisoning=[], check=verify_chain([]))
    assert "Estimated before labels, against realized" in page
    assert "v1/champion estimated" in page  # charted beside the realized series
    assert "0.810 [0.790, 0.830] / not yet" in page
    assert "0.800 [0.780, 0.820] / 0.620 (outside the band)" in page
    assert "0.890 [0.880, 0.900] / 0.900" in page
    assert "breach (on estimates)" in page and "status breach (on estimates)" in page
    assert "cannot see concept drift" in page


def test_without_estimates_the_report_says_so() -> None:
    page = render("fraud", start_ms=0, end_ms=2**62, drift=[],
                  kpi=[kpi(0).model_dump(mode="json")], commands=[], deployments=[],
                  poisoning=[], check=verify_chain([]))
    assert "no estimates (no calibration published" in page


def test_the_reference_band_is_drawn_on_the_kpi_chart() -> None:
    from schemas.reports import KpiThreshold

    def banded(i: int, auc: float, lower: float, labeled: int) -> dict[str, object]:
        band = KpiThreshold(source="reference", lower=lower, judged=True, breached=auc < lower)
        return kpi(i, accuracy=0.9).model_copy(update={
            "n_labeled": labeled, "metrics": {"roc_auc": auc, "accuracy": 0.9},
            "thresholds": {"roc_auc": [band]},
            "breaches": [f"roc_auc {auc} is below its reference band {lower}"] if auc < lower
            else [],
        }).model_dump(mode="json")

    page = render("fraud", start_ms=0, end_ms=2**62, drift=[],
                  kpi=[banded(0, 0.8, 0.74, 500), banded(1, 0.7, 0.76, 3000)],
                  commands=[], deployments=[], poisoning=[], check=verify_chain([]))
    # the band of the window with the most labels (the narrowest: not widened)
    assert "v1/champion reference band lower 0.76" in page
    assert "reference band lower 0.74" not in page
    assert "reference bands from the reports" in page
