# cxr-triage: one image for the worker, the watcher, Flower, the review page and migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY model model
COPY db db
COPY worker worker
COPY pacs pacs
COPY web web
RUN pip install . && useradd --create-home --uid 10001 cxr \
    && mkdir -p /data/inbox /data/archive /data/quarantine /data/state /data/outbox /data/overlays \
    && chown -R cxr /data
USER cxr
CMD ["cxr-triage", "--help"]
