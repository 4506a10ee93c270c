"""The watcher's callback: stable files become ``queued`` rows, one task per batch of rows.

A task carries up to ``CXR_BATCH_SIZE`` row ids (the rows one model call scores): one
message per file cost about as much CPU as scoring the image.

Idempotent, because the watcher may hand the same file again (after a restart, a lost task,
or a crash between a row's final commit and the move of its original):

- new content: insert the row (a burst's rows in one transaction), commit, then send the
  tasks, one per batch of rows of the same origin;
- the same file, still waiting: send the task again if it may have been lost;
- the same file, already final but still in the inbox: finish the move that was interrupted;
- the same content (or SOP Instance UID) from another file: a duplicate, quarantined with a
  sidecar naming the row it duplicates. Never a second row, never scored twice.
"""

from __future__ import annotations

import logging
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from db.models import FINAL_STATUSES, Status, WorklistEntry, utcnow
from db.originals import file_original, stored_sidecar
from db.snapshot import RowSnapshot
from db.worklist import Arrival, admit_many
from ingest.errors import IngestError, Reason
from ingest.filing import Sidecar, quarantine_destination, quarantine_file, rename_to_utf8
from ingest.hashing import file_sha256
from ingest.image import ImageMetadata
from ingest.readers import read_header
from ingest.watcher import Origin
from worker.settings import Settings

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"

#: Sends one task for these committed rows (at most ``batch_size``, all of one origin).
Enqueue = Callable[[list[int], Origin], None]


class Admission(StrEnum):
    QUEUED = "queued"  # a new row, its task sent
    REQUEUED = "requeued"  # the row was waiting; its task was sent again
    WAITING = "waiting"  # the row is being processed; nothing to do
    REFILED = "refiled"  # the row was final; the original has now been moved
    DUPLICATE = "duplicate"  # quarantined as a copy of an existing row
    UNSAFE = "unsafe"  # a symlink or special file; quarantined unread
    REFUSED = "refused"  # the database refused a value of this file; quarantined, no row
    VANISHED = "vanished"  # the file left the inbox before it could be read
    RETRY = "retry"  # the file could not be read now; the watcher hands it again later


