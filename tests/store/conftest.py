"""Store fixtures: every test that asks for `store_url` runs on SQLite and on PostgreSQL.

PostgreSQL is a throwaway cluster from Debian's packages (tests/pgserver.py), started once per
session and only when a PostgreSQL test runs. Never skipped: if it cannot start, those tests error
with the reason. Each test gets its own database: a copy of one migrated once (a template), or an
empty one (`empty_url`) for the migration tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pgserver import PgServer
from pynchy.store.db import make_engine, session_factory
from pynchy.store.migrate import create_schema

T = TypeVar("T")
DATABASES = ["sqlite", "postgresql"]
PG_TEMPLATE = "pynchy_head"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with PgServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database migrated to head, copied for each test (CREATE DATABASE ... TEMPLATE)."""
    migrate_once(pg_server.create_database(PG_TEMPLATE))
    return PG_TEMPLATE


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "head.db"
    migrate_once(f"sqlite:///{path}")
    assert not path.with_name("head.db-wal").exists()  # the last connection checkpointed it
    return path


def migrate_once(url: str) -> None:
    engine = make_engine(url)
    try:
        create_schema(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=DATABASES)
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_url(db_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with no tables."""
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    yield url
    server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def store_url(db_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database at the newest schema."""
    if db_kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "store.db")
        yield f"sqlite:///{tmp_path}/store.db"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database(template=request.getfixturevalue("pg_template"))
    yield url
    server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def tx(sessions: sessionmaker[Session]) -> Callable[..., Any]:
    """`tx(fn, *args, **kwargs)`: fn(session, ...) in its own committed transaction, like the gateway's Db."""

    def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with sessions() as session:
            result = fn(session, *args, **kwargs)
            session.commit()
            return result

    return run
