"""Readiness with real prefork workers: "ready" (log line, ``status --ready``) only once every
pool process has loaded and warmed the model; never with a model that cannot load; lost while a
killed process's replacement warms up; gone when the worker stops.

The embedded defaults (SQLite, filesystem broker under the data folder): readiness needs no
server, and the health check must not either.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import CLI, running, service_env
from tests.support import wait_until
from worker import readiness

pytestmark = [pytest.mark.slow]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    env = service_env(tmp_path, url, None, **extra)
    env.pop("CXR_BROKER_URL", None)
    return env


def _status_ready(env: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = subprocess.run(
        [*CLI, "status", "--ready", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


def test_a_worker_whose_model_cannot_load_never_reports_ready(tmp_path: Path) -> None:
    env = _env(tmp_path, CXR_MODEL_PATH=str(tmp_path / "no-model"))
    data_dir = Path(env["CXR_DATA_DIR"])
    code, report = _status_ready(env)
    assert code == 1 and report == {"ready": False, "workers": []}
    log = tmp_path / "worker.log"
    with running(["worker", "--concurrency", "2"], env, log) as process:
        wait_until(
            lambda: log.read_text().count("model could not be loaded") >= 2,
            180,
            "both pool processes to fail loading the model",
            [log],
        )
        time.sleep(2 * readiness.POLL_S)
        code, report = _status_ready(env)
        text = log.read_text()
        assert process.poll() is None  # the worker is up (Flower sees it), just not ready
    assert code == 1
    assert report["workers"] == [
        {
            "node": report["workers"][0]["node"],
            "pid": process.pid,
            "processes": 2,
            "warm": 0,
            "ready": False,
        }
    ]
    assert "connected to the broker; not ready until the model is warm" in text
    assert not re.search(r"\bready\.$", text, re.MULTILINE)  # Celery's own line is reworded
    assert " ready: " not in text
    assert not list(readiness.marker_folder(data_dir).glob("*.json"))  # stopped: all removed


def test_ready_only_after_every_process_is_warm_and_again_after_a_kill(tmp_path: Path) -> None:
    env = _env(tmp_path)  # the shipped model
    data_dir = Path(env["CXR_DATA_DIR"])
    log = tmp_path / "worker.log"
    with running(["worker", "--concurrency", "2"], env, log) as process:
        wait_until(lambda: readiness.check(data_dir).ready, 300, "a ready worker", [log])
        children = _children(process.pid)
        code, report = _status_ready(env)
        assert code == 0 and report["workers"][0]["warm"] == 2
        markers = {
            json.loads(p.read_text())["pid"]
            for p in readiness.marker_folder(data_dir).glob("process-*.json")
        }
        assert markers == children and len(children) == 2
        wait_until(lambda: " ready: 2 of 2" in log.read_text(), 10, "the ready line", [log])
        lines = log.read_text().splitlines()
        ready_at = next(i for i, line in enumerate(lines) if " ready: 2 of 2" in line)
        warm_at = [i for i, line in enumerate(lines) if "model loaded and warm in process" in line]
        connected_at = next(i for i, line in enumerate(lines) if "connected to the broker" in line)
        assert len(warm_at) == 2 and max(warm_at) < ready_at and connected_at < ready_at

        victim = min(children)
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
        # The replacement loads TensorFlow for seconds; until it is warm the worker is not ready
        # (a zombie or a vanished pid never counts, its marker notwithstanding).
        assert not readiness.check(data_dir).ready
        wait_until(lambda: readiness.check(data_dir).ready, 300, "ready again", [log])
        replacement = _children(process.pid) - children
        assert len(replacement) == 1
        wait_until(lambda: "not ready: 1 of 2" in log.read_text(), 10, "the lost line", [log])
    code, report = _status_ready(env)
    assert code == 1 and report["workers"] == []


def test_a_marker_left_by_a_dead_process_never_counts(tmp_path: Path) -> None:
    """A SIGKILLed worker leaves its markers behind: a pid that is gone (or reused by a process
    that is not the worker's child) is not ready, whatever the files say."""
    data_dir = tmp_path / "data"
    folder = readiness.marker_folder(data_dir)
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / f"worker-{dead.pid}.json").write_text(
        json.dumps({"pid": dead.pid, "node": "gone", "processes": 1})
    )
    assert readiness.check(data_dir).workers == ()
    # This (live) process as a worker of 1, whose "child" marker names a live process that is
    # not its child (pid 1): not warm.
    me = os.getpid()
    (folder / f"worker-{me}.json").write_text(json.dumps({"pid": me, "node": "t", "processes": 1}))
    (folder / "process-1.json").write_text(json.dumps({"pid": 1, "worker_pid": me}))
    (folder / "process-junk.json").write_text("{not json")
    (folder / "worker-junk.json").write_text("[]")
    host = readiness.check(data_dir)
    assert not host.ready and host.workers[0].warm == 0
    readiness.mark_process_solo(data_dir, 1.0)
    assert readiness.check(data_dir).ready


def test_the_embedded_run_reports_ready_once_both_processes_are_warm(tmp_path: Path) -> None:
    """``cxr-triage run`` (README's first command) starts a prefork worker of 2: the same
    readiness, seen by ``status --ready`` from another process."""
    env = _env(tmp_path)
    log = tmp_path / "run.log"
    with running(["run", "--verbose"], env, log):  # the worker's log lines on the terminal
        wait_until(lambda: _status_ready(env)[0] == 0, 300, "status --ready to pass", [log])
        code, report = _status_ready(env)
        assert code == 0
        assert [(w["processes"], w["warm"]) for w in report["workers"]] == [(2, 2)]
        wait_until(lambda: " ready: 2 of 2" in log.read_text(), 10, "the ready line", [log])
    assert _status_ready(env)[0] == 1
