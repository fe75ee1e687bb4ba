"""Migrations: empty to head on both databases, agreement with the models, one migration when
processes start together, downgrade, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from pprint import pformat

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import inspect, text

from pynchy.cli import main
from pynchy.store import migrate
from pynchy.store.db import make_engine
from pynchy.store.migrate import create_schema
from pynchy.store.models import Base
from store.helpers import pg_waiters, wait_until

REPO = Path(__file__).resolve().parents[2]
TABLES = set(Base.metadata.tables)


def test_the_store_ships_its_migrations() -> None:
    assert migrate.MIGRATIONS.is_relative_to(REPO / "operator" / "pynchy")
    assert (migrate.MIGRATIONS / "env.py").is_file()
    assert (migrate.MIGRATIONS / "script.py.mako").is_file()
    assert (migrate.MIGRATIONS / "versions" / "0001_initial.py").is_file()
    assert migrate.head() is not None


def test_empty_database_to_head_matches_the_models(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        assert migrate.current(engine) is None
        create_schema(engine)
        assert migrate.current(engine) == migrate.head()
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        diffs = migrate.diff(engine)
        assert not diffs, (
            "the models and the migrations differ: write a migration "
            "(uv run pynchy db revision -m '...') and review it\n" + pformat(diffs)
        )
    finally:
        engine.dispose()


def test_upgrading_again_changes_nothing(engine) -> None:
    before = sorted(inspect(engine).get_table_names())
    create_schema(engine)
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrate.head()]
    assert sorted(inspect(engine).get_table_names()) == before


def test_the_comparison_sees_a_schema_that_drifted(engine) -> None:
    # What the agreement test relies on: a difference between models and database is reported.
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_turns_seq"))
    diffs = migrate.diff(engine)
    assert [d[0] for d in diffs] == ["add_index"]
    assert diffs[0][1].name == "ix_turns_seq"


def test_downgrade_to_nothing_and_back(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        create_schema(engine)
        with migrate.locked(engine) as conn:
            command.downgrade(migrate.config(conn), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert migrate.current(engine) is None
        create_schema(engine)
        assert migrate.current(engine) == migrate.head()
        assert migrate.diff(engine) == []
    finally:
        engine.dispose()


def test_a_database_from_before_migrations_is_refused_with_the_reason(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        Base.metadata.create_all(engine)
        with pytest.raises(migrate.UnversionedSchemaError, match="before migrations"):
            create_schema(engine)
    finally:
        engine.dispose()


STARTER = """
import sys
from pathlib import Path
from pynchy.logs import configure_logging
from pynchy.store.db import make_engine
from pynchy.store.migrate import create_schema
configure_logging("INFO", "json")
Path(sys.argv[2]).touch()
create_schema(make_engine(sys.argv[1]))
"""


def test_processes_starting_together_migrate_once(empty_url: str, tmp_path: Path) -> None:
    """Both wait on the migration lock (held here until both are at it); one migrates, the other
    finds the schema at head."""
    engine = make_engine(empty_url)
    try:
        with migrate.locked(engine):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", STARTER, empty_url, str(tmp_path / f"started-{i}")],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=REPO,
                )
                for i in range(2)
            ]
            if engine.dialect.name == "postgresql":
                wait_until(lambda: pg_waiters(engine, "advisory") == 2, "both processes wait for the lock")
            else:
                wait_until(lambda: all((tmp_path / f"started-{i}").exists() for i in range(2)), "both start")
        outputs = [p.communicate()[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert sum("store schema migrated" in out for out in outputs) == 1, outputs
        assert migrate.current(engine) == migrate.head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert migrate.diff(engine) == []
    finally:
        engine.dispose()


def test_cli_upgrades_and_reports(empty_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["db", "current", "--url", empty_url])
    assert result.exit_code == 0, result.output
    assert "database: (empty)" in result.output
    result = runner.invoke(main, ["db", "upgrade", "--url", empty_url])
    assert result.exit_code == 0, result.output
    assert f"at {migrate.head()}" in result.output
    result = runner.invoke(main, ["db", "current", "--url", empty_url])
    assert f"database: {migrate.head()}" in result.output
