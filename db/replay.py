"""The schema that a list of migration files builds, read without changing the database.

The files are replayed into a scratch schema inside a transaction that is rolled back, and
that schema is read as a snapshot named after the real one. Baselining compares a live
database with it, and ``db.diff --write`` compares the models with it, so that a new file
depends only on the files before it, never on what else happened to one database.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pglast
import psycopg
from pglast import ast
from pglast.stream import RawStream
from psycopg import sql

from db import catalog
from db.errors import MigrationError, UsageError
from db.i18n import _
from db.migrations import LocalMigration, execute_statement, placeholders
from db.snapshot import SchemaSnapshot
from db.sqlfile import Statement, read_sql_file


class _Rollback(Exception):
    """Ends the scratch transaction once the expected schema has been read."""


def files_snapshot(conn: psycopg.Connection, migrations: list[LocalMigration], schema: str) -> SchemaSnapshot:
    """Replay ``migrations`` into a scratch schema and return what they build, named ``schema``."""
    scratch = "textloom_replay_" + uuid.uuid4().hex[:12]
    values = placeholders(scratch)
    snapshot: SchemaSnapshot | None = None
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
            for migration in migrations:
                _replay(conn, migration, values)
            snapshot = catalog.read_schema(conn, scratch)
            raise _Rollback
    except _Rollback:
        pass
    return rename_schema(snapshot, scratch, schema)


def _replay(conn: psycopg.Connection, migration: LocalMigration, values: dict[str, str]) -> None:
    parsed = read_sql_file(migration.path, values)
    for statement in parsed.statements:
        text = _in_transaction_form(statement, migration)
        if text is None:
            continue
        try:
            execute_statement(conn, dataclasses.replace(statement, text=text))
        except psycopg.Error as exc:
            raise MigrationError(_("{file}, line {line}: replaying the file failed: {error}", file=migration.name,
                                   line=statement.line, error=str(exc).strip()),
                                 hint=_("fix the file; nothing was recorded")) from None


def _in_transaction_form(statement: Statement, migration: LocalMigration) -> str | None:
    """Rewrite a statement to run in the scratch transaction; return None when it changes no schema.

    CREATE and DROP INDEX CONCURRENTLY build the same objects without CONCURRENTLY, and
    maintenance statements (VACUUM, REINDEX, CLUSTER, ...) change no schema at all.
    """
    if not statement.needs_no_transaction:
        return statement.text
    node = pglast.parse_sql(statement.text)[0].stmt
    if isinstance(node, (ast.IndexStmt, ast.DropStmt)) and node.concurrent:
        node.concurrent = False
        return RawStream()(node)
    if isinstance(node, (ast.VacuumStmt, ast.ReindexStmt, ast.ClusterStmt)):
        return None
    raise UsageError(
        _("{file}, line {line}: {kind} cannot be replayed inside a transaction for the comparison",
          file=migration.name, line=statement.line, kind=statement.tag),
        hint=_("compare against an earlier version, or apply the files with `invoke db.migrate` first"))


def rename_schema(value: Any, old: str, new: str) -> Any:
    """Replace the scratch schema name everywhere in a snapshot: names, types, defaults, expressions."""
    if isinstance(value, str):
        quoted_old, quoted_new = sql.Identifier(old).as_string(None), sql.Identifier(new).as_string(None)
        return value.replace(quoted_old, quoted_new).replace(old, new)
    if isinstance(value, tuple):
        return tuple(rename_schema(item, old, new) for item in value)
    if isinstance(value, dict):
        return {key: rename_schema(item, old, new) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: rename_schema(getattr(value, f.name), old, new)
                                             for f in dataclasses.fields(value) if f.init})
    return value
