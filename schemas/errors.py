"""The root exception of driftline and the schema-level subclasses."""

from __future__ import annotations

from pydantic import ValidationError


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""


class SchemaError(DriftlineError):
    """A value does not fit driftline's public contract."""


def explain(error: ValidationError, *, where_empty: str, limit: int | None = None) -> str:
    """``field.path: reason; ...`` for each problem (the first ``limit``, then a count).

    ``where_empty`` names the whole value when a problem has no field path.
    """
    items = error.errors()
    shown = items if limit is None else items[:limit]
    parts = [f"{'.'.join(str(p) for p in i['loc']) or where_empty}: {i['msg']}" for i in shown]
    if len(items) > len(shown):
        parts.append(f"and {len(items) - len(shown)} more")
    return "; ".join(parts)