@dataclass(frozen=True)
class Intake:
    settings: Settings
    sessions: sessionmaker[Session]
    enqueue: Enqueue
    #: Errors of ``enqueue`` that mean the broker is down: every later send would wait out
    #: its retries too, so the files of all unsent batches are handed back at once.
    outage: tuple[type[Exception], ...] = ()

    def __call__(self, files: Sequence[tuple[Path, Origin]]) -> list[Path]:
        """The watcher's callback: admit a batch; return the files to hand again later."""
        admissions = self.admit_many(files)
        return [path for path, admission in admissions.items() if admission is Admission.RETRY]

    def admit(self, path: Path, origin: Origin) -> Admission:
        return self.admit_many([(path, origin)])[path]

    def admit_many(self, files: Sequence[tuple[Path, Origin]]) -> dict[Path, Admission]:
        """Read each file's hash and header, store all new rows in one transaction, then send
        their tasks, one per batch of up to ``batch_size`` rows.

        A problem with one file (unreadable just now, a failed move) hands that file back
        (``RETRY``) and holds up no other; a task that cannot be sent hands back its batch's
        files, and a broker outage every file whose task was not sent yet. A database outage
        raises: the watcher hands the files again, and admission is idempotent (a row still
        ``queued`` has its task sent again).
        """
        admissions: dict[Path, Admission] = {}
        arrivals: list[tuple[Path, Origin, Arrival]] = []
        for path, origin in files:
            arrival_or_admission = self._read(path)
            if isinstance(arrival_or_admission, Admission):
                admissions[path] = arrival_or_admission
            else:
                arrivals.append((path, origin, arrival_or_admission))
        try:
            with self.sessions.begin() as session:
                rows = admit_many(session, [arrival for _, _, arrival in arrivals])
                snapshots = [(RowSnapshot.of(entry), created) for entry, created in rows]
        except (DataError, UnicodeError):  # a value from one file, not an outage: find it
            if len(arrivals) == 1:
                path, _, arrival = arrivals[0]
                admissions[path] = self._quarantine_refused(path, arrival)
                return admissions
            for path, origin, _ in arrivals:  # each alone: only the culprit is refused
                admissions.update(self.admit_many([(path, origin)]))
            return admissions
        to_send: list[_Pending] = []  # rows whose task is to be sent
        for index, (snapshot, created) in enumerate(snapshots):
            path, origin, arrival = arrivals[index]
            try:
                if created:
                    to_send.append(_Pending(path, origin, snapshot.id))
                    admissions[path] = Admission.QUEUED
                    log.info(
                        "row %d admitted (%s, sha256 %s)",
                        snapshot.id,
                        origin,
                        arrival.file_sha256[:12],
                    )
                else:
                    admissions[path] = self._known(path, arrival, snapshot, origin, to_send)
            except OSError as error:  # a move: no traceback, its paths would name the file
                log.warning(
                    "row %d: admission not completed (%s); the file is handed back",
                    snapshot.id,
                    error.strerror or type(error).__name__,
                )
                admissions[path] = Admission.RETRY
            except Exception:  # this file only: the others go on
                log.exception(
                    "row %d: admission not completed; the file is handed back", snapshot.id
                )
                admissions[path] = Admission.RETRY
        self._send(to_send, admissions)
        return admissions

    def _send(self, to_send: list[_Pending], admissions: dict[Path, Admission]) -> None:
        """One task per batch of rows of one origin (live batches first), in arrival order."""
        size = max(1, self.settings.batch_size)
        batches: list[list[_Pending]] = []
        for origin in (Origin.LIVE, Origin.BACKFILL):
            rows = [pending for pending in to_send if pending.origin is origin]
            batches.extend(rows[i : i + size] for i in range(0, len(rows), size))
        for index, batch in enumerate(batches):
            ids = [pending.entry_id for pending in batch]
            try:
                self.enqueue(ids, batch[0].origin)
            except self.outage as error:
                unsent = [pending.path for later in batches[index:] for pending in later]
                log.warning("broker unavailable (%s): %d file(s) handed back", error, len(unsent))
                admissions.update((path, Admission.RETRY) for path in unsent)
                return
            except Exception:  # this batch only: the others go on
                log.exception("task for rows %s not sent; their files are handed back", ids)
                admissions.update((pending.path, Admission.RETRY) for pending in batch)
            else:
                log.info("task sent for row(s) %s (%s)", ids, batch[0].origin)
                for pending in batch:
                    if pending.resent:
                        log.info("row %d: task sent again", pending.entry_id)

    def _read(self, path: Path) -> Arrival | Admission:
        """The file's arrival record, or what became of a file that cannot be admitted."""
        try:
            source_name = str(path.relative_to(self.settings.inbox))  # only inbox paths come
            if not stat.S_ISREG(path.lstat().st_mode):
                self._quarantine_unsafe(path, source_name)
                return Admission.UNSAFE
            renamed = rename_to_utf8(path, self.settings.inbox)
            if renamed != path:
                log.info("a file name that is not UTF-8 was escaped in the inbox")
                source_name = str(renamed.relative_to(self.settings.inbox))
            return self._arrival(renamed, source_name)
        except FileNotFoundError:
            return Admission.VANISHED
        except OSError as error:  # a share hiccup or a permission: this file only, later
            log.warning("cannot read a stable file yet (%s); trying again later", error.strerror)
            return Admission.RETRY
        except Exception:  # never let one file hold up the batch
            log.exception("a stable file could not be admitted; trying again later")
            return Admission.RETRY

    def _arrival(self, path: Path, source_name: str) -> Arrival:
        try:
            header = read_header(path)
        except IngestError:  # unreadable: the task will reject it with the precise reason
            return Arrival(file_sha256(path), source_name, str(path))
        except OSError:
            raise
        except Exception:  # a reader bug on a hostile file: the task records it as failed
            log.exception("header reader failed on a stable file; admitted by content only")
            return Arrival(file_sha256(path), source_name, str(path))
        return arrival_of(header, source_name, path)

    def _known(
        self,
        path: Path,
        arrival: Arrival,
        entry: RowSnapshot,
        origin: Origin,
        to_send: list[_Pending],
    ) -> Admission:
        same_file = entry.source_path == str(path) and entry.file_sha256 == arrival.file_sha256
        if same_file and entry.status not in FINAL_STATUSES:
            stale = utcnow() - timedelta(seconds=self.settings.requeue_after_s)
            if entry.status is Status.QUEUED or (entry.started_at or entry.received_at) < stale:
                # A re-send is never a live arrival: it must not overtake files that are.
                to_send.append(_Pending(path, Origin.BACKFILL, entry.id, resent=True))
                return Admission.REQUEUED
            return Admission.WAITING
        if same_file and entry.archived_path and not Path(entry.archived_path).exists():
            self._refile(path, entry)
            return Admission.REFILED
        if (
            entry.status is Status.FAILED
            and not entry.archived_path
            and entry.file_sha256 != arrival.file_sha256
        ):
            # The same instance (SOP Instance UID), sent again with other bytes, whose row
            # failed without anything filed: typically the sender overwrote the file before it
            # was claimed, so the row's own bytes are gone. Quarantining these bytes as its
            # duplicate would leave the case unscored for ever: they take the row over.
            self._take_over(path, arrival, entry)
            to_send.append(_Pending(path, origin, entry.id))
            return Admission.QUEUED
        self._quarantine_duplicate(path, arrival, entry)
        return Admission.DUPLICATE

    def _take_over(self, path: Path, arrival: Arrival, entry: RowSnapshot) -> None:
        with self.sessions.begin() as session:
            row = session.get(WorklistEntry, entry.id)
            if row is None or row.status is not Status.FAILED or row.archived_path:
                raise RuntimeError(f"row {entry.id} changed while its instance arrived again")
            row.file_sha256 = arrival.file_sha256
            row.source_path = arrival.source_path
            row.source_name = arrival.source_name
            row.status = Status.QUEUED
            row.reason = None
            row.reason_detail = None
            row.attempts = 0
            row.claim_token = None
            row.claimed_by = None
            row.lease_expires_at = None
            row.finished_at = None
            row.archived_path = None
        log.warning(
            "row %d: failed before anything was filed; its instance arrived again (sha256 %s)"
            " and is queued on the same row",
            entry.id,
            arrival.file_sha256[:12],
        )

    def _refile(self, path: Path, entry: RowSnapshot) -> None:
        destination = Path(entry.archived_path or "")
        file_original(self.sessions, entry.id, path, destination, stored_sidecar(entry))
        log.info("row %d: interrupted move of the original completed", entry.id)

    def _quarantine_duplicate(self, path: Path, arrival: Arrival, entry: RowSnapshot) -> None:
        same_content = entry.file_sha256 == arrival.file_sha256
        destination = quarantine_destination(
            self.settings.quarantine, DUPLICATE, arrival.file_sha256, arrival.source_name
        )
        sidecar = Sidecar(
            DUPLICATE,
            "the same bytes were already received"
            if same_content
            else "another file with the same SOP Instance UID was already received",
            file_sha256=arrival.file_sha256,
            duplicate_of_worklist_id=entry.id,
        )
        quarantine_file(path, destination, sidecar)
        log.info("duplicate of row %d quarantined (sha256 %s)", entry.id, arrival.file_sha256[:12])

    def _quarantine_refused(self, path: Path, arrival: Arrival) -> Admission:
        """The database refused this file's values (it would be refused at every retry):
        quarantine it as ``corrupt`` without a row, rather than hand it back for ever."""
        destination = quarantine_destination(
            self.settings.quarantine,
            Reason.CORRUPT.value,
            arrival.file_sha256,
            arrival.source_name,
        )
        sidecar = Sidecar(
            Reason.CORRUPT.value,
            "the worklist database refused a value read from this file's header",
            file_sha256=arrival.file_sha256,
        )
        quarantine_file(path, destination, sidecar)
        # No exception text: the database's message quotes the refused values.
        log.warning(
            "a file the database refused was quarantined (sha256 %s)", arrival.file_sha256[:12]
        )
        return Admission.REFUSED

    def _quarantine_unsafe(self, path: Path, source_name: str) -> None:
        destination = quarantine_destination(  # never read: no hash, a random name
            self.settings.quarantine,
            Reason.UNSAFE_PATH.value,
            secrets.token_hex(8),
            source_name,
        )
        sidecar = Sidecar(
            Reason.UNSAFE_PATH.value,
            "a symlink or special file in the inbox; moved unread, never followed",
        )
        quarantine_file(path, destination, sidecar)
        log.warning("unsafe path in the inbox quarantined unread")


@dataclass(frozen=True)
class _Pending:
    """A row whose task is to be sent once the admission's rows are committed."""

    path: Path
    origin: Origin
    entry_id: int
    resent: bool = False


def arrival_of(header: ImageMetadata, source_name: str, path: Path) -> Arrival:
    """The row a readable file is admitted as: its identity and what the review page shows
    a reader beside the priority (age, sex, view, study description: PHI-grade)."""
    return Arrival(
        file_sha256=header.file_sha256,
        source_name=source_name,
        source_path=str(path),
        source_kind=header.kind,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study_instance_uid,
        series_instance_uid=header.series_instance_uid,
        accession_number=header.accession_number,
        patient_id=header.patient_id,
        patient_age_years=header.patient_age_years,
        patient_sex=header.patient_sex,
        # CS holds 16 characters; a longer, non-conformant value is cut, not refused
        view_position=header.view_position[:16] if header.view_position else None,
        study_description=header.study_description,
    )
