"""The HTML audit report: charts, commands with evidence and outcome, escaping, no network."""

from __future__ import annotations

from agents.operator.audit_report import render
from streams.policy.chain import verify_chain
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
    assert "duplicate_flood: 12" in page and "Audit chain intact" in page
    assert "src=" not in page and "href=" not in page


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
