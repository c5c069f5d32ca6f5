"""Fix the history after a person has reviewed the database: repair, resolve, unlock."""

from __future__ import annotations

from dataclasses import dataclass, field

from db import history
from db.config import Settings
from db.connection import connect
from db.errors import UsageError
from db.i18n import _
from db.lock import LockHolder, force_unlock
from db.migrations import SQL_DIR, local_migrations
from db.sqlfile import CHECKSUM_VERSION


@dataclass
class RepairResult:
    """Changes made by ``repair``."""

    checksums_updated: list[str] = field(default_factory=list)
    unfinished_removed: list[str] = field(default_factory=list)


def repair(settings: Settings, sql_dir=SQL_DIR) -> RepairResult:
    """Record the current checksums of edited files and remove rows of failed or interrupted files.

    A removed row makes its file pending again, so the next ``db.migrate`` runs it from its
    first statement: the person running this has undone the statements that did run.
    """
    result = RepairResult()
    local = {m.version: m for m in local_migrations(sql_dir)}
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        rows = history.read_history(conn, settings.schema)
        with conn.transaction():
            for row in rows:
                if row.version is None or row.kind != history.KIND_FILE:
                    continue
                if row.status in (history.STATUS_FAILED, history.STATUS_RUNNING):
                    history.delete_row(conn, settings.schema, row.id)
                    result.unfinished_removed.append(row.name)
                elif row.version in local and (local[row.version].checksum != row.checksum
                                               or local[row.version].name != row.name):
                    current = local[row.version]
                    history.update_checksum(conn, settings.schema, row.version, current.checksum, CHECKSUM_VERSION,
                                            name=current.name)
                    result.checksums_updated.append(current.name)
    return result


def resolve(settings: Settings, version: int) -> str:
    """Mark a failed or interrupted file as applied after a person finished it by hand."""
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        rows = [r for r in history.read_history(conn, settings.schema) if r.version == version]
        if not rows or rows[0].status not in (history.STATUS_FAILED, history.STATUS_RUNNING):
            raise UsageError(
                _("version {version} has no failed or interrupted history row", version=version),
                hint=_("run `invoke db.history` to see which versions need resolving"))
        row = rows[0]
        history.update_progress(conn, settings.schema, row.id, status=history.STATUS_APPLIED,
                                statements_done=row.statement_count or 0, error=None,
                                execution_ms=row.execution_ms)
        return row.name


def unlock(settings: Settings) -> LockHolder | None:
    """Delete the migration lock row; return who held it."""
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        if not history.tables_exist(conn, settings.schema):
            return None
        return force_unlock(conn, settings.schema)
