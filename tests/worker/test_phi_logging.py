"""The redaction filter's rules, record by record, through a real handler and formatter."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from ingest import IngestError
from ingest.errors import Reason
from worker.phi_logging import PhiRedactionFilter

NAME = "Zyxwvutsonian^Quixotella"
PATH = "/inbox/Zyxwvutsonian_Quixotella.dcm"
#: Libraries some of whose start-up records carry the system's own configuration.
LIBRARY_LOGGERS = (
    "uvicorn.error",
    "celery.worker.consumer.connection",
    "alembic.runtime.migration",
)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PhiRedactionFilter())
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    names = ("worker.x", "celery.app.trace", "somelib", *LIBRARY_LOGGERS)
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)
        logger.propagate = True


def test_our_messages_stay_and_exception_texts_are_vouched_for(output: io.StringIO) -> None:
    log = logging.getLogger("worker.x")
    log.info("row %d: file %s", 12, "ab" * 32)
    try:
        try:
            Path(PATH).read_bytes()
        except OSError as error:
            raise IngestError(Reason.NOT_AN_IMAGE, "the file vanished") from error
    except IngestError:
        log.exception("row %d: failed", 12)
    log.warning("row 13: %s", FileNotFoundError(2, "No such file or directory", PATH))
    text = output.getvalue()
    assert f"row 12: file {'ab' * 32}" in text
    assert "FileNotFoundError: [Errno 2] No such file or directory" in text
    assert "IngestError: the file vanished" in text
    assert "direct cause" in text and "Traceback (most recent call last)" in text
    assert "Zyxwvutsonian" not in text


def test_a_database_error_quoting_the_row_is_reduced_to_its_type(output: io.StringIO) -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (name TEXT UNIQUE)"))
        connection.execute(text("INSERT INTO t VALUES (:n)"), {"n": NAME})
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (:n)"), {"n": NAME})
    assert NAME in str(raised.value)  # SQLAlchemy does print the parameters
    logging.getLogger("worker.x").error("row 5: %s", raised.value)
    try:
        raise raised.value
    except IntegrityError:
        logging.getLogger("worker.x").exception("row 5")
    text_out = output.getvalue()
    assert "IntegrityError" in text_out and NAME not in text_out and "Zyxw" not in text_out


def test_other_libraries_keep_their_template_not_their_values(output: io.StringIO) -> None:
    logging.getLogger("celery.app.trace").info(
        "Task %(name)s[%(id)s] retry: %(exc)s",
        {
            "name": "cxr.triage",
            "id": "3cc80772-fcd9-43ac-9302-e37ce8ccc6a8",
            "exc": f"Retry in 2s: OSError('cannot move {PATH}')",
        },
    )
    logging.getLogger("somelib").warning("Invalid value for VR PN: %r", NAME)
    logging.getLogger("somelib").warning(f'copy attributes of "{NAME}" from {PATH}')
    logging.getLogger("somelib").info("uid 1.2.826.0.1.3680043.8.498.7734 of %d files", 3)
    text_out = output.getvalue()
    assert (
        "Task cxr.triage[3cc80772-fcd9-43ac-9302-e37ce8ccc6a8] retry: Retry in 2s: OSError "
        "(message withheld: it may carry patient data)"
    ) in text_out
    assert "Invalid value for VR PN: [redacted]" in text_out  # '%r' quoted it: scrubbed too
    assert "copy attributes of [redacted] from [redacted]" in text_out
    assert "uid [redacted] of 3 files" in text_out
    assert "Zyxw" not in text_out and "inbox" not in text_out


def test_the_system_s_own_addresses_and_migrations_are_kept(output: io.StringIO) -> None:
    """What an operator needs from the start-up lines is configuration, not patient data:
    they are logged as they are (issue 21: ``Uvicorn running on [redacted]:[redacted]``)."""
    server = logging.getLogger("uvicorn.error")
    server.info("Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "0.0.0.0", 8080)
    broker = logging.getLogger("celery.worker.consumer.connection")
    broker.info("Connected to %s", "redis://:secret-pw@redis:6379/0")
    migration = logging.getLogger("alembic.runtime.migration")
    migration.info("Running %s", "upgrade 0004 -> 0005, result objects")
    # the same loggers with a template that is not on the list: values redacted as before
    server.warning("Invalid HTTP request received: %s", NAME)
    broker.error("consumer: cannot connect to %s", PATH)
    text = output.getvalue()
    assert "Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)" in text
    assert "Connected to redis://:**@redis:6379/0" in text and "secret-pw" not in text
    assert "Running upgrade 0004 -> 0005, result objects" in text
    assert "Invalid HTTP request received: [redacted]" in text
    assert "cannot connect to [redacted]" in text
    assert "Zyxw" not in text and "inbox" not in text
