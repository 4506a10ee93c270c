"""What became of one claimed row: exactly one of four kinds, each with the fields it needs.

- :class:`Scored`: the model scored it; its original goes to the archive.
- :class:`Rejected`: bad or ineligible input, a named :class:`ingest.errors.Reason`; the
  original goes to ``quarantine/<reason>/``. Never retried.
- :class:`Failed`: the worker could not process a file it still holds (a reader bug, the
  model, too many attempts); quarantined too.
- :class:`Vanished`: the bytes the row was received with are no longer there (the file left
  the inbox, or a sender replaced or rewrote it: new content is a row of its own). Nothing
  is filed.

Every kind offers ``entry_id``, ``status``, ``reason``, ``destination`` and ``prediction``,
which is what the metrics and the drift watch read. A vanished file is stored as ``failed``
with ``processing_error``, the values rows have always had for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from db.models import Status
from ingest.errors import Reason
from model.prediction import Prediction

#: What the worker itself sets when a file it holds could not be processed.
WORKER_REASONS = frozenset({Reason.PROCESSING_ERROR, Reason.TOO_MANY_ATTEMPTS})


@dataclass(frozen=True)
class Scored:
    entry_id: int
    destination: Path  # in the archive
    prediction: Prediction
    flags: tuple[str, ...] = ()  # population flags stored with the row

    status: ClassVar[Status] = Status.DONE
    reason: ClassVar[None] = None


@dataclass(frozen=True)
class Rejected:
    entry_id: int
    reason: Reason
    detail: str  # a sentence for the PACS administrator, without patient data
    destination: Path  # quarantine/<reason>/
    #: The content check's prediction, for the drift watch only; never stored with the row.
    prediction: Prediction | None = None

    status: ClassVar[Status] = Status.REJECTED

    def __post_init__(self) -> None:
        if self.reason in WORKER_REASONS:
            raise ValueError(f"{self.reason!r} is the worker's failure, not a rejection")
        if not self.detail:
            raise ValueError(f"row {self.entry_id}: a rejection needs a detail")


@dataclass(frozen=True)
class Failed:
    entry_id: int
    reason: Reason  # one of WORKER_REASONS
    detail: str
    destination: Path  # quarantine/<reason>/

    status: ClassVar[Status] = Status.FAILED
    prediction: ClassVar[None] = None

    def __post_init__(self) -> None:
        if self.reason not in WORKER_REASONS:
            raise ValueError(f"{self.reason!r} is a property of the file: a rejection")
        if not self.detail:
            raise ValueError(f"row {self.entry_id}: a failure needs a detail")


@dataclass(frozen=True)
class Vanished:
    entry_id: int
    detail: str  # which of left, replaced or rewritten

    status: ClassVar[Status] = Status.FAILED
    reason: ClassVar[Reason] = Reason.PROCESSING_ERROR
    destination: ClassVar[None] = None  # nothing of this row's is left to file
    prediction: ClassVar[None] = None


Outcome = Scored | Rejected | Failed | Vanished
