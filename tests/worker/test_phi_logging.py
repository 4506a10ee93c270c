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


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PhiRedactionFilter())
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("worker.x", "celery.app.trace", "somelib")]
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
