"""The pipeline's orchestration around the model, in milliseconds: a fake scorer
(:class:`tests.fakes.FakeScorer`) instead of TensorFlow; real PNG files written here, the real
intake, claim, database (SQLite, and PostgreSQL with the services), staging and filing.

Covers what only the TensorFlow-marked tests reached before: the ``done`` path, the
per-image fallback when the batch call fails, a time limit that must reach the task runner
with its rows intact, and a file that vanished before it was scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from ingest.staging import staged_path
from ingest.watcher import Origin
from model.prediction import Label, Prediction, Priority
from tests.fakes import FakeScorer
from worker.intake import Intake
from worker.outcomes import Failed, Scored, Vanished
from worker.pipeline import LEFT, Pipeline
from worker.settings import Settings

#: The shape of the image the fake model fails on, alone or in a batch.
POISON_SHAPE = (300, 400)


class TimeLimit(Exception):  # noqa: N818 - named as Celery names its SoftTimeLimitExceeded
    """The task runner's soft time limit, as the pipeline is handed it."""


def _png(path: Path, seed: int, shape: tuple[int, int] = (256, 256)) -> Path:
    """A grey gradient with noise: readable, not blank, distinct content per seed."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 220, shape[1])[None, :]
    pixels = (ramp + rng.normal(0, 15, shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _admitted(settings: Settings, sessions: sessionmaker[Session], files: list[Path]) -> list[int]:
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    intake.admit_many([(path, Origin.LIVE) for path in files])
    assert len(sent) == len(files)
    return sent


@pytest.fixture
def inbox(settings: Settings) -> Path:
    settings.inbox.mkdir(parents=True)
    return settings.inbox


def _rows(sessions: sessionmaker[Session]) -> dict[str, WorklistEntry]:
    with sessions() as session:
        return {row.source_name: row for row in session.scalars(select(WorklistEntry))}


def test_scored_rows_end_done_with_the_scorers_prediction_and_are_archived(
    settings: Settings, sessions: sessionmaker[Session], inbox: Path
) -> None:
    files = [_png(inbox / f"{n}.png", seed=n) for n in range(3)]
    ids = _admitted(settings, sessions, files)
    scorer = FakeScorer()  # an urgent pneumonia, p = 0.87
    published: list[int] = []
    pipeline = Pipeline(settings, sessions, lambda: scorer, on_scored=published.extend)

    outcomes = pipeline.triage(ids, token="task-1")

    assert all(isinstance(o, Scored) for o in outcomes) and len(outcomes) == 3
    assert scorer.calls == [3]  # one model call for the batch
    assert sorted(published) == sorted(ids)
    rows = _rows(sessions)
    for path in files:
        row = rows[path.name]
        assert (row.status, row.probability, row.label, row.priority) == (
            Status.DONE,
            pytest.approx(0.87),
            "pneumonia",
            "urgent",
        )
        assert row.model_version == "fake-1.0" and row.reason is None
        archived = Path(row.archived_path or "")
        assert archived.is_relative_to(settings.archive) and archived.is_file()
        assert not path.exists() and not staged_path(inbox, row.id).exists()


def test_a_failed_batch_call_is_retried_image_by_image_and_fails_only_the_culprit(
    settings: Settings, sessions: sessionmaker[Session], inbox: Path
) -> None:
    files = [
        _png(inbox / "a.png", seed=1),
        _png(inbox / "poison.png", seed=2, shape=POISON_SHAPE),
        _png(inbox / "b.png", seed=3),
    ]
    poison_bytes = files[1].read_bytes()
    ids = _admitted(settings, sessions, files)
    scorer = FakeScorer(fail_batches=True, fails_on=lambda pixels: pixels.shape == POISON_SHAPE)
    pipeline = Pipeline(settings, sessions, lambda: scorer)

    outcomes = pipeline.triage(ids, token="task-1")

    assert scorer.calls == [3, 1, 1, 1]  # the batch, then each image alone
    assert sorted(type(o).__name__ for o in outcomes) == ["Failed", "Scored", "Scored"]
    rows = _rows(sessions)
    assert rows["a.png"].status is Status.DONE and rows["b.png"].status is Status.DONE
    poison = rows["poison.png"]
    assert (poison.status, poison.reason, poison.reason_detail) == (
        Status.FAILED,
        "processing_error",
        "the model could not score it",
    )
    quarantined = Path(poison.archived_path or "")
    assert quarantined.parent == settings.quarantine / "processing_error"
    sidecar = json.loads(quarantined.with_name(quarantined.name + ".json").read_text())
    assert sidecar["worklist_id"] == poison.id and sidecar["status"] == "failed"
    assert quarantined.read_bytes() == poison_bytes


def test_a_time_limit_reaches_the_task_runner_and_counts_when_the_rows_are_taken_back(
    settings: Settings, sessions: sessionmaker[Session], inbox: Path
) -> None:
    files = [_png(inbox / f"{n}.png", seed=n) for n in range(2)]
    ids = _admitted(settings, sessions, files)
    limited = FakeScorer(raises=TimeLimit("soft time limit"))
    pipeline = Pipeline(settings, sessions, lambda: limited, reraise=(TimeLimit,))

    with pytest.raises(TimeLimit):
        pipeline.triage(ids, token="task-1")

    assert limited.calls == [2]  # no image-by-image fallback: the limit is not the images'
    rows = _rows(sessions)
    assert {row.status for row in rows.values()} == {Status.PROCESSING}  # nothing stored
    assert all(staged_path(inbox, row.id).is_file() for row in rows.values())  # nothing lost

    # Taken back under the same token (a redelivery; a take-over once the lease ran out is
    # the same): a time limit is no transient error, it counts, since a file that hangs its
    # reader must reach the poison cap, and the batch tried before is split.
    routine = Prediction(0.1, Label.NORMAL, Priority.ROUTINE, 0.5, "fake-1.0")
    scorer = FakeScorer(routine)
    sent_alone: list[int] = []
    again = Pipeline(
        settings, sessions, lambda: scorer, reraise=(TimeLimit,), send_alone=sent_alone.extend
    )
    outcomes = again.triage(ids, token="task-1")

    assert [type(o) for o in outcomes] == [Scored] and sent_alone == ids[1:]
    rows = _rows(sessions)
    assert [(rows[name].status, rows[name].attempts) for name in ("0.png", "1.png")] == [
        (Status.DONE, 2),
        (Status.QUEUED, 1),
    ]


def test_a_file_that_vanished_before_it_was_scored_fails_unfiled_and_spares_its_mates(
    settings: Settings, sessions: sessionmaker[Session], inbox: Path
) -> None:
    kept, vanished = _png(inbox / "kept.png", seed=1), _png(inbox / "vanished.png", seed=2)
    ids = _admitted(settings, sessions, [kept, vanished])
    vanished.unlink()  # the sender took it back after it was admitted
    scorer = FakeScorer()
    pipeline = Pipeline(settings, sessions, lambda: scorer)

    outcomes = {o.entry_id: o for o in pipeline.triage(ids, token="task-1")}

    rows = _rows(sessions)
    gone = rows["vanished.png"]
    assert outcomes[gone.id] == Vanished(gone.id, LEFT)
    assert (gone.status, gone.reason, gone.reason_detail) == (
        Status.FAILED,
        "processing_error",
        LEFT,
    )
    assert not gone.archived_path and not any(settings.quarantine.rglob("*"))
    assert rows["kept.png"].status is Status.DONE and scorer.calls == [1]
    assert not isinstance(outcomes[rows["kept.png"].id], Failed)
