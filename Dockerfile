# The driftline worker image used by docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY agents ./agents
# rocksdb: the persistent table store (DRIFTLINE_STORE=rocksdb://); scikit-learn: the
# retrain hook scripts/retrain_example.py. The state directory is created owned by the
# worker's user, so the named volume mounted there (compose) starts writable by it.
RUN pip install --no-cache-dir ".[rocksdb]" "scikit-learn>=1.4,<2" \
    && useradd --create-home --uid 10001 driftline \
    && mkdir -p /var/lib/driftline \
    && chown driftline:driftline /var/lib/driftline
# The retrain hook and the simulator's setup, run from /app (hook_command: "python
# scripts/retrain_example.py").
COPY scripts/retrain_example.py scripts/compose_simulator_setup.py ./scripts/
USER driftline
ENV DRIFTLINE_DATADIR=/var/lib/driftline DRIFTLINE_REGISTRY=/var/lib/driftline/registry
ENTRYPOINT ["driftline"]
CMD ["worker"]
