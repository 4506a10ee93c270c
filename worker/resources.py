"""What a worker process builds once and keeps: the database engine and the model.

Created lazily on first use, never at import: the prefork parent imports the tasks module
and must not open connections or load TensorFlow before it forks its children.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.drift_watch import DriftBuffer, DriftWatch
    from worker.scoring import Scorer


log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """The model could not be loaded: an infrastructure problem, retried, never a file's fault."""


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache(maxsize=1)
def get_session_factory() -> sessionmaker[Session]:
    return make_session_factory(get_engine())


@lru_cache(maxsize=1)
def get_scorer() -> Scorer:
    """The classifier, loaded once per process (TensorFlow is imported here, not before)."""
    from model.predict import Classifier

    try:
        return Classifier.load(get_settings().model_path)
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(f"cannot load the model: {error}") from error


@lru_cache(maxsize=1)
def get_decode_min_side() -> int | None:
    """Shorter side to decode at for the configured model (its card; no TensorFlow).

    None (full decode) when the card cannot be read: loading the model then fails with
    the reason, and the reduced decode is only ever an optimisation.
    """
    from model.card import SHIPPED_DIR, ModelCard

    path = get_settings().model_path
    directory = Path(path) if path is not None else SHIPPED_DIR
    if directory.is_file():  # CXR_MODEL_PATH may name the .keras file itself
        directory = directory.parent
    try:
        return ModelCard.load(directory).decode_min_side
    except (OSError, ValueError, TypeError, KeyError):
        return None


def after_fork() -> None:
    """In a freshly forked child: never reuse the parent's pooled connections."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_session_factory.cache_clear()
    get_engine.cache_clear()
    get_drift_watch.cache_clear()
    get_drift_buffer.cache_clear()


@lru_cache(maxsize=1)
def get_drift_watch() -> DriftWatch:
    """The drift watch of this process, on the model directory the scorer loads.

    Without a readable reference (a model directory without validation predictions) the
    watch still counts, but compares nothing: scoring must not depend on it.
    """
    from model.drift import Reference
    from worker.drift_watch import DriftWatch

    try:
        reference: Reference | None = Reference.load(get_settings().model_path)
    except (OSError, ValueError, KeyError) as error:
        log.warning("drift watch without a reference: %s", error)
        reference = None
    return DriftWatch(get_session_factory(), reference)


@lru_cache(maxsize=1)
def get_drift_buffer() -> DriftBuffer:
    """This process's drift counts, written every few seconds (:class:`DriftBuffer`)."""
    from worker.drift_watch import DriftBuffer

    return DriftBuffer(get_session_factory())


def flush_drift_counts() -> None:
    """At a clean process exit: write the drift counts this process still holds."""
    if get_drift_buffer.cache_info().currsize:
        get_drift_buffer().close()
