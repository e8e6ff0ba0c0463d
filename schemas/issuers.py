"""The issuers file: who may sign controller commands, for which models, of which types.

One YAML mapping, issuer name -> rule (``deploy/issuers.example.yaml``)::

    "operator:alice":
      key_file: /run/secrets/alice.key   # or key_env: ALICE_COMMAND_KEY
      models: ["fraud-*"]                # fnmatch patterns; default ["*"]
      commands: [rollback, approve]      # default: every command type

Decisions:

* An issuer is the ``issued_by`` of a Command: ``policy`` (the worker's policy
  agent), ``retrain-hook`` (the retrain example), ``operator:<user>`` (the
  CLI), or any other name automation signs with.
* Each issuer has its own HMAC key, so a verified signature authenticates
  ``issued_by``: one issuer's key never verifies another's name. Two issuers
  with the same key are refused at start for that reason (``agents.controller.issuers``
  compares the keys themselves).
* ``key_file`` or ``key_env``, exactly one: the key never sits in this file.
  A relative ``key_file`` is relative to the issuers file's directory.
* Model patterns are matched case-sensitively (``fnmatch.fnmatchcase``), as
  model names are.
* A bad file is refused with ``file:line: issuer.field: reason``, like the
  policy file (``schemas.errors.explain_yaml``).

Reading the keys is the agents' job (``agents.controller.issuers``); this module only
validates the document and answers "may this issuer do this".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.commands import CommandType
from schemas.errors import DriftlineError, explain_yaml, load_yaml_mapping, yaml_line

# policy, retrain-hook, operator:alice, ci:deployer@prod; no spaces, one optional colon
ISSUER_NAME = re.compile(r"^[A-Za-z0-9][\w.@-]*(:[\w.@-]+)?$")


class IssuersError(DriftlineError):
    """The issuers file (or an issuer's key) cannot be used; the message says where and why."""


class Issuer(BaseModel):
    """What one issuer may do, and where its signing key is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_file: str | None = Field(default=None, description="a file holding the issuer's key")
    key_env: str | None = Field(
        default=None, description="the environment variable holding the issuer's key"
    )
    models: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1,
        description="fnmatch patterns of the models the issuer may touch",
    )
    commands: list[CommandType] | None = Field(
        default=None, min_length=1,
        description="command types the issuer may issue (default: all)",
    )

    @model_validator(mode="after")
    def _one_key(self) -> Issuer:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_file and key_env")
        if self.key_env is not None and not self.key_env.strip():
            raise ValueError("key_env must name an environment variable")
        return self

    def refusal(self, name: str, type_: str, model: str) -> str | None:
        """Why ``name`` may not issue ``type_`` for ``model``, or None if it may."""
        if not any(fnmatchcase(model, pattern) for pattern in self.models):
            return (f"issuer {name} may not touch model {model!r} "
                    f"(its models in the issuers file: {', '.join(self.models)})")
        if self.commands is not None and type_ not in self.commands:
            return (f"issuer {name} may not issue {type_} commands "
                    f"(its commands in the issuers file: {', '.join(self.commands)})")
        return None


@dataclass(frozen=True)
class IssuersFile:
    """The validated file: its issuers, and where each one's key is declared."""

    issuers: dict[str, Issuer]
    source: str = "issuers"
    lines: dict[str, int] = field(default_factory=dict)  # issuer -> line of its key field

    def where(self, name: str) -> str:
        """``source:line: name.key_file`` (or ``key_env``), for a key's error message."""
        issuer = self.issuers[name]
        key = "key_file" if issuer.key_file is not None else "key_env"
        line = self.lines.get(name)
        return f"{self.source}:{line}: {name}.{key}" if line else f"{self.source}: {name}.{key}"

    def key_path(self, name: str) -> Path | None:
        """The issuer's key file, relative paths taken from the issuers file's directory."""
        raw = self.issuers[name].key_file
        if raw is None:
            return None
        path = Path(raw).expanduser()
        return path if path.is_absolute() else Path(self.source).expanduser().parent / path


def parse_issuers(text: str, *, source: str = "issuers") -> IssuersFile:
    """Validate a YAML issuers document; raise IssuersError naming line, field and reason.

    >>> parse_issuers('"operator:ana": {key_env: K, commands: [rolback]}', source="i.yaml")
    Traceback (most recent call last):
    ...
    schemas.issuers.IssuersError: i.yaml:1: operator:ana.commands.0: Input should be ...
    """
    data, root = load_yaml_mapping(text, source=source, error=IssuersError,
                                   what="issuer names to rules")
    problems: list[dict[str, Any]] = []
    issuers: dict[str, Issuer] = {}
    key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in getattr(root, "value", [])}
    for name, rule in data.items():
        if not isinstance(name, str) or not ISSUER_NAME.match(name):
            problems.append({"loc": (str(name),), "line": key_lines.get(str(name)),
                             "msg": "not an issuer name (policy, retrain-hook, "
                             "operator:<user>; no spaces)"})
            continue
        try:
            issuers[name] = Issuer.model_validate(rule if rule is not None else {})
        except ValidationError as exc:
            problems += [{**item, "loc": (name, *item["loc"])} for item in exc.errors()]
    if problems:
        raise IssuersError(explain_yaml(problems, root, source=source))
    lines = {}
    for name, issuer in issuers.items():
        key = "key_file" if issuer.key_file is not None else "key_env"
        line = yaml_line(root, (name, key))
        if line:
            lines[name] = line
    return IssuersFile(issuers, source, lines)


def load_issuers(path: str) -> IssuersFile:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise IssuersError(f"cannot read the issuers file {path}: {exc.strerror}") from exc
    return parse_issuers(text, source=path)
