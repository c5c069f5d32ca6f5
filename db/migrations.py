"""The migration runner: discover files, compare them with the history, plan, apply, record.

Each file runs in one transaction together with its history row, unless its header opts
out with ``-- textloom:no-transaction``. Statements of such a file run one at a time,
each ordinary statement in a transaction of its own with the progress update, so the
history records how far the file got. The pending list is computed only after the
migration lock is held, so concurrent migrators apply each file exactly once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus

from db import history
from db.config import DEFAULT_SQL_DIR, Settings
from db.connection import connect
from db.errors import DatabaseError, MigrationError
from db.history import HistoryRow
from db.i18n import _
from db.lock import LockHolder, MigrationLock
from db.sqlfile import CHECKSUM_VERSION, SqlFile, Statement, checksum, discover, parse_name, read_sql_file

log = logging.getLogger(__name__)

SQL_DIR = DEFAULT_SQL_DIR
_BACKOFF_CAP_S = 8.0


@dataclass(frozen=True)
class LocalMigration:
    """A migration file on disk, read only as far as its checksum."""

    path: Path
    version: int
    description: str
    checksum: str

    @property
    def name(self) -> str:
        return self.path.name


# Kinds of inconsistency between the files and the history; each has its own hint.
UNFINISHED = "unfinished"
CHANGED = "changed"
MISSING = "missing"
OUT_OF_ORDER = "out_of_order"


@dataclass
class Plan:
    """The result of comparing the files with the history: what is pending, what disagrees."""

    folder: Path
    local: list[LocalMigration]
    rows: list[HistoryRow]
    pending: list[LocalMigration]
    problems: list[str] = field(default_factory=list)
    problem_kinds: set[str] = field(default_factory=set)

    def add_problem(self, kind: str, message: str) -> None:
        self.problems.append(message)
        self.problem_kinds.add(kind)


class Progress:
    """Receives progress events; the task layer prints them.

    ``announces_files`` is true when ``applying`` shows something to a person. Each file is
    then committed before the next starts, so a finished file is never reported after the
    next one was announced.
    """

    announces_files = False

    def waiting(self, holder: LockHolder) -> None: ...
    def applying(self, migration: LocalMigration, position: int, total: int) -> None: ...
    def applied(self, migration: LocalMigration, elapsed_ms: int) -> None: ...
    def retrying(self, migration: LocalMigration, attempt: int, delay: float) -> None: ...


def placeholders(schema: str) -> dict[str, str]:
    """Values of the ``${name}`` placeholders a migration file may use."""
    return {"schema": sql.Identifier(schema).as_string(None)}


def client_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- discovery and validation -------------------------------------------------------


def local_migrations(sql_dir: Path = SQL_DIR) -> list[LocalMigration]:
    """List the numbered files of ``sql_dir`` with their checksums, in version order."""
    found = []
    for path in discover(sql_dir):
        version, description = parse_name(path)
        found.append(LocalMigration(path, version, description, checksum(path.read_bytes())))
    return found


def applied_rows(rows: Sequence[HistoryRow]) -> dict[int, HistoryRow]:
    """The rows that stand for a file version: applied, baselined, running or failed."""
    return {row.version: row for row in rows if row.version is not None}


def build_plan(local: list[LocalMigration], rows: list[HistoryRow], folder: Path, *,
               allow_out_of_order: bool = False) -> Plan:
    """Compare the files with the history: find the pending ones and every inconsistency."""
    by_version = applied_rows(rows)
    local_versions = {m.version for m in local}
    plan = Plan(folder, local, rows, [])

    for row in by_version.values():
        if row.status in (history.STATUS_FAILED, history.STATUS_RUNNING):
            plan.add_problem(UNFINISHED, _describe_unfinished(row))

    for migration in local:
        row = by_version.get(migration.version)
        if row is None:
            plan.pending.append(migration)
        elif row.kind == history.KIND_FILE and row.success and row.name != migration.name:
            plan.add_problem(CHANGED, _(
                "version {version} was applied as {recorded}, but the file is now {file}",
                version=migration.version, recorded=row.name, file=migration.name))
        elif row.kind == history.KIND_FILE and row.checksum != migration.checksum and row.success:
            plan.add_problem(CHANGED, _(
                "{file} was changed after it was applied (checksum {actual}, recorded {recorded})",
                file=migration.name, actual=migration.checksum[:12], recorded=(row.checksum or "-")[:12]))

    for version, row in sorted(by_version.items()):
        if version not in local_versions and row.kind == history.KIND_FILE:
            plan.add_problem(MISSING, _("{name} is recorded as applied but its file is missing from {folder}",
                                        name=row.name, folder=folder))

    highest = max((v for v, r in by_version.items() if r.success), default=0)
    late = [m for m in plan.pending if m.version < highest]
    if late and not allow_out_of_order:
        for migration in late:
            plan.add_problem(OUT_OF_ORDER, _(
                "{file} is pending but version {version} is below the highest applied version {highest}",
                file=migration.name, version=migration.version, highest=highest))
    return plan


def _describe_unfinished(row: HistoryRow) -> str:
    if row.status == history.STATUS_RUNNING:
        return _("{name} was interrupted after {done} of {total} statements",
                 name=row.name, done=row.statements_done or 0, total=row.statement_count or "?")
    return _("{name} failed at statement {number} of {total}: {error}", name=row.name,
             number=(row.statements_done or 0) + 1, total=row.statement_count or "?", error=row.error or "")


def unfinished_hint(versions: list[int]) -> str:
    """Build the hint for files that stopped half-way, naming their versions."""
    return _("fix the cause, then either finish the remaining statements by hand and run "
             "`invoke db.resolve {version}`, or undo the statements that ran and run `invoke db.repair` "
             "so the file runs again from its first statement", version=versions[0] if versions else "VERSION")


def problem_hints(plan: Plan) -> list[str]:
    """List the hints for each kind of inconsistency the plan found."""
    hints = {
        UNFINISHED: unfinished_hint([r.version for r in plan.rows if r.version is not None
                                     and r.status in (history.STATUS_FAILED, history.STATUS_RUNNING)]),
        CHANGED: _("restore the applied files as they were, or review the changes and run `invoke db.repair` "
                   "to record the new checksums"),
        MISSING: _("restore the missing files from version control"),
        OUT_OF_ORDER: _("renumber the file above the highest applied version, or pass --allow-out-of-order "
                        "to apply it anyway"),
    }
    return [hint for kind, hint in hints.items() if kind in plan.problem_kinds]


def raise_for_problems(plan: Plan) -> None:
    if not plan.problems:
        return
    raise MigrationError(
        _("migration history does not match the files in {folder}: {problems}", folder=plan.folder,
          problems="; ".join(plan.problems)),
        hint="; ".join(problem_hints(plan)))


# --- applying -----------------------------------------------------------------------


def read_pending(pending: list[LocalMigration], schema: str) -> list[SqlFile]:
    """Parse every pending file before any runs, so a bad file stops the run up front."""
    values = placeholders(schema)
    parsed = [read_sql_file(m.path, values) for m in pending]
    for migration, sql_file in zip(pending, parsed):
        if not sql_file.statements:
            raise MigrationError(
                _("{file} contains no statements, only comments or nothing; applying it would use up version "
                  "{version} without changing anything", file=migration.name, version=migration.version),
                hint=_("uncomment the statements that should run, or delete the file; nothing has run"))
    return parsed


# Quick transactional files go to the server several at a time, in one script whose
# COMMITs sit between them. A script that ran faster than this lets the next one carry
# twice as many files, up to the maximum. The last file of a script stays open, and its
# COMMIT goes first in the next script. Each saves round trips; a slow script falls back to
# one file, committed at once so its line is not delayed.
_QUICK_SCRIPT_MS = 100
_MAX_FILES_PER_SCRIPT = 32


@dataclass(frozen=True)
class _UncommittedFile:
    """A transactional file whose statements and history row succeeded; its COMMIT is not sent yet."""

    migration: LocalMigration
    elapsed_ms: int


@dataclass
class _ScriptOutcome:
    """The result of one script: files committed in it, the last file left open, or the file that failed."""

    committed: list[tuple[LocalMigration, int]]
    open_file: _UncommittedFile | None = None
    failed: tuple[LocalMigration, SqlFile] | None = None
    # The failure was lock_timeout: the script counts as the file's first attempt.
    failed_on_lock_timeout: bool = False


def _apply_all(conn: psycopg.Connection, settings: Settings, pending: list[LocalMigration], parsed: list[SqlFile],
               lock: MigrationLock, progress: Progress, result: RunResult) -> None:
    """Apply the parsed files in order, each in its own transaction unless it opted out."""
    uncommitted: _UncommittedFile | None = None
    files_per_script = 1
    guard = _LeaseGuard(settings.schema, lock)

    def report(migration: LocalMigration, elapsed_ms: int) -> None:
        progress.applied(migration, elapsed_ms)
        result.applied.append((migration, elapsed_ms))

    position = 0
    try:
        while position < len(pending):
            if lock.lost.is_set():
                raise _lock_lost_error(pending[position], uncommitted)
            if not _fits_one_script(parsed[position]):
                if uncommitted is not None:
                    _commit(conn, uncommitted.migration, guard)
                    report(uncommitted.migration, uncommitted.elapsed_ms)
                    uncommitted = None
                progress.applying(pending[position], position + 1, len(pending))
                report(pending[position], apply_file(conn, settings, pending[position], parsed[position], progress,
                                                     guard=guard))
                position += 1
                files_per_script = 1
                continue

            limit = 1 if progress.announces_files else files_per_script
            files = []
            while (position + len(files) < len(pending) and len(files) < limit
                   and _fits_one_script(parsed[position + len(files)])):
                files.append((pending[position + len(files)], parsed[position + len(files)]))
            for offset, (migration, _sql_file) in enumerate(files):
                progress.applying(migration, position + offset + 1, len(pending))

            started = time.perf_counter()
            try:
                outcome = _apply_script(conn, settings, guard, files, commit_first=uncommitted)
            except (KeyboardInterrupt, SystemExit):
                # Interrupted mid-script: COMMITs in it may have run before the stop.
                for migration, elapsed_ms in _recorded(conn, settings, uncommitted, files):
                    report(migration, elapsed_ms)
                raise
            if uncommitted is not None:
                # The script began with the held file's COMMIT, which succeeded.
                report(uncommitted.migration, uncommitted.elapsed_ms)
                uncommitted = None
            for migration, elapsed_ms in outcome.committed:
                report(migration, elapsed_ms)
            position += len(outcome.committed)

            if outcome.failed is not None:
                migration, sql_file = outcome.failed
                report(migration, _apply_by_statements(conn, settings, migration, sql_file, progress, guard,
                                                       after_lock_timeout=outcome.failed_on_lock_timeout))
                position += 1
                files_per_script = 1
            elif progress.announces_files or _elapsed_ms(started) >= _QUICK_SCRIPT_MS:
                _commit(conn, outcome.open_file.migration, guard)
                report(outcome.open_file.migration, outcome.open_file.elapsed_ms)
                position += 1
                files_per_script = 1
            else:
                uncommitted = outcome.open_file
                position += 1
                files_per_script = min(files_per_script * 2, _MAX_FILES_PER_SCRIPT)
        if uncommitted is not None:
            _commit(conn, uncommitted.migration, guard)
            report(uncommitted.migration, uncommitted.elapsed_ms)
    finally:
        # A held file whose COMMIT was never sent is rolled back here, on error or interrupt.
        rollback_open_transaction(conn)


def _recorded(conn: psycopg.Connection, settings: Settings, uncommitted: _UncommittedFile | None,
              files: list[tuple[LocalMigration, SqlFile]]) -> list[tuple[LocalMigration, int]]:
    """Return the uncommitted file and the files of a script that the history records.

    The list is empty when the history cannot be read.
    """
    try:
        rows = _applied_rows_after_rollback(conn, settings)
    except psycopg.Error:
        return []
    candidates = [uncommitted.migration] if uncommitted is not None else []
    candidates += [migration for migration, _sql_file in files]
    return [(m, rows[m.version].execution_ms) for m in candidates if m.version in rows]


def _applied_rows_after_rollback(conn: psycopg.Connection, settings: Settings) -> dict[int | None, HistoryRow]:
    """Roll back a failed or interrupted script, then read the successful history rows by version."""
    rollback_open_transaction(conn)
    return {row.version: row for row in history.read_history(conn, settings.schema) if row.success}


def _lock_lost_error(migration: LocalMigration, uncommitted: _UncommittedFile | None) -> MigrationError:
    message = _("the migration lock was lost before {file}", file=migration.name)
    if uncommitted is not None:
        message = _("{message}; {file} ran but is rolled back, not committed", message=message,
                    file=uncommitted.migration.name)
    return MigrationError(message, hint=_("another migrator took over after the lock expired; run "
                                         "`invoke db.migrate` again"))


def apply_file(conn: psycopg.Connection, settings: Settings, migration: LocalMigration, parsed: SqlFile,
               progress: Progress, *, guard: _LeaseGuard) -> int:
    """Apply one parsed file, record it and commit; return the elapsed milliseconds."""
    if not parsed.is_transactional:
        return _apply_statement_by_statement(conn, settings, migration, parsed, guard)
    return _apply_by_statements(conn, settings, migration, parsed, progress, guard)


def _fits_one_script(parsed: SqlFile) -> bool:
    # COPY data cannot travel inside a simple query.
    return parsed.is_transactional and all(statement.copy_data is None for statement in parsed.statements)


def _apply_by_statements(conn: psycopg.Connection, settings: Settings, migration: LocalMigration,
                         parsed: SqlFile, progress: Progress, guard: _LeaseGuard, *,
                         after_lock_timeout: bool = False) -> int:
    """Run a transactional file statement by statement in one transaction, with lock retries.

    This names the statement that fails. It is the path for files with COPY data, and the
    second attempt after the whole script failed and was rolled back. With
    ``after_lock_timeout`` that script reached lock_timeout, and counts as the first attempt.
    """
    attempt = 0
    if after_lock_timeout:
        if settings.lock_retries == 0:
            raise MigrationError(
                _("{file}: lock_timeout reached; nothing of this file was applied", file=migration.name),
                hint=_("another session held a conflicting lock for longer than lock_timeout; find it in "
                       "pg_stat_activity, or raise TEXTLOOM_LOCK_TIMEOUT, then run `invoke db.migrate` again"))
        attempt = 1
        progress.retrying(migration, attempt, backoff(attempt))
        time.sleep(backoff(attempt))
    while True:
        started = time.perf_counter()
        begin_with_timeouts(conn, settings)
        try:
            for statement in parsed.statements:
                _execute(conn, statement, migration)
            elapsed_ms = _elapsed_ms(started)
            _record_and_commit(conn, settings, migration, len(parsed.statements), elapsed_ms, guard)
            return elapsed_ms
        except _StatementFailed as failure:
            rollback_open_transaction(conn)
            if failure.is_lock_timeout and attempt < settings.lock_retries:
                attempt += 1
                delay = backoff(attempt)
                progress.retrying(migration, attempt, delay)
                time.sleep(delay)
                continue
            raise failure.to_error(_("nothing of this file was applied")) from None
        except BaseException:
            rollback_open_transaction(conn)
            raise


def _apply_script(conn: psycopg.Connection, settings: Settings, guard: _LeaseGuard,
                  files: list[tuple[LocalMigration, SqlFile]], *,
                  commit_first: _UncommittedFile | None) -> _ScriptOutcome:
    """Send quick files as one query: per file BEGIN, the timeouts, its statements and its history row.

    With ``commit_first`` the script starts with the COMMIT of that held file. Every file
    but the last ends with COMMIT, after a check that the migration lock is still this
    migrator's: a server runs a received script to its end even after its client was
    killed, and must not commit once the lock has expired. The last file stays open for
    the caller. When a statement fails the server skips the rest of the script. The files
    the history then records are returned as committed, and the first other one as failed.
    """
    parts = [guard.check_sql, "COMMIT"] if commit_first is not None else []
    row_positions = []
    for number, (migration, parsed) in enumerate(files, start=1):
        parts += ["BEGIN", _timeouts_sql(settings), *(s.text for s in parsed.statements)]
        is_last = number == len(files)
        row_positions.append(len(parts))
        # Before a COMMIT in the script, the history row itself runs the lock check.
        parts.append(history.insert_statement(
            conn, settings.schema, version=migration.version, name=migration.name, kind=history.KIND_FILE,
            status=history.STATUS_APPLIED, checksum=migration.checksum, checksum_version=CHECKSUM_VERSION,
            statement_count=len(parsed.statements), client=client_label(), returning_execution_ms=True,
            only_if=None if is_last else guard.condition_sql))
        if not is_last:
            parts.append("COMMIT")

    try:
        # A ClientCursor sends the script as one simple query; with no parameters, psycopg
        # leaves % signs in the statements alone. Each statement gives one result.
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(";\n".join(parts))
            results = [cur.fetchall() if cur.description else None]
            while cur.nextset():
                results.append(cur.fetchall() if cur.description else None)
    except psycopg.Error as exc:
        return _after_failed_script(conn, settings, guard, files, commit_first, exc)

    timings = [results[index][0][0] for index in row_positions]
    committed = [(migration, elapsed_ms) for (migration, _sql_file), elapsed_ms in zip(files[:-1], timings)]
    return _ScriptOutcome(committed, open_file=_UncommittedFile(files[-1][0], timings[-1]))


def _after_failed_script(conn: psycopg.Connection, settings: Settings, guard: _LeaseGuard,
                         files: list[tuple[LocalMigration, SqlFile]], commit_first: _UncommittedFile | None,
                         exc: psycopg.Error) -> _ScriptOutcome:
    """Find out from the history how far a failed script got; raise when it cannot go on."""
    names = ", ".join(migration.name for migration, _sql_file in files)
    if is_connection_lost(exc):
        rollback_open_transaction(conn)
        raise MigrationError(
            _("{file}: the connection was lost while the file ran: {error} (nothing of this file was "
              "applied unless COMMIT reached the server; `invoke db.history` shows which)",
              file=names, error=(exc.diag.message_primary or str(exc)).strip()),
            hint=_("the connection to the server was lost; check the server or pgbouncer, then run "
                   "`invoke db.migrate` again")) from None

    rows = _applied_rows_after_rollback(conn, settings)
    if commit_first is not None and commit_first.migration.version not in rows:
        raise _commit_failure(conn, guard, commit_first.migration, exc)
    committed = []
    for migration, sql_file in files:
        if migration.version not in rows:
            if not guard.is_held(conn):
                raise _lock_lost_error(migration, None)
            log.info("%s failed in a script (%s); running it statement by statement", migration.name, exc)
            return _ScriptOutcome(committed, failed=(migration, sql_file),
                                  failed_on_lock_timeout=isinstance(exc, pg_errors.LockNotAvailable))
        committed.append((migration, rows[migration.version].execution_ms))
    # The last file never commits inside its script, so another migrator recorded it: the
    # lock was lost, or its row was deleted by hand.
    raise MigrationError(
        _("{file} was recorded by another migrator while this one ran it: {error}", file=files[-1][0].name,
          error=(exc.diag.message_primary or str(exc)).strip()),
        hint=_("check with `invoke db.history` and `invoke db.verify` that each file was applied once, "
               "then run `invoke db.migrate` again"))


class _LeaseGuard:
    """The check, sent before each COMMIT of a file, that this migrator still holds the migration lock.

    A paused or killed migrator must not commit after its lease ran out: another migrator
    may hold the lock by then. The check fails (division by zero) unless the lock row
    still names this migrator with an unexpired lease.
    """

    def __init__(self, schema: str, lock: MigrationLock) -> None:
        # The owner is a UUID, so it needs no quoting beyond the single quotes.
        lock_table = history.table(schema, history.LOCK_TABLE).as_string(None)
        self._count = (f"(SELECT pg_catalog.count(*) FROM {lock_table} WHERE owner = '{lock.owner}' "
                       "AND expires_at > pg_catalog.clock_timestamp())::integer")
        # True while the lease holds; otherwise the division fails, and so does its statement.
        self.condition_sql = f"1 / {self._count} = 1"
        self.check_sql = f"SELECT {self.condition_sql}"

    def is_held(self, conn: psycopg.Connection) -> bool:
        """Return True while the lease is valid, and False when it has expired or the query fails."""
        try:
            row = conn.execute(f"SELECT {self._count}").fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])


@functools.lru_cache(maxsize=8)
def _timeouts_sql_for(lock_timeout_ms: int, statement_timeout_ms: int) -> str:
    # All three settings end with the transaction. The file's start time is noted for the
    # history row: in a script of several files, every transaction starts when the script
    # arrives, so transaction_timestamp() cannot tell the files apart.
    return (f"SELECT pg_catalog.set_config('lock_timeout', '{lock_timeout_ms}ms', true), "
            f"pg_catalog.set_config('statement_timeout', '{statement_timeout_ms}ms', true), "
            f"pg_catalog.set_config('{history.FILE_STARTED_SETTING}', pg_catalog.clock_timestamp()::text, true)")


def _timeouts_sql(settings: Settings) -> str:
    """Return the query that sets the timeouts of the current transaction and notes when it began."""
    return _timeouts_sql_for(int(settings.lock_timeout * 1000), int(settings.statement_timeout * 1000))


def _commit(conn: psycopg.Connection, migration: LocalMigration, guard: _LeaseGuard) -> None:
    try:
        # One simple query: the server skips COMMIT when the check fails.
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(f"{guard.check_sql}; COMMIT")
    except psycopg.Error as exc:
        raise _commit_failure(conn, guard, migration, exc) from None


def _record_and_commit(conn: psycopg.Connection, settings: Settings, migration: LocalMigration,
                       statement_count: int, elapsed_ms: int, guard: _LeaseGuard) -> None:
    """Insert the success row and commit in one round trip.

    COMMIT can fail on its own, for example on a deferred constraint of the file.
    """
    try:
        history.insert_row(
            conn, settings.schema, version=migration.version, name=migration.name,
            kind=history.KIND_FILE, status=history.STATUS_APPLIED, checksum=migration.checksum,
            checksum_version=CHECKSUM_VERSION, statement_count=statement_count,
            statements_done=statement_count, client=client_label(), execution_ms=elapsed_ms, commit=True,
            before_commit=guard.check_sql)
    except psycopg.Error as exc:
        raise _commit_failure(conn, guard, migration, exc) from None


def _commit_failure(conn: psycopg.Connection, guard: _LeaseGuard, migration: LocalMigration,
                    exc: psycopg.Error) -> MigrationError:
    """Roll back after a failed COMMIT and build the error: a lost lock, or what COMMIT reported."""
    if is_connection_lost(exc):
        rollback_open_transaction(conn)
    elif not _lease_after_failure(conn, guard):
        return MigrationError(
            _("the migration lock was lost before {file} could commit; nothing of it was applied",
              file=migration.name),
            hint=_("another migrator took over after the lock expired; run `invoke db.migrate` again"))
    return _commit_error(migration, exc)


def _commit_error(migration: LocalMigration, exc: psycopg.Error) -> MigrationError:
    if is_connection_lost(exc):
        return MigrationError(
            _("{file}: the connection was lost at COMMIT: {error} (nothing of this file was applied unless the "
              "COMMIT reached the server; `invoke db.history` shows which)",
              file=migration.name, error=(exc.diag.message_primary or str(exc)).strip()),
            hint=_("the connection to the server was lost; check the server or pgbouncer, then run "
                   "`invoke db.migrate` again"))
    # The statements ran; COMMIT checks what was deferred, such as DEFERRABLE constraints.
    error = (exc.diag.message_primary or str(exc)).strip()
    if exc.diag.message_detail:
        error += f" (DETAIL: {exc.diag.message_detail.strip()})"
    return MigrationError(
        _("{file}: COMMIT failed, so nothing of this file was applied: {error}", file=migration.name, error=error),
        hint=_("COMMIT runs the checks that were deferred to the end of the transaction, such as DEFERRABLE "
               "constraints; fix the file or the rows it leaves, then run `invoke db.migrate` again"))


def _apply_statement_by_statement(conn: psycopg.Connection, settings: Settings, migration: LocalMigration,
                                  parsed: SqlFile, guard: _LeaseGuard) -> int:
    started = time.perf_counter()
    total = len(parsed.statements)
    row_id = history.insert_row(
        conn, settings.schema, version=migration.version, name=migration.name, kind=history.KIND_FILE,
        status=history.STATUS_RUNNING, checksum=migration.checksum, checksum_version=CHECKSUM_VERSION,
        statement_count=total, statements_done=0, client=client_label())

    for done, statement in enumerate(parsed.statements):
        try:
            _run_with_retries(conn, settings, migration, statement, row_id, done + 1, guard)
        except _StatementFailed as failure:
            _record_failure(settings, row_id, done, failure, _elapsed_ms(started))
            detail = _("statements 1 to {done} of {total} were applied; statement {number} and later were not",
                       done=done, total=total, number=done + 1) if done else _("no statement of this file was applied")
            invalid = invalid_indexes(settings)
            if invalid:
                detail = _("{detail}; invalid indexes left behind: {names}; drop them with DROP INDEX "
                           "CONCURRENTLY before running the file again", detail=detail, names=", ".join(invalid))
            raise failure.to_error(detail, is_recorded_failure=True) from None

    elapsed_ms = _elapsed_ms(started)
    history.update_progress(conn, settings.schema, row_id, status=history.STATUS_APPLIED,
                            statements_done=total, execution_ms=elapsed_ms)
    return elapsed_ms


def _run_with_retries(conn: psycopg.Connection, settings: Settings, migration: LocalMigration,
                      statement: Statement, row_id: int, done: int, guard: _LeaseGuard) -> None:
    attempt = 0
    while True:
        try:
            if statement.needs_no_transaction:
                # NOTE: lock_timeout cannot be set here: SET LOCAL needs a transaction and a
                # session SET would leak through pgbouncer. These statements (CREATE INDEX
                # CONCURRENTLY and the like) take no lock that blocks writers.
                _execute(conn, statement, migration)
                history.update_progress(conn, settings.schema, row_id, status=history.STATUS_RUNNING,
                                        statements_done=done)
            else:
                begin_with_timeouts(conn, settings)
                try:
                    _execute(conn, statement, migration)
                    try:
                        history.update_progress(conn, settings.schema, row_id, status=history.STATUS_RUNNING,
                                                statements_done=done, commit=True, before_commit=guard.check_sql)
                    except psycopg.Error as exc:
                        if not is_connection_lost(exc) and not _lease_after_failure(conn, guard):
                            raise MigrationError(
                                _("the migration lock was lost before statement {number} of {file} could commit",
                                  number=statement.index, file=migration.name),
                                hint=_("another migrator took over after the lock expired; the history shows "
                                       "how far the file got")) from None
                        # COMMIT runs what the statement deferred, such as a DEFERRABLE foreign key.
                        raise _StatementFailed(migration, statement, exc, at_commit=True) from exc
                except BaseException:
                    rollback_open_transaction(conn)
                    raise
            return
        except _StatementFailed as failure:
            if failure.is_lock_timeout and not statement.needs_no_transaction and attempt < settings.lock_retries:
                attempt += 1
                time.sleep(backoff(attempt))
                continue
            raise


def _lease_after_failure(conn: psycopg.Connection, guard: _LeaseGuard) -> bool:
    """Roll back the failed transaction, then tell whether the lease is still valid."""
    rollback_open_transaction(conn)
    return guard.is_held(conn)


def _record_failure(settings: Settings, row_id: int, done: int, failure: _StatementFailed, elapsed_ms: int) -> None:
    # A fresh connection: the one that failed may be broken (server or pgbouncer restart).
    try:
        with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
            history.update_progress(conn, settings.schema, row_id, status=history.STATUS_FAILED,
                                    statements_done=done, error=failure.server_message, execution_ms=elapsed_ms)
    except (DatabaseError, psycopg.Error) as exc:
        # The row keeps the status "running", which the next run treats like a failure.
        log.warning("could not record the failure of history row %s: %s", row_id, exc)


def invalid_indexes(settings: Settings) -> list[str]:
    """Names of indexes in the schema that a failed concurrent build left invalid."""
    try:
        with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_catalog.pg_index i "
                "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE NOT i.indisvalid AND n.nspname = %s ORDER BY 1", (settings.schema,)).fetchall()
    except (DatabaseError, psycopg.Error):
        return []
    return [r[0] for r in rows]


def set_local_timeouts(conn: psycopg.Connection, settings: Settings) -> None:
    """Set lock and statement timeouts for the current transaction only."""
    conn.execute(
        "SELECT pg_catalog.set_config('lock_timeout', %s, true), "
        "pg_catalog.set_config('statement_timeout', %s, true)",
        (f"{int(settings.lock_timeout * 1000)}ms", f"{int(settings.statement_timeout * 1000)}ms"))


def begin_with_timeouts(conn: psycopg.Connection, settings: Settings) -> None:
    """Open a transaction and set its lock and statement timeouts in one round trip.

    The caller ends it: a history write with ``commit=True``, or
    ``rollback_open_transaction``. Client-side binding sends both commands as one simple
    query, which creates no prepared statement.
    """
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(
            "BEGIN; SELECT pg_catalog.set_config('lock_timeout', %s, true), "
            "pg_catalog.set_config('statement_timeout', %s, true)",
            (f"{int(settings.lock_timeout * 1000)}ms", f"{int(settings.statement_timeout * 1000)}ms"))


def rollback_open_transaction(conn: psycopg.Connection) -> None:
    """Roll back the transaction of ``begin_with_timeouts`` if it is still open."""
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.rollback()
    except psycopg.Error as exc:
        # A broken connection has no transaction left on the server.
        log.debug("rollback failed: %s", exc)


def backoff(attempt: int) -> float:
    return min(0.5 * 2 ** (attempt - 1), _BACKOFF_CAP_S)


# The CONTEXT of an error in COPY data, such as: COPY presets, line 3, column width: "wide"
_COPY_CONTEXT_RE = re.compile(r"COPY [^\n]*?, line (?P<line>\d+)(?:, column [^\n:]+)?")


class _StatementFailed(Exception):
    """A statement of a migration failed; carries what the error message needs."""

    def __init__(self, migration: LocalMigration, statement: Statement, exc: psycopg.Error, *,
                 at_commit: bool = False) -> None:
        super().__init__(str(exc))
        self.migration = migration
        self.statement = statement
        self.is_lock_timeout = isinstance(exc, pg_errors.LockNotAvailable)
        # SQLSTATE class 22 (data exception) and 23 (integrity constraint violation).
        self.is_data_error = (exc.sqlstate or "")[:2] in ("22", "23")
        self.is_connection_lost = is_connection_lost(exc)
        diag = exc.diag
        self.server_message = (diag.message_primary or str(exc)).strip()
        if diag.message_detail:
            self.server_message += f" (DETAIL: {diag.message_detail.strip()})"
        if at_commit:
            self.server_message = _("COMMIT failed: {error}", error=self.server_message)
        self.line = statement.line + _line_offset(statement.text, diag.statement_position)
        # A bad row of COPY data: the server's CONTEXT names its line within the data,
        # which starts on the line after the statement.
        copy_line = _COPY_CONTEXT_RE.search(diag.context or "") if statement.copy_data is not None else None
        self.is_copy_data_error = copy_line is not None
        if copy_line is not None:
            self.line = statement.line + statement.text.count("\n") + int(copy_line["line"])
            self.server_message += f" ({copy_line[0]})"

    def to_error(self, detail: str, *, is_recorded_failure: bool = False) -> MigrationError:
        """Build the user's error; ``is_recorded_failure`` when a failed history row now blocks reruns."""
        excerpt = " ".join(self.statement.text.split())
        if len(excerpt) > 160:
            excerpt = excerpt[:157] + "..."
        if is_recorded_failure:
            hint = unfinished_hint([self.migration.version])
        elif self.is_connection_lost:
            hint = _("the connection to the server was lost; check the server or pgbouncer, then run "
                     "`invoke db.migrate` again")
        elif self.is_lock_timeout:
            hint = _("another session held a conflicting lock for longer than lock_timeout; find it in "
                     "pg_stat_activity, or raise TEXTLOOM_LOCK_TIMEOUT, then run `invoke db.migrate` again")
        elif self.is_copy_data_error:
            hint = _("fix that line of the COPY data, then run `invoke db.migrate` again")
        elif self.is_data_error:
            hint = _("rows in the table do not fit the statement; fix those rows or the statement, then run "
                     "`invoke db.migrate` again")
        else:
            hint = _("fix the statement, then run `invoke db.migrate` again")
        return MigrationError(
            _("{file}, line {line}, statement {number} failed: {error} ({detail})\n  {statement}",
              file=self.migration.name, line=self.line, number=self.statement.index, error=self.server_message,
              detail=detail, statement=excerpt),
            hint=hint)


