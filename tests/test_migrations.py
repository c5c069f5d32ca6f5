"""Tests for db/migrations.py: files from tmp_path applied end to end to the real test server.

Each test writes its own migration folder, runs ``run_migrations`` against the test's
schema and checks the database and the history afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db import history
from db.config import Settings
from db.connection import connect
from db.errors import MigrationError, UsageError
from db.migrations import Progress, run_migrations
from db.repair import repair, resolve
from db.sqlfile import CHECKSUM_VERSION, read_sql_file

NO_TX = "-- textloom:no-transaction\n"


def write_files(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write migration files (text as UTF-8 with LF, bytes as given) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (folder / name).write_bytes(data)
    return folder


def history_rows(conn: psycopg.Connection, schema: str) -> list[history.HistoryRow]:
    return history.read_history(conn, schema)


def scalar(conn: psycopg.Connection, query: str, schema: str, *params: object) -> object:
    """Run ``query`` with ``{schema}`` replaced by the quoted schema and return the first column."""
    composed = sql.SQL(query).format(schema=sql.Identifier(schema))
    row = conn.execute(composed, params).fetchone()
    return row[0] if row else None


def table_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, name).as_string(conn),)).fetchone()[0]


# --- splitting: quotes, BEGIN ATOMIC, comments, COPY data ---------------------------------

ESCAPES = """\
CREATE TABLE ${schema}.quotes (body text CHECK (body <> E'it\\'s'));
CREATE FUNCTION ${schema}.semi() RETURNS text AS $$ BEGIN RETURN E'x;y'; END; $$LANGUAGE plpgsql;
"""

ATOMIC = """\
CREATE FUNCTION ${schema}.atomic_flag() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;
CREATE FUNCTION ${schema}.classify(n int) RETURNS text LANGUAGE sql
BEGIN ATOMIC
    SELECT n AS pending;
    SELECT CASE WHEN n > 0 THEN 'positive' ELSE 'other' END;
END;
SELECT 1;
"""

COMMENTS = """\
-- a comment; with a semicolon
/* a /* b; */ don't; */
CREATE TABLE ${schema}.notes (id int, body text DEFAULT 'a;b', note text);
INSERT INTO ${schema}.notes (id, note) VALUES (1, 'it''s; ok');
SELECT 1;
"""

# pg_dump writes the schema name itself, so the COPY line names it without a placeholder.
COPY_BLOCK = """\
CREATE TABLE ${schema}.labels (id integer PRIMARY KEY, label text);

COPY {schema}.labels (id, label) FROM stdin WITH (FORMAT csv);
1,plain
2,"semi;colon"
3,"it's"
\\.

CREATE INDEX labels_label_idx ON ${schema}.labels (label);
"""


@pytest.mark.parametrize(("content", "count", "query", "expected"), [
    (ESCAPES, 2, "SELECT {schema}.semi()", "x;y"),
    (ATOMIC, 3, "SELECT {schema}.classify(5)", "positive"),
    (COMMENTS, 3, "SELECT body || '|' || note FROM {schema}.notes", "a;b|it's; ok"),
    (COPY_BLOCK, 3, "SELECT string_agg(label, '|' ORDER BY id) FROM {schema}.labels", "plain|semi;colon|it's"),
], ids=["escapes", "atomic", "comments", "copy"])
def test_split_cases_apply(tmp_path, settings, conn, schema, content, count, query, expected):
    content = content.replace("{schema}.labels (id, label) FROM", f"{schema}.labels (id, label) FROM")
    folder = write_files(tmp_path / "sql", {"0001_case.sql": content})
    parsed = read_sql_file(folder / "0001_case.sql", {"schema": schema})
    assert len(parsed.statements) == count

    result = run_migrations(settings, sql_dir=folder)

    assert [m.name for m, _ms in result.applied] == ["0001_case.sql"]
    assert scalar(conn, query, schema) == expected
    rows = history_rows(conn, schema)
    assert [(r.version, r.status, r.statements_done) for r in rows] == [(1, "applied", count)]


def test_copy_block_builds_index(tmp_path, settings, conn, schema):
    content = COPY_BLOCK.replace("COPY {schema}", f"COPY {schema}")
    folder = write_files(tmp_path / "sql", {"0001_copy.sql": content})
    run_migrations(settings, sql_dir=folder)

    index = scalar(conn, "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'labels_label_idx'",
                   schema, schema)
    assert index is not None
    assert "(label)" in index


def test_copy_data_error_names_data_line(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_presets.sql": (
        "CREATE TABLE ${schema}.presets (name text, width int);\n"
        "COPY ${schema}.presets (name, width)\nFROM stdin;\n"
        "hd\t1280\n"
        "wide\tabc\n"
        "\\.\n")})

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    # Line 1 creates the table, lines 2 and 3 hold COPY, the data starts on line 4.
    assert "0001_presets.sql, line 5, statement 2 failed" in caught.value.message
    assert "COPY presets, line 2, column width" in caught.value.message
    assert "COPY data" in caught.value.hint


def test_copy_with_placeholder_applies(tmp_path, settings, conn, schema):
    content = COPY_BLOCK.replace("COPY {schema}", "COPY ${schema}")
    folder = write_files(tmp_path / "sql", {"0001_copy.sql": content})

    run_migrations(settings, sql_dir=folder)

    assert scalar(conn, "SELECT count(*) FROM {schema}.labels", schema) == 3


def test_atomic_returns_last_select(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_atomic.sql": ATOMIC})
    run_migrations(settings, sql_dir=folder)

    assert scalar(conn, "SELECT {schema}.classify(-1)", schema) == "other"
    assert scalar(conn, "SELECT {schema}.atomic_flag()", schema) == 1


# --- encodings, line endings, checksums ---------------------------------------------------

TABLE_FILE = "CREATE TABLE ${schema}.widgets (id int PRIMARY KEY);\n"


def test_bom_file_checksum_without_bom(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_bom.sql": b"\xef\xbb\xbf" + TABLE_FILE.encode()})

    run_migrations(settings, sql_dir=folder)

    assert table_exists(conn, schema, "widgets")
    [row] = history_rows(conn, schema)
    assert row.checksum == hashlib.sha256(TABLE_FILE.encode()).hexdigest()
    assert row.checksum_version == CHECKSUM_VERSION


def test_invalid_utf8_rejected_first(tmp_path, settings, conn, schema):
    bad = b"CREATE TABLE ${schema}.bad (note text DEFAULT 'caf\xe9');\n"
    folder = write_files(tmp_path / "sql", {"0001_valid.sql": TABLE_FILE, "0002_latin1.sql": bad})

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    offset = bad.index(b"\xe9")
    message = caught.value.message
    assert "0002_latin1.sql" in message
    assert f"byte offset {offset}" in message
    assert not table_exists(conn, schema, "widgets")
    assert history_rows(conn, schema) == []


def test_crlf_conversion_runs_nothing(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_widgets.sql": "-- widgets\n" + TABLE_FILE})
    run_migrations(settings, sql_dir=folder)

    path = folder / "0001_widgets.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    again = run_migrations(settings, sql_dir=folder)

    assert again.applied == []
    assert again.pending == []
    assert len(history_rows(conn, schema)) == 1


def test_real_edit_is_checksum_mismatch(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_widgets.sql": TABLE_FILE,
                                            "0002_more.sql": "ALTER TABLE ${schema}.widgets ADD size int;\n"})
    run_migrations(settings, sql_dir=folder)

    path = folder / "0002_more.sql"
    path.write_text(path.read_text().replace("int", "bigint"))
    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0002_more.sql" in caught.value.message
    assert "checksum" in caught.value.message
    assert "db.repair" in caught.value.hint
    assert all(r.checksum_version == CHECKSUM_VERSION for r in history_rows(conn, schema))


# --- statements that cannot run in a transaction ------------------------------------------

DUPLICATES = """\
CREATE TABLE ${schema}.items (id int, code text);
INSERT INTO ${schema}.items SELECT g, 'code-' || (g % 10) FROM generate_series(1, 100) AS g;
"""


def index_validity(conn: psycopg.Connection, schema: str, name: str) -> bool | None:
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name)).fetchone()
    return row[0] if row else None


def test_concurrent_index_no_transaction(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {
        "0001_items.sql": DUPLICATES,
        "0002_index.sql": NO_TX + "CREATE INDEX CONCURRENTLY items_code_idx ON ${schema}.items (code);\n",
    })

    run_migrations(settings, sql_dir=folder)

    assert index_validity(conn, schema, "items_code_idx") is True
    assert [r.status for r in history_rows(conn, schema)] == ["applied", "applied"]


def test_concurrent_index_in_transaction_rejected(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {
        "0001_items.sql": DUPLICATES,
        "0002_index.sql": "CREATE INDEX CONCURRENTLY items_code_idx ON ${schema}.items (code);\n",
    })

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0002_index.sql" in caught.value.message
    assert "CREATE INDEX CONCURRENTLY" in caught.value.message
    assert "-- textloom:no-transaction" in caught.value.hint
    assert not table_exists(conn, schema, "items")


def test_failed_concurrent_build_reported(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {
        "0001_items.sql": DUPLICATES,
        "0002_unique.sql": NO_TX + "CREATE UNIQUE INDEX CONCURRENTLY items_code_key ON ${schema}.items (code);\n",
    })

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0002_unique.sql" in caught.value.message
    assert "items_code_key" in caught.value.message
    assert index_validity(conn, schema, "items_code_key") is False
    rows = {r.version: r for r in history_rows(conn, schema)}
    assert rows[1].success
    assert not rows[2].success
    assert rows[2].status == "failed"


# --- a failing statement in a no-transaction file -----------------------------------------

EVENTS = "CREATE TABLE ${schema}.events (id int);\n"
THREE_STATEMENTS = NO_TX + """\
INSERT INTO ${schema}.events VALUES (1);
CREATE TABLE ${schema}.audit (id int);
SELECT 1 / 0;
"""
LATER = "CREATE TABLE ${schema}.later (id int);\n"


def event_count(conn: psycopg.Connection, schema: str) -> int:
    return scalar(conn, "SELECT count(*) FROM {schema}.events", schema)


def fail_third_statement(folder: Path, settings: Settings, conn: psycopg.Connection) -> history.HistoryRow:
    write_files(folder, {"0001_events.sql": EVENTS, "0002_three.sql": THREE_STATEMENTS})
    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)
    assert "statement 3" in caught.value.message
    assert "division by zero" in caught.value.message
    return {r.version: r for r in history_rows(conn, settings.schema)}[2]


def test_third_statement_fails_recorded(tmp_path, settings, conn, schema):
    row = fail_third_statement(tmp_path / "sql", settings, conn)

    assert row.status == "failed"
    assert not row.success
    assert row.statements_done == 2
    assert row.statement_count == 3
    assert "division by zero" in row.error
    assert event_count(conn, schema) == 1


def test_failed_file_blocks_next_run(tmp_path, settings, conn, schema):
    folder = tmp_path / "sql"
    fail_third_statement(folder, settings, conn)
    write_files(folder, {"0003_later.sql": LATER})

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0002_three.sql" in caught.value.message
    assert "db.repair" in caught.value.hint
    assert "db.resolve" in caught.value.hint
    assert event_count(conn, schema) == 1
    assert not table_exists(conn, schema, "later")


def test_resolve_then_continue(tmp_path, settings, conn, schema):
    folder = tmp_path / "sql"
    fail_third_statement(folder, settings, conn)
    write_files(folder, {"0003_later.sql": LATER})

    assert resolve(settings, 2) == "0002_three.sql"
    result = run_migrations(settings, sql_dir=folder)

    assert [m.version for m, _ms in result.applied] == [3]
    assert event_count(conn, schema) == 1
    assert [(r.version, r.status) for r in history_rows(conn, schema)] == [
        (1, "applied"), (2, "applied"), (3, "applied")]


def test_resolve_rejects_applied_version(tmp_path, settings, conn):
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS})
    run_migrations(settings, sql_dir=folder)

    with pytest.raises(UsageError):
        resolve(settings, 1)


def test_repair_reruns_from_start(tmp_path, settings, conn, schema):
    folder = tmp_path / "sql"
    fail_third_statement(folder, settings, conn)

    cleared = repair(settings, sql_dir=folder)
    assert cleared.unfinished_removed == ["0002_three.sql"]
    # The operator undoes what ran and fixes the third statement before running it again.
    conn.execute(sql.SQL("DELETE FROM {}; DROP TABLE {}").format(
        sql.Identifier(schema, "events"), sql.Identifier(schema, "audit")))
    path = folder / "0002_three.sql"
    path.write_text(path.read_text().replace("1 / 0", "1 / 1"))
    result = run_migrations(settings, sql_dir=folder)

    assert [m.version for m, _ms in result.applied] == [2]
    assert event_count(conn, schema) == 1
    assert table_exists(conn, schema, "audit")
    assert {r.version: r.status for r in history_rows(conn, schema)} == {1: "applied", 2: "applied"}


# --- a failing transactional file ---------------------------------------------------------

ROLLED_BACK = """\
-- three statements; the second fails
CREATE TABLE ${schema}.first (id int);

INSERT INTO ${schema}.first (id)
SELECT id FROM ${schema}.nowhere;
CREATE TABLE ${schema}.third (id int);
"""
DIVIDE = """\
CREATE TABLE ${schema}.first (id int);
-- the next statement divides by zero
SELECT 1 / 0;
"""


@pytest.mark.parametrize(("content", "line", "number", "server_message"), [
    (ROLLED_BACK, 5, 2, "does not exist"),
    (DIVIDE, 3, 2, "division by zero"),
], ids=["position-line", "statement-line"])
def test_transactional_failure_rolls_back(tmp_path, settings, conn, schema, content, line, number, server_message):
    folder = write_files(tmp_path / "sql", {"0001_broken.sql": content})

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    message = caught.value.message
    assert "0001_broken.sql" in message
    assert f"line {line}," in message
    assert f"statement {number} failed" in message
    assert server_message in message
    assert not table_exists(conn, schema, "first")
    assert history_rows(conn, schema) == []


# --- ordering -----------------------------------------------------------------------------


def test_out_of_order_needs_flag(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS, "0003_later.sql": LATER})
    run_migrations(settings, sql_dir=folder)
    write_files(folder, {"0002_audit.sql": "CREATE TABLE ${schema}.audit (id int);\n"})

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)
    assert "0002_audit.sql" in caught.value.message
    assert "version 2" in caught.value.message
    assert "version 3" in caught.value.message
    assert "--allow-out-of-order" in caught.value.hint
    assert not table_exists(conn, schema, "audit")

    result = run_migrations(settings, sql_dir=folder, allow_out_of_order=True)
    assert [m.version for m, _ms in result.applied] == [2]
    assert table_exists(conn, schema, "audit")


def test_missing_applied_file_reported(tmp_path, settings, schema):
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS, "0002_later.sql": LATER})
    run_migrations(settings, sql_dir=folder)
    (folder / "0001_events.sql").unlink()

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0001_events.sql" in caught.value.message
    assert "missing" in caught.value.message


def test_pending_files_apply_in_order(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {
        "0010_b.sql": "ALTER TABLE ${schema}.events ADD b int;\n",
        "0002_a.sql": EVENTS,
        "0100_c.sql": "ALTER TABLE ${schema}.events ADD c int;\n",
    })

    result = run_migrations(settings, sql_dir=folder)

    assert [m.version for m, _ms in result.applied] == [2, 10, 100]
    assert run_migrations(settings, sql_dir=folder).applied == []


# --- a quick file's COMMIT travels with the next file's script ---------------------------

DEFERRED_VIOLATION = """\
CREATE TABLE ${schema}.parents (id int PRIMARY KEY);
CREATE TABLE ${schema}.children (parent_id int REFERENCES ${schema}.parents DEFERRABLE INITIALLY DEFERRED);
INSERT INTO ${schema}.children VALUES (42);
"""


class OrderProgress(Progress):
    """Record the order of applying and applied events."""

    def __init__(self, *, announces_files: bool = False) -> None:
        self.events: list[tuple[str, int]] = []
        self.announces_files = announces_files

    def applying(self, migration, position, total):
        self.events.append(("applying", migration.version))

    def applied(self, migration, elapsed_ms):
        self.events.append(("applied", migration.version))


def test_failed_deferred_commit_names_held_file(tmp_path, settings, conn, schema):
    # The constraint fails only at COMMIT, which rides on the next file's script.
    folder = write_files(tmp_path / "sql", {
        "0001_events.sql": EVENTS,
        "0002_deferred.sql": DEFERRED_VIOLATION,
        "0003_next.sql": "CREATE TABLE ${schema}.later (id int);\n",
    })

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0002_deferred.sql" in caught.value.message
    assert "COMMIT failed, so nothing of this file was applied" in caught.value.message
    assert "DETAIL: Key (parent_id)=(42)" in caught.value.message
    assert [row.version for row in history_rows(conn, schema)] == [1]
    assert not table_exists(conn, schema, "parents")
    assert not table_exists(conn, schema, "later")


def test_deferred_failure_in_no_transaction_file(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_deferred.sql": NO_TX + DEFERRED_VIOLATION})

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "0001_deferred.sql, line 4, statement 3 failed: COMMIT failed" in caught.value.message
    assert "DETAIL: Key (parent_id)=(42)" in caught.value.message
    (row,) = history_rows(conn, schema)
    assert (row.status, row.statements_done) == (history.STATUS_FAILED, 2)


def test_failure_after_held_file_keeps_it(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {
        "0001_events.sql": EVENTS,
        "0002_bad.sql": "CREATE TABLE ${schema}.fine (id int);\nSELECT 1 / 0;\n",
    })
    progress = OrderProgress()

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder, progress=progress)

    assert "0002_bad.sql, line 2" in caught.value.message
    assert [row.version for row in history_rows(conn, schema)] == [1]
    assert table_exists(conn, schema, "events")
    assert not table_exists(conn, schema, "fine")
    assert ("applied", 1) in progress.events


@pytest.mark.parametrize("announces_files", [False, True])
def test_every_file_reported_once_in_order(tmp_path, settings, conn, schema, announces_files):
    files = {f"{n:04d}_t{n}.sql": f"CREATE TABLE ${{schema}}.t{n} (id int);\n" for n in range(1, 6)}
    files["0006_copy.sql"] = "COPY ${schema}.t1 (id) FROM stdin;\n7\n\\.\n"
    files["0007_no_tx.sql"] = NO_TX + "CREATE INDEX CONCURRENTLY t2_id ON ${schema}.t2 (id);\n"
    files["0008_last.sql"] = "CREATE TABLE ${schema}.t8 (id int);\n"
    folder = write_files(tmp_path / "sql", files)
    progress = OrderProgress(announces_files=announces_files)

    run_migrations(settings, sql_dir=folder, progress=progress)

    applied = [version for event, version in progress.events if event == "applied"]
    assert applied == list(range(1, 9))
    if announces_files:
        # Each file is reported before the next one is announced.
        assert progress.events == [(event, n) for n in range(1, 9) for event in ("applying", "applied")]
    assert [row.version for row in history_rows(conn, schema)] == list(range(1, 9))
    assert scalar(conn, "SELECT count(*) FROM {schema}.t1", schema) == 1


def test_interrupt_reports_committed_held_file(tmp_path, settings, conn, schema, monkeypatch):
    from db import migrations

    folder = write_files(tmp_path / "sql", {
        "0001_events.sql": EVENTS,
        "0002_next.sql": "CREATE TABLE ${schema}.later (id int);\n",
    })
    real_script = migrations._apply_script

    def interrupted_second(conn_, settings_, lock, files, *, commit_first):
        result = real_script(conn_, settings_, lock, files, commit_first=commit_first)
        if files[0][0].version == 2:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(migrations, "_apply_script", interrupted_second)
    progress = OrderProgress()

    with pytest.raises(KeyboardInterrupt):
        run_migrations(settings, sql_dir=folder, progress=progress)

    # File 1 committed with the second script, so it is reported; file 2 was rolled back.
    assert ("applied", 1) in progress.events
    assert [row.version for row in history_rows(conn, schema)] == [1]
    assert not table_exists(conn, schema, "later")


def quick_files(count: int, **replaced: str) -> dict[str, str]:
    """Files 1 to ``count`` that each create a table, with some replaced by the given bodies."""
    files = {f"{n:04d}_t{n}.sql": f"CREATE TABLE ${{schema}}.t{n} (id int);\n" for n in range(1, count + 1)}
    files.update(replaced)
    return files


@pytest.mark.parametrize("failing, message", [
    ("CREATE TABLE ${schema}.t7 (id int);\nSELECT 1 / 0;\n", "0007_t7.sql, line 2, statement 2 failed"),
    (DEFERRED_VIOLATION, "0007_t7.sql: COMMIT failed, so nothing of this file was applied"),
], ids=["statement fails", "commit fails"])
def test_failure_inside_script_keeps_earlier(tmp_path, settings, conn, schema, failing, message):
    # Files 1 to 3 go in scripts of one and two files, files 4 to 10 in a script of four and more.
    folder = write_files(tmp_path / "sql", quick_files(12, **{"0007_t7.sql": failing}))
    progress = OrderProgress()

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder, progress=progress)

    assert message in caught.value.message
    assert [row.version for row in history_rows(conn, schema)] == list(range(1, 7))
    assert [version for event, version in progress.events if event == "applied"] == list(range(1, 7))
    assert not table_exists(conn, schema, "t8")


def test_script_records_time_per_file(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", quick_files(0, **{
        f"{n:04d}_sleep{n}.sql": "SELECT pg_sleep(0.02);\n" for n in range(1, 8)}))

    result = run_migrations(settings, sql_dir=folder)

    # Each file's own 20 ms, not the time since its script began.
    rows = history_rows(conn, schema)
    assert all(15 <= row.execution_ms < 60 for row in rows)
    assert all(15 <= elapsed_ms < 60 for _migration, elapsed_ms in result.applied)
    # And each its own time of application, though several came in one script.
    assert len({row.applied_at for row in rows}) == len(rows)


class LostAfterFirstCheck:
    """Stands in for the lock's ``lost`` event: clear at the first check, set from the second on."""

    def __init__(self) -> None:
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > 1


def test_lost_lock_rolls_back_held_file(tmp_path, settings, conn, schema, monkeypatch):
    from db.lock import MigrationLock

    folder = write_files(tmp_path / "sql", {
        "0001_events.sql": EVENTS,
        "0002_next.sql": "CREATE TABLE ${schema}.later (id int);\n",
    })
    original = MigrationLock.acquire

    def acquire(self, connection):
        original(self, connection)
        self.lost = LostAfterFirstCheck()

    monkeypatch.setattr(MigrationLock, "acquire", acquire)

    with pytest.raises(MigrationError) as caught:
        run_migrations(settings, sql_dir=folder)

    assert "before 0002_next.sql" in caught.value.message
    assert "0001_events.sql ran but is rolled back" in caught.value.message
    assert history_rows(conn, schema) == []
    assert not table_exists(conn, schema, "events")


# --- lock_timeout with bounded retries ----------------------------------------------------

ALTER_EVENTS = "ALTER TABLE ${schema}.events ADD COLUMN note text;\n"


class RecordingProgress(Progress):
    """Collect retry events, and call ``on_retry`` on the first one if given."""

    def __init__(self, on_retry=None) -> None:
        self.retries: list[tuple[int, float]] = []
        self.on_retry = on_retry

    def retrying(self, migration, attempt, delay):
        self.retries.append((attempt, delay))
        if self.on_retry and attempt == 1:
            self.on_retry()


@pytest.fixture
def blocked_events(tmp_path, settings, db_url):
    """A migrated ``events`` table and a second connection that holds a lock on it in an open transaction."""
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS})
    run_migrations(settings, sql_dir=folder)
    blocker = psycopg.connect(db_url)
    blocker.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(settings.schema, "events")))
    yield folder, blocker
    blocker.close()


