"""The README's first command as a person sees it: ``cxr-triage run ./inbox --exit-when-idle``.

A real ``run`` process (worker, watcher, SQLite, filesystem broker) on a mix of files; its
stdout is a pipe, as in CI, so the progress line is plain text. The summary must agree with
the worklist rows and the quarantined duplicate; the Celery and watcher logs must be in
``<data_dir>/logs/run.log`` and not on the terminal, unless ``--verbose``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from db.models import Status
from tests.corpus import copy_jpeg, cr_dicom, dataset_jpegs, lateral_dicom, truncated_copy
from tests.processes import CLI, rows

pytestmark = [pytest.mark.slow, pytest.mark.tf]

#: Lines only the logs have: Celery's banner, the watcher's and the worker's records.
LOG_MARKERS = ("concurrency: 2 (prefork)", "watching inbox (inotify mode)", "admitted", " INFO ")


def _run(tmp_path: Path, model_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(CXR_MODEL_PATH=str(model_dir), CXR_QUIET_PERIOD_S="0.5", COLUMNS="80")
    return subprocess.run(
        [*CLI, "run", "./inbox", "--exit-when-idle", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _summary(stdout: str) -> dict[str, str]:
    """``name: value`` lines of the summary (the last block of stdout)."""
    found = dict(
        re.findall(r"^(files seen|scored|rejected|failed|time taken):\s+(.*)$", stdout, re.M)
    )
    assert set(found) == {"files seen", "scored", "rejected", "failed", "time taken"}, stdout
    return found


def _breakdown(value: str) -> tuple[int, Counter[str]]:
    total, _, parts = value.partition(" ")
    counts: Counter[str] = Counter()
    for part in parts.strip("()").split(", ") if parts else ():
        name, number = part.rsplit(" ", 1)
        counts[name] = int(number)
    return int(total), counts


def test_the_first_run_prints_progress_and_a_summary_and_keeps_the_logs_in_a_file(
    tmp_path: Path, model_dir: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    jpegs = dataset_jpegs(4)
    copy_jpeg(jpegs[0], inbox / "normal.jpeg")
    copy_jpeg(jpegs[1], inbox / "pneumonia.jpeg")
    shutil.copyfile(inbox / "normal.jpeg", inbox / "normal-again.jpeg")  # a duplicate
    cr_dicom(jpegs[2], inbox / "cr.dcm")
    lateral_dicom(jpegs[3], inbox / "lateral.dcm")
    truncated_copy(cr_dicom(jpegs[3], tmp_path / "whole.dcm"), inbox / "truncated.dcm", 0.5)
    (inbox / "notes.txt").write_text("not an image")
    dropped = len(list(inbox.iterdir()))

    done = _run(tmp_path, model_dir)

    assert done.returncode == 0, done.stderr[-3000:]
    data = tmp_path / "cxr-triage-data"
    log_file = data / "logs" / "run.log"
    found = rows(f"sqlite:///{data / 'worklist.sqlite3'}")
    assert all(r.status in (Status.DONE, Status.REJECTED) for r in found), found
    summary = _summary(done.stdout)
    assert int(summary["files seen"]) == dropped == len(found) + 1  # + the duplicate
    scored, by_priority = _breakdown(summary["scored"])
    assert by_priority == Counter(r.priority for r in found if r.status == Status.DONE)
    assert scored == 3
    rejected, by_reason = _breakdown(summary["rejected"])
    expected = Counter(r.reason for r in found if r.status == Status.REJECTED) + Counter(
        duplicate=1
    )
    assert by_reason == expected and rejected == 4
    assert summary["failed"] == "0"
    assert re.fullmatch(r"\d+:\d\d", summary["time taken"])
    # /metrics sums the two pool processes: their counts are in the run's multiprocess folder
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(data / "metrics"))
    done_count = registry.get_sample_value("cxr_triage_images_processed_total", {"status": "done"})
    assert done_count == scored
    # a plain progress line (stdout is a pipe): counts, no terminal control codes
    assert re.search(
        r"^\d+ files seen · \d+ scored · \d+ rejected · \d+ in progress", done.stdout, re.M
    )
    assert "\x1b[" not in done.stdout
    # the logs are in the file, named once, and not on the terminal
    assert done.stdout.count("logs: cxr-triage-data/logs/run.log") == 1  # relative: no /home/x
    logged = log_file.read_text()
    terminal = done.stdout + done.stderr
    for marker in LOG_MARKERS:
        assert marker in logged, marker
        assert marker not in terminal, (marker, terminal)
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_verbose_keeps_the_logs_on_the_terminal(tmp_path: Path, model_dir: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    copy_jpeg(dataset_jpegs(1)[0], inbox / "one.jpeg")

    done = _run(tmp_path, model_dir, "--verbose")

    assert done.returncode == 0, done.stderr[-3000:]
    terminal = done.stdout + done.stderr
    for marker in LOG_MARKERS:
        assert marker in terminal, marker
    assert not (tmp_path / "cxr-triage-data" / "logs").exists()
    assert _summary(done.stdout)["files seen"] == "1"
