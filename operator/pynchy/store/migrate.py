"""Schema migrations with alembic, configured in code: the environment (migrations/) ships in the
package, no alembic.ini is read at run time.

`upgrade(engine)` runs under a lock, so processes that start together migrate once: PostgreSQL takes
a transaction-scoped advisory lock and runs every migration in that one transaction (DDL is
transactional there); SQLite's BEGIN IMMEDIATE (see db.py) holds the database's write lock for the
whole upgrade. A process that waited finds the schema at head and does nothing.

alembic is imported inside the functions: `pynchy --help` should not pay for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pynchy.errors import PynchyError
from pynchy.logs import get_logger

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: any constant other programs on the same database will not use.
PG_LOCK_KEY = 0x70796E6368790001  # "pynchy" + 1
# How long a second process waits for the first one's SQLite migration.
SQLITE_MIGRATION_WAIT_MS = 120_000


def _quiet() -> None:
    """alembic logs its plugins and dialect at INFO; upgrade() logs one line of its own instead."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


def config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    # New revision files: 0002_add_x.py, formatted by ruff like the rest of the code.
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if importlib.util.find_spec("ruff") is not None:  # a development install
        hooks = {
            "ruff_fix": "check --fix -q REVISION_SCRIPT_FILENAME",
            "ruff_format": "format -q REVISION_SCRIPT_FILENAME",
        }
        cfg.set_section_option("post_write_hooks", "hooks", ", ".join(hooks))
        for name, args in hooks.items():
            cfg.set_section_option("post_write_hooks", f"{name}.type", "module")
            cfg.set_section_option("post_write_hooks", f"{name}.module", "ruff")
            cfg.set_section_option("post_write_hooks", f"{name}.options", args)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def context_options() -> dict[str, Any]:
    """What env.py and diff() configure alembic's context with (autogenerate compares by these)."""
    from pynchy.store.models import Base

    return {
        "target_metadata": Base.metadata,
        # SQLite alters a table by copying it: render ALTERs as batch operations that do so.
        "render_as_batch": True,
        "compare_type": True,
        "compare_server_default": True,
    }


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            _sqlite_busy_timeout(conn, SQLITE_MIGRATION_WAIT_MS)
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
                yield conn
        finally:
            if engine.dialect.name == "sqlite":
                from pynchy.store.db import SQLITE_BUSY_TIMEOUT_MS

                _sqlite_busy_timeout(conn, SQLITE_BUSY_TIMEOUT_MS)


def _sqlite_busy_timeout(conn: Connection, ms: int) -> None:
    # Set on the driver connection: a statement through `conn` would begin the transaction.
    driver = conn.connection.driver_connection
    assert driver is not None  # the connection is open
    driver.execute(f"PRAGMA busy_timeout={ms}")


class UnversionedSchemaError(PynchyError, RuntimeError):
    """The database has the store's tables but no alembic version: made before migrations existed."""


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema (alembic `upgrade head`); safe with several
    processes starting at once."""
    upgrade(engine)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _quiet()
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    from pynchy.store.models import Base

    with locked(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        ours = sorted(set(inspect(conn).get_table_names()) & set(Base.metadata.tables))
        if before is None and ours:
            raise UnversionedSchemaError(
                f"{engine.url.render_as_string(hide_password=True)} has tables {', '.join(ours)} but no "
                "alembic_version: it was created by a version of pynchy from before migrations, whose "
                "schema differs. Move it aside (nothing was released with it) and start again."
            )
        command.upgrade(config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        get_logger(__name__).info("store schema migrated", database=engine.dialect.name, before=before, after=after)


def current(engine: Engine) -> str | None:
    """The database's revision (None: not migrated yet)."""
    _quiet()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def diff(engine: Engine) -> list[Any]:
    """What the models have that the database lacks (and the reverse): [] when they agree."""
    _quiet()
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    opts = context_options()
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), opts["target_metadata"]))


def _skip_empty(_context: Any, _revision: Any, directives: list[Any]) -> None:
    if directives and directives[0].upgrade_ops.is_empty():
        directives[:] = []


def revision(message: str) -> Path | None:
    """Autogenerate the next revision from the models, against a scratch SQLite database at head."""
    _quiet()
    from alembic import command
    from alembic.script import ScriptDirectory

    from pynchy.store.db import make_engine

    scripts = ScriptDirectory.from_config(config())
    numbers = [int(r.revision) for r in scripts.walk_revisions() if r.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        try:
            upgrade(engine)
            with locked(engine) as conn:
                script = command.revision(
                    config(conn), message, autogenerate=True, rev_id=rev_id, process_revision_directives=_skip_empty
                )
        finally:
            engine.dispose()
    if script is None or isinstance(script, list):
        return None
    return Path(script.path)


@click.group("db")
def db_cli() -> None:
    """The conversation store's schema (PYNCHY_DATABASE_URL, or --url)."""


def _engine(url: str | None) -> Engine:
    from pynchy.store.db import make_engine

    if url is None:
        from pynchy.store.db import DEFAULT_DATABASE_URL

        # Not GatewaySettings(): that needs the gateway's secrets, and this needs only the URL.
        url = os.environ.get("PYNCHY_DATABASE_URL") or DEFAULT_DATABASE_URL
    return make_engine(url)


_url_option = click.option("--url", default=None, help="SQLAlchemy URL (default: the gateway's database_url).")


@db_cli.command("upgrade")
@_url_option
@click.option("--revision", default="head", show_default=True)
def upgrade_cmd(url: str | None, revision: str) -> None:
    """Migrate the database (the gateway also does this when it starts)."""
    engine = _engine(url)
    try:
        upgrade(engine, revision)
        click.echo(f"at {current(engine)}")
    finally:
        engine.dispose()


@db_cli.command("current")
@_url_option
def current_cmd(url: str | None) -> None:
    """Print the database's revision and the newest one."""
    engine = _engine(url)
    try:
        click.echo(f"database: {current(engine) or '(empty)'}\nhead:     {head()}")
    finally:
        engine.dispose()


@db_cli.command("revision")
@click.option("-m", "--message", required=True, help="What the migration does (it names the file).")
def revision_cmd(message: str) -> None:
    """Write the next migration from the difference between the models and the current head.
    Review it before committing: autogenerate misses renames and data changes."""
    path = revision(message)
    click.echo(f"wrote {path}" if path else "no changes")