def test_lock_timeout_retries_then_fails(blocked_events, settings, conn, schema):
    folder, _blocker = blocked_events
    write_files(folder, {"0002_alter.sql": ALTER_EVENTS})
    fast = dataclasses.replace(settings, lock_timeout=0.2, lock_retries=2)
    progress = RecordingProgress()

    started = time.monotonic()
    with pytest.raises(MigrationError) as caught:
        run_migrations(fast, sql_dir=folder, progress=progress)
    elapsed = time.monotonic() - started

    assert [attempt for attempt, _delay in progress.retries] == [1, 2]
    assert elapsed < 5
    assert "0002_alter.sql" in caught.value.message
    assert "lock timeout" in caught.value.message
    assert "lock_timeout" in caught.value.hint
    assert [r.version for r in history_rows(conn, schema)] == [1]


def test_no_retries_means_one_wait(blocked_events, settings, conn, schema):
    folder, _blocker = blocked_events
    write_files(folder, {"0002_alter.sql": ALTER_EVENTS})
    fast = dataclasses.replace(settings, lock_timeout=1.0, lock_retries=0)
    progress = RecordingProgress()

    started = time.monotonic()
    with pytest.raises(MigrationError) as caught:
        run_migrations(fast, sql_dir=folder, progress=progress)

    # One lock_timeout of 1 s; a second try would take at least 2 s.
    assert time.monotonic() - started < 1.9
    assert progress.retries == []
    assert "0002_alter.sql" in caught.value.message
    assert [r.version for r in history_rows(conn, schema)] == [1]


