"""After scoring: the heatmap overlay for the review page, the SR and SC for PACS.

One Celery task per triage batch, after the triage task has stored its rows and archived
the originals (:func:`publish_rows`): rendering the heatmap and building the SR/SC costs several
times the prediction itself, so it waits on its own queue behind any triage work and never
holds up the reading order. Results are derived data: a problem here is logged by row id, counted
(``cxr_triage_pacs_results_total{outcome="failed"}``) and never fails the triage, whose row
is the system of record. A PACS that is down leaves the files in the outbox;
``cxr-triage pacs-send`` sends them again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from db.worklist import get_entries
from ingest.image import SourceImage, SourceKind
from ingest.readers import read_image
from model.overlay import overlay_heatmap, result_caption
from model.prediction import Label, Prediction, Priority
from pacs.outbox import write_results
from pacs.store import PacsNode, StoreError, StorePriority, send
from web.overlays import save_overlay
from worker.metrics import get_metrics
from worker.scoring import Scorer
from worker.settings import Settings

log = logging.getLogger(__name__)


def pacs_node(settings: Settings) -> PacsNode | None:
    if not settings.pacs_host:
        return None
    return PacsNode(
        host=settings.pacs_host,
        port=settings.pacs_port,
        called_ae_title=settings.pacs_ae_title,
        calling_ae_title=settings.pacs_calling_ae_title,
        timeout_s=settings.pacs_timeout_s,
    )


def render_overlay(
    scorer: Scorer, image: SourceImage, prediction: Prediction, heatmap: np.ndarray | None = None
) -> Image.Image:
    """The radiograph with the scorer's Grad-CAM heatmap (computed here unless given) and the
    result as a caption."""
    if heatmap is None:
        heatmap = scorer.heatmaps([image.pixels])[0]
    return overlay_heatmap(image.pixels, heatmap, caption=result_caption(prediction))


def publish(
    settings: Settings,
    scorer: Scorer,
    entry_id: int,
    source: Path,
    image: SourceImage,
    prediction: Prediction,
    heatmap: np.ndarray | None = None,
) -> list[Path]:
    """Store the overlay PNG; for a DICOM also write SR + SC and C-STORE them if configured.

    Returns the DICOM files written (none for JPEG/PNG, or after a problem).
    """
    metrics = get_metrics()
    try:
        overlay = render_overlay(scorer, image, prediction, heatmap)
        save_overlay(overlay, settings.overlay_dir, image.metadata.file_sha256)
        if image.metadata.kind is not SourceKind.DICOM:
            return []  # no study to attach DICOM results to
        written = write_results(source, prediction, overlay, settings.outbox_dir)
    except Exception:  # derived results must never fail the triage row
        log.exception("row %d: heatmap/SR/SC could not be written", entry_id)
        metrics.observe_pacs("failed")
        return []
    metrics.observe_pacs("written")
    node = pacs_node(settings)
    if node is not None:
        urgent = prediction.priority.rank == 0
        try:
            send(written, node, StorePriority.HIGH if urgent else StorePriority.MEDIUM)
            metrics.observe_pacs("stored")
        except (StoreError, OSError) as error:
            log.warning("row %d: results stay in the outbox: %s", entry_id, error)
            metrics.observe_pacs("failed")
    return written


def publish_rows(
    settings: Settings, sessions: sessionmaker[Session], scorer: Scorer, entry_ids: Sequence[int]
) -> list[int]:
    """The deferred results task's body, for the ``done`` rows of one triage batch.

    Each row is published from its archived original with the row's own prediction
    (probability, label, priority, threshold, model version), so the SR and SC say exactly
    what the worklist says. Rows that are not ``done`` (reprocessed, or not scored) publish
    nothing. The rows are read in one query before anything is published, so a database
    outage retries the task before any row was sent to the PACS.

    Returns the ids whose archived original is not there (yet): the archive move may still
    be pending, and the task retries those alone.
    """
    with sessions() as session:
        jobs = [
            (entry.id, Path(entry.archived_path), _prediction(entry))
            for entry in get_entries(session, entry_ids)
            if entry.status is Status.DONE and entry.archived_path
        ]
    pending: list[int] = []
    readable: list[tuple[int, Path, SourceImage, Prediction]] = []
    for entry_id, source, prediction in jobs:
        if prediction is None:
            log.info("row %d: not a scored row; no results to publish", entry_id)
        elif not source.is_file():
            pending.append(entry_id)
        else:
            try:
                readable.append((entry_id, source, read_image(source), prediction))
            except Exception:  # derived data: this row only, never retried forever
                log.exception("row %d: archived original unreadable; no heatmap/SR/SC", entry_id)
                get_metrics().observe_pacs("failed")
    heatmaps = _heatmaps(scorer, [image.pixels for _, _, image, _ in readable])
    for (entry_id, source, image, prediction), heatmap in zip(readable, heatmaps, strict=True):
        publish(settings, scorer, entry_id, source, image, prediction, heatmap)
    return pending


def give_up(entry_ids: Sequence[int], why: str) -> None:
    """Log and count rows whose results will not be written; their worklist rows stand."""
    for entry_id in entry_ids:
        log.warning("row %d: no heatmap/SR/SC: %s", entry_id, why)
        get_metrics().observe_pacs("failed")


def _heatmaps(scorer: Scorer, images: list[np.ndarray]) -> list[np.ndarray | None]:
    """One Grad-CAM call for the batch; ``None`` (each computed alone) if it fails."""
    if not images:
        return []
    try:
        maps: list[np.ndarray | None] = list(scorer.heatmaps(images))
        if len(maps) != len(images):
            raise ValueError(f"{len(maps)} heatmaps for {len(images)} images")
        return maps
    except Exception:  # an image that breaks the batch must not cost its batch-mates
        log.exception("batch heatmap failed; computing them one by one")
        return [None] * len(images)


def _prediction(entry: WorklistEntry) -> Prediction | None:
    if entry.label is None or entry.priority is None:
        return None
    return Prediction(
        probability=float(entry.probability or 0.0),
        label=Label(entry.label),
        priority=Priority(entry.priority),
        threshold=float(entry.threshold or 0.0),
        model_version=entry.model_version or "",
    )
