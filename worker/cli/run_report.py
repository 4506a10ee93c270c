"""What ``cxr-triage run`` tells the person at the terminal: a progress line and a summary.

The worker's and the watcher's logs go to a file (``<data_dir>/logs/run.log``); the terminal
gets one line that updates while files are worked on, and at the end how many files were
seen, scored by priority, rejected by reason and failed, and how long it took. The counts
come from the worklist rows this run worked on (new rows, and rows still waiting when it
started), plus the files the intake quarantined without a row (duplicates, unsafe paths,
values the database refused), which only this process sees.

On a terminal the line is a Rich ``Live`` display; elsewhere (CI, a pipe) it is a plain line
printed every ``PLAIN_INTERVAL_S`` when something changed, so logs of automated runs stay short.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text
from sqlalchemy import func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import WAITING_STATUSES, Status, WorklistEntry
from ingest.errors import Reason
from ingest.limits import MAX_FOLDER_DEPTH
from ingest.watcher import Origin
from model.prediction import Priority
from worker.intake import DUPLICATE, Admission, Intake

#: A plain (non-terminal) progress line at most this often.
PLAIN_INTERVAL_S = 10.0

#: Intake outcomes that quarantine a file without a worklist row, by the folder they go to.
SET_ASIDE_REASONS: Mapping[Admission, str] = {
    Admission.DUPLICATE: DUPLICATE,
    Admission.UNSAFE: Reason.UNSAFE_PATH.value,
    Admission.REFUSED: Reason.CORRUPT.value,
}


@dataclass
class CountingIntake:
    """The watcher's callback, counting the files the intake quarantined without a row.

    The watcher runs in a thread of ``run``; the main thread reads :attr:`set_aside`.
    """

    intake: Intake
    set_aside: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, files: Sequence[tuple[Path, Origin]]) -> list[Path]:
        admissions = self.intake.admit_many(files)
        reasons = [SET_ASIDE_REASONS[a] for a in admissions.values() if a in SET_ASIDE_REASONS]
        with self._lock:
            self.set_aside.update(reasons)
        return [path for path, admission in admissions.items() if admission is Admission.RETRY]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.set_aside)


@dataclass(frozen=True)
class Baseline:
    """The rows that were there before this run: only rows past ``max_id``, or still waiting
    then (this run finishes them), are this run's."""

    max_id: int
    waiting_ids: frozenset[int]

    @classmethod
    def take(cls, session: Session) -> Baseline:
        max_id = session.scalar(select(func.max(WorklistEntry.id))) or 0
        waiting = session.scalars(
            select(WorklistEntry.id).where(WorklistEntry.status.in_(list(WAITING_STATUSES)))
        )
        return cls(max_id, frozenset(waiting))


@dataclass(frozen=True)
class RunCounts:
    """This run's files by outcome."""

    scored: Counter[str]  # by priority
    rejected: Counter[str]  # by reason, including files quarantined without a row
    failed: int
    in_progress: int

    @property
    def seen(self) -> int:
        return (
            sum(self.scored.values())
            + sum(self.rejected.values())
            + self.failed
            + (self.in_progress)
        )

    @classmethod
    def query(cls, session: Session, baseline: Baseline, set_aside: Mapping[str, int]) -> RunCounts:
        mine = or_(
            WorklistEntry.id > baseline.max_id, WorklistEntry.id.in_(sorted(baseline.waiting_ids))
        )
        grouped = session.execute(
            select(
                WorklistEntry.status,
                WorklistEntry.priority,
                WorklistEntry.reason,
                func.count(),
            )
            .where(mine)
            .group_by(WorklistEntry.status, WorklistEntry.priority, WorklistEntry.reason)
        )
        scored: Counter[str] = Counter()
        rejected: Counter[str] = Counter(set_aside)
        failed = in_progress = 0
        for status, priority, reason, count in grouped:
            if status == Status.DONE:
                scored[priority or "unranked"] += count
            elif status == Status.REJECTED:
                rejected[reason or "unknown"] += count
            elif status == Status.FAILED:
                failed += count
            else:
                in_progress += count
        return cls(scored, rejected, failed, in_progress)

    def progress_line(self, elapsed_s: float) -> str:
        return (
            f"{self.seen} files seen · {sum(self.scored.values())} scored · "
            f"{sum(self.rejected.values())} rejected · {self.in_progress} in progress · "
            f"{_clock(elapsed_s)}"
        )

    def summary_lines(self, elapsed_s: float) -> list[str]:
        """The end-of-run report; one fact per line so a script (or a test) can read it."""
        return [
            f"files seen:  {self.seen}",
            f"scored:      {sum(self.scored.values())}{_breakdown(self.scored, PRIORITY_ORDER)}",
            f"rejected:    {sum(self.rejected.values())}{_breakdown(self.rejected)}",
            f"failed:      {self.failed}",
            *(
                [f"in progress: {self.in_progress} (finished by the next run)"]
                * bool(self.in_progress)
            ),
            f"time taken:  {_clock(elapsed_s)}",
        ]