def is_connection_lost(exc: psycopg.Error) -> bool:
    """Tell a lost connection from a server error; both can be OperationalError.

    psycopg maps SQLSTATE classes 55 (lock_not_available) and 57 (query_canceled) to
    OperationalError too, so the class alone cannot tell them apart.
    """
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    # No SQLSTATE: libpq reported the failure itself (socket closed, server gone).
    return state is None or state.startswith("08") or state.startswith("57P")


def execute_statement(conn: psycopg.Connection, statement: Statement) -> None:
    """Run one statement, feeding its data through COPY when it has a data block."""
    if statement.copy_data is not None:
        with conn.cursor() as cur, cur.copy(statement.text) as copy:
            copy.write(statement.copy_data)
    else:
        conn.execute(statement.text)


def _execute(conn: psycopg.Connection, statement: Statement, migration: LocalMigration) -> None:
    try:
        execute_statement(conn, statement)
    except psycopg.Error as exc:
        raise _StatementFailed(migration, statement, exc) from exc


def _line_offset(text: str, position: str | None) -> int:
    # statement_position is a 1-based character offset into the statement text.
    if not position or not position.isdigit():
        return 0
    return text.count("\n", 0, int(position) - 1)


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


# --- one run ------------------------------------------------------------------------


@dataclass
class RunResult:
    """Outcome of one run of the file migrations: what was applied and what was pending."""

    applied: list[tuple[LocalMigration, int]] = field(default_factory=list)
    pending: list[LocalMigration] = field(default_factory=list)
    dry_run: bool = False


