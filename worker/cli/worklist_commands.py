"""``worklist``, ``review``, ``status`` and ``db``: reading and keeping the worklist.

These never import TensorFlow or Celery's worker machinery, so they answer in a second.
Their output is for the reading room and may show accession numbers; logs never do.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Column, Table

from db.models import ReviewDecision, Status, utcnow
from db.schema import WorklistRow
from db.worklist import parse_when
from worker.cli.app import app, typer_app
from worker.cli.text import printable
from worker.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from model.drift import DriftReport

db_app = typer_app(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

#: ``--csv`` columns: the row schema's, but ``result_objects`` (nested; ``results`` sums it up).
CSV_COLUMNS = tuple(name for name in WorklistRow.model_fields if name != "result_objects")


#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection, OWASP).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """``value`` for a CSV cell: text that would start a formula gets a leading ``'``, which
    spreadsheets show as text and drop from the cell's value. Numbers pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def _sessions() -> Any:
    from worker.resources import get_session_factory

    get_settings.cache_clear()
    return get_session_factory()


def _parse_when(value: str | None) -> datetime | None:
    """``2026-01-31``, ``2026-01-31T08:00`` (UTC unless a zone is given), or ``24h`` / ``7d``."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


def csv_row(row: WorklistRow) -> dict[str, object]:
    """A row as ``--csv`` writes it: ``flags`` comma-separated, every cell spreadsheet-safe."""
    values = row.model_dump(mode="json", include=set(CSV_COLUMNS))
    values["flags"] = ",".join(row.flags)
    return {name: spreadsheet_safe(values[name]) for name in CSV_COLUMNS}


@app.command()
def worklist(
    status: Annotated[
        list[Status] | None, typer.Option("--status", help="Only these statuses (repeatable)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Received at or after: date, time, 24h")] = None,
    until: Annotated[str | None, typer.Option(help="Received before: date or time")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient ID")] = None,
    accession: Annotated[str | None, typer.Option(help="Accession number")] = None,
    include_reviewed: Annotated[bool, typer.Option(help="Also rows already reviewed")] = False,
    limit: Annotated[
        int, typer.Option(min=1, help="At most this many entries (studies) of each list")
    ] = 50,
    offset: Annotated[
        int, typer.Option(min=0, help="Skip this many entries of each list (paging)")
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines... as one JSON array")
    ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row")] = False,
) -> None:
    """The reading list: URGENT, then SUSPECT with every film not analysed, then ROUTINE;
    oldest first within a tier; one entry per study; files that are not the device's to
    read listed apart, after it. One row per image: ``position``, ``tier`` and ``entry_id``
    say where it stands."""
    from db.reading import Scope, reading_list
    from db.results import objects_of

    scope = Scope.of(
        statuses=status,
        since=_parse_when(since),
        until=_parse_when(until),
        patient_id=patient,
        accession_number=accession,
        include_reviewed=include_reviewed,
    )
    with _sessions()() as session:
        page = reading_list(session, scope, offset=offset, limit=limit)
        results = objects_of(session, [image.id for image in page.images])
        listed = [WorklistRow.listed(entry, results) for entry in page.entries]
        apart = [WorklistRow.listed(entry, results) for entry in page.apart]
    rows = [row for entry_rows in (*listed, *apart) for row in entry_rows]
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(row) for row in rows)
    else:
        _print_table(rows)
        typer.echo(_counts_line(offset, len(listed), page.total, len(apart), page.apart_total))


def _counts_line(offset: int, shown: int, total: int, apart_shown: int, apart_total: int) -> str:
    """Which entries of each list the table showed, and how many there are."""
    to_read = f"entries {offset + 1}-{offset + shown} of {total}" if shown else f"{total} entries"
    apart = f"{apart_total} listed apart (not the device's to read)"
    if apart_shown:
        apart += f", {offset + 1}-{offset + apart_shown} shown"
    return f"{to_read}; {apart}"


#: Below this many columns the table drops what the narrow view can do without.
WIDE_TABLE = 120
#: The narrowest a folding column gets (unless its header or its widest value is narrower).
MIN_FOLD = 8


@dataclass(frozen=True)
class _Column:
    header: str
    cells: list[str]
    share: int = 0  # 0: as wide as its widest value; n: folds, widened by n parts of the rest
    justify: JustifyMethod = "left"


def _print_table(rows: list[WorklistRow]) -> None:
    """The worklist for a terminal: whole headers at any width, long values folding.

    One row per image: ``#`` is the entry's position on its first row and ``+`` on the other
    images of the entry (a study); ``tier`` is the entry's. Below ``WIDE_TABLE`` columns the
    priority (on an entry's first row it is the tier) and the label (it follows from the
    priority) go, the other images of an entry show their own priority under ``tier``, and
    the time loses its year and seconds; at any width a column empty in every row (no PACS results,
    no accession numbers for JPEGs) goes. ``--json`` keeps everything. The widths are shared
    out here (:func:`_widths`): Rich's own shrinking cut every header at 80 columns ("prior…",
    "proba…") and ignores ratios unless the table fills the screen.
    """
    console = Console()
    wide = console.width >= WIDE_TABLE
    received = [r.received_at.isoformat()[:19].replace("T", " ") for r in rows]
    candidates = [
        _Column("#", [_place(r) for r in rows], justify="right"),
        _Column("tier", [_tier(r, wide) for r in rows]),
        _Column("id", [str(r.id) for r in rows], justify="right"),
        *([_Column("priority", [r.priority or "-" for r in rows])] if wide else []),
        _Column("prob", [_probability(r.probability) for r in rows], justify="right"),
        *([_Column("label", [r.label or "-" for r in rows])] if wide else []),
        _Column(
            "status",
            [r.status.value + (f" ({r.reason})" if r.reason else "") for r in rows],
            share=2,
        ),
        _Column("flags", [", ".join(r.flags) for r in rows], share=2),
        _Column("PACS results", [r.results for r in rows], share=1),
        _Column("accession", [r.accession_number or "" for r in rows], share=2),
        _Column("received (UTC)", received)
        if wide
        else _Column("received", [when[5:16] for when in received]),
        _Column("file", [r.source_name for r in rows], share=4),
    ]
    candidates = [
        _Column(c.header, [printable(text) for text in c.cells], c.share, c.justify)
        for c in candidates
    ]
    columns = [c for c in candidates if any(c.cells) or not rows]
    table = Table(
        *(
            Column(c.header, width=width, justify=c.justify, overflow="fold", no_wrap=not c.share)
            for c, width in zip(columns, _widths(columns, console.width), strict=True)
        ),
        title="cxr-triage worklist - not for diagnostic use",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for index in range(len(rows)):
        # File names and header fields come from senders: text, never Rich markup, and
        # never a terminal's escape sequences.
        table.add_row(*(escape(c.cells[index]) for c in columns))
    console.print(table)


def _tier(row: WorklistRow, wide: bool) -> str:
    """The entry's tier on its first row; on its other images, their own priority where the
    table has no priority column (narrow), nothing where it has."""
    if row.entry_id == row.id:
        return row.tier or ""
    return "" if wide else row.priority or "-"


def _place(row: WorklistRow) -> str:
    """The entry's position on its first row (none when listed apart); ``+`` on the other
    images of the entry."""
    if row.entry_id != row.id:
        return "+"
    return str(row.position) if row.position is not None else ""


def _widths(columns: list[_Column], width: int) -> list[int]:
    """Fixed columns as wide as their widest value; folding ones from their header (or
    ``MIN_FOLD``) up, one character at a time to the one furthest below its share, until the
    line is ``width`` long or each holds its widest value."""
    natural = [max(cell_len(text) for text in (c.header, *c.cells)) for c in columns]
    widths = [
        n if not c.share else min(n, max(cell_len(c.header), MIN_FOLD))
        for c, n in zip(columns, natural, strict=True)
    ]
    left = width - sum(widths) - 2 * (len(columns) - 1)  # two spaces between columns
    while left > 0:
        growing = [i for i, c in enumerate(columns) if c.share and widths[i] < natural[i]]
        if not growing:
            break
        narrowest = min(growing, key=lambda i: widths[i] / columns[i].share)
        widths[narrowest] += 1
        left -= 1
    return widths


def _probability(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


@app.command()
def review(
    entry_id: Annotated[int, typer.Argument(help="Worklist row id")],
    decision: Annotated[ReviewDecision, typer.Option(help="What the reader decided")],
    by: Annotated[str, typer.Option(help="The reviewer's account (`cxr-triage user list`)")],
    note: Annotated[str | None, typer.Option(help="Kept in the review history")] = None,
) -> None:
    """Record a reviewer's review of a row (it stays on the worklist, marked reviewed); every
    review is kept in the row's review history and the audit log (as this OS user, for the
    account named by --by, which must be enabled with the reviewer or admin role)."""
    from db import accounts
    from db.models import AuditKind, Role
    from db.worklist import review as record_review
    from worker.cli.user_commands import actor

    try:
        with _sessions().begin() as session:
            account = accounts.require(session, by)
            if account.disabled or not Role(account.role).allows(Role.REVIEWER):
                raise accounts.AccountError(f"{account.name} may not record reviews")
            entry = record_review(session, entry_id, decision, account.name, note=note)
            accounts.audit(
                session,
                AuditKind.REVIEW,
                actor(),
                "cli",
                account=account,
                worklist_id=entry.id,
                detail=decision.value,
            )
            typer.echo(f"row {entry.id} reviewed: {decision.value} by {account.name}")
    except (LookupError, accounts.AccountError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error


class LoopName(StrEnum):
    """The long-running loops with a heartbeat (:mod:`worker.heartbeat`)."""

    watcher = "watcher"
    deliver = "deliver"


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
    ready: Annotated[
        bool,
        typer.Option(
            "--ready",
            help="Only whether this host's workers have the model warm in every process: "
            "exit 0 if so, 1 if not (the container health check; no database needed)",
        ),
    ] = False,
    alive: Annotated[
        LoopName | None,
        typer.Option(
            "--alive",
            help="Only whether this host's watcher or deliver loop is running: exit 0 if it "
            "passed recently, 1 if not (their container health check; no database needed)",
        ),
    ] = None,
) -> None:
    """Counts by status, SR/SC objects by state, queue depth, the oldest case still waiting,
    and whether this host's workers are ready."""
    from worker import heartbeat, readiness

    get_settings.cache_clear()
    if alive is not None:
        liveness = heartbeat.check(get_settings().data_dir, alive.value)
        typer.echo(json.dumps(asdict(liveness)) if as_json else liveness.summary())
        raise typer.Exit(0 if liveness.alive else 1)
    host = readiness.check(get_settings().data_dir)
    if ready:
        typer.echo(json.dumps(host.as_dict()) if as_json else host.summary())
        raise typer.Exit(0 if host.ready else 1)
    from db.models import RIS_KINDS
    from db.results import kind_state_counts, state_counts
    from db.worklist import counts_by_status, oldest_waiting

    with _sessions()() as session:
        counts = counts_by_status(session)
        result_counts = state_counts(session)
        by_kind = kind_state_counts(session)
        oldest = oldest_waiting(session)
        oldest_info = (
            {
                "id": oldest.id,
                "status": Status(oldest.status).value,
                "received_at": oldest.received_at.isoformat(),
                "waiting_s": round((utcnow() - oldest.received_at).total_seconds(), 1),
            }
            if oldest
            else None
        )
        drift = _drift_report(session)
        watcher = _watcher_lease(session)
    report: dict[str, Any] = {
        "counts": {s.value: n for s, n in counts.items()},
        "results": {s.value: n for s, n in result_counts.items()},
        "results_by_kind": {
            k.value: {s.value: n for (kind, s), n in by_kind.items() if kind is k}
            for k in {kind for kind, _ in by_kind}
        },
        "queues": _queue_depths(),
        "oldest_waiting": oldest_info,
        "drift": drift.as_dict() if drift else None,
        "worker": host.as_dict(),
        "watcher": watcher,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo("rows:   " + "  ".join(f"{k}={v}" for k, v in report["counts"].items()))
    typer.echo("results: " + "  ".join(f"{k}={v}" for k, v in report["results"].items()))
    for kind in RIS_KINDS:  # the RIS messages apart, once there are any
        states = report["results_by_kind"].get(kind.value, {})
        if any(states.values()):
            typer.echo(f"  ris {kind.value}: " + "  ".join(f"{k}={v}" for k, v in states.items()))
    typer.echo("queues: " + "  ".join(f"{k}={v}" for k, v in report["queues"].items()))
    if oldest_info:
        typer.echo(
            f"oldest waiting: row {oldest_info['id']} ({oldest_info['status']}), "
            f"{oldest_info['waiting_s']} s"
        )
    else:
        typer.echo("oldest waiting: none")
    typer.echo(host.summary())
    if watcher is None:
        typer.echo("watcher: never started")
    else:
        state = "active" if watcher["active"] else "none active (lease expired)"
        typer.echo(
            f"watcher: {state}: {watcher['holder']} (term {watcher['term']}), lease "
            f"{'ends' if watcher['active'] else 'ended'} in {watcher['expires_in_s']} s"
        )
    if drift is not None:
        typer.echo(drift.summary())
        for warning in drift.warnings:
            typer.echo(f"WARNING: {warning}")


def _watcher_lease(session: Session) -> dict[str, Any] | None:
    """Which process runs the watcher (``cxr-triage watch`` on several machines: one active,
    the others standing by) and how long its lease still runs."""
    from db.leadership import current
    from worker.leadership import WATCHER

    lease = current(session, WATCHER)
    if lease is None:
        return None
    left = round((lease.expires_at - utcnow()).total_seconds(), 1)
    return {"holder": lease.holder, "term": lease.term, "active": left > 0, "expires_in_s": left}


def _drift_report(session: Session) -> DriftReport | None:
    """The drift watch's last 7 days against the model's reference (None: no reference)."""
    from model.drift import Reference
    from worker.drift_watch import window_report

    try:
        reference = Reference.load(get_settings().model_path)
    except (OSError, ValueError, KeyError) as error:
        typer.echo(f"drift: no reference ({error})", err=True)
        return None
    return window_report(session, reference)


def _queue_depths() -> dict[str, int | None]:
    """Messages waiting per queue; None where the broker cannot tell or is down."""
    from kombu.exceptions import OperationalError

    from worker.broker import queue_depths
    from worker.celery_app import QUEUES
    from worker.celery_app import app as celery_app

    depths: dict[str, int | None] = dict.fromkeys(QUEUES)
    try:
        with celery_app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            depths.update(queue_depths(connection, QUEUES))
    except (OperationalError, OSError):
        pass
    return depths


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument()] = "head",
    roles: Annotated[
        bool,
        typer.Option(
            "--roles",
            help="Then `db roles`: the services' least-privilege roles and logins (PostgreSQL)",
        ),
    ] = False,
) -> None:
    """Create or migrate the worklist schema (idempotent). With CXR_WEB_PASSWORD set
    (deprecated), also create or update the CXR_WEB_USERNAME account from it."""
    from db import migrate
    from db.accounts import AccountError
    from worker.cli.role_commands import apply_roles
    from worker.cli.web_commands import bootstrap_shared_account

    get_settings.cache_clear()
    settings = get_settings()
    migrate.upgrade(settings.database_url, revision)
    typer.echo("database is at the newest revision")
    try:
        bootstrap_shared_account(settings)  # logs what it did, with the deprecation
    except AccountError as error:
        typer.echo(f"cxr-triage db upgrade: CXR_WEB_PASSWORD: {error}", err=True)
        raise typer.Exit(2) from error
    if roles:
        if not settings.database_url.startswith("postgresql"):
            typer.echo("--roles: SQLite has no roles; nothing to do", err=True)
            return
        made = apply_roles(settings)
        typer.echo("roles set" + (f"; logins: {', '.join(made)}" if made else ""))


@db_app.command("check")
def db_check() -> None:
    """Fail if the database is not at the newest revision."""
    from db import migrate

    get_settings.cache_clear()
    if not migrate.is_current(get_settings().database_url):
        typer.echo("database is behind: run `cxr-triage db upgrade`", err=True)
        raise typer.Exit(1)
    typer.echo("database is at the newest revision")
