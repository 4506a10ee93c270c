"""Least privilege for the RIS path (issue 25), on a private PostgreSQL with the roles of
``db/roles.py``: the worker's login writes the RIS messages' rows, the deliverer's login
sends them (claim, record the ACK) and re-sends them (``ris-send``), with the grants they
already had for the SR/SC: no new grant was needed, and the deliverer still may not write
the worklist nor insert result rows."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, text

from db import migrate, roles
from db.engine import make_engine, make_session_factory
from db.models import ResultKind, ResultObject, ResultState, utcnow
from db.results import WrittenObject, record_written, requeue
from pacs.delivery import Deliverer, DeliveryPolicy
from ris.mllp import MllpNode
from tests.reliability.conftest import private_postgres  # noqa: F401  (the fixture)
from tests.ris.support import ROUTINE, URGENT, add_exams, listener
from tests.support import free_port
from tests.support.servers import PrivatePostgres

pytestmark = [pytest.mark.services]


def url(server: PrivatePostgres, login: str) -> str:
    return f"postgresql+psycopg://{login}:pw@127.0.0.1:{server.port}/cxr"


def test_the_worker_and_deliver_logins_carry_the_ris_path_and_no_more(
    tmp_path: Path,
    private_postgres: PrivatePostgres,  # noqa: F811
) -> None:
    with psycopg.connect(private_postgres.admin_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE cxr")
    owner = url(private_postgres, "postgres")
    migrate.upgrade(owner)
    engine = make_engine(owner)
    with engine.begin() as connection:
        roles.apply(connection)
        for login in ("worker", "deliver"):
            roles.create_login(connection, login, login, "pw")
    engine.dispose()
    # rows and message files made as the pipeline makes them; then the worker's login tracks
    # the messages, as its results task does
    owner_sessions = make_session_factory(make_engine(owner))
    first, _ = add_exams(owner_sessions, tmp_path, [ROUTINE, URGENT])
    with owner_sessions.begin() as session:
        tracked = [
            (o.entry_id, WrittenObject(o.kind, o.sop_instance_uid or "", o.path or ""))
            for o in session.scalars(select(ResultObject))
        ]
        session.execute(text("DELETE FROM result_objects"))
    worker = make_session_factory(make_engine(url(private_postgres, "worker")))
    with worker.begin() as session:
        for entry_id, written in tracked:
            record_written(session, entry_id, [written], utcnow())
    deliver = make_session_factory(make_engine(url(private_postgres, "deliver")))
    node = MllpNode("127.0.0.1", free_port())
    with listener(node.port, tmp_path / "ris.jsonl") as ris:
        loop = Deliverer(deliver, node, DeliveryPolicy(), kinds=(ResultKind.HL7,))
        report = loop.deliver_once()
        assert len(ris.messages()) == 2
        with deliver.begin() as session:  # ris-send of one row, as the deliver login
            assert (
                requeue(
                    session, utcnow(), entry_id=first, include_stored=True, kinds=(ResultKind.HL7,)
                )
                == 1
            )
        assert loop.deliver_once().stored == 1
    assert report.stored == 2
    with deliver() as session:
        states = [o.state for o in session.scalars(select(ResultObject))]
    assert states == [ResultState.STORED] * 2
    with psycopg.connect(
        url(private_postgres, "deliver").replace("+psycopg", ""), autocommit=True
    ) as connection:
        for statement in (
            "UPDATE worklist SET status = 'done'",
            "INSERT INTO result_objects (entry_id, kind, state, attempts, created_at, "
            f"updated_at) VALUES ({first}, 'fhir', 'pending', 0, now(), now())",
            "DELETE FROM result_objects",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)  # type: ignore[arg-type]
