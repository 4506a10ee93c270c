"""``cxr-triage run``'s counts and the errors it prints for a person, without a model.

The counts are this run's: rows left final by an earlier run are not counted again, rows an
earlier run left waiting are (this run finishes them), and files the intake quarantined
without a row are rejected by their reason. The whole run, with a worker, is in
``tests/e2e/test_first_run.py``.
"""

from __future__ import annotations

import io
import os
import pty
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import cast

from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.models import Status, WorklistEntry
from ingest.limits import MAX_FOLDER_DEPTH
from tests.processes import CLI
from tests.support import wait_until
from worker.cli.run_report import Baseline, CountingIntake, RunCounts, RunProgress
from worker.intake import Intake


def _row(n: int, status: Status, **values: object) -> WorklistEntry:
    return WorklistEntry(
        file_sha256=f"{n:064x}",
        source_name=f"{n}.dcm",
        source_path=f"/inbox/{n}.dcm",
        status=status,
        **values,
    )


def test_a_run_counts_its_own_rows_and_the_ones_it_finishes(sessions: sessionmaker[Session]):
    with sessions.begin() as session:
        session.add_all(
            [
                _row(1, Status.DONE, priority="urgent"),  # an earlier run's: not counted
                _row(2, Status.REJECTED, reason="lateral_view"),  # the same
                _row(3, Status.QUEUED),  # left waiting: this run's
            ]
        )
    with sessions() as session:
        baseline = Baseline.take(session)
    with sessions.begin() as session:
        session.get_one(WorklistEntry, 3).status = Status.DONE
        session.get_one(WorklistEntry, 3).priority = "routine"
        session.add_all(
            [
                _row(4, Status.DONE, priority="urgent"),
                _row(5, Status.DONE, priority="urgent"),
                _row(6, Status.REJECTED, reason="not_an_image"),
                _row(7, Status.FAILED, reason="processing_error"),
                _row(8, Status.PROCESSING),
            ]
        )
    with sessions() as session:
        counts = RunCounts.query(session, baseline, {"duplicate": 2})
    assert counts.scored == Counter(urgent=2, routine=1)
    assert counts.rejected == Counter(not_an_image=1, duplicate=2)
    assert (counts.failed, counts.in_progress, counts.seen) == (1, 1, 8)
    assert counts.summary_lines(75) == [
        "files seen:  8",
        "scored:      3 (urgent 2, routine 1)",
        "rejected:    3 (duplicate 2, not_an_image 1)",
        "failed:      1",
        "in progress: 1 (finished by the next run)",
        "time taken:  1:15",
    ]
    assert counts.progress_line(3) == (
        "8 files seen · 3 scored · 3 rejected · 1 in progress · 0:03"
    )


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", *args, "--exit-when-idle"],
        env={**_clean_environment(), "CXR_DATA_DIR": str(tmp_path / "data"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_inbox_that_does_not_exist_is_named_and_not_created(tmp_path: Path):
    done = _run(tmp_path, "./inbxo")
    assert done.returncode == 2
    assert "inbxo is not a folder; create it or check the path" in done.stderr
    assert not (tmp_path / "inbxo").exists()
    assert not (tmp_path / "data" / "logs").exists()  # nothing was started


def test_a_database_that_cannot_be_opened_is_said_plainly_without_its_password(tmp_path: Path):
    (tmp_path / "inbox").mkdir()
    url = "postgresql+psycopg://triage:s3cret-pw@127.0.0.1:1/worklist"
    done = _run(tmp_path, "./inbox", CXR_DATABASE_URL=url)
    assert done.returncode == 1
    assert "cannot open the worklist database postgresql+psycopg://triage:***@127.0.0.1:1" in (
        done.stderr
    )
    assert "Connection refused" in done.stderr or "connection failed" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "s3cret-pw" not in (tmp_path / "data" / "logs" / "run.log").read_text()


def test_on_a_terminal_the_progress_line_is_redrawn_in_place(tmp_path: Path):
    """A pseudo-terminal as stdout: Rich's live line (cursor controls), then the summary."""
    (tmp_path / "inbox").mkdir()
    controller, terminal = pty.openpty()
    env = {**_clean_environment(), "CXR_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "80"}
    with subprocess.Popen(
        [*CLI, "run", "./inbox", "--exit-when-idle"],
        cwd=tmp_path,
        env=env,
        stdout=terminal,
        stderr=subprocess.PIPE,
    ) as process:
        os.close(terminal)
        output = b""
        while chunk := _read(controller):
            output += chunk
        assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
    os.close(controller)
    text = output.decode()
    assert "\x1b[" in text  # the line is redrawn, not printed again and again
    assert "0 files seen · 0 scored · 0 rejected · 0 in progress" in text
    assert "files seen:  0" in text.replace("\r", "")
    # the stop message on a line of its own, not glued to the live line ("0:03inbox empty")
    assert re.search(r"(^|[\r\n]|\x1b\[2K)inbox empty and every row final; stopping\r?\n", text)
    assert not re.search(r"\d(inbox empty|cxr-triage running)", text)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other end closed
        return b""


def test_a_database_that_stops_answering_mid_run_costs_the_line_not_the_run(
    sessions: sessionmaker[Session], tmp_path: Path
):
    stream = io.StringIO()
    progress = RunProgress(sessions, CountingIntake(cast(Intake, None)), stream)
    empty = make_engine(f"sqlite:///{tmp_path / 'not-migrated.sqlite3'}")  # no worklist table
    progress.sessions = make_session_factory(empty)
    with progress:
        progress.update()  # no exception: the run goes on
    progress.print_summary()
    empty.dispose()
    assert stream.getvalue() == (
        "no summary: the worklist database did not answer (OperationalError)\n"
    )


def test_a_worker_that_dies_is_said_with_the_end_of_its_log(tmp_path: Path):
    (tmp_path / "inbox").mkdir()
    log_file = tmp_path / "data" / "logs" / "run.log"
    env = {**_clean_environment(), "CXR_DATA_DIR": str(tmp_path / "data")}
    with subprocess.Popen(
        [*CLI, "run", "./inbox"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            wait_until(
                lambda: log_file.exists() and " ready: " in log_file.read_text(), 120, "the worker"
            )
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            os.kill(int(children.split()[0]), signal.SIGKILL)  # the Celery worker
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1
    assert "the worker exited (-9); stopping" in stderr
    assert f"the last lines of {log_file}:" in stderr
    assert " ready: " in stderr  # the log's end, where the person can see it
    assert "files seen:  0" in stdout


def test_the_run_s_own_lines_all_go_to_stdout_and_a_folder_too_deep_is_said(tmp_path: Path):
    """A pipe showed half of the run: three of its lines went to stderr. And a file in a
    folder past the watcher's depth limit sat unread while the run said "inbox empty and
    every row final", the reason only in the log file (issue 21)."""
    folder = tmp_path / "inbox"
    for _ in range(MAX_FOLDER_DEPTH + 2):
        folder = folder / "d"
    folder.mkdir(parents=True)
    (folder / "deep.png").write_bytes(b"not read")
    done = _run(tmp_path, "./inbox")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "logs: data/logs/run.log"  # below the working folder: relative
    assert lines[1] == "cxr-triage running: watching inbox (Ctrl-C stops)"
    deep = (
        f"1 folder more than {MAX_FOLDER_DEPTH} levels below the inbox, not read: "
        "move its files higher up"
    )
    assert f"every row final, but {deep}; stopping" in lines
    assert f"not read:    {deep}" in lines
    assert "inbox empty" not in done.stdout
    assert (folder / "deep.png").exists()
    # a normal stop retires the pool processes: not a process lost and restarting
    log = (tmp_path / "data" / "logs" / "run.log").read_text()
    assert "Warm shutdown" in log and "restarting" not in log
