"""Model registry backends of the deployment controller.

``open_registry(url)`` picks the backend from a URL:

* ``file:///var/lib/driftline/registry`` or a plain path: :class:`FileRegistry`,
  the embedded default (no service needed);
* ``mlflow+sqlite:///path/to/mlflow.db`` or ``mlflow+http://host:5000``:
  :class:`MlflowRegistry`, with everything after ``mlflow+`` as the MLflow
  tracking and registry URI (needs the ``mlflow`` extra).

Importing this package does not import MLflow; opening an MLflow registry does.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from agents.controller.registry.base import (
    MAX_DOCUMENT_BYTES,
    ModelVersion,
    Registry,
    RegistryError,
    hash_artifact,
)
from agents.controller.registry.file import FileRegistry
from agents.controller.registry.mlflow_backend import MlflowRegistry

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "FileRegistry",
    "MlflowRegistry",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "hash_artifact",
    "open_registry",
]

MLFLOW_PREFIX = "mlflow+"


def open_registry(url: str) -> Registry:
    """The registry at ``url`` (see the package docstring for the forms).

    >>> open_registry("s3://bucket/registry")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agents.controller.registry.base.RegistryError: Registry URL 's3://bucket/registry' is not ...
    """
    if url.startswith(MLFLOW_PREFIX):
        tracking_uri = url[len(MLFLOW_PREFIX) :]
        if "://" not in tracking_uri:
            raise RegistryError(
                f"Registry URL {url!r} lacks an MLflow tracking URI after 'mlflow+': write e.g. "
                f"mlflow+sqlite:///var/lib/driftline/mlflow.db or mlflow+http://mlflow:5000."
            )
        return MlflowRegistry(tracking_uri)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise RegistryError(
                f"Registry URL {url!r} names a remote host: file URLs must be "
                f"local, like file:///var/lib/driftline/registry."
            )
        return FileRegistry(Path(url2pathname(parsed.path)))
    if "://" in url:
        raise RegistryError(
            f"Registry URL {url!r} is not supported: use a directory (file:///path or a plain "
            f"path), mlflow+sqlite:///path/to/mlflow.db or mlflow+http://host:port."
        )
    return FileRegistry(Path(url))
