"""The root exception of driftline and the schema-level subclasses."""

from __future__ import annotations


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""


class SchemaError(DriftlineError):
    """A value does not fit driftline's public contract."""