def run_migrations(settings: Settings, *, sql_dir: Path = SQL_DIR, dry_run: bool = False,
                   allow_out_of_order: bool = False, progress: Progress | None = None) -> RunResult:
    """Apply every pending file under the migration lock, or only plan them with ``dry_run``."""
    progress = progress or Progress()
    local = local_migrations(sql_dir)

    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        if dry_run:
            plan = build_plan(local, history.read_history(conn, settings.schema), sql_dir,
                              allow_out_of_order=allow_out_of_order)
            raise_for_problems(plan)
            read_pending(plan.pending, settings.schema)
            return RunResult(pending=plan.pending, dry_run=True)

        history.ensure_tables(conn, settings.schema)
        lock = MigrationLock.for_settings(settings, on_wait=progress.waiting)
        lock.acquire(conn)
        try:
            return _apply_pending(conn, settings, local, sql_dir, lock, allow_out_of_order, progress)
        finally:
            lock.release()


def _apply_pending(conn: psycopg.Connection, settings: Settings, local: list[LocalMigration], sql_dir: Path,
                   lock: MigrationLock, allow_out_of_order: bool, progress: Progress) -> RunResult:
    # The history is read only now, under the lock: another migrator may have just finished.
    plan = build_plan(local, history.read_history(conn, settings.schema), sql_dir,
                      allow_out_of_order=allow_out_of_order)
    raise_for_problems(plan)
    parsed = read_pending(plan.pending, settings.schema)

    result = RunResult(pending=plan.pending)
    _apply_all(conn, settings, plan.pending, parsed, lock, progress, result)
    return result


