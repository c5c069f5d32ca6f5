"""What remains between the models and the database after the files: plan it, apply the safe part.

``db.diff`` shows the changes. ``db.migrate`` applies the additive ones that cannot hurt a
running system (a new table, a new column that is nullable or has a constant default, an
index built concurrently) and records each in the history with its SQL. Everything else
waits for a person, who sees it listed with its SQL and hazard and can write it to a
numbered file with ``db.diff --write``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from db import history
from db.config import Settings
from db.connection import connect
from db.diff import Change, ChangeKind, Hazard, quote, render_script
from db.errors import MigrationError, UsageError
from db.i18n import _
from db.lock import MigrationLock
from db.migrations import SQL_DIR, client_label, local_migrations, set_local_timeouts
from db import model_cache
from db.schema_diff import DiffResult, compare_with
from db.sqlfile import NO_TRANSACTION_DIRECTIVE

log = logging.getLogger(__name__)

# Changes db.migrate applies without review, when their hazard is also "safe". A real run
# creates the schema with its history table before it compares, so only a dry run on a
# schema that does not exist yet gets ADD_SCHEMA.
AUTO_KINDS = frozenset({ChangeKind.ADD_SCHEMA, ChangeKind.ADD_TABLE, ChangeKind.ADD_COLUMN, ChangeKind.ADD_INDEX})
# Foreign keys of a new table come as separate changes; they are safe on an empty table.
_NEW_TABLE_FK = ChangeKind.ADD_CONSTRAINT
_DESCRIPTION = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")


def plan(settings: Settings, models: str | None = None) -> DiffResult:
    """Diff the models against the configured schema, leaving out the bookkeeping tables.

    ``models`` is a ``package.module:attribute`` spec; without it, TextLoom's own models.
    The model snapshot comes from the cache when nothing it was built from has changed.
    """
    spec = models or model_cache.TEXTLOOM_MODELS
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        return compare_with(conn, settings.schema,
                            lambda prefix, before_server: model_cache.model_snapshot(
                                conn, spec, settings.schema, prefix, before_server=before_server),
                            exclude_tables=history.BOOKKEEPING_TABLES)


def plan_against_files(settings: Settings, models: str | None = None) -> list[Change]:
    """Diff the models against the schema that the migration files build, not the live one.

    A new migration file must take any database that ran the earlier files to the models'
    state. The live database may already hold changes that db.migrate applied from the
    models, or fixes made by hand, and a file planned against it would silently rely on them.
    """
    from db import model_schema
    from db.diff import diff_snapshots
    from db.replay import files_snapshot

    loaded = model_cache.load(models or model_cache.TEXTLOOM_MODELS)
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        expected = files_snapshot(conn, local_migrations(settings.sql_dir), settings.schema)
        model = model_schema.snapshot_from_metadata(loaded.metadata, settings.schema,
                                                    source_schema=loaded.source_schema, conn=conn,
                                                    type_prefix=expected.type_prefix)
    return [c for c in diff_snapshots(model, expected) if c.kind != ChangeKind.NOT_COMPARABLE]


def split_auto(changes: Sequence[Change]) -> tuple[list[Change], list[Change]]:
    """Split changes into those db.migrate may apply by itself and those a person must review."""
    new_tables = {c.object for c in changes if c.kind == ChangeKind.ADD_TABLE and c.hazard == Hazard.SAFE}
    auto, review = [], []
    for change in changes:
        is_new_table_fk = change.kind == _NEW_TABLE_FK and change.object.split(".")[0] in new_tables
        if change.hazard == Hazard.SAFE and (change.kind in AUTO_KINDS or is_new_table_fk):
            auto.append(change)
        else:
            review.append(change)
    return auto, review


def apply_changes(settings: Settings, changes: Sequence[Change]) -> list[tuple[Change, int]]:
    """Apply changes one by one, each recorded in the history with its SQL; return the timings."""
    applied = []
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        for change in changes:
            applied.append((change, _apply_change(conn, settings, change)))
    return applied


def _apply_change(conn: psycopg.Connection, settings: Settings, change: Change) -> int:
    started = time.perf_counter()
    sql_text = ";\n".join(change.sql) + ";"
    name = f"{change.kind} {change.object}"
    try:
        if change.is_transactional:
            with conn.transaction():
                set_local_timeouts(conn, settings)
                for statement in change.sql:
                    conn.execute(statement)
                elapsed = int((time.perf_counter() - started) * 1000)
                history.insert_row(conn, settings.schema, version=None, name=name, kind=history.KIND_AUTO,
                                   status=history.STATUS_APPLIED, sql_text=sql_text, client=client_label(),
                                   execution_ms=elapsed)
            return elapsed
        for statement in change.sql:
            conn.execute(statement)
    except psycopg.Error as exc:
        raise MigrationError(
            _("applying {change} failed: {error}\n  {sql}", change=name, error=str(exc).strip(), sql=sql_text),
            hint=_("fix the cause, or apply the change by hand, then run `invoke db.migrate` again")) from None
    elapsed = int((time.perf_counter() - started) * 1000)
    history.insert_row(conn, settings.schema, version=None, name=name, kind=history.KIND_AUTO,
                       status=history.STATUS_APPLIED, sql_text=sql_text, client=client_label(), execution_ms=elapsed)
    return elapsed


def render_file(changes: Sequence[Change], schema: str) -> str:
    """Render changes as a migration file that writes ``${schema}`` instead of the schema name.

    The file opts out of the single transaction when a statement cannot run in one, or
    when a constraint is added NOT VALID and validated later. In one transaction, the lock
    taken by the first statement would be held through the whole validation scan. The
    additive statements that db.migrate may already have applied from the models get
    IF NOT EXISTS, so the file also runs on a database that has them.
    """
    changes = [dataclasses.replace(change, sql=tuple(_if_not_exists(s) for s in change.sql))
               if change.kind in AUTO_KINDS else change for change in changes]
    needs_steps = any(not change.is_transactional or any("VALIDATE CONSTRAINT" in s for s in change.sql)
                      for change in changes if change.sql)
    script = render_script(changes, no_transaction_directive=NO_TRANSACTION_DIRECTIVE if needs_steps else None)
    # NOTE: every quoted identifier equal to the schema name and followed by a dot is taken
    # for the schema qualifier, so a table named like the schema with a quoted column would be too.
    return script.replace(quote(schema) + ".", "${schema}.")


# Statement beginnings that the diff writes for additive changes, and their idempotent forms.
_IDEMPOTENT_FORMS = (
    (re.compile(r"^CREATE TABLE (?!IF NOT EXISTS)"), "CREATE TABLE IF NOT EXISTS "),
    (re.compile(r"^(CREATE (?:UNIQUE )?INDEX (?:CONCURRENTLY )?)(?!IF NOT EXISTS)"), r"\1IF NOT EXISTS "),
    (re.compile(r"^(ALTER TABLE .+?) ADD COLUMN (?!IF NOT EXISTS)"), r"\1 ADD COLUMN IF NOT EXISTS "),
)


def _if_not_exists(statement: str) -> str:
    for pattern, replacement in _IDEMPOTENT_FORMS:
        statement = pattern.sub(replacement, statement, count=1)
    return statement


def next_file_path(description: str, sql_dir: Path = SQL_DIR) -> Path:
    """Return the path of the next numbered migration file with the given description."""
    if not _DESCRIPTION.match(description):
        raise UsageError(_("invalid migration name {name!r}: use lower-case words joined by underscores, "
                           "such as add_render_presets", name=description))
    existing = local_migrations(sql_dir)
    version = max((m.version for m in existing), default=0) + 1
    return sql_dir / f"{version:04d}_{description}.sql"


@dataclasses.dataclass
class DriftOutcome:
    """Outcome of the drift step of db.migrate: the changes applied and those left for review."""

    applied: list[tuple[Change, int]]
    review: list[Change]
    not_comparable: tuple


def apply_drift(settings: Settings, models: str | None = None, *, dry_run: bool = False,
                on_wait=None) -> DriftOutcome:
    """Plan under the migration lock, apply the safe additive changes, return the rest."""
    if dry_run:
        result = plan(settings, models)
        auto, review = split_auto(result.changes)
        return DriftOutcome([(change, 0) for change in auto], review, result.not_comparable)

    lock = MigrationLock.for_settings(settings, on_wait=on_wait)
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        history.ensure_tables(conn, settings.schema)
        lock.acquire(conn)
    try:
        # Planned only now, under the lock: another migrator may have just applied the same change.
        result = plan(settings, models)
        auto, review = split_auto(result.changes)
        return DriftOutcome(apply_changes(settings, auto), review, result.not_comparable)
    finally:
        lock.release()
