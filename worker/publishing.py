"""After scoring: the heatmap overlay for the review page, the SR and SC for PACS.

One Celery task per triage batch, after the triage task has stored its rows and archived
the originals (:func:`publish_rows`): rendering the heatmap and building the SR/SC costs several
times the prediction itself, so it waits on its own queue behind any triage work, and a task
that started while the triage queues were empty gives its worker process back after the row
in hand as soon as triage work waits (the rest is sent again): it never holds up the reading
order. Results are derived data: a problem here never fails the triage,
whose row is the system of record, and is never silent either: each SR and SC is tracked in
``result_objects`` (:mod:`db.results`), ``pending`` once written to the outbox, ``failed`` with
a reason when it could not be made (a source without valid UIDs, an original gone). This task
never talks to the PACS: the delivery loop (:mod:`pacs.delivery`, wired in
:mod:`worker.deliverers`) sends pending objects in its own thread or process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session, sessionmaker

from db.models import DICOM_KINDS, ResultKind, Status, WorklistEntry, utcnow
from db.results import WrittenObject, record_unpublishable, record_written
from db.worklist import get_entries
from ingest.image import SourceImage, SourceKind
from ingest.readers import read_image
from model.content_check import ContentVerdict
from model.overlay import OVERLAY_MIN_SIDE, overlay_heatmap, result_caption, with_caption
from model.prediction import Label, Prediction, Priority
from pacs.not_analysed import device_source, may_be_the_devices, words_for
from pacs.outbox import write_not_analysed, write_results
from pacs.source import SourceHeaderError, read_source
from ris.exam import Finding
from ris.outbox import write_messages
from web.overlays import save_heatmap, save_overlay, save_thumbnail
from worker.destinations import ris_output
from worker.population import OUTSIDE_TRAINING_POPULATION
from worker.prometheus import get_metrics
from worker.scoring import Scorer
from worker.settings import Settings

log = logging.getLogger(__name__)
OUTSIDE = ContentVerdict.OUTSIDE_POPULATION


#: ``result_objects.reason`` values set here (the delivery loop adds its own).
SOURCE_UNREFERENCEABLE = "source_unreferenceable"  # no valid UIDs, or not readable as DICOM
NOT_WRITTEN = "not_written"  # building or writing the SR/SC failed
SOURCE_MISSING = "source_missing"  # the archived original never appeared


@dataclass(frozen=True)
class Unpublishable:
    """No SR/SC could be made for a row: the reason code and a sentence without PHI;
    ``kinds``: the objects the row would have had (a "not analysed" row: the SR alone)."""

    reason: str
    detail: str
    kinds: tuple[ResultKind, ...] = DICOM_KINDS


#: What publishing a row gives: the objects written (a message that could not be made is
#: an :class:`Unpublishable` among them), or why none could be made at all.
Published = list[WrittenObject | Unpublishable] | Unpublishable


def render_overlay(
    scorer: Scorer,
    image: SourceImage,
    prediction: Prediction,
    heatmap: np.ndarray | None = None,
    *,
    caption: bool = True,
) -> Image.Image:
    """The radiograph with the scorer's Grad-CAM heatmap (computed here unless given) and,
    for the review page, the result as a caption over its top; the SC gets it without (its
    result is burned in below the image, outside the anatomy)."""
    if heatmap is None:
        heatmap = scorer.heatmaps([image.pixels])[0]
    text = result_caption(prediction) if caption else None
    return overlay_heatmap(image.pixels, heatmap, caption=text)


def publish(
    settings: Settings,
    scorer: Scorer,
    entry_id: int,
    source: Path,
    image: SourceImage,
    prediction: Prediction,
    heatmap: np.ndarray | None = None,
) -> Published:
    """Store the overlay PNG; for a DICOM also write the SR and SC into the outbox (unless
    ``CXR_RESULTS_SCORED`` is off) and the RIS messages (when a RIS is configured and the
    exam has an accession number).

    Returns the objects written (none for JPEG/PNG: no study to attach them to), or why none
    could be made; never raises for a problem of this row.
    """
    try:
        if heatmap is None:
            heatmap = scorer.heatmaps([image.pixels])[0]
        plain = render_overlay(scorer, image, prediction, heatmap, caption=False)  # once
        overlay = with_caption(plain, result_caption(prediction))
        save_overlay(overlay, settings.overlays, image.metadata.file_sha256)
        # the heatmap itself too: the review page draws it as a layer of its own; and the
        # worklist's thumbnail of the plain film, made here where the film is decoded
        save_heatmap(heatmap, settings.overlays, image.metadata.file_sha256)
        save_thumbnail(image.pixels, settings.overlays, image.metadata.file_sha256)
        if image.metadata.kind is not SourceKind.DICOM:
            return []
        finding = Finding(prediction.model_version, prediction=prediction)
        if not settings.results_scored:
            return list(publish_to_ris(settings, entry_id, source, finding))
        written = write_results(source, prediction, plain, settings.outbox)
    except SourceHeaderError as error:  # its message names the tag, never a value
        log.warning("row %d: no SR/SC: %s", entry_id, error)
        return Unpublishable(SOURCE_UNREFERENCEABLE, str(error))
    except Exception as error:  # derived results must never fail the triage row
        log.exception("row %d: heatmap/SR/SC could not be written", entry_id)
        return Unpublishable(
            NOT_WRITTEN, f"{type(error).__name__} while writing; the worker log has row {entry_id}"
        )
    return [*written, *publish_to_ris(settings, entry_id, source, finding)]


def publish_to_ris(
    settings: Settings,
    entry_id: int,
    source: Path,
    finding: Finding,
    reference: Dataset | None = None,
) -> list[WrittenObject | Unpublishable]:
    """The RIS messages of a row (:mod:`ris.outbox`): none when no RIS is configured or the
    exam has no accession number; a message that could not be made is returned as an
    :class:`Unpublishable` of its kinds (tracked ``failed``). Never raises."""
    output = ris_output(settings)
    if not output.enabled:
        return []
    kinds = tuple(
        kind
        for kind, on in ((ResultKind.HL7, output.hl7), (ResultKind.FHIR, output.fhir))
        if on is not None
    )
    try:
        written = write_messages(output, reference or read_source(source), finding, utcnow())
    except SourceHeaderError as error:  # its message names the tag, never a value
        log.warning("row %d: no RIS message: %s", entry_id, error)
        return [Unpublishable(SOURCE_UNREFERENCEABLE, str(error), kinds)]
    except Exception as error:  # a message to the RIS must never fail the row
        log.exception("row %d: the RIS message could not be written", entry_id)
        detail = f"{type(error).__name__} while writing; the worker log has row {entry_id}"
        return [Unpublishable(NOT_WRITTEN, detail, kinds)]
    if not written:
        log.info("row %d: no accession number; nothing for the RIS", entry_id)
    return list(written)


def publish_not_analysed(
    settings: Settings, model_version: str, entry_id: int, source: Path, reason: str | None
) -> Published | None:
    """The "not analysed" SR of a row that was not scored, written from its filed original
    when the header makes it the device's to read (:mod:`pacs.not_analysed`); ``None`` when
    it is not (nothing is sent for it). Never raises for a problem of this row."""
    try:
        reference = device_source(source)
        if reference is None:
            log.info("row %d: not the device's to read; no 'not analysed' SR", entry_id)
            return None
        words = words_for(reason)
        report = write_not_analysed(reference, words, model_version, settings.outbox)
    except SourceHeaderError as error:  # its message names the tag, never a value
        log.warning("row %d: no 'not analysed' SR: %s", entry_id, error)
        return Unpublishable(SOURCE_UNREFERENCEABLE, str(error), (ResultKind.SR,))
    except Exception as error:  # derived results must never fail the row
        log.exception("row %d: the 'not analysed' SR could not be written", entry_id)
        detail = f"{type(error).__name__} while writing; the worker log has row {entry_id}"
        return Unpublishable(NOT_WRITTEN, detail, (ResultKind.SR,))
    finding = Finding(model_version, not_analysed=words)
    return [report, *publish_to_ris(settings, entry_id, source, finding, reference)]


@dataclass(frozen=True)
class Remaining:
    """What a results task left: rows whose archived original is not there yet (retried
    with backoff), and rows not started because triage work was waiting (sent again)."""

    pending: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)


def publish_rows(
    settings: Settings,
    sessions: sessionmaker[Session],
    scorer: Scorer,
    entry_ids: Sequence[int],
    triage_waiting: Callable[[], bool] = lambda: False,
    progress_rows: int = 1,
) -> Remaining:
    """The deferred results task's body, for the ``done`` rows of one triage batch.

    Each row is published from its archived original with the row's own prediction
    (probability, label, priority, threshold, model version), so the SR and SC say exactly
    what the worklist says. Rows that are not ``done`` (reprocessed, or not scored) publish
    nothing. The rows are read in one query before anything is published, so a database
    outage retries the task before any row was sent to the PACS.

    Results yield to scoring: ``triage_waiting`` is asked first and between rows, and while
    it says yes the rows not started are handed back as ``deferred`` (the task sends them
    again, behind the triage work): a task that finds triage work waiting publishes one row
    (so results still progress), one that sees it arrive stops after the row in hand. A
    row's overlay, SR and SC take from milliseconds to seconds; the Grad-CAM heatmaps of
    the rows taken are still one model call (the bulk of a small image's cost when batched).

    ``pending`` are the rows whose archived original is not there (yet): the archive move
    may still be pending, and the task retries those alone.

    ``progress_rows``: how many rows a task that finds triage work waiting still publishes
    (1). On Redis and the embedded broker a results task is only taken when no triage task
    waits, so finding one is a race, and one row keeps results moving. RabbitMQ pushes a
    results message to a worker after every triage batch (each queue has its own
    prefetch), so there it is 0: the whole batch is handed back (with a delay), and results
    wait for the triage work as they do on Redis (``bench/bench_queue_order.py``).
    """
    with sessions() as session:
        entries = get_entries(session, entry_ids)
        jobs = [
            (entry.id, Path(entry.archived_path), _prediction(entry))
            for entry in entries
            if entry.status is Status.DONE and entry.archived_path
        ]
        unscored = [
            (entry.id, Path(entry.archived_path), entry.reason)
            for entry in entries
            if _not_analysed_candidate(settings, entry) and entry.archived_path
        ]
    remaining = Remaining()
    outcomes: dict[int, Published] = {}
    for entry_id, source, reason in unscored:  # a header read and a small SR each
        if not source.is_file():
            remaining.pending.append(entry_id)
            continue
        written = publish_not_analysed(settings, scorer.version, entry_id, source, reason)
        if written is not None:
            outcomes[entry_id] = written
    ready: list[tuple[int, Path, Prediction]] = []
    for entry_id, source, prediction in jobs:
        if prediction is None:
            log.info("row %d: not a scored row; no results to publish", entry_id)
        elif not source.is_file():
            remaining.pending.append(entry_id)
        else:
            ready.append((entry_id, source, prediction))
    if len(ready) > progress_rows and triage_waiting():  # rows for progress, the rest back
        remaining.deferred.extend(entry_id for entry_id, _, _ in ready[progress_rows:])
        ready = ready[:progress_rows]
    readable: list[tuple[int, Path, SourceImage, Prediction]] = []
    for entry_id, source, prediction in ready:
        try:
            image = read_image(source, min_side=OVERLAY_MIN_SIDE)  # not all 5 Mpx
            readable.append((entry_id, source, image, prediction))
        except Exception as error:  # derived data: this row only, never retried forever
            log.exception("row %d: archived original unreadable; no heatmap/SR/SC", entry_id)
            outcomes[entry_id] = Unpublishable(
                SOURCE_UNREFERENCEABLE,
                f"the archived original no longer reads ({type(error).__name__})",
            )
    heatmaps = _heatmaps(scorer, [image.pixels for _, _, image, _ in readable])
    for index, ((entry_id, source, image, prediction), heatmap) in enumerate(
        zip(readable, heatmaps, strict=True)
    ):
        if index and triage_waiting():  # between rows: the rest is handed back
            remaining.deferred.extend(row[0] for row in readable[index:])
            break
        outcomes[entry_id] = publish(settings, scorer, entry_id, source, image, prediction, heatmap)
    if remaining.deferred:
        log.info("results of rows %s wait: triage work is queued", remaining.deferred)
    _record(sessions, outcomes)
    return remaining


def give_up(sessions: sessionmaker[Session], entry_ids: Sequence[int], why: str) -> None:
    """Rows whose results will never be made: their objects ``failed`` (DICOM rows only:
    a JPEG/PNG has none to miss; an unscored row has only its "not analysed" SR). Their
    worklist rows stand."""
    with sessions() as session:
        dicom = {
            e.id: (ResultKind.SR, ResultKind.SC) if e.status is Status.DONE else (ResultKind.SR,)
            for e in get_entries(session, entry_ids)
            if e.source_kind == SourceKind.DICOM
        }
    for entry_id in entry_ids:
        log.warning("row %d: no heatmap/SR/SC: %s", entry_id, why)
    _record(
        sessions,
        {entry_id: Unpublishable(SOURCE_MISSING, why, kinds) for entry_id, kinds in dicom.items()},
    )


def _not_analysed_candidate(settings: Settings, entry: WorklistEntry) -> bool:
    """A row that may get a "not analysed" SR: a DICOM not scored (rejected or failed) for
    a reason that does not rule it out by itself, with the setting on. Whether the header
    makes it the device's to read is decided from the file (:mod:`pacs.not_analysed`)."""
    return (
        settings.results_not_analysed
        and entry.source_kind == SourceKind.DICOM
        and entry.status in (Status.REJECTED, Status.FAILED)
        and may_be_the_devices(entry.reason)
    )


def _record(sessions: sessionmaker[Session], outcomes: dict[int, Published]) -> None:
    """Track every object written, and every row that got none, in one transaction."""
    metrics = get_metrics()
    now = utcnow()
    with sessions.begin() as session:
        for entry_id, outcome in outcomes.items():
            if isinstance(outcome, Unpublishable):
                record_unpublishable(
                    session, entry_id, outcome.reason, outcome.detail, now, outcome.kinds
                )
                metrics.observe_pacs("failed", len(outcome.kinds))
            elif outcome:
                written = [o for o in outcome if isinstance(o, WrittenObject)]
                record_written(session, entry_id, written, now)
                metrics.observe_pacs("written", len(written))
                for failed in (o for o in outcome if isinstance(o, Unpublishable)):
                    record_unpublishable(
                        session, entry_id, failed.reason, failed.detail, now, failed.kinds
                    )
                    metrics.observe_pacs("failed", len(failed.kinds))


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
        # the row's flag (content check or header age): the SR and SC state the caveat
        content=OUTSIDE if OUTSIDE_TRAINING_POPULATION in entry.flag_list else None,
    )
