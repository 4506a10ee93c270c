"""Catch-up: ask the PACS for the chest radiograph studies that never reached cxr-triage.

A PACS forward that fails (the receiver down, Orthanc marking its job done anyway, a routing
rule switched off for an afternoon) leaves films in the PACS that were never scored, and
nothing says so. With ``CXR_CATCHUP_HOURS`` set, the deliverer (``deliver``, or the
delivery thread of ``run``) asks the PACS every ``CXR_CATCHUP_INTERVAL_S``:

1. **C-FIND**, Study Root, STUDY level: studies with Modalities in Study CR, then DX, whose
   Study Date falls in the window (Study Date/Time are the PACS's local time; a study without
   a time counts as inside its date);
2. the studies the worklist has no row of (by Study Instance UID) are **C-MOVEd**, whole, to
   cxr-triage's own receiver (``CXR_CATCHUP_MOVE_DESTINATION``, by default
   ``CXR_LISTEN_AE_TITLE``; the PACS must know that AE title, as it must for its routing),
   at most :data:`MAX_MOVES_PER_PASS` per pass, oldest first.

Everything then goes the ordinary way: the receiver refuses what is not the device's to read
(laterals, other body parts), the watcher admits the rest, the worker scores it. A study is
asked for once per window: one that still has no row (all its images refused by the
receiver) is not moved again until it leaves the window, or the process restarts. The move
goes through the receiver rather than a C-GET into the inbox, so every image meets the same
checks whichever way it came. Off by default: it is a query against the PACS every few
minutes, which its administrator should agree to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydicom.dataset import Dataset
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import WorklistEntry
from ingest.metadata import parse_da, parse_tm
from pacs.store import PacsNode, StoreError, open_association

log = logging.getLogger(__name__)

MODALITIES = ("CR", "DX")
MAX_MOVES_PER_PASS = 20
PENDING = (0xFF00, 0xFF01)
MOVE_DESTINATION_UNKNOWN = 0xA801  # PS3.4 C.4.2.1.5: Refused, Move Destination unknown


@dataclass(frozen=True)
class Study:
    """One study the PACS holds: its UID and when it was made (local time, or None)."""

    uid: str
    when: datetime | None


@dataclass
class CatchUpReport:
    found: int = 0  # CR/DX studies of the window in the PACS
    known: int = 0  # of which the worklist has rows
    moved: int = 0  # C-MOVEs that completed
    images: int = 0  # sub-operations the PACS reported completed
    refused: int = 0  # studies whose every image the receiver refused (not the device's)
    failed: list[str] = field(default_factory=list)  # words, per failed query or move


@dataclass
class CatchUp:
    """Finds and fetches the studies the worklist never got; see the module doc."""

    sessions: sessionmaker[Session]
    node: PacsNode
    destination: str
    window: timedelta
    interval_s: float = 300.0
    now: Callable[[], datetime] = datetime.now  # the PACS's local time (naive)
    asked: dict[str, datetime] = field(default_factory=dict)

    def run_once(self) -> CatchUpReport:
        report = CatchUpReport()
        now = self.now()
        since = now - self.window
        for uid, when in list(self.asked.items()):
            if when < since:
                del self.asked[uid]
        studies = [s for s in self.find(since.date(), now.date(), report) if _inside(s, since)]
        report.found = len(studies)
        known = self._known({s.uid for s in studies})
        report.known = len(known)
        missing = [s for s in studies if s.uid not in known and s.uid not in self.asked]
        missing.sort(key=lambda s: s.when or since)
        for study in missing[:MAX_MOVES_PER_PASS]:
            self.asked[study.uid] = now
            self.move(study, report)
        if missing or report.failed:
            log.info(
                "catch-up: %d CR/DX studies in the last %g h, %d on the worklist, %d moved "
                "(%d images), %d refused whole by the receiver, %d problem(s)",
                report.found,
                self.window.total_seconds() / 3600,
                report.known,
                report.moved,
                report.images,
                report.refused,
                len(report.failed),
            )
        return report

    def find(self, first: date, last: date, report: CatchUpReport) -> list[Study]:
        """C-FIND the CR and DX studies dated ``first`` to ``last`` (dates)."""
        found: dict[str, Study] = {}
        association = self._associate(StudyRootQueryRetrieveInformationModelFind, report)
        if association is None:
            return []
        try:
            for modality in MODALITIES:
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = ""
                query.StudyDate = f"{first:%Y%m%d}-{last:%Y%m%d}"
                query.StudyTime = ""
                query.ModalitiesInStudy = modality
                for status, identifier in association.send_c_find(
                    query, StudyRootQueryRetrieveInformationModelFind
                ):
                    code = int(status.Status) if "Status" in status else None
                    if code in PENDING and identifier is not None:
                        study = _study(identifier)
                        if study is not None:
                            found.setdefault(study.uid, study)
                    elif code not in (0x0000, *PENDING):
                        report.failed.append(
                            f"{self.node} C-FIND for {modality} studies: "
                            + ("no response" if code is None else f"status 0x{code:04X}")
                        )
                        break
        finally:
            if association.is_established:
                association.release()
        return list(found.values())

    def move(self, study: Study, report: CatchUpReport) -> None:
        """C-MOVE one whole study to the receiver."""
        association = self._associate(StudyRootQueryRetrieveInformationModelMove, report)
        if association is None:
            return
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study.uid
        final: int | None = None
        completed = refused = 0
        comment = ""
        try:
            for status, _ in association.send_c_move(
                query, self.destination, StudyRootQueryRetrieveInformationModelMove
            ):
                final = int(status.Status) if "Status" in status else None
                completed = int(status.get("NumberOfCompletedSuboperations", completed) or 0)
                refused = int(status.get("NumberOfFailedSuboperations", refused) or 0)
                comment = str(status.get("ErrorComment", "") or "")[:64]
        finally:
            if association.is_established:
                association.release()
        if final in (0x0000, 0xB000):  # success, or some sub-operations refused
            report.moved += 1
            report.images += completed
            return
        if refused and not completed:
            # every image refused by the receiver: none is the device's to read (a lateral,
            # another body part); the receiver says why in its own log
            report.refused += 1
            return
        answer = "no response" if final is None else f"status 0x{final:04X}"
        if comment:
            answer += f" ({comment.strip()})"
        words = f"{self.node} C-MOVE to {self.destination}: {answer}"
        if final == MOVE_DESTINATION_UNKNOWN:
            words += (
                f"; the PACS does not know the move destination {self.destination}: register "
                "cxr-triage's receiver there, or set CXR_CATCHUP_MOVE_DESTINATION"
            )
        elif final is not None and (final >= 0xC000 or final == 0xA702):
            # Orthanc answers 0xC000, with no counts, both when it does not know the
            # destination and when the receiver refused every image of the study
            words += (
                "; either the receiver refused every image of the study (not the device's to "
                f"read, e.g. a lateral: its log says so) or the PACS does not know "
                f"{self.destination} as a move destination (its log says so)"
            )
        report.failed.append(words)
        log.warning("catch-up: %s", words)

    def run(self, stop: threading.Event) -> None:
        """Catch up every ``interval_s`` until ``stop`` is set; a failure never ends it."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # the loop outlives a PACS or database outage
                log.exception("catch-up pass failed; trying again later")
            stop.wait(self.interval_s)

    def _associate(self, model: str, report: CatchUpReport):  # type: ignore[no-untyped-def]
        try:
            association, _ = open_association(self.node, [(model, DEFAULT_TRANSFER_SYNTAXES)])
        except StoreError as error:
            words = f"no query/retrieve association: {error}"
            report.failed.append(words)
            log.warning("catch-up: %s", words)
            return None
        return association

    def _known(self, uids: Iterable[str]) -> set[str]:
        wanted = list(uids)
        if not wanted:
            return set()
        with self.sessions() as session:
            rows = session.scalars(
                select(WorklistEntry.study_instance_uid)
                .where(WorklistEntry.study_instance_uid.in_(wanted))
                .distinct()
            )
            return {uid for uid in rows if uid}


def _study(identifier: Dataset) -> Study | None:
    uid = str(identifier.get("StudyInstanceUID", "") or "").strip()
    if not uid or len(uid) > 64:
        return None
    day = parse_da(str(identifier.get("StudyDate", "") or ""))
    if day is None:
        return Study(uid, None)
    moment = parse_tm(str(identifier.get("StudyTime", "") or ""))
    if moment is None:
        return Study(uid, datetime(day.year, day.month, day.day, 23, 59, 59))
    return Study(uid, datetime.combine(day, moment))


def _inside(study: Study, since: datetime) -> bool:
    return study.when is None or study.when >= since


__all__ = ["CatchUp", "CatchUpReport", "Study"]
