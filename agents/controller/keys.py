"""The command signing key: from the environment, a file, or created once.

Resolution order: ``DRIFTLINE_COMMAND_KEY`` (the key itself), then
``DRIFTLINE_COMMAND_KEY_FILE`` (a file holding it), then
``<datadir>/command.key``, created with 32 random bytes (hex, mode 0600) the
first time a worker or an operator's CLI needs it. The policy agent signs with
it, the controller verifies with it, and ``driftline command`` signs operators'
commands with it; production sets one of the two variables from a secret
store. The key never appears in logs or reprs.

With an issuers file (``DRIFTLINE_ISSUERS``, see ``agents.controller.issuers``) every
issuer signs with its own key, read by ``read_key_file`` the same way.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from agents.config import Settings
from schemas.errors import DriftlineError

MIN_KEY_CHARS = 16


class SigningKeyError(DriftlineError):
    """The signing key cannot be read."""


def default_key_path(settings: Settings) -> Path:
    return Path(os.path.expanduser(settings.datadir)) / "command.key"


def command_key(settings: Settings, *, create: bool = True) -> bytes:
    """The signing key's bytes (whitespace around a file's content is ignored)."""
    if settings.command_key:
        return settings.command_key.strip().encode()
    path = Path(os.path.expanduser(settings.command_key_file)) if settings.command_key_file \
        else default_key_path(settings)
    if not path.exists() and create and not settings.command_key_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary name and linked into place, so a worker and an
        # operator's CLI starting together end up with one key, never half of one.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another process created the key first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return read_key_file(path, what="the command signing key",
                         hint="set DRIFTLINE_COMMAND_KEY_FILE to a readable file or "
                         "DRIFTLINE_COMMAND_KEY to the key")


def key_bytes(text: str, *, what: str) -> bytes:
    """A key's bytes (surrounding whitespace ignored); at least ``MIN_KEY_CHARS`` characters."""
    key = text.strip()
    if len(key) < MIN_KEY_CHARS:
        raise SigningKeyError(f"{what} is shorter than {MIN_KEY_CHARS} characters; use at least "
                              "32 random bytes (e.g. `openssl rand -hex 32`)")
    return key.encode()


def read_key_file(path: Path, *, what: str, hint: str = "") -> bytes:
    """The key in ``path``; SigningKeyError naming ``what`` and the file if unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} file {path}: {exc.strerror}"
                              + (f"; {hint}" if hint else "")) from exc
    return key_bytes(text, what=f"{what} in {path}")
