"""The history and lock tables the migration runner keeps in the suite's schema.

Both live in the configured schema beside the eight core tables, so separate schemas on
one server (tests, several TextLoom databases) never share bookkeeping.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import class_row

HISTORY_TABLE = "textloom_migration_history"
LOCK_TABLE = "textloom_migration_lock"
BOOKKEEPING_TABLES = (HISTORY_TABLE, LOCK_TABLE)

# A custom setting, local to a file's transaction, that contains the time the file began.
FILE_STARTED_SETTING = "textloom.file_started"

# Row kinds.
KIND_FILE = "file"
KIND_BASELINE = "baseline"
KIND_AUTO = "auto"

# Row states. A no-transaction file has a "running" row while it runs, so a migrator
# killed half-way leaves a row that the next run reports instead of re-running blindly.
STATUS_APPLIED = "applied"
STATUS_BASELINED = "baselined"
STATUS_RUNNING = "running"
STATUS_FAILED = "failed"

_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS {table} (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version          integer,
    name             text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('file', 'baseline', 'auto')),
    checksum         text,
    checksum_version smallint,
    status           text NOT NULL CHECK (status IN ('applied', 'baselined', 'running', 'failed')),
    success          boolean GENERATED ALWAYS AS (status IN ('applied', 'baselined')) STORED,
    statement_count  integer,
    statements_done  integer,
    error            text,
    sql              text,
    applied_at       timestamptz NOT NULL DEFAULT now(),
    applied_by       text NOT NULL DEFAULT current_user,
    client           text,
    execution_ms     integer NOT NULL DEFAULT 0
)
"""
# One row per migration version: a second migrator that slipped past the lock would fail
# on this index and roll back instead of applying a file twice.
_CREATE_HISTORY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} (version) WHERE version IS NOT NULL"

_CREATE_LOCK = """
CREATE TABLE IF NOT EXISTS {table} (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    owner       uuid NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
)
"""


@dataclass(frozen=True)
class HistoryRow:
    """One row of the history table."""

    id: int
    version: int | None
    name: str
    kind: str
    checksum: str | None
    checksum_version: int | None
    status: str
    success: bool
    statement_count: int | None
    statements_done: int | None
    error: str | None
    sql: str | None
    applied_at: dt.datetime
    applied_by: str
    client: str | None
    execution_ms: int


def table(schema: str, name: str) -> sql.Composed:
    return sql.Identifier(schema, name)


def ensure_tables(conn: psycopg.Connection, schema: str) -> None:
    """Create the schema and the bookkeeping tables if they are missing.

    Runs in one transaction under a transaction-level advisory lock, because concurrent
    ``CREATE TABLE IF NOT EXISTS`` can still fail on the catalog's unique indexes. The
    lock ends with the transaction, so nothing stays behind on a pooled connection.
    """
    # The common case needs no lock and no DDL, which a role that does not own the tables
    # (CREATE ... IF NOT EXISTS checks ownership of an existing index) could not run anyway.
    if _all_exist(conn, schema):
        return

    with conn.transaction():
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(%s))",
                     (f"textloom-bookkeeping:{schema}",))
        # CREATE SCHEMA IF NOT EXISTS checks the database's CREATE privilege even when the
        # schema exists, which a schema owner without that privilege lacks.
        exists = conn.execute("SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %s)",
                              (schema,)).fetchone()[0]
        if not exists:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(_CREATE_HISTORY).format(table=table(schema, HISTORY_TABLE)))
        conn.execute(sql.SQL(_CREATE_HISTORY_INDEX).format(
            index=sql.Identifier(HISTORY_TABLE + "_version_key"), table=table(schema, HISTORY_TABLE)))
        conn.execute(sql.SQL(_CREATE_LOCK).format(table=table(schema, LOCK_TABLE)))


def _all_exist(conn: psycopg.Connection, schema: str) -> bool:
    names = [sql.Identifier(schema, name).as_string(conn) for name in (*BOOKKEEPING_TABLES, HISTORY_TABLE + "_version_key")]
    row = conn.execute("SELECT bool_and(pg_catalog.to_regclass(name) IS NOT NULL) FROM unnest(%s::text[]) AS name",
                       (names,)).fetchone()
    return bool(row and row[0])


def tables_exist(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                       (sql.Identifier(schema, HISTORY_TABLE).as_string(conn),)).fetchone()
    return bool(row and row[0])


def read_history(conn: psycopg.Connection, schema: str) -> list[HistoryRow]:
    """Return every history row in the order they were written; empty when there is no table."""
    if not tables_exist(conn, schema):
        return []
    with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        cur.execute(sql.SQL(
            "SELECT id, version, name, kind, checksum, checksum_version, status, success, statement_count, "
            "statements_done, error, sql, applied_at, applied_by, client, execution_ms FROM {} ORDER BY id"
        ).format(table(schema, HISTORY_TABLE)))
        return cur.fetchall()