PRIORITY_ORDER = tuple(Priority)


def _breakdown(counts: Counter[str], order: Sequence[str] = ()) -> str:
    keys = [k for k in order if counts[k]] + sorted(k for k in counts if k not in order)
    parts = [f"{key} {counts[key]}" for key in keys if counts[key]]
    return f" ({', '.join(parts)})" if parts else ""


def too_deep_text(folders: int) -> str:
    """Folders past the watcher's depth limit, and what to do about them."""
    many = folders != 1
    return (
        f"{folders} folder{'s' * many} more than {MAX_FOLDER_DEPTH} levels below the inbox, "
        f"not read: move {'their' if many else 'its'} files higher up"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class RunProgress:
    """The progress line while ``run`` works, then the summary. A context manager."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        counting: CountingIntake,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.counting = counting
        self.console = Console(file=stream, highlight=False)
        self.clock = clock
        self.started = clock()
        with sessions() as session:
            self.baseline = Baseline.take(session)
        self._live: Live | None = None
        # (when, counts) of the last plain line; the first is printed once a file is seen
        nothing = RunCounts(Counter(), Counter(), 0, 0).progress_line(0).rsplit(" · ", 1)[0]
        self._last_plain: tuple[float, str] = (-PLAIN_INTERVAL_S, nothing)

    def counts(self) -> RunCounts:
        with self.sessions() as session:
            return RunCounts.query(session, self.baseline, self.counting.snapshot())

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            self._live = Live(console=self.console, transient=True, auto_refresh=False)
            self._live.start()
        return self

    def update(self) -> None:
        """Refresh the line from the database (called about once a second)."""
        elapsed = self.clock() - self.started
        try:
            line = self.counts().progress_line(elapsed)
        except SQLAlchemyError:  # busy or down for a moment: the worker retries, so do we
            return
        if self._live is not None:
            self._live.update(Text(line), refresh=True)
            return
        counts_part = line.rsplit(" · ", 1)[0]  # without the clock: print only on change
        last_at, last_counts = self._last_plain
        if elapsed - last_at >= PLAIN_INTERVAL_S and counts_part != last_counts:
            self.console.print(line, soft_wrap=True)
            self._last_plain = (elapsed, counts_part)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def note(self, line: str) -> None:
        """One of the run's own lines: on a terminal above the live line, not glued to it."""
        self.console.print(line, soft_wrap=True)

    def print_summary(self, unread_folders: int = 0) -> None:
        """The end-of-run report; ``unread_folders``: folders past the depth limit, whose
        files were never read (the watcher's log says so too, but nobody reads it)."""
        elapsed = self.clock() - self.started
        try:
            lines = self.counts().summary_lines(elapsed)
        except SQLAlchemyError as error:  # the run is over either way; say why no summary
            lines = [f"no summary: the worklist database did not answer ({type(error).__name__})"]
        if unread_folders:
            lines.insert(-1, f"not read:    {too_deep_text(unread_folders)}")
        for line in lines:
            self.console.print(line, soft_wrap=True)
