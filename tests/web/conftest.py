"""Fixtures: a real worklist (SQLite, and PostgreSQL where the services run) seeded by
:func:`tests.support.web.seed`, the review page's app on it, and a logged-in client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.web import PASSWORD, USERNAME, Worklist, seed
from web.app import create_app


@pytest.fixture
def worklist(database_url: str, tmp_path: Path) -> Worklist:
    return seed(database_url, tmp_path)


@pytest.fixture
def client(worklist: Worklist) -> Iterator[TestClient]:
    with TestClient(create_app(worklist.config())) as test_client:
        yield test_client


@pytest.fixture
def logged_in(client: TestClient) -> TestClient:
    response = client.post(
        "/login", data={"username": USERNAME, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303
    return client