def test_lock_timeout_retry_succeeds(blocked_events, settings, conn, schema):
    folder, blocker = blocked_events
    write_files(folder, {"0002_alter.sql": ALTER_EVENTS})
    fast = dataclasses.replace(settings, lock_timeout=0.2, lock_retries=2)
    progress = RecordingProgress(on_retry=blocker.rollback)

    result = run_migrations(fast, sql_dir=folder, progress=progress)

    assert [m.version for m, _ms in result.applied] == [2]
    assert len(progress.retries) == 1
    assert scalar(conn, "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'note'",
                  schema, f"{schema}.events") == 1


def test_no_transaction_statement_retries(blocked_events, settings, conn, schema):
    folder, blocker = blocked_events
    write_files(folder, {"0002_alter.sql": NO_TX + ALTER_EVENTS + "SELECT 1;\n"})
    fast = dataclasses.replace(settings, lock_timeout=0.2, lock_retries=2)
    # Releases the blocker once the runner has waited for a while, so only a retry can succeed.
    timer = threading.Timer(0.6, blocker.rollback)
    timer.start()
    try:
        run_migrations(fast, sql_dir=folder)
    finally:
        timer.cancel()

    assert {r.version: r.status for r in history_rows(conn, schema)} == {1: "applied", 2: "applied"}


