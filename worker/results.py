"""After scoring: the heatmap overlay for the review page, the SR and SC for PACS.

One Celery task per scored row, after the triage task has stored the row and archived the
original (:func:`publish_row`): rendering the heatmap and building the SR/SC costs several
times the prediction itself, so it waits on its own queue behind any triage work and never
holds up the reading order. Results are derived data: a problem here is logged by row id, counted
(``cxr_triage_pacs_results_total{outcome="failed"}``) and never fails the triage, whose row
is the system of record. A PACS that is down leaves the files in the outbox;
``cxr-triage pacs-send`` sends them again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from db.models import Status
from db.worklist import get_entry
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


def render_overlay(scorer: Scorer, image: SourceImage, prediction: Prediction) -> Image.Image:
    """The radiograph with the scorer's Grad-CAM heatmap and the result as a caption."""
    caption = result_caption(prediction)
    return overlay_heatmap(image.pixels, scorer.heatmap(image.pixels), caption=caption)


def publish(
    settings: Settings,
    scorer: Scorer,
    entry_id: int,
    source: Path,
    image: SourceImage,
    prediction: Prediction,
) -> list[Path]:
    """Store the overlay PNG; for a DICOM also write SR + SC and C-STORE them if configured.

    Returns the DICOM files written (none for JPEG/PNG, or after a problem).
    """
    metrics = get_metrics()
    try:
        overlay = render_overlay(scorer, image, prediction)
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


def publish_row(entry_id: int) -> list[Path]:
    """The deferred results task's body: publish a ``done`` row from its archived original.

    The prediction is the row's own (probability, label, priority, threshold, model
    version), so the SR and SC say exactly what the worklist says. A row that is not
    ``done`` (reprocessed, or not scored) publishes nothing. A missing archived file raises
    ``FileNotFoundError``: the archive move may still be pending, and the task retries.
    """
    from worker.resources import get_scorer, get_session_factory
    from worker.settings import get_settings

    with get_session_factory()() as session:
        entry = get_entry(session, entry_id)
        if (
            entry is None
            or entry.status is not Status.DONE
            or entry.archived_path is None
            or entry.label is None
            or entry.priority is None
        ):
            log.info("row %d: not a scored row; no results to publish", entry_id)
            return []
        source = Path(entry.archived_path)
        prediction = Prediction(
            probability=float(entry.probability or 0.0),
            label=Label(entry.label),
            priority=Priority(entry.priority),
            threshold=float(entry.threshold or 0.0),
            model_version=entry.model_version or "",
        )
    if not source.is_file():
        raise FileNotFoundError(f"row {entry_id}: archived original not there (yet)")
    return publish(get_settings(), get_scorer(), entry_id, source, read_image(source), prediction)
