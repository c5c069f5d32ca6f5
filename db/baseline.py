"""Adopt a database created without history (for example by ``MetaData.create_all``).

``db.baseline VERSION`` replays the files up to VERSION into a scratch schema inside a
transaction that is rolled back, reads that schema as the expected state, compares it
with the live schema, and only when they match records those versions as baselined.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import psycopg
from psycopg import sql

from db import catalog, history
from db.config import Settings
from db.connection import connect
from db.diff import Change, diff_snapshots
from db.errors import MigrationError, UsageError
from db.i18n import _
from db.lock import MigrationLock
from db.migrations import SQL_DIR, LocalMigration, client_label, execute_statement, local_migrations, placeholders
from db.snapshot import SchemaSnapshot
from db.sqlfile import CHECKSUM_VERSION, read_sql_file


class _Rollback(Exception):
    """Ends the scratch transaction once the expected schema has been read."""


def baseline(settings: Settings, version: int, sql_dir=SQL_DIR) -> list[LocalMigration]:
    """Check the live schema against files 1..version and record them as baselined."""
    targets = [m for m in local_migrations(sql_dir) if m.version <= version]
    if not targets or targets[-1].version != version:
        raise UsageError(_("no migration file has version {version}", version=version),
                         hint=_("run `invoke db.history` to list the versions in sql/"))

    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        history.ensure_tables(conn, settings.schema)
        recorded = [r for r in history.read_history(conn, settings.schema) if r.version is not None]
        if recorded:
            raise UsageError(_("schema {schema} already has migration history ({count} rows)",
                               schema=settings.schema, count=len(recorded)),
                             hint=_("baseline only adopts a database without history; use `invoke db.migrate`"))

        lock = MigrationLock.for_settings(settings)
        lock.acquire(conn)
        try:
            expected = _expected_snapshot(conn, settings.schema, targets)
            actual = _without_bookkeeping(catalog.read_schema(conn, settings.schema))
            changes = diff_snapshots(expected, actual)
            if changes:
                raise MigrationError(
                    _("schema {schema} does not match the migrations up to version {version}: {changes}",
                      schema=settings.schema, version=version, changes=_summary(changes)),
                    hint=_("baseline at the version the database really matches, or bring it in line first"))
            _record(conn, settings.schema, targets)
        finally:
            lock.release()
    return targets


def _expected_snapshot(conn: psycopg.Connection, schema: str, targets: list[LocalMigration]) -> SchemaSnapshot:
    scratch = "textloom_baseline_" + uuid.uuid4().hex[:12]
    values = placeholders(scratch)
    snapshot: SchemaSnapshot | None = None
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
            for migration in targets:
                _replay(conn, migration, values)
            snapshot = catalog.read_schema(conn, scratch)
            raise _Rollback
    except _Rollback:
        pass
    return _rename_schema(snapshot, scratch, schema)


def _replay(conn: psycopg.Connection, migration: LocalMigration, values: dict[str, str]) -> None:
    parsed = read_sql_file(migration.path, values)
    for statement in parsed.statements:
        if statement.needs_no_transaction:
            # NOTE: a statement such as CREATE INDEX CONCURRENTLY cannot run in the scratch
            # transaction, so files that contain one cannot be baselined over.
            raise UsageError(
                _("{file} contains {kind}, which cannot be replayed for the comparison",
                  file=migration.name, kind=statement.tag),
                hint=_("baseline at an earlier version, then apply the later files with `invoke db.migrate`"))
        try:
            execute_statement(conn, statement)
        except psycopg.Error as exc:
            raise MigrationError(_("{file}, line {line}: replaying the file failed: {error}", file=migration.name,
                                   line=statement.line, error=str(exc).strip()),
                                 hint=_("fix the file; nothing was recorded")) from None


def _record(conn: psycopg.Connection, schema: str, targets: list[LocalMigration]) -> None:
    with conn.transaction():
        for migration in targets:
            history.insert_row(conn, schema, version=migration.version, name=migration.name,
                               kind=history.KIND_BASELINE, status=history.STATUS_BASELINED,
                               checksum=migration.checksum, checksum_version=CHECKSUM_VERSION,
                               client=client_label())


def _without_bookkeeping(snapshot: SchemaSnapshot) -> SchemaSnapshot:
    tables = {name: table for name, table in snapshot.tables.items() if name not in history.BOOKKEEPING_TABLES}
    return dataclasses.replace(snapshot, tables=tables)


def _rename_schema(value: Any, old: str, new: str) -> Any:
    """Replace the scratch schema name everywhere in a snapshot: names, types, defaults, expressions."""
    if isinstance(value, str):
        quoted_old, quoted_new = sql.Identifier(old).as_string(None), sql.Identifier(new).as_string(None)
        return value.replace(quoted_old, quoted_new).replace(old, new)
    if isinstance(value, tuple):
        return tuple(_rename_schema(item, old, new) for item in value)
    if isinstance(value, dict):
        return {key: _rename_schema(item, old, new) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _rename_schema(getattr(value, f.name), old, new)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def _summary(changes: list[Change]) -> str:
    shown = [f"{change.kind} {change.object}" for change in changes[:8]]
    if len(changes) > len(shown):
        shown.append(_("and {count} more", count=len(changes) - len(shown)))
    return ", ".join(shown)
