# The driftline worker image used by docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY agents ./agents
RUN pip install --no-cache-dir ".[rocksdb]" && useradd --create-home driftline
USER driftline
ENTRYPOINT ["driftline"]
CMD ["worker"]
