"""The worklist database as route dependencies: a session per request, closed (or committed)
when the route returns, before the response is sent.

``scope="function"`` matters for writes: a commit that fails must fail the request, not
follow a response that already said the review was recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker


def _factory(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def read_session(request: Request) -> Iterator[Session]:
    """A session for reading; nothing it does is committed."""
    with _factory(request)() as session:
        yield session


def write_session(request: Request) -> Iterator[Session]:
    """A session in a transaction, committed when the route returns, rolled back when it raises."""
    with _factory(request).begin() as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session, scope="function")]
WriteSession = Annotated[Session, Depends(write_session, scope="function")]
