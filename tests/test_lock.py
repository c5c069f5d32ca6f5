"""Tests for db/lock.py and the runner's concurrency: the lease row, pgbouncer, many migrators.

Migrators run as separate processes where the test needs real concurrency or a SIGKILL;
they call ``run_migrations`` with a folder from tmp_path (see ``MIGRATOR``), while tests
of the tasks themselves run the ``invoke`` CLI on the project's sql/ folder.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db import history
from db.connection import connect
from db.lock import current_holder
from db.migrations import Progress, run_migrations

ROOT = Path(__file__).resolve().parent.parent

# A migrator process as the tasks run it: the same error output and exit codes as db_task.
# With BARRIER set it first writes a ready file and waits for a "go" file, so several
# processes can start their run at the same moment.
MIGRATOR = """\
import os, sys, time
from pathlib import Path

import psycopg

from db import report
from db.config import load_settings
from db.errors import EXIT_DATABASE, DatabaseError, TextLoomError
from db.migrations import Progress, run_migrations


class Printer(Progress):
    def waiting(self, holder):
        print(f"waiting for host {holder.host} pid {holder.pid}", flush=True)

    def applied(self, migration, elapsed_ms):
        print(f"applied {migration.name}", flush=True)


barrier = os.environ.get("BARRIER")
if barrier:
    Path(barrier, f"ready-{os.getpid()}").touch()
    while not Path(barrier, "go").exists():
        time.sleep(0.005)
try:
    run_migrations(load_settings(), sql_dir=Path(sys.argv[1]), progress=Printer())
except TextLoomError as exc:
    report.error(exc)
    sys.exit(exc.exit_code)
except psycopg.Error as exc:
    report.error(DatabaseError(f"database error: {exc}"))
    sys.exit(EXIT_DATABASE)
"""


def suite_env(url: str, schema: str, **extra: str) -> dict[str, str]:
    """Environment with only the suite variables the test sets."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTLOOM_", "DATABASE_URL", "LC_", "LANG"))}
    base.update({"DATABASE_URL": url, "TEXTLOOM_DB_SCHEMA": schema, "TEXTLOOM_LANG": "en",
                 "PYTHONPATH": str(ROOT)})
    base.update(extra)
    return base