def pending_migrations(conn: psycopg.Connection, settings: Settings, sql_dir: Path = SQL_DIR) -> Plan:
    """Plan without applying: for verify, history and dry runs."""
    return build_plan(local_migrations(sql_dir), history.read_history(conn, settings.schema), sql_dir,
                      allow_out_of_order=True)


@dataclass(frozen=True)
class HistoryEntry:
    """One line of ``db.history``: a history row, a pending file, or both."""

    version: int | None
    name: str
    kind: str
    status: str
    checksum_state: str
    applied_by: str | None = None
    applied_at: str | None = None
    execution_ms: int | None = None
    error: str | None = None


def describe_history(settings: Settings, sql_dir: Path = SQL_DIR) -> list[HistoryEntry]:
    """Merge the history rows with the files on disk, in version order, auto changes last."""
    with connect(settings.database_url, connect_timeout=settings.connect_timeout) as conn:
        rows = history.read_history(conn, settings.schema)
    local = {m.version: m for m in local_migrations(sql_dir)}
    entries = []
    for row in rows:
        migration = local.get(row.version) if row.version is not None else None
        if row.kind != history.KIND_FILE:
            state = "-"
        elif migration is None:
            state = "missing file"
        else:
            state = "ok" if migration.checksum == row.checksum else "changed"
        entries.append(HistoryEntry(row.version, row.name, row.kind, row.status, state, row.applied_by,
                                    row.applied_at.isoformat(timespec="seconds"), row.execution_ms, row.error))
    recorded = {r.version for r in rows if r.version is not None}
    entries += [HistoryEntry(m.version, m.name, history.KIND_FILE, "pending", "-")
                for m in local.values() if m.version not in recorded]
    return sorted(entries, key=lambda e: (e.version is None, e.version or 0))
