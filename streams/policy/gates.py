"""Evaluation gates: may a version get traffic, judged on its offline evaluation?

``judge_gate`` is the controller's rule, free of I/O: given the policy's gates
(``schemas.gates``), the target version's model card and the serving
champion's, it says whether a ``canary``, ``shadow``, ``switch`` or ``promote``
of that version passes, and why, with the numbers. The controller
(``agents.controller.handler``) refuses the command when it does not, before
any approval: a gate never replaces the human approval of an approval tier, it
comes first.

The gate is the one of the target version's ``risk_tier``. With no gate
configured for any tier nothing is judged (``None``); once one is, a version
whose card names no tier is refused (no gate can be chosen for it). A version
whose tier has a gate must have an evaluation; every check of the gate is
judged and every failure named, e.g.
``gate high.min_metrics roc_auc 0.81 < 0.85``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.evaluation import Evaluation, higher_is_better, parse_evaluation
from schemas.gates import Gate, GatePolicy
from schemas.model_card import RISK_TIERS, CardRiskTier

#: Command types that give a version traffic (or a place beside the champion).
GATED_COMMANDS = frozenset({"canary", "shadow", "switch", "promote"})
#: Floating-point slack: a loss of 0.010000000000000009 is a loss of 0.01.
TOLERANCE = 1e-9
#: ``judge(kind, ok, text)``: records one check's outcome.
Judge = Callable[[str, bool, str], None]


@dataclass(frozen=True)
class GateVerdict:
    """Whether the version passes; ``reason`` names the gate and the numbers either way."""

    passed: bool
    gate: str  # the tier whose gate was judged ("" when none could be chosen)
    reason: str


def _n(value: float) -> str:
    return f"{value:.4g}"


def _tier(card: Mapping[str, Any] | None) -> CardRiskTier | None:
    tier = None if card is None else card.get("risk_tier")
    for known in RISK_TIERS:
        if tier == known:
            return known
    return None


def _evaluation(card: Mapping[str, Any] | None) -> tuple[Evaluation | None, str]:
    """The card's evaluation, or None and why."""
    found = None if card is None else card.get("evaluation")
    if found is None:
        return None, "no evaluation"
    try:
        return parse_evaluation(found), ""
    except ValueError as exc:
        return None, f"an unreadable evaluation ({exc})"


def judge_gate(
    gates: GatePolicy,
    *,
    version: str,
    card: Mapping[str, Any] | None,
    champion: str | None = None,
    champion_card: Mapping[str, Any] | None = None,
) -> GateVerdict | None:
    """The verdict on ``version`` (its model ``card``) against the serving ``champion``.

    None when no gate applies: none configured, or none for the version's tier.

    >>> gates = GatePolicy(high={"min_metrics": {"roc_auc": 0.85}})
    >>> card = {"risk_tier": "high", "evaluation": {"roc_auc": 0.81}}
    >>> judge_gate(gates, version="v2", card=card).reason
    'gate high.min_metrics roc_auc 0.81 < 0.85'
    >>> judge_gate(gates, version="v2", card={**card, "risk_tier": "minimal"}) is None
    True
    """
    if not gates.configured:
        return None
    tier = _tier(card)
    if tier is None:
        return GateVerdict(
            False,
            "",
            (
                f"gates: {version}'s model card names no risk tier (minimal, limited or high), so "
                "no gate can be chosen; register a version with one"
            ),
        )
    gate = gates.for_tier(tier)
    if gate is None:
        return None
    evaluation, missing = _evaluation(card)
    if evaluation is None:
        return GateVerdict(
            False,
            tier,
            (
                f"gate {tier}: {version} has {missing}; register a version with --evaluation "
                "(metrics on a held-out set, its sha256 and size)"
            ),
        )
    champion_eval = None
    if champion is not None and champion != version:
        champion_eval = _evaluation(champion_card)[0]
    failed, passed = _checks(
        gate, tier, evaluation, champion if champion != version else None, champion_eval
    )
    if failed:
        return GateVerdict(False, tier, "; ".join(failed))
    return GateVerdict(True, tier, f"gate {tier} passed: {', '.join(passed)}")


