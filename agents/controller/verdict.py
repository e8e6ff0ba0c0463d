"""The controller's verdict endpoint, for Argo Rollouts and Flagger.

The serving side's progressive-delivery tool asks driftline whether a model
version is fit to keep receiving traffic:

* ``GET /verdict/<model>/<version>``: always HTTP 200 with JSON
  ``{"verdict": "pass" | "fail" | "pending", "reason": ...}`` for Argo
  Rollouts' web metric (``successCondition: result.verdict == "pass"``,
  ``failureCondition: result.verdict == "fail"``); 404 for an unknown model or version.
* ``POST /flagger``: a Flagger webhook; the body's ``metadata`` names
  ``model`` and ``version``. HTTP 200 means pass; 412 fail or pending, with the
  reason in the body (Flagger retries until its threshold).
* ``GET /healthz``: 200.

A version passes while it is the champion, the canary, the shadow or the
standby (the champion before a blue-green switch, kept ready) and its artifact
still matches its checksum; it fails once it was rolled back or its artifact
changed; it is pending when registered but not deployed. The body's ``state``
holds the whole serving state (``shadow`` and ``standby`` when set). With a token
configured (``DRIFTLINE_CONTROLLER_TOKEN``), every request but ``/healthz``
needs ``Authorization: Bearer <token>``. Request bodies are limited to 64 KiB
and requests to ``RATE`` per second (a token bucket); more get 413 / 429.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents.controller.registry import Registry

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
RATE = 50.0  # requests per second, burst of the same size


def verdict(registry: Registry, model: str, version: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a version: 404 unknown, else 200 with the verdict."""
    if model not in registry.models() or registry.get(model, version) is None:
        return 404, {"verdict": "unknown", "reason": f"the registry has no {model}@{version}"}
    state, journal = registry.load(model)
    body: dict[str, Any] = {"model": model, "version": version,
                            "state": state.model_dump(mode="json")}
    problem = registry.verify(model, version)
    if problem:
        return 200, {**body, "verdict": "fail", "reason": problem}
    if version == state.champion:
        return 200, {**body, "verdict": "pass", "reason": f"{version} is the champion"}
    if version == state.canary:
        return 200, {**body, "verdict": "pass",
                     "reason": f"{version} is the canary at weight {state.canary_weight:g}; "
                               "not rolled back"}
    if version == state.shadow:
        return 200, {**body, "verdict": "pass", "reason": f"{version} is the shadow: it "
                     f"answers {state.champion}'s requests, its answers are not served"}
    if version == state.standby:
        return 200, {**body, "verdict": "pass", "reason": f"{version} is on standby since "
                     f"the switch to {state.champion}: a rollback returns all traffic to it"}
    if version in journal.get("rolled_back", []):
        return 200, {**body, "verdict": "fail", "reason": f"{version} was rolled back"}
    return 200, {**body, "verdict": "pending", "reason": f"{version} is registered but not "
                 "deployed"}


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


def serve(registry: Registry, *, port: int, token: str = "", host: str = "0.0.0.0",
          rate: float = RATE) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (``.shutdown()`` stops it)."""
    bucket = _Bucket(rate)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            if not bucket.take():
                self._send(429, {"error": f"more than {rate:g} requests per second"})
                return False
            if token and self.path != "/healthz":
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    self._send(401, {"error": "a bearer token is required"})
                    return False
            return True

        def do_GET(self) -> None:
            if not self._allowed():
                return
            parts = self.path.strip("/").split("/")
            if parts == ["healthz"]:
                self._send(200, {"ok": True})
            elif len(parts) == 3 and parts[0] == "verdict":
                self._send(*verdict(registry, parts[1], parts[2]))
            else:
                self._send(404, {"error": "GET /verdict/<model>/<version> or /healthz"})

        def do_POST(self) -> None:
            if not self._allowed():
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, {"error": f"request body over {MAX_BODY} bytes"})
                return
            if self.path.rstrip("/") != "/flagger":
                self._send(404, {"error": "POST /flagger"})
                return
            try:
                meta = json.loads(self.rfile.read(length) or b"{}").get("metadata") or {}
                model, version = str(meta["model"]), str(meta["version"])
            except (ValueError, KeyError, AttributeError):
                self._send(400, {"error": "the webhook metadata needs model and version"})
                return
            status, body = verdict(registry, model, version)
            self._send(200 if body["verdict"] == "pass" else 412 if status == 200 else status,
                       body)

        def log_message(self, fmt: str, *args: Any) -> None:  # never log the token
            logger.debug("verdict endpoint: %s", fmt % args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="verdict").start()
    return server
