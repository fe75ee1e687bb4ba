"""Engine creation: one place that knows about SQLite pragmas and PostgreSQL URLs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 5000
DEFAULT_DATABASE_URL = "sqlite:////var/lib/pynchy/gateway.db"


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # The gateway calls the store from a worker thread.
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        # A connection the server dropped (restart, failover, idle timeout) is replaced, not handed out.
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    """WAL, and transactions sqlalchemy controls: pysqlite's own implicit BEGIN (deferred, not before
    DDL or SAVEPOINT) is switched off and every transaction starts with BEGIN IMMEDIATE.

    IMMEDIATE takes the write lock at the start, so two connections (threads or processes) that
    read and then write queue up behind busy_timeout instead of one failing with "database is
    locked" (a deferred transaction cannot upgrade its read snapshot once another writer commits).
    It also makes DDL transactional (migrations) and SAVEPOINTs (begin_nested) work."""

    @event.listens_for(engine, "connect")
    def _connect(conn: Any, _record: Any) -> None:
        conn.isolation_level = None  # autocommit at the driver; BEGIN comes from the hook below
        cur = conn.cursor()
        # WAL: readers never block the writer; NORMAL sync is durable across process crashes.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
