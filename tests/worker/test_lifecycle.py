"""The worker's signal handlers live in worker.lifecycle: connected in every worker, in no
process that only sends tasks, and importing the app touches no file.

Each check runs in a fresh interpreter: connecting a signal handler is process-wide, and an
import already done by another test would hide the one under test. The real workers that
depend on these handlers (readiness, metrics, lease keeping) are in ``test_readiness.py``,
``test_celery_worker.py`` and ``tests/reliability``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.processes import service_env


def _python(code: str, root: Path) -> str:
    env = service_env(root, f"sqlite:///{root / 'worklist.sqlite3'}", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_the_app_and_its_tasks_touches_no_file(tmp_path: Path) -> None:
    """What the watcher and the CLI import to send tasks, on the embedded broker: the
    configuration made the broker's folders under the data folder while it was built."""
    _python(
        """
        import worker.celery_app, worker.tasks, worker.service, worker.lifecycle
        """,
        tmp_path,
    )
    assert sorted(tmp_path.iterdir()) == []


def test_a_sender_connects_no_worker_handler(tmp_path: Path) -> None:
    output = _python(
        """
        import sys
        from celery import signals
        import worker.tasks
        print("worker.lifecycle" in sys.modules, len(signals.worker_ready.receivers or []))
        """,
        tmp_path,
    )
    assert output.split() == ["False", "0"]


def test_every_worker_imports_the_lifecycle_and_connects_its_handlers(tmp_path: Path) -> None:
    """Celery's worker start imports the ``imports`` and ``include`` modules (its loader's
    ``import_default_modules``, before logging is set up and any signal is sent)."""
    output = _python(
        """
        from celery import signals
        from worker.celery_app import app
        app.loader.import_default_modules()
        from worker import lifecycle
        connected = {
            name: [r[1]() for r in getattr(signals, name).receivers]
            for name in (
                "after_setup_logger", "worker_init", "worker_process_init", "worker_ready",
                "worker_shutting_down", "worker_process_shutdown", "worker_shutdown",
            )
        }
        handlers = {
            "after_setup_logger": [lifecycle._cap_phi_loggers],
            "worker_init": [lifecycle._serve_metrics],
            "worker_process_init": [lifecycle._prepare_child],
            "worker_ready": [lifecycle._prepare_solo, lifecycle._keep_leases],
            "worker_shutting_down": [lifecycle._stop_watching_readiness],
            "worker_process_shutdown": [lifecycle._forget_child],
            "worker_shutdown": [lifecycle._not_ready],
        }
        for name, expected in handlers.items():
            assert all(h in connected[name] for h in expected), name
        print("connected")
        """,
        tmp_path,
    )
    assert output.split() == ["connected"]