def test_no_session_settings_leak(tmp_path, settings, pgbouncer, schema):
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS, "0002_alter.sql": ALTER_EVENTS})
    through_bouncer = dataclasses.replace(settings, database_url=pgbouncer.url, lock_timeout=0.2,
                                          statement_timeout=7)
    run_migrations(through_bouncer, sql_dir=folder)

    # Hold pool_size transactions open at once, so every server connection is checked.
    clients = [psycopg.connect(pgbouncer.url, prepare_threshold=None) for _ in range(pgbouncer.pool_size)]
    try:
        values = [c.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
                  .fetchone() for c in clients]
    finally:
        for client in clients:
            client.close()
    assert values == [("0", "0")] * pgbouncer.pool_size


@pytest.mark.parametrize("client", ["host-1.example:4242", "it's a \\ host", "主机:1", None])
def test_inlined_history_row_round_trips(settings, conn, schema, client):
    history.ensure_tables(conn, schema)
    statement = history.insert_statement(
        conn, schema, version=7, name="0007_add_things.sql", kind=history.KIND_FILE, status=history.STATUS_APPLIED,
        checksum="ab" * 32, checksum_version=CHECKSUM_VERSION, statement_count=3, client=client)

    # The runner notes the file's start in the same transaction, before the INSERT.
    with conn.transaction():
        conn.execute("SELECT set_config(%s, clock_timestamp()::text, true)", (history.FILE_STARTED_SETTING,))
        conn.execute(statement)

    (row,) = history_rows(conn, schema)
    assert (row.version, row.name, row.checksum, row.statement_count, row.client) == (
        7, "0007_add_things.sql", "ab" * 32, 3, client)
