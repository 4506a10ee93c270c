# cxr-triage: one image for the worker, the watcher, Flower, the review page and migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, from pyproject.toml and the pinned constraints only, so an edit to the
# sources reuses this layer instead of reinstalling TensorFlow.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

COPY README.md ./
COPY ingest ingest
COPY model model
COPY db db
COPY worker worker
COPY pacs pacs
COPY web web
COPY ris ris
RUN pip install --no-deps . && useradd --create-home --uid 10001 cxr \
    && mkdir -p /data/inbox /data/archive /data/quarantine /data/state /data/outbox /data/overlays \
    && chown -R cxr /data
USER cxr
CMD ["cxr-triage", "--help"]
