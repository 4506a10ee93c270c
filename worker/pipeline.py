"""``triage``: read -> eligibility -> model -> priority -> worklist row -> archive/quarantine.

Plain Python, no Celery: :class:`Pipeline` takes its collaborators (settings, a session
factory, the scorer, what to send and which exceptions to let through) as arguments;
:mod:`worker.tasks` wires them for a worker process, and the tests drive it directly.

Order of effects, chosen so a crash anywhere is recoverable:

1. claim the task's rows (its admitted batch; topped up to ``batch_size`` with other queued
   rows) with the task's token and a lease that the worker node renews
   (:mod:`worker.lease_keeper`), and rename each claimed file into the private staging folder
   (:mod:`ingest.staging`): from here on the file read, scored and filed is the inode
   received, whatever a sender writes under its old name;
2. read and score outside any transaction (a row claimed more than ``max_attempts`` times,
   a file that keeps killing its worker, is failed as ``too_many_attempts`` unread);
3. store every outcome and its destination path in one transaction;
4. only then move the originals. A crash before 4 leaves the file in staging with a final
   row; the lease keeper's next look at the staging folder files it (:mod:`worker.lease_keeper`);
5. hand the ``done`` rows to ``on_scored`` (the worker sends one results task for them: heatmap
   overlay, SR and SC, on a queue consumed after all triage work), and the ``rejected`` and
   ``failed`` ones to ``on_unscored`` (a "not analysed" SR where the film was the device's).

Bad input (an :class:`ingest.IngestError`) becomes a ``rejected`` row and is never retried; an
unexpected error on one file becomes ``failed`` for that file only. Database, broker and model
outages propagate, and Celery retries the task with backoff; the task first holds its rows for
that retry (:meth:`Pipeline.hold`), so a long outage never counts as attempts at them.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db import leases
from db.holders import holder_id
from db.models import Status, utcnow
from db.originals import file_original
from db.snapshot import RowSnapshot
from db.worklist import Final, ScoreValues, claim_autocommit, record_final, release
from ingest.errors import ContentChangedError, IngestError, Reason
from ingest.filing import Sidecar, archive_destination, quarantine_destination
from ingest.hashing import file_sha256
from ingest.image import SourceImage
from ingest.loading import load_scorable
from ingest.staging import Fingerprint, stage, staged_path, unstage
from model.prediction import Prediction
from worker import drift_watch
from worker.outcomes import Failed, Outcome, Rejected, Scored, Vanished
from worker.population import not_analysed, population_flags
from worker.prometheus import get_metrics
from worker.scoring import Scorer
from worker.settings import Settings

log = logging.getLogger(__name__)

#: Why a row is :class:`~worker.outcomes.Vanished`: its bytes left, or were replaced.
LEFT = "the file left the inbox before it was scored"
REPLACED = "the file was replaced after it was received; the new content is its own row"
REWRITTEN = "the file was rewritten while it was scored; the new content is its own row"


def row_ids(entry_ids: int | Sequence[int]) -> list[int]:
    """The rows a task names, as a list. Triage and results messages carry a list of row ids;
    the one-row messages of 0.1 carried a bare id, and may still wait on a broker after an
    upgrade (the tests, too, name one row so). The one place that format is read."""
    return [entry_ids] if isinstance(entry_ids, int) else list(entry_ids)


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
    #: After rows that were not scored (rejected, failed) are filed: the results task sends a
    #: "not analysed" SR for those the header makes the device's to read (pacs.not_analysed).
    on_unscored: Callable[[list[int]], None] = lambda entry_ids: None
    #: Exceptions that must reach the task runner even from per-file error handling (a
    #: time limit): the task is then retried instead of its rows being stored as failed.
    reraise: tuple[type[BaseException], ...] = ()
    #: Called after each task: the drift watch logs its warnings (rate-limited) from here.
    after_batch: Callable[[], object] = lambda: None
    #: Shorter side the readers keep (``ingest.reduced``; 2x the model input), None = full.
    decode_min_side: int | None = None
    #: Sends rows back as one task each (a suspect batch split: see :meth:`_isolate`).
    send_alone: Callable[[Sequence[int]], None] = lambda entry_ids: None
    #: Takes the drift counts of the rows stored, after their commit (a worker's
    #: :class:`worker.drift_watch.DriftBuffer`). None: counted in the rows' own transaction.
    count_drift: Callable[[Sequence[Outcome]], None] | None = None

    def triage(
        self, entry_ids: int | Sequence[int], token: str, retry: bool = False
    ) -> list[Outcome]:
        """Process the task ``token``'s rows (and batch-mates); see the module doc.

        ``retry``: a Celery retry of the same task (a transient error, after :meth:`hold`):
        it takes back the rows it held, not counted as another attempt.
        """
        started = time.monotonic()
        ids = row_ids(entry_ids)
        rows = self._isolate(self._claim(ids, token, retry=retry), token)
        if not rows:
            log.info("rows %s: nothing to do (finished or held by another task)", ids)
            return []
        outcomes = self._outcomes(rows)
        recorded = self._record(outcomes, token)
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.entry_id in recorded:  # a row reclaimed meanwhile is the other task's
                self._file_or_leave(row, outcome)
        self.on_scored(
            [o.entry_id for o in outcomes if isinstance(o, Scored) and o.entry_id in recorded]
        )
        unscored = [
            o.entry_id
            for o in outcomes
            if isinstance(o, Rejected | Failed) and o.entry_id in recorded
        ]
        if unscored:
            self.on_unscored(unscored)
        get_metrics().observe_batch(
            outcomes, [row.received_at for row in rows], time.monotonic() - started
        )
        log.info(
            "task for rows %s: %d row(s) in %.2f s (%s)",
            ids,
            len(rows),
            time.monotonic() - started,
            ", ".join(f"{o.entry_id}={o.status.value}" for o in outcomes),
        )
        self.after_batch()
        return outcomes

    def _isolate(self, rows: list[RowSnapshot], token: str) -> list[RowSnapshot]:
        """A batch tried before (its worker died: a file may kill it) keeps one row and sends
        every other row back as a task of its own, so a poison file reaches the attempt cap
        alone instead of taking its batch-mates down with it."""
        if len(rows) < 2 or all(row.attempts <= 1 for row in rows):
            return rows
        keep, others = rows[0], [row.id for row in rows[1:]]
        resend_at = utcnow() + timedelta(seconds=self.settings.requeue_after_s)
        with self.sessions.begin() as session:
            released = release(session, others, token, resend_at)
        self.send_alone(released)
        log.warning(
            "rows %s were tried before: row %d is tried alone, rows %s sent back one by one",
            [row.id for row in rows],
            keep.id,
            released,
        )
        return [keep, *(row for row in rows[1:] if row.id not in released)]

    def hold(self, token: str, retry_in_s: float) -> None:
        """The task ``token`` is retried in ``retry_in_s`` (a transient error): its rows wait
        for it, leased until then plus a lease, and its claim is not counted again
        (:func:`db.leases.hold`). Best effort: the database may be the outage; its rows are
        then taken over once their lease runs out, one more attempt counted."""
        until = utcnow() + timedelta(seconds=retry_in_s + self.settings.lease_s)
        try:
            with self.sessions.begin() as session:
                held = leases.hold(session, token, until)
        except SQLAlchemyError:
            log.warning("task %s: its rows could not be held for its retry", token, exc_info=True)
            return
        log.info("task %s: %d row(s) held for its retry in %.0f s", token, held, retry_in_s)

    def _claim(self, entry_ids: list[int], token: str, retry: bool = False) -> list[RowSnapshot]:
        stale_before = utcnow() - timedelta(seconds=self.settings.requeue_after_s)
        held = claim_autocommit(
            self.sessions,
            entry_ids,
            token,
            batch_size=self.settings.batch_size,
            stale_before=stale_before,
            claimed_by=holder_id(),
            lease_s=self.settings.lease_s,
            retry=retry,
        )
        return [RowSnapshot.of(entry) for entry in held]

    def _staged(self, row: RowSnapshot) -> Path:
        """Where the claimed file is read and filed from (:mod:`ingest.staging`)."""
        return staged_path(self.settings.inbox, row.id)

    def _outcomes(self, rows: list[RowSnapshot]) -> list[Outcome]:
        """Read every row's file, score those that read in one model call, judge each."""
        read = {row.id: self._read(row) for row in rows}
        loaded = {i: r.image for i, r in read.items() if isinstance(r, _Loaded)}
        predictions = self._predict(loaded) if loaded else {}
        outcomes: list[Outcome] = []
        for row in rows:
            result = read[row.id]
            if isinstance(result, _Loaded):
                outcomes.append(self._judge(row, result, predictions.get(row.id)))
            else:
                outcomes.append(result)
        return outcomes

    def _read(self, row: RowSnapshot) -> _Loaded | Outcome:
        """Stage the row's file and read it; or what became of a file that cannot be scored."""
        staged = self._staged(row)
        try:
            stage(row.source, staged)  # missing: FileNotFoundError
            if row.attempts > self.settings.max_attempts:  # never read a poison file again
                return self._too_many_attempts(row)
            fingerprint = Fingerprint.of(staged)
            if not stat.S_ISREG(staged.lstat().st_mode):
                raise IngestError(Reason.UNSAFE_PATH, "The path is no longer a regular file.")
            image, eligibility = load_scorable(
                staged, expected_sha256=row.file_sha256, min_side=self.decode_min_side
            )
        except ContentChangedError:
            unstage(staged, row.source)  # the new bytes are a new arrival
            return Vanished(row.id, REPLACED)
        except IngestError as error:
            # An IngestError without a message still names its reason: never a bare ValueError.
            return self._rejected(row, error.reason, str(error) or error.reason.value)
        except FileNotFoundError:
            return Vanished(row.id, LEFT)
        except OSError:
            raise  # a share or disk problem: retry the task, the file is not at fault
        except Exception as error:  # a reader bug on a hostile file must not stop the batch
            if isinstance(error, self.reraise):
                raise
            log.exception("row %d: unexpected error while reading", row.id)
            return self._failed(
                row, Reason.PROCESSING_ERROR, f"reading failed: {type(error).__name__}"
            )
        return _Loaded(image, eligibility.flags, fingerprint)

    def _judge(self, row: RowSnapshot, loaded: _Loaded, prediction: Prediction | None) -> Outcome:
        """The outcome of a row whose file was read: scored, or why not."""
        if prediction is None:
            return self._failed(row, Reason.PROCESSING_ERROR, "the model could not score it")
        if self._rewritten(row, loaded.fingerprint):
            unstage(self._staged(row), row.source)
            return Vanished(row.id, REWRITTEN)
        refused = not_analysed(prediction, loaded.flags)
        if refused is not None:  # the prediction rides along for the drift watch only
            return Rejected(
                row.id,
                refused.reason,
                refused.detail,
                self._quarantine(row, refused.reason),
                prediction,
            )
        destination = archive_destination(
            self.settings.archive, row.received_at, row.file_sha256, row.source_name
        )
        return Scored(row.id, destination, prediction, population_flags(prediction, loaded.flags))

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

    def _rewritten(self, row: RowSnapshot, before: Fingerprint) -> bool:
        """Did a writer holding the file open change it after it was staged? A changed
        inode, size or mtime is re-checked against the content hash the row was admitted with."""
        staged = self._staged(row)
        if Fingerprint.of(staged) == before:
            return False
        return file_sha256(staged) != row.file_sha256

    def _too_many_attempts(self, row: RowSnapshot) -> Failed:
        log.warning(
            "row %d: claimed %d times without finishing; failed unread",
            row.id,
            row.attempts - 1,
        )
        return self._failed(
            row,
            Reason.TOO_MANY_ATTEMPTS,
            f"{row.attempts - 1} attempts ended without a result (a worker killed while "
            "processing it, out of memory or time); not tried again",
        )

    def _rejected(self, row: RowSnapshot, reason: Reason, detail: str) -> Rejected:
        return Rejected(row.id, reason, detail, self._quarantine(row, reason))

    def _failed(self, row: RowSnapshot, reason: Reason, detail: str) -> Failed:
        return Failed(row.id, reason, detail, self._quarantine(row, reason))

    def _quarantine(self, row: RowSnapshot, reason: Reason) -> Path:
        return quarantine_destination(
            self.settings.quarantine, reason.value, row.file_sha256, row.source_name
        )

    def _record(self, outcomes: list[Outcome], token: str) -> set[int]:
        """Store the outcomes of the rows this task still holds; return their ids."""
        with self.sessions.begin() as session:
            recorded = set(record_final(session, token, [_final(o) for o in outcomes]))
            if self.count_drift is None:
                drift_watch.record(session, [o for o in outcomes if o.entry_id in recorded])
        if self.count_drift is not None:
            self.count_drift([o for o in outcomes if o.entry_id in recorded])
        return recorded

    def _file_or_leave(self, row: RowSnapshot, outcome: Outcome) -> None:
        """File one original; if that fails, leave it for the watcher (its row is final and
        :mod:`worker.intake` finishes the move) and go on with the batch-mates."""
        try:
            self._file(row, outcome)
        except OSError as error:  # no traceback: an OSError's paths name the file
            log.warning(
                "row %d: original not filed yet (%s); the watcher files it later",
                row.id,
                error.strerror or type(error).__name__,
            )

    def _file(self, row: RowSnapshot, outcome: Outcome) -> None:
        staged = self._staged(row)
        if isinstance(outcome, Vanished) or not (staged.exists() or staged.is_symlink()):
            return
        sidecar = None if isinstance(outcome, Scored) else sidecar_for(row, outcome)
        file_original(self.sessions, row.id, staged, outcome.destination, sidecar)


def _final(outcome: Outcome) -> Final:
    """One outcome as its row's final values: the edge where the kinds become stored values."""
    if isinstance(outcome, Scored):
        scored = _scored(outcome.prediction, outcome.flags)
        return Final(outcome.entry_id, Status.DONE, str(outcome.destination), scored)
    destination = "" if isinstance(outcome, Vanished) else str(outcome.destination)
    return Final(
        outcome.entry_id, outcome.status, destination, None, outcome.reason.value, outcome.detail
    )


def sidecar_for(row: RowSnapshot, outcome: Rejected | Failed) -> Sidecar:
    return Sidecar(
        outcome.reason.value,
        outcome.detail,
        file_sha256=row.file_sha256,
        worklist_id=row.id,
        status=outcome.status.value,
        received_at=row.received_at,
    )


def _scored(prediction: Prediction, flags: tuple[str, ...]) -> ScoreValues:
    return ScoreValues(
        probability=prediction.probability,
        label=prediction.label,
        priority=prediction.priority,
        priority_rank=prediction.priority.rank,
        threshold=prediction.threshold,
        model_version=prediction.model_version,
        flags=flags,
        suspect_threshold=prediction.suspect_threshold,
    )


__all__ = ["Outcome", "Pipeline"]