def start_migrator(tmp_path: Path, folder: Path, env: dict[str, str]) -> subprocess.Popen:
    script = tmp_path / "migrator.py"
    if not script.exists():
        script.write_text(MIGRATOR)
    return subprocess.Popen([sys.executable, str(script), str(folder)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def invoke(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content)
    return folder


def insert_lock_row(conn: psycopg.Connection, schema: str, *, expires_in: float) -> None:
    """Insert the lock row of a migrator on another host that is not running here."""
    history.ensure_tables(conn, schema)
    conn.execute(sql.SQL(
        "INSERT INTO {} (owner, host, pid, acquired_at, expires_at) "
        "VALUES (gen_random_uuid(), 'build-7', 4242, now() - interval '1 minute', "
        "now() + %s * interval '1 second')").format(sql.Identifier(schema, history.LOCK_TABLE)), (expires_in,))


def lock_rows(conn: psycopg.Connection, schema: str) -> list[tuple]:
    return conn.execute(sql.SQL("SELECT host, pid FROM {}").format(
        sql.Identifier(schema, history.LOCK_TABLE))).fetchall()


def advisory_locks(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'").fetchone()[0]


class RecordingProgress(Progress):
    def __init__(self) -> None:
        self.holders = []
        self.first_applying: float | None = None

    def waiting(self, holder):
        self.holders.append(holder)

    def applying(self, migration, position, total):
        if self.first_applying is None:
            self.first_applying = time.monotonic()


EVENTS = "CREATE TABLE ${schema}.events (id int);\n"
INSERT_ONE = "INSERT INTO ${schema}.events VALUES (2);\n"


# --- waiting, expiry, unlock --------------------------------------------------------------


def test_waiter_reports_holder(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS})
    insert_lock_row(conn, schema, expires_in=1.5)
    progress = RecordingProgress()

    started = time.monotonic()
    run_migrations(dataclasses.replace(settings, migration_lock_ttl=2), sql_dir=folder, progress=progress)
    waited = time.monotonic() - started

    assert len(progress.holders) == 1
    holder = progress.holders[0]
    assert (holder.host, holder.pid) == ("build-7", 4242)
    assert holder.acquired_at < holder.expires_at
    assert 1.0 <= waited < 3.5
    assert lock_rows(conn, schema) == []


def test_expired_row_taken_at_once(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS})
    insert_lock_row(conn, schema, expires_in=-1)
    progress = RecordingProgress()

    run_migrations(settings, sql_dir=folder, progress=progress)

    assert progress.holders == []
    assert lock_rows(conn, schema) == []


def test_killed_holder_expires_after_ttl(tmp_path, settings, conn, schema):
    ttl = 2.0
    slow = "CREATE TABLE ${schema}.slow (id int);\n" + "SELECT pg_sleep(0.1);\n" * 30
    folder = write_files(tmp_path / "sql", {"0001_slow.sql": slow})
    env = suite_env(settings.database_url, schema, TEXTLOOM_MIGRATION_LOCK_TTL=str(ttl))
    process = start_migrator(tmp_path, folder, env)
    try:
        deadline = time.monotonic() + 20
        while not (history.tables_exist(conn, schema) and current_holder(conn, schema)):
            assert time.monotonic() < deadline, "the migrator never took the lock"
            time.sleep(0.05)
        assert current_holder(conn, schema).pid == process.pid
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    killed_at = time.monotonic()
    progress = RecordingProgress()

    run_migrations(dataclasses.replace(settings, migration_lock_ttl=ttl), sql_dir=folder, progress=progress)

    assert [h.pid for h in progress.holders] == [process.pid]
    # The poll interval of a waiting migrator grows to at most one second.
    assert progress.first_applying - killed_at < ttl + 1.5
    assert [r.status for r in history.read_history(conn, schema)] == ["applied"]
    assert lock_rows(conn, schema) == []


def test_unlock_yes_releases(settings, conn, schema):
    insert_lock_row(conn, schema, expires_in=300)

    result = invoke("db.unlock", "--yes", env=suite_env(settings.database_url, schema))

    assert result.returncode == 0, result.stderr
    assert "build-7" in result.stdout
    assert "4242" in result.stdout
    assert lock_rows(conn, schema) == []


def test_unlock_without_tty_exits_2(settings, conn, schema):
    insert_lock_row(conn, schema, expires_in=300)

    result = invoke("db.unlock", env=suite_env(settings.database_url, schema), stdin="")

    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert "Traceback" not in result.stderr
    assert lock_rows(conn, schema) == [("build-7", 4242)]


@pytest.mark.parametrize(("announces_files", "stopped_before", "applied"), [
    # File 1 waits to commit with the next script, whose lock check fails first.
    (False, "0001_events.sql", []),
    # One file at a time: file 1 has committed, and the check before file 2's COMMIT fails.
    (True, "0002_sleep.sql", [1]),
])
def test_lost_lease_stops_before_next_file(tmp_path, settings, conn, schema, announces_files, stopped_before,
                                           applied):
    """A migrator whose row was taken over commits nothing more."""
    sleepy = "SELECT pg_sleep(1.2);\n"
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS, "0002_sleep.sql": sleepy,
                                            "0003_later.sql": "CREATE TABLE ${schema}.later (id int);\n"})

    class Thief(Progress):
        def __init__(self) -> None:
            self.announces_files = announces_files

        def applying(self, migration, position, total):
            if migration.version == 2:
                conn.execute(sql.SQL("UPDATE {} SET owner = gen_random_uuid()").format(
                    sql.Identifier(schema, history.LOCK_TABLE)))

    from db.errors import MigrationError

    with pytest.raises(MigrationError) as caught:
        run_migrations(dataclasses.replace(settings, migration_lock_ttl=0.9), sql_dir=folder, progress=Thief())

    assert f"lost before {stopped_before} could commit" in caught.value.message
    assert [r.version for r in history.read_history(conn, schema)] == applied