def insert_row(conn: psycopg.Connection, schema: str, *, version: int | None, name: str, kind: str,
               status: str, checksum: str | None = None, checksum_version: int | None = None,
               statement_count: int | None = None, statements_done: int | None = None,
               error: str | None = None, sql_text: str | None = None, client: str | None = None,
               execution_ms: int = 0, commit: bool = False, before_commit: str | None = None) -> int | None:
    """Insert one row and return its id; with ``commit``, also commit the open transaction.

    With ``commit`` the INSERT and the COMMIT travel in one round trip and no id is returned.
    ``before_commit`` is a query sent between them, such as the migration lock check.
    """
    query = sql.SQL(
        "INSERT INTO {} (version, name, kind, status, checksum, checksum_version, statement_count, "
        "statements_done, error, sql, client, execution_ms) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ).format(table(schema, HISTORY_TABLE))
    params = (version, name, kind, status, checksum, checksum_version, statement_count, statements_done,
              error, sql_text, client, execution_ms)
    if commit:
        _execute_and_commit(conn, query, params, before_commit)
        return None
    row = conn.execute(query + sql.SQL(" RETURNING id"), params).fetchone()
    return row[0]


def insert_statement(conn: psycopg.Connection, schema: str, *, version: int | None, name: str, kind: str,
                     status: str, checksum: str | None, checksum_version: int | None, statement_count: int,
                     client: str | None, returning_execution_ms: bool = False, only_if: str | None = None) -> str:
    """Build an INSERT of a finished row with its values inlined, to append to a larger script.

    Its execution time is measured by the server, from the time the transaction noted in
    the setting FILE_STARTED_SETTING to the INSERT itself. The runner builds one per file,
    so the common values are quoted without psycopg's composition. ``only_if`` is a
    condition the row is inserted under, evaluated in the same statement.
    """
    values = (version, name, kind, status, checksum, checksum_version, statement_count, statement_count, client)
    # applied_at too comes from the clock: now() is when a script of several files arrived.
    row = (f"{', '.join(_literal(conn, value) for value in values)}, "
           "(extract(epoch FROM pg_catalog.clock_timestamp() - "
           f"pg_catalog.current_setting('{FILE_STARTED_SETTING}')::timestamptz) * 1000)::integer, "
           "pg_catalog.clock_timestamp()")
    returning = " RETURNING execution_ms" if returning_execution_ms else ""
    if only_if is not None:
        return f"{_insert_prefix(schema)} SELECT {row} WHERE {only_if}{returning}"
    return f"{_insert_prefix(schema)} VALUES ({row}){returning}"


@functools.lru_cache(maxsize=8)
def _insert_prefix(schema: str) -> str:
    return (f"INSERT INTO {table(schema, HISTORY_TABLE).as_string(None)} (version, name, kind, status, checksum, "
            "checksum_version, statement_count, statements_done, client, execution_ms, applied_at)")


# Text made only of these characters needs no escaping inside single quotes.
_PLAIN_TEXT_RE = re.compile(r"[A-Za-z0-9_.:@/ -]*")


def _literal(conn: psycopg.Connection, value: object) -> str:
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if isinstance(value, str) and _PLAIN_TEXT_RE.fullmatch(value):
        return f"'{value}'"
    return sql.Literal(value).as_string(conn)


def _execute_and_commit(conn: psycopg.Connection, query: sql.Composable, params: tuple,
                        before_commit: str | None = None) -> None:
    # Client-side binding lets the commands go as one simple query, which creates no
    # prepared statement. If one fails, the server skips COMMIT and the caller rolls back.
    # The % signs of before_commit are doubled, since the query carries parameters.
    middle = sql.SQL("; " + before_commit.replace("%", "%%")) if before_commit else sql.SQL("")
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(query + middle + sql.SQL("; COMMIT"), params)


def update_progress(conn: psycopg.Connection, schema: str, row_id: int, *, status: str,
                    statements_done: int, error: str | None = None, execution_ms: int = 0,
                    commit: bool = False, before_commit: str | None = None) -> None:
    """Update the progress of a row; with ``commit``, also commit the open transaction after ``before_commit``."""
    query = sql.SQL(
        "UPDATE {} SET status = %s, statements_done = %s, error = %s, execution_ms = %s, "
        "applied_at = now() WHERE id = %s"
    ).format(table(schema, HISTORY_TABLE))
    params = (status, statements_done, error, execution_ms, row_id)
    if commit:
        _execute_and_commit(conn, query, params, before_commit)
        return
    conn.execute(query, params)


def update_checksum(conn: psycopg.Connection, schema: str, version: int, checksum: str, checksum_version: int,
                    *, name: str) -> None:
    """Record the current checksum (and file name) of an applied version after a review."""
    conn.execute(sql.SQL("UPDATE {} SET checksum = %s, checksum_version = %s, name = %s WHERE version = %s")
                 .format(table(schema, HISTORY_TABLE)), (checksum, checksum_version, name, version))


def delete_row(conn: psycopg.Connection, schema: str, row_id: int) -> None:
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(table(schema, HISTORY_TABLE)), (row_id,))
