"""Create the schema, drop the suite's objects, load seed data."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from db import history, inventory
from db.config import Settings
from db.connection import connect
from db.errors import DatabaseError, UsageError
from db.i18n import _
from db.inventory import TableStats
from db.migrations import placeholders, set_local_timeouts
from db.sqlfile import split_sql

log = logging.getLogger(__name__)

SEED_FILE = Path(__file__).resolve().parent.parent / "sql" / "seed" / "dev_seed.sql"


def create_schema(settings: Settings) -> bool:
    """Create the configured schema; return False when it already existed."""
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        if inventory.schema_exists(conn, settings.schema):
            return False
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.schema)))
        return True


def drop_suite(settings: Settings) -> list[str]:
    """Drop every object of the suite's schema: views, tables, sequences, functions, types.

    The schema belongs to the suite, so this covers tables that later migrations added as
    well as the eight core tables and the bookkeeping. Each kind goes in one DROP of many
    names, which lets PostgreSQL order the dependencies inside it; kinds go dependants
    first. Without CASCADE, an object outside the schema that depends on one of these
    stops the drop. Everything runs in one transaction, so a failure (a lock timeout, say)
    leaves the database as it was. Returns what was dropped, as "kind name".
    """
    dropped = []
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        _check_suite_schema(conn, settings.schema)
        try:
            with conn.transaction():
                set_local_timeouts(conn, settings)
                for kind, names in inventory.schema_objects(conn, settings.schema):
                    conn.execute(sql.SQL("DROP {} {}").format(
                        sql.SQL(kind), sql.SQL(", ").join(sql.SQL(name) for name in names)))
                    dropped += [f"{kind.lower()} {name}" for name in names]
        except psycopg.Error as exc:
            raise DatabaseError(_("drop failed, nothing was dropped: {error}", error=str(exc).strip()),
                                hint=_("another session may be using the tables, or an object outside the "
                                       "schema depends on them; the message names it")) from None
    return dropped


def _check_suite_schema(conn: psycopg.Connection, schema: str) -> None:
    """Refuse to empty a schema that the suite did not create: one without its history table."""
    if not inventory.schema_exists(conn, schema):
        return
    if not history.tables_exist(conn, schema):
        raise UsageError(
            _("schema {schema} has no TextLoom migration history, so its objects may not be TextLoom's; "
              "nothing was dropped", schema=schema),
            hint=_("check TEXTLOOM_DB_SCHEMA; drop the objects by hand if they really are to go"))


def database_name(settings: Settings) -> str:
    """Name of the database the settings point at, as the server reports it."""
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        return conn.execute("SELECT current_database()").fetchone()[0]


def table_overview(settings: Settings, table_names: Sequence[str]) -> tuple[list[TableStats], list[TableStats]]:
    """Statistics of the expected tables and, apart, of the bookkeeping tables."""
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        return (inventory.table_stats(conn, settings.schema, table_names),
                inventory.table_stats(conn, settings.schema, history.BOOKKEEPING_TABLES))


def _exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                       (sql.Identifier(schema, name).as_string(conn),)).fetchone()
    return bool(row[0])


def seed(settings: Settings, path: Path = SEED_FILE) -> int:
    """Load development data in one transaction; return the number of rows inserted."""
    statements = split_sql(path.read_text(encoding="utf-8"), source=str(path),
                           placeholders=placeholders(settings.schema))
    inserted = 0
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        try:
            with conn.transaction():
                set_local_timeouts(conn, settings)
                for statement in statements:
                    cur = conn.execute(statement.text)
                    inserted += max(cur.rowcount, 0)
        except psycopg.Error as exc:
            raise DatabaseError(
                _("seed data failed to load, nothing was inserted: {error}", error=str(exc).strip()),
                hint=_("run `invoke db.create` first so that every table exists")) from None
        # Fresh statistics, so that db.check shows row estimates at once.
        for kind, names in inventory.schema_objects(conn, settings.schema):
            if kind == "TABLE":
                conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.SQL(n) for n in names)))
    return inserted
