"""``cxr-triage worklist`` at the width of a plain terminal: whole headers, nothing cut.

Rendered by a real ``python -m worker.cli`` process with ``COLUMNS`` set, as a person's
terminal (or ``ssh`` session) would size it; the rows carry the longest values the worklist
holds (a rejection reason, several flags, a 16-character accession number, a deep file name)
and sender text that looks like Rich markup.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.cells import cell_len

from db import migrate
from db.engine import make_engine, make_session_factory
from db.models import Status, WorklistEntry
from tests.processes import CLI

LONG_NAME = "exports/2026-11-29/ward-7/a-very-long-file-name-from-a-modality-export-0001.dcm"
MARKUP_NAME = "[bold red]x[/].jpg"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    when = datetime(2026, 11, 29, 8, 30, 15, tzinfo=UTC)
    common = {"received_at": when, "model_version": "cxr-sepcnn-192-v1", "threshold": 0.5}
    with make_session_factory(engine).begin() as session:
        session.add_all(
            [
                WorklistEntry(
                    file_sha256="a" * 64,
                    source_name=LONG_NAME,
                    source_path="/inbox/a",
                    status=Status.DONE,
                    probability=0.987654,
                    label="pneumonia",
                    priority="urgent",
                    priority_rank=0,
                    flags="age_outside_training_range,eligibility_unverified",
                    accession_number="ACC1234567890123",
                    **common,
                ),
                WorklistEntry(
                    file_sha256="b" * 64,
                    source_name=MARKUP_NAME,
                    source_path="/inbox/b",
                    status=Status.REJECTED,
                    reason="outside_training_population",
                    **common,
                ),
                WorklistEntry(
                    file_sha256="c" * 64,
                    source_name="normal.jpeg",
                    source_path="/inbox/c",
                    status=Status.DONE,
                    probability=0.01,
                    label="normal",
                    priority="routine",
                    priority_rank=2,
                    **common,
                ),
            ]
        )
    engine.dispose()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    return {**clean, "CXR_DATA_DIR": str(tmp_path), "CXR_DATABASE_URL": url}


def _worklist(env: dict[str, str], columns: int, *args: str) -> str:
    done = subprocess.run(
        [*CLI, "worklist", *args],
        env={**env, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        cwd=env["CXR_DATA_DIR"],  # not the checkout: the package comes from the environment
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _header(table: str, first: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.split()[:1] == [first])
    return line.split()


def _read_down(table: str, header: str, next_header: str | None) -> str:
    """A left-aligned column's text, top to bottom, without the spaces Rich pads with."""
    lines = table.splitlines()
    header_line = next(line for line in lines if line.split()[:1] == ["#"])
    start = header_line.index(f" {header}") + 1
    end = header_line.index(f" {next_header}") + 1 if next_header else None
    return "".join(line[start:end].strip() for line in lines[lines.index(header_line) :])


def test_at_80_columns_every_header_is_whole_and_no_line_is_longer(env: dict[str, str]):
    table = _worklist(env, 80)
    assert max(cell_len(line) for line in table.splitlines()) <= 80, table
    assert "…" not in table, table  # neither a header nor a value is cut short
    header = _header(table, "#")
    assert header == ["#", "tier", "id", "prob", "status", "flags", "accession", "received", "file"]
    # values fold instead: a column read down holds every character
    assert LONG_NAME in _read_down(table, "file", None), table
    assert "rejected(outside_training_population)" in _read_down(table, "status", "flags")
    assert "ACC1234567890123" in _read_down(table, "accession", "received")
    assert "0.988" in table and "urgent" in table and "11-29 08:30" in table
    assert "entries 1-3 of 3; 0 listed apart" in table


def test_a_file_name_that_looks_like_markup_is_printed_as_text(env: dict[str, str]):
    table = _worklist(env, 80)
    # Rich would have eaten "[bold red]" and "[/]"
    assert MARKUP_NAME.replace(" ", "") in _read_down(table, "file", None), table
    assert "\x1b[" not in table  # and a pipe gets no colour codes


def test_a_wide_terminal_also_shows_the_label_and_the_full_time(env: dict[str, str]):
    table = _worklist(env, 200)
    header = _header(table, "#")
    assert header[:7] == ["#", "tier", "id", "priority", "prob", "label", "status"]
    assert "received (UTC)" in table and "2026-11-29 08:30:15" in table
    assert LONG_NAME in _read_down(table, "file", None) and "pneumonia" in table
    assert max(cell_len(line) for line in table.splitlines()) <= 200


def test_json_keeps_every_column(env: dict[str, str]):
    rows = json.loads(_worklist(env, 80, "--json"))
    # urgent, then the refused film (unknown risk: with SUSPECT), then routine
    assert [r["source_name"] for r in rows] == [LONG_NAME, MARKUP_NAME, "normal.jpeg"]
    assert [(r["position"], r["tier"]) for r in rows] == [
        (1, "urgent"),
        (2, "suspect"),
        (3, "routine"),
    ]
    assert rows[0]["label"] == "pneumonia"
    assert rows[0]["flags"] == ["age_outside_training_range", "eligibility_unverified"]
    assert rows[0]["probability"] == pytest.approx(0.987654)
    assert {"priority_rank", "model_version", "threshold", "results"} <= set(rows[0])


def test_a_study_is_one_entry_its_other_images_marked_plus(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    when = datetime(2026, 11, 29, 8, 30, 15, tzinfo=UTC)
    study = {"study_instance_uid": "1.2.3", "patient_id": "P1", "received_at": when}
    with make_session_factory(engine).begin() as session:
        session.add_all(
            [
                WorklistEntry(
                    file_sha256="a" * 64,
                    source_name="lateral.dcm",
                    source_path="/inbox/a",
                    status=Status.REJECTED,
                    reason="lateral_view",
                    **study,
                ),
                WorklistEntry(
                    file_sha256="b" * 64,
                    source_name="pa.dcm",
                    source_path="/inbox/b",
                    status=Status.DONE,
                    probability=0.2,
                    label="normal",
                    priority="suspect",
                    priority_rank=1,
                    **study,
                ),
            ]
        )
    engine.dispose()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    table = _worklist({**clean, "CXR_DATA_DIR": str(tmp_path), "CXR_DATABASE_URL": url}, 80)
    lines = [line.split() for line in table.splitlines()]
    pa = next(n for n, words in enumerate(lines) if "pa.dcm" in words)
    lateral = next(n for n, words in enumerate(lines) if "lateral.dcm" in words)
    assert lines[pa][:3] == ["1", "suspect", "2"]  # placed by the PA
    assert lateral > pa and lines[lateral][0] == "+"  # inside its entry, not a row of its own
    assert "entries 1-1 of 1; 0 listed apart" in table