def _checks(
    gate: Gate, tier: str, ev: Evaluation, champion: str | None, champ: Evaluation | None
) -> tuple[list[str], list[str]]:
    """(failures, passes) of every check of ``gate``, each with its numbers."""
    failed: list[str] = []
    passed: list[str] = []

    def judge(kind: str, ok: bool, text: str) -> None:
        (passed if ok else failed).append(f"{kind} {text}" if ok else f"gate {tier}.{kind} {text}")

    if gate.min_held_out_size is not None:
        size = ev.held_out.size if ev.held_out is not None else None
        if size is None:
            judge(
                "min_held_out_size",
                False,
                "the evaluation names no held-out set (a flat "
                f"file of metrics); at least {gate.min_held_out_size} examples are required",
            )
        else:
            ok = size >= gate.min_held_out_size
            judge(
                "min_held_out_size",
                ok,
                f"held-out size {size} {'>=' if ok else '<'} {gate.min_held_out_size}",
            )
    for name, low in gate.min_metrics.items():
        value = ev.metrics.get(name)
        if value is None:
            judge("min_metrics", False, f"{name}: the evaluation has no {name}")
        else:
            ok = value >= low - TOLERANCE
            judge("min_metrics", ok, f"{name} {_n(value)} {'>=' if ok else '<'} {_n(low)}")
    for name, high in gate.max_metrics.items():
        value = ev.metrics.get(name)
        if value is None:
            judge("max_metrics", False, f"{name}: the evaluation has no {name}")
        else:
            ok = value <= high + TOLERANCE
            judge("max_metrics", ok, f"{name} {_n(value)} {'<=' if ok else '>'} {_n(high)}")
    for name, allowed in gate.max_loss.items():
        _loss(judge, name, allowed, ev, champion, champ)
    for name, allowed in gate.max_disparity.items():
        _disparity(judge, name, allowed, ev)
    return failed, passed


def _loss(
    judge: Judge,
    name: str,
    allowed: float,
    ev: Evaluation,
    champion: str | None,
    champ: Evaluation | None,
) -> None:
    if champion is None:
        judge("max_loss", True, f"{name}: no champion to compare against")
        return
    value = ev.metrics.get(name)
    if value is None:
        judge("max_loss", False, f"{name}: the evaluation has no {name}")
        return
    theirs = None if champ is None else champ.metrics.get(name)
    if theirs is None:
        judge(
            "max_loss",
            False,
            f"{name}: the champion {champion}'s evaluation has no {name} to compare against",
        )
        return
    up = higher_is_better(name)
    loss = (theirs - value) if up else (value - theirs)
    ok = loss <= allowed + TOLERANCE
    side = ("below" if up else "above") if loss > 0 else "within"
    if side == "within":
        text = f"{name} {_n(value)} vs the champion {champion}'s {_n(theirs)}: no loss"
    else:
        text = (
            f"{name} {_n(value)} is {_n(loss)} {side} the champion {champion}'s "
            f"{_n(theirs)} ({'<=' if ok else '>'} {_n(allowed)} allowed)"
        )
    judge("max_loss", ok, text)


def _disparity(judge: Judge, name: str, allowed: float, ev: Evaluation) -> None:
    values = {seg: m[name] for seg, m in ev.segments.items() if name in m}
    if len(values) < 2:
        judge(
            "max_disparity",
            False,
            f"{name}: the evaluation gives {name} for {len(values)} "
            "segment(s); at least 2 are needed to judge the disparity",
        )
        return
    best = max(values, key=lambda seg: values[seg])
    worst = min(values, key=lambda seg: values[seg])
    gap = values[best] - values[worst]
    ok = gap <= allowed + TOLERANCE
    judge(
        "max_disparity",
        ok,
        f"{name} gap {_n(gap)} {'<=' if ok else '>'} {_n(allowed)} between segments {best} "
        f"{_n(values[best])} and {worst} {_n(values[worst])}",
    )
