"""alembic's environment for the conversation store.

Run by pynchy.store.migrate (which passes a connection that already holds the migration lock) or by
the `alembic` command with the repository's alembic.ini (a URL from `-x url=...`,
$PYNCHY_DATABASE_URL or the ini's sqlalchemy.url).
"""

from __future__ import annotations

import os

from alembic import context

from pynchy.store.db import make_engine
from pynchy.store.migrate import context_options, locked

config = context.config


def url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("PYNCHY_DATABASE_URL")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=..., or set PYNCHY_DATABASE_URL")
    return url


def run_offline() -> None:
    context.configure(url=url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **context_options())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # The caller's transaction: it commits (and releases the lock) when the upgrade is done.
        context.configure(connection=connection, **context_options())
        context.run_migrations()
        return
    engine = make_engine(url())
    try:
        with locked(engine) as conn:
            context.configure(connection=conn, **context_options())
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
