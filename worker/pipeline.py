"""``triage``: read -> eligibility -> model -> priority -> worklist row -> archive/quarantine.

Plain Python, no Celery: :class:`Pipeline` takes its collaborators (settings, a session
factory, the scorer, what to send and which exceptions to let through) as arguments;
:mod:`worker.tasks` wires them for a worker process, and the tests drive it directly.

Order of effects, chosen so a crash anywhere is recoverable:

1. claim the task's rows (its admitted batch; topped up to ``batch_size`` with other queued
   rows) with the task's token and a lease that the worker node renews
   (:mod:`worker.leases`), and rename each claimed file into the private staging folder
   (:mod:`ingest.staging`): from here on the file read, scored and filed is the inode
   received, whatever a sender writes under its old name;
2. read and score outside any transaction (a row claimed more than ``max_attempts`` times,
   a file that keeps killing its worker, is failed as ``too_many_attempts`` unread);
3. store every outcome and its destination path in one transaction;
4. only then move the originals. A crash before 4 leaves the file in staging with a final
   row; the lease keeper's next look at the staging folder files it (:mod:`worker.leases`);
5. hand the ``done`` rows to ``on_scored`` (the worker sends one results task for them: heatmap
   overlay, SR and SC, on a queue consumed after all triage work).

Bad input (an :class:`ingest.IngestError`) becomes a ``rejected`` row and is never retried; an
unexpected error on one file becomes ``failed`` for that file only. Database, broker and model
outages propagate, and Celery retries the task with backoff.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, utcnow
from db.worklist import (
    Final,
    claim_autocommit,
    get_entry,
    record_final,
    release,
)
from db.worklist import (
    Scored as ScoredRow,
)
from ingest.errors import ContentChangedError, IngestError, Reason
from ingest.filing import (
    Sidecar,
    archive_destination,
    move_into_place,
    quarantine_destination,
    quarantine_file,
)
from ingest.hashing import file_sha256
from ingest.image import SourceImage
from ingest.loading import load_scorable
from ingest.staging import Fingerprint, stage, staged_path, unstage
from model.prediction import Prediction
from worker import drift
from worker.metrics import get_metrics
from worker.outcomes import Failed, Outcome, Rejected, Scored, Vanished
from worker.population import content_rejection, population_flags
from worker.scoring import Scorer
from worker.settings import Settings

log = logging.getLogger(__name__)

#: Why a row is :class:`~worker.outcomes.Vanished`: its bytes left, or were replaced.
LEFT = "the file left the inbox before it was scored"
REPLACED = "the file was replaced after it was received; the new content is its own row"
REWRITTEN = "the file was rewritten while it was scored; the new content is its own row"


def holder_id() -> str:
    """Who holds a claim, for people reading the worklist: ``host:pid`` of the process."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


@dataclass(frozen=True)
class Job:
    """A claimed row, detached from its session."""

    entry_id: int
    source: Path
    source_name: str
    file_sha256: str
    received_at: datetime
    staged: Path  # where the claimed file is read and filed from (ingest.staging)
    attempts: int = 1  # claims of the row, this one included