# --- pgbouncer in transaction pooling mode -----------------------------------


@pytest.mark.pgbouncer
def test_migrate_twice_through_pgbouncer(pgbouncer, conn, schema):
    env = suite_env(pgbouncer.url, schema)

    first = invoke("db.migrate", env=env)
    started = time.monotonic()
    second = invoke("db.migrate", env=env)
    elapsed = time.monotonic() - started

    assert first.returncode == 0, first.stderr
    assert "0001_create_core_tables.sql" in first.stderr
    assert second.returncode == 0, second.stderr
    assert "Nothing to do" in second.stderr
    assert "Waiting" not in second.stderr
    assert elapsed < 15
    assert advisory_locks(conn) == 0
    assert lock_rows(conn, schema) == []


@pytest.mark.pgbouncer
def test_connections_never_prepare(tmp_path, pgbouncer, settings, monkeypatch):
    opened: list[psycopg.Connection] = []
    original = psycopg.connect

    def recording_connect(*args, **kwargs):
        connection = original(*args, **kwargs)
        opened.append(connection)
        return connection

    # db.connection calls psycopg.connect, so every connection of the suite passes here.
    monkeypatch.setattr(psycopg, "connect", recording_connect)
    files = {f"{n:04d}_step.sql": f"CREATE TABLE ${{schema}}.t{n} (id int);\n" for n in range(1, 7)}
    files["0007_sleep.sql"] = "SELECT pg_sleep(0.5);\n"
    folder = write_files(tmp_path / "sql", files)
    through_bouncer = dataclasses.replace(settings, database_url=pgbouncer.url, migration_lock_ttl=0.6)

    run_migrations(through_bouncer, sql_dir=folder)
    # The no-op run issues the same history and lock queries again on one connection.
    for _ in range(4):
        assert run_migrations(through_bouncer, sql_dir=folder).applied == []

    # Main, lease renewal and release connections at least.
    assert len(opened) >= 3
    assert all(c.prepare_threshold is None for c in opened)


@pytest.mark.pgbouncer
def test_same_query_twenty_times(pgbouncer):
    with connect(pgbouncer.url) as client:
        assert client.prepare_threshold is None
        values = [client.execute("SELECT %s::int + 1", (n,)).fetchone()[0] for n in range(20)]
        prepared = [client.execute("SELECT count(*) FROM pg_catalog.pg_prepared_statements").fetchone()[0]
                    for _ in range(20)]

    assert values == list(range(1, 21))
    assert prepared == [0] * 20


@pytest.mark.pgbouncer
def test_history_task_through_pgbouncer(pgbouncer, schema):
    env = suite_env(pgbouncer.url, schema)
    assert invoke("db.migrate", env=env).returncode == 0

    for _ in range(3):
        result = invoke("db.history", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert "0001_create_core_tables.sql" in result.stdout


# --- eight migrators at the same moment ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("route", ["direct", "pgbouncer"])
def test_eight_migrators_apply_once(request, tmp_path, settings, conn, schema, route):
    url = request.getfixturevalue("pgbouncer").url if route == "pgbouncer" else settings.database_url
    folder = write_files(tmp_path / "sql", {"0001_events.sql": EVENTS})
    run_migrations(settings, sql_dir=folder)
    write_files(folder, {"0002_insert.sql": INSERT_ONE})
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = suite_env(url, schema, BARRIER=str(barrier))

    processes = [start_migrator(tmp_path, folder, env) for _ in range(8)]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < 8:
        assert time.monotonic() < deadline, "the migrators did not start"
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        time.sleep(0.01)
    (barrier / "go").touch()
    outputs = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0] * 8, outputs
    assert sum("applied 0002_insert.sql" in out for out, _err in outputs) == 1
    assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id = 2").format(
        sql.Identifier(schema, "events"))).fetchone()[0] == 1
    rows = [r for r in history.read_history(conn, schema) if r.version == 2]
    assert [(r.status, r.success) for r in rows] == [("applied", True)]
    assert lock_rows(conn, schema) == []
