"""The root exception of driftline and the schema-level subclasses."""

from __future__ import annotations

from typing import Any

import yaml
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


def yaml_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest node on ``loc`` that the document has."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def explain_yaml(problems: list[Any], root: yaml.Node | None, *, source: str) -> str:
    """``source:line: field.path: reason; ...``: how a YAML file's problems are reported.

    ``problems`` are pydantic's ``ValidationError.errors()`` (or dicts with the
    same ``loc`` and ``msg``); the line is an item's ``line`` if it has one, else
    that of the deepest node on ``loc``.
    """
    parts = []
    for item in problems:
        loc = tuple(item["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = item.get("line") or yaml_line(root, loc)
        parts.append(f"{f'{source}:{line}' if line else source}: {field}: {item['msg']}")
    return "; ".join(parts)


def load_yaml_mapping(
    text: str, *, source: str, error: type[DriftlineError], what: str
) -> tuple[dict[Any, Any], yaml.Node | None]:
    """A YAML document that must be a mapping, and its node tree (for ``yaml_line``);
    ``error`` says ``source: ...`` when it is not valid YAML or not a mapping of ``what``.

    >>> load_yaml_mapping("a: 1", source="f.yaml", error=DriftlineError, what="x")[0]
    {'a': 1}
    >>> load_yaml_mapping("- 1", source="f.yaml", error=DriftlineError, what="sections")
    Traceback (most recent call last):
    ...
    schemas.errors.DriftlineError: f.yaml: the top level must be a mapping of sections
    """
    try:
        data = yaml.safe_load(text) or {}
        root = yaml.compose(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{source}: the top level must be a mapping of {what}")
    return data, root
