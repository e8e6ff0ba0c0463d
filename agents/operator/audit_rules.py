"""Which policy rule a command applied, in words, with the setting's value in the policy.

A command carries its type, its issuer and a reason in words, all signed; it
does not name the rule by its setting. The policy agent's reasons
(``streams.policy.decide``) each start in a fixed way per rule, so the rule is
read back from the type and the start of the reason, and the setting's value is
taken from the policy the report was given. Where the reason states the number
the agent used ("(policy: 3)") and the policy given says otherwise, the answer
says so: the command was decided under another policy. A reason no rule matches
is shown as such, never guessed. ``tests/agents/operator/test_audit_rules.py``
drives ``decide`` through each rule, so a reworded reason fails there.

The policy agent's commands also carry the SHA-256 of the policy file they
were decided under (``policy_sha256``): :func:`policy_decided_under` compares
it with the policy given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from schemas.rules import DecisionPolicy

Setting = Callable[[DecisionPolicy], object]


def _rule(
    pattern: str, types: tuple[str, ...], name: str, *settings: tuple[str, Setting]
) -> tuple[re.Pattern[str], tuple[str, ...], str, tuple[tuple[str, Setting], ...]]:
    return re.compile(pattern), types, name, settings


#: The settings of the two-proportion test that compares a new version with the old one
#: (a canary with the champion; a switched champion with the standby before the switch).
_COMPARISON: tuple[tuple[str, Setting], ...] = (
    ("decisions.rollback.margin", lambda d: d.rollback.margin),
    ("decisions.rollback.alpha", lambda d: d.rollback.alpha),
    ("decisions.rollback.min_labeled", lambda d: d.rollback.min_labeled),
)

_RULES = (
    _rule(
        r"^scheduled: ",
        ("retrain",),
        "scheduled retrain",
        ("decisions.retrain.schedule", lambda d: f"{d.retrain.schedule / 3.6e6:g} h"),
    ),
    _rule(
        r"^sustained drift of ",
        ("retrain",),
        "retrain on sustained drift",
        ("decisions.retrain.drift_windows", lambda d: d.retrain.drift_windows),
    ),
    _rule(
        r"^concept drift on ",
        ("retrain",),
        "retrain on concept drift",
        ("decisions.retrain.on_concept_drift", lambda d: d.retrain.on_concept_drift),
    ),
    _rule(
        r"^KPI targets of .* missed in ",
        ("retrain",),
        "retrain on KPI breaches",
        ("decisions.retrain.kpi_breach_windows", lambda d: d.retrain.kpi_breach_windows),
        ("decisions.retrain.on_estimated_breach", lambda d: d.retrain.on_estimated_breach),
    ),
    _rule(
        r"^\d+ new clean labeled records",
        ("retrain",),
        "retrain on new clean labels",
        ("decisions.retrain.new_clean_labels", lambda d: d.retrain.new_clean_labels),
    ),
    _rule(
        r"^(champion|canary) \S+: serving error rate ",
        ("rollback",),
        "roll back on the serving error rate",
        ("decisions.rollback.max_error_rate", lambda d: d.rollback.max_error_rate),
    ),
    _rule(
        r"^(champion|canary) \S+: p99 latency ",
        ("rollback",),
        "roll back on p99 latency",
        ("decisions.rollback.max_latency_p99_ms", lambda d: d.rollback.max_latency_p99_ms),
    ),
    _rule(
        r"^canary worse than the champion",
        ("rollback",),
        "roll back a canary worse than the champion (one-sided two-proportion z-test)",
        *_COMPARISON,
    ),
    _rule(
        r"^switched champion \S+ worse than the standby ",
        ("rollback",),
        "switch back from a switched champion worse than the standby before the switch "
        "(one-sided two-proportion z-test)",
        *_COMPARISON,
    ),
    _rule(
        r"^canary \S+ healthy for ",
        ("set_canary_weight", "promote"),
        "progressive delivery of a healthy canary",
        ("decisions.delivery.healthy_windows", lambda d: d.delivery.healthy_windows),
        ("decisions.delivery.canary_steps", lambda d: d.delivery.canary_steps),
    ),
    _rule(
        r"^challenger \S+ beat the champion ",
        ("promote",),
        "promote a challenger that beats the champion",
        ("decisions.delivery.challenger_windows", lambda d: d.delivery.challenger_windows),
    ),
)
_HOLD = re.compile(
    r"^retrain blocked while the poisoning guard reports a campaign .*?; "
    r"it was due: (?P<due>.*)$",
    re.S,
)
_STATED = re.compile(r"\(policy: (\d+)\)")


def rule_applied(command: dict[str, Any], decisions: DecisionPolicy) -> str:
    """The rule ``command`` (a Command as JSON) applied, in one or two sentences."""
    issuer = str(command.get("issued_by") or "")
    kind, reason = str(command.get("type")), str(command.get("reason") or "")
    approval = ""
    if command.get("approval_required"):
        approval = (
            f" Waits for an operator's approval (decisions.approval_tiers "
            f"{list(decisions.approval_tiers)} hold risk tier {decisions.risk_tier})."
        )
    if issuer != "policy":
        if kind == "approve":
            return f"An operator's approval ({issuer}) of command {command.get('approves')}."
        return (
            f"An operator's command ({issuer}): no policy rule; the controller's checks "
            f"apply.{approval}"
        )
    if kind == "hold":
        held = _HOLD.match(reason)
        if held:
            due = _match("retrain", held.group("due"), decisions)
            return (
                "No retrain while the poisoning guard reports a campaign (built in); the "
                f"retrain was due by: {due}{approval}"
            )
    return _match(kind, reason, decisions) + approval


def _match(kind: str, reason: str, decisions: DecisionPolicy) -> str:
    for pattern, types, name, settings in _RULES:
        if kind in types and pattern.search(reason):
            said = ", ".join(f"{path} = {_value(get(decisions))}" for path, get in settings)
            text = f"{name}: {said} in the policy given."
            stated = _STATED.search(reason)
            if stated and settings and str(settings[0][1](decisions)) != stated.group(1):
                text += (
                    f" The command states {stated.group(1)}: it was decided under another policy."
                )
            return text
    return f"no known rule of the policy agent matches this {kind} command's reason."


def _value(value: object) -> str:
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def policy_decided_under(command: dict[str, Any], in_force: str | None) -> tuple[str, bool]:
    """The policy ``command`` was decided under, in words, and whether it differs from the
    policy given (``in_force``: its file's SHA-256, None for the built-in defaults)."""
    recorded = command.get("policy_sha256")
    given = f"the policy given ({in_force})" if in_force else "the built-in defaults given"
    if recorded:
        if recorded == in_force:
            return f"{recorded}, the policy given", False
        return f"{recorded}: differs from {given}; decided under another policy", True
    if str(command.get("issued_by") or "") != "policy":
        return "none: an operator's command is decided by a person, not a policy", False
    return (
        "not recorded (the built-in defaults, or a driftline before commands recorded it): "
        "not compared",
        False,
    )