@dataclass(frozen=True)
class _Loaded:
    """A row's image, read and checked, waiting for the model."""

    image: SourceImage
    flags: tuple[str, ...]  # eligibility flags
    fingerprint: Fingerprint  # the staged file as read: a later change is a rewrite


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    sessions: sessionmaker[Session]
    scorer: Callable[[], Scorer]  # called lazily: a batch of rejections never loads the model
    on_scored: Callable[[list[int]], None] = lambda entry_ids: None  # after rows are filed
    #: Exceptions that must reach the task runner even from per-file error handling (a
    #: time limit): the task is then retried instead of its rows being stored as failed.
    reraise: tuple[type[BaseException], ...] = ()
    #: Called after each task: the drift watch logs its warnings (rate-limited) from here.
    after_batch: Callable[[], object] = lambda: None
    #: Shorter side the readers keep (``ingest.reduced``; 2x the model input), None = full.
    decode_min_side: int | None = None
    #: Sends rows back as one task each (a suspect batch split: see :meth:`_isolate`).
    send_alone: Callable[[Sequence[int]], None] = lambda entry_ids: None

    def triage(
        self, entry_ids: int | Sequence[int], token: str, retry: bool = False
    ) -> list[Outcome]:
        """Process the task ``token``'s rows (and batch-mates); see the module doc.

        ``retry``: a Celery retry of the same task (a transient error), which does not count
        as another attempt at its rows.
        """
        started = time.monotonic()
        ids = [entry_ids] if isinstance(entry_ids, int) else list(entry_ids)
        jobs = self._isolate(self._claim(ids, token, count_attempt=not retry), token)
        if not jobs:
            log.info("rows %s: nothing to do (finished or held by another task)", ids)
            return []
        outcomes = self._outcomes(jobs)
        recorded = self._record(outcomes, token)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome.entry_id in recorded:  # a row reclaimed meanwhile is the other task's
                self._file_or_leave(job, outcome)
        self.on_scored(
            [o.entry_id for o in outcomes if isinstance(o, Scored) and o.entry_id in recorded]
        )
        get_metrics().observe_batch(
            outcomes, [job.received_at for job in jobs], time.monotonic() - started
        )
        log.info(
            "task for rows %s: %d row(s) in %.2f s (%s)",
            ids,
            len(jobs),
            time.monotonic() - started,
            ", ".join(f"{o.entry_id}={o.status.value}" for o in outcomes),
        )
        self.after_batch()
        return outcomes

    def _isolate(self, jobs: list[Job], token: str) -> list[Job]:
        """A batch tried before (its worker died: a file may kill it) keeps one row and sends
        every other row back as a task of its own, so a poison file reaches the attempt cap
        alone instead of taking its batch-mates down with it."""
        if len(jobs) < 2 or all(job.attempts <= 1 for job in jobs):
            return jobs
        keep, others = jobs[0], [job.entry_id for job in jobs[1:]]
        with self.sessions.begin() as session:
            released = release(session, others, token)
        self.send_alone(released)
        log.warning(
            "rows %s were tried before: row %d is tried alone, rows %s sent back one by one",
            [job.entry_id for job in jobs],
            keep.entry_id,
            released,
        )
        return [keep, *(job for job in jobs[1:] if job.entry_id not in released)]

    def _claim(self, entry_ids: list[int], token: str, count_attempt: bool = True) -> list[Job]:
        stale_before = utcnow() - timedelta(seconds=self.settings.requeue_after_s)
        held = claim_autocommit(
            self.sessions,
            entry_ids,
            token,
            batch_size=self.settings.batch_size,
            stale_before=stale_before,
            claimed_by=holder_id(),
            lease_s=self.settings.lease_s,
            count_attempt=count_attempt,
        )
        inbox = self.settings.inbox_dir
        return [
            Job(
                e.id,
                Path(e.source_path),
                e.source_name,
                e.file_sha256,
                e.received_at,
                staged_path(inbox, e.id),
                e.attempts,
            )
            for e in held
        ]

    def _outcomes(self, jobs: list[Job]) -> list[Outcome]:
        """Read every row's file, score those that read in one model call, judge each."""
        read = {job.entry_id: self._read(job) for job in jobs}
        loaded = {i: r.image for i, r in read.items() if isinstance(r, _Loaded)}
        predictions = self._predict(loaded) if loaded else {}
        outcomes: list[Outcome] = []
        for job in jobs:
            result = read[job.entry_id]
            if isinstance(result, _Loaded):
                outcomes.append(self._judge(job, result, predictions.get(job.entry_id)))
            else:
                outcomes.append(result)
        return outcomes

    def _read(self, job: Job) -> _Loaded | Outcome:
        """Stage the row's file and read it; or what became of a file that cannot be scored."""
        try:
            stage(job.source, job.staged)  # missing: FileNotFoundError
            if job.attempts > self.settings.max_attempts:  # never read a poison file again
                return self._too_many_attempts(job)
            fingerprint = Fingerprint.of(job.staged)
            if not stat.S_ISREG(job.staged.lstat().st_mode):
                raise IngestError(Reason.UNSAFE_PATH, "The path is no longer a regular file.")
            image, eligibility = load_scorable(
                job.staged, expected_sha256=job.file_sha256, min_side=self.decode_min_side
            )
        except ContentChangedError:
            unstage(job.staged, job.source)  # the new bytes are a new arrival
            return Vanished(job.entry_id, REPLACED)
        except IngestError as error:
            # An IngestError without a message still names its reason: never a bare ValueError.
            return self._rejected(job, error.reason, str(error) or error.reason.value)
        except FileNotFoundError:
            return Vanished(job.entry_id, LEFT)
        except OSError:
            raise  # a share or disk problem: retry the task, the file is not at fault
        except Exception as error:  # a reader bug on a hostile file must not stop the batch
            if isinstance(error, self.reraise):
                raise
            log.exception("row %d: unexpected error while reading", job.entry_id)
            return self._failed(
                job, Reason.PROCESSING_ERROR, f"reading failed: {type(error).__name__}"
            )
        return _Loaded(image, eligibility.flags, fingerprint)

    def _judge(self, job: Job, loaded: _Loaded, prediction: Prediction | None) -> Outcome:
        """The outcome of a row whose file was read: scored, or why not."""
        if prediction is None:
            return self._failed(job, Reason.PROCESSING_ERROR, "the model could not score it")
        if self._rewritten(job, loaded.fingerprint):
            unstage(job.staged, job.source)
            return Vanished(job.entry_id, REWRITTEN)
        rejection = content_rejection(prediction)
        if rejection is not None:  # the prediction rides along for the drift watch only
            reason = Reason.NOT_CHEST_RADIOGRAPH
            return Rejected(
                job.entry_id, reason, rejection, self._quarantine(job, reason), prediction
            )
        destination = archive_destination(
            self.settings.archive_dir, job.received_at, job.file_sha256, job.source_name
        )
        return Scored(
            job.entry_id, destination, prediction, population_flags(prediction, loaded.flags)
        )

    def _predict(self, loaded: dict[int, SourceImage]) -> dict[int, Prediction]:
        """One model call for the batch; if it fails, one call per image to isolate the cause."""
        scorer = self.scorer()
        ids = list(loaded)
        try:
            predictions = scorer.predict([loaded[i].pixels for i in ids])
            return dict(zip(ids, predictions, strict=True))
        except Exception as error:  # an image that breaks the model must not fail its batch-mates
            if isinstance(error, self.reraise):
                raise
            log.exception("batch prediction failed; scoring the %d images one by one", len(ids))
        result: dict[int, Prediction] = {}
        for entry_id in ids:
            try:
                result[entry_id] = scorer.predict([loaded[entry_id].pixels])[0]
            except Exception as error:  # recorded as failed for this row only
                if isinstance(error, self.reraise):
                    raise
                log.exception("row %d: prediction failed", entry_id)
        return result

    def _rewritten(self, job: Job, before: Fingerprint) -> bool:
        """Did a writer holding the file open change it after it was staged? A changed
        inode, size or mtime is re-checked against the content hash the row was admitted with."""
        if Fingerprint.of(job.staged) == before:
            return False
        return file_sha256(job.staged) != job.file_sha256

    def _too_many_attempts(self, job: Job) -> Failed:
        log.warning(
            "row %d: claimed %d times without finishing; failed unread",
            job.entry_id,
            job.attempts - 1,
        )
        return self._failed(
            job,
            Reason.TOO_MANY_ATTEMPTS,
            f"{job.attempts - 1} attempts ended without a result (a worker killed while "
            "processing it, out of memory or time); not tried again",
        )

    def _rejected(self, job: Job, reason: Reason, detail: str) -> Rejected:
        return Rejected(job.entry_id, reason, detail, self._quarantine(job, reason))

    def _failed(self, job: Job, reason: Reason, detail: str) -> Failed:
        return Failed(job.entry_id, reason, detail, self._quarantine(job, reason))

    def _quarantine(self, job: Job, reason: Reason) -> Path:
        return quarantine_destination(
            self.settings.quarantine_dir, reason.value, job.file_sha256, job.source_name
        )

    def _record(self, outcomes: list[Outcome], token: str) -> set[int]:
        """Store the outcomes of the rows this task still holds; return their ids."""
        with self.sessions.begin() as session:
            recorded = set(record_final(session, token, [_final(o) for o in outcomes]))
            drift.record(session, [o for o in outcomes if o.entry_id in recorded])
        return recorded

    def _file_or_leave(self, job: Job, outcome: Outcome) -> None:
        """File one original; if that fails, leave it for the watcher (its row is final and
        :mod:`worker.intake` finishes the move) and go on with the batch-mates."""
        try:
            self._file(job, outcome)
        except OSError as error:  # no traceback: an OSError's paths name the file
            log.warning(
                "row %d: original not filed yet (%s); the watcher files it later",
                job.entry_id,
                error.strerror or type(error).__name__,
            )

    def _file(self, job: Job, outcome: Outcome) -> None:
        if isinstance(outcome, Vanished) or not (job.staged.exists() or job.staged.is_symlink()):
            return
        if isinstance(outcome, Scored):
            final = move_into_place(job.staged, outcome.destination)
        else:
            final = quarantine_file(job.staged, outcome.destination, sidecar_for(job, outcome))
        if final != outcome.destination:  # the name was taken: keep the row truthful
            with self.sessions.begin() as session:
                entry = get_entry(session, job.entry_id)
                if entry is not None:
                    entry.archived_path = str(final)


def _final(outcome: Outcome) -> Final:
    """One outcome as its row's final values: the edge where the kinds become stored values."""
    if isinstance(outcome, Scored):
        scored = _scored(outcome.prediction, outcome.flags)
        return Final(outcome.entry_id, Status.DONE, str(outcome.destination), scored)
    destination = "" if isinstance(outcome, Vanished) else str(outcome.destination)
    return Final(
        outcome.entry_id, outcome.status, destination, None, outcome.reason.value, outcome.detail
    )


def sidecar_for(job: Job, outcome: Rejected | Failed) -> Sidecar:
    return Sidecar(
        outcome.reason.value,
        outcome.detail,
        job.source_name,
        job.file_sha256,
        worklist_id=job.entry_id,
        status=outcome.status.value,
        received_at=job.received_at,
    )


def _scored(prediction: Prediction, flags: tuple[str, ...]) -> ScoredRow:
    return ScoredRow(
        probability=prediction.probability,
        label=prediction.label.value,
        priority=prediction.priority.value,
        priority_rank=prediction.priority.rank,
        threshold=prediction.threshold,
        model_version=prediction.model_version,
        flags=flags,
    )


__all__ = ["Job", "Outcome", "Pipeline", "holder_id"]
