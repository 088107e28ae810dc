"""Stores for the store's tests, over SQLite and PostgreSQL alike (``backend`` is the parameter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.workers.store.backends import BACKENDS, database_url_for
from workers.store import Store, open_store


@pytest.fixture(scope="session", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One migrated database per backend for the whole run; tests keep apart by using fresh UIDs."""
    with database_url_for(request.param, tmp_path_factory.mktemp("store")) as url:
        opened = open_store(url, migrate=True)
        yield opened
        opened.close()


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, unmigrated database, for tests of migrations and opening."""
    with database_url_for(request.param, tmp_path) as url:
        yield url
