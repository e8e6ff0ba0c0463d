"""The deployment controller agent: ``commands`` in, ``deployments`` out (the handler:
agents.controller.handler)."""

from __future__ import annotations

import faust

from agents.config import Settings
from agents.controller import verdict
from agents.controller.handler import Controller
from agents.controller.hooks import RetrainHook
from agents.controller.issuers import load as load_issuers
from agents.controller.keys import command_key
from agents.controller.registry import open_registry
from agents.runtime import runner
from schemas.policy import Policy


def register(app: faust.App, settings: Settings, policy: Policy) -> faust.types.AgentT:
    registry = open_registry(settings.registry)
    key = command_key(settings)
    controller = Controller(
        registry, key, policy, issuers=load_issuers(settings, worker_key=key),
        hook=RetrainHook(policy, settings),
    )
    # The registry holds the deployment state and the controller's journal,
    # committed together (agents.controller.registry); the table only holds the runner's
    # redo records, i.e. which commands were handled (agents.runtime.redo). One command at a
    # time (not batched): a command's event is acknowledged before the next command
    # changes the registry, which a redelivered command relies on (agents.controller.handler).
    agent, _ = runner.register(
        app, settings, controller, name="controller", sources=["commands"],
        output="deployments", table="controller-progress", batched=False,
    )
    if settings.controller_port:
        # The pass/fail endpoint for Argo Rollouts and Flagger (agents.controller.verdict).
        verdict.serve(registry, port=settings.controller_port, token=settings.controller_token)
    return agent
