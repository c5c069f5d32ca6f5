"""Adopt a database created without history (for example by ``MetaData.create_all``).

``db.baseline VERSION`` compares the live schema with what the files up to VERSION build
(see db/replay.py). Only when they match does it record those versions as baselined.
"""

from __future__ import annotations

import dataclasses

import psycopg

from db import catalog, history
from db.config import Settings
from db.connection import connect
from db.diff import Change, diff_snapshots
from db.errors import MigrationError, UsageError
from db.i18n import _
from db.lock import MigrationLock
from db.migrations import SQL_DIR, LocalMigration, client_label, local_migrations
from db.replay import files_snapshot
from db.snapshot import SchemaSnapshot
from db.sqlfile import CHECKSUM_VERSION


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
            expected = files_snapshot(conn, targets, settings.schema)
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


def _summary(changes: list[Change]) -> str:
    shown = [f"{change.kind} {change.object}" for change in changes[:8]]
    if len(changes) > len(shown):
        shown.append(_("and {count} more", count=len(changes) - len(shown)))
    return ", ".join(shown)
