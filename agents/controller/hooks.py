"""The retrain hook: what the controller starts when it applies a ``retrain``.

From the policy (``decisions.retrain``): ``hook_command``, a command line
started in the background (the controller does not wait for training; the
hook stays in the worker's process group, so stopping the group stops it), with
the command and where the clean training data is in its environment; or
``hook_url``, which receives the command as a JSON POST (5 s timeout). The
hook's answer goes into the DeploymentEvent's reason, so the audit trail says
whether retraining actually started.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import urllib.request
from dataclasses import dataclass

from agents.config import Settings
from schemas.commands import Command
from schemas.policy import Policy


@dataclass
class RetrainHook:
    policy: Policy
    settings: Settings

    def start(self, command: Command) -> str:
        rules = self.policy.decisions_for(command.model).retrain
        payload = command.model_dump_json()
        if rules.hook_command:
            s = self.settings
            # The hook sees the worker's settings (it registers the new version
            # and signs a canary command with them) plus the command itself.
            env = {**os.environ, "DRIFTLINE_MODEL": command.model,
                   "DRIFTLINE_FROM_VERSION": command.from_version or "",
                   "DRIFTLINE_TRAINING_TOPIC": s.topic("training-data.clean"),
                   "DRIFTLINE_BROKER": s.broker, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
                   "DRIFTLINE_REGISTRY": s.registry, "DRIFTLINE_DATADIR": s.datadir,
                   "DRIFTLINE_COMMAND_KEY_FILE": s.command_key_file,
                   # signs as retrain-hook (agents.controller.issuers)
                   "DRIFTLINE_ISSUERS": s.issuers,
                   "DRIFTLINE_POLICY": s.policy,
                   "DRIFTLINE_COMMAND": payload}
            try:
                process = subprocess.Popen(
                    shlex.split(rules.hook_command), env=env, stdin=subprocess.DEVNULL)
            except OSError as exc:
                return f"the retrain hook could not start ({rules.hook_command!r}: {exc})"
            return f"retrain hook started (pid {process.pid})"
        if rules.hook_url:
            request = urllib.request.Request(
                rules.hook_url, data=payload.encode(), method="POST",
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return f"retrain webhook answered {answer.status}"
            except OSError as exc:
                return f"the retrain webhook failed ({rules.hook_url}: {exc})"
        return "no retrain hook configured (decisions.retrain.hook_command or hook_url)"
