# cxr-triage: one image for the worker, the watcher, Flower and the migration job.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY model model
COPY db db
COPY worker worker
RUN pip install . && useradd --create-home --uid 10001 cxr \
    && mkdir -p /data/inbox /data/archive /data/quarantine /data/state \
    && chown -R cxr /data
USER cxr
CMD ["cxr-triage", "--help"]
