"""Fault injection: migrators killed with SIGKILL at random moments, pgbouncer restarted mid-run.

After every fault the database must contain each transactional file either whole, with
its success row in the history, or not at all. A rerun must then apply every file.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PgBouncer
from db import history
from db.repair import unlock
from tests.test_lock import ROOT, start_migrator, suite_env

FILE_COUNT = 10
ROWS_PER_FILE = 2000
KILLS = 22


def fault_files() -> dict[str, str]:
    """Ten transactional files; each creates a table and inserts a known number of rows, some slowly."""
    files = {}
    for number in range(1, FILE_COUNT + 1):
        body = [f"CREATE TABLE ${{schema}}.f{number} (id int PRIMARY KEY, payload text);"]
        if number % 3 == 0:
            body += [f"INSERT INTO ${{schema}}.f{number} SELECT g, 'slow' FROM generate_series(1, {ROWS_PER_FILE // 2}) g;",
                     "SELECT pg_sleep(0.05);",
                     f"INSERT INTO ${{schema}}.f{number} SELECT g, 'slow' FROM generate_series({ROWS_PER_FILE // 2 + 1}, "
                     f"{ROWS_PER_FILE}) g;"]
        else:
            body.append(f"INSERT INTO ${{schema}}.f{number} SELECT g, repeat('x', 200) FROM generate_series(1, "
                        f"{ROWS_PER_FILE}) g;")
        files[f"{number:04d}_fill_f{number}.sql"] = "\n".join(body) + "\n"
    return files


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content)
    return folder


def file_states(conn: psycopg.Connection, schema: str) -> dict[int, tuple[bool, int | None, bool]]:
    """For each file: does its table exist, how many rows, does a success history row exist.

    Read in one repeatable-read transaction, so a commit landing meanwhile cannot split the view.
    """
    states = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        applied = {r.version for r in history.read_history(conn, schema) if r.success}
        for number in range(1, FILE_COUNT + 1):
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                  (sql.Identifier(schema, f"f{number}").as_string(conn),)).fetchone()[0]
            rows = None
            if exists:
                rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(schema, f"f{number}"))).fetchone()[0]
            states[number] = (exists, rows, number in applied)
    return states


def assert_whole_or_absent(states: dict[int, tuple[bool, int | None, bool]], kill: int) -> None:
    for number, state in states.items():
        assert state in ((True, ROWS_PER_FILE, True), (False, None, False)), (kill, number, state)


def assert_no_unfinished_rows(conn: psycopg.Connection, schema: str) -> None:
    rows = history.read_history(conn, schema)
    assert [r.name for r in rows if not r.success] == []


def wait_for_kill_moment(process: subprocess.Popen, rng: random.Random) -> None:
    """Wait until a random point of the run: start-up, or inside a file after some were applied.

    Counting the "applied" lines the migrator prints keeps the kills spread over the run
    however fast the machine is.
    """
    files_to_wait_for = rng.randrange(0, FILE_COUNT)
    if files_to_wait_for == 0:
        time.sleep(rng.uniform(0.0, 0.6))
        return
    seen = 0
    while seen < files_to_wait_for:
        line = process.stdout.readline()
        if not line:
            return
        seen += line.startswith("applied ")
    time.sleep(rng.uniform(0.0, 0.12))


def wait_for_orphaned_script(conn: psycopg.Connection) -> None:
    """Wait until no other session runs a query.

    The server runs a script it received to its end, COMMITs included, after its client
    was killed. The lock check before each COMMIT stops it once the lease has expired. A
    table it commits while the states are read would show in the catalog before its rows.
    """
    deadline = time.monotonic() + 20
    while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                       "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline, "a killed migrator's script still runs after 20 s"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_never_half_applies(tmp_path, settings, conn, schema):
    folder = write_files(tmp_path / "sql", fault_files())
    env = suite_env(settings.database_url, schema, TEXTLOOM_MIGRATION_LOCK_TTL="1")
    rng = random.Random(20261204)
    started = time.monotonic()
    seen_partial_runs = 0

    for kill in range(KILLS):
        process = start_migrator(tmp_path, folder, env)
        wait_for_kill_moment(process, rng)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait_for_orphaned_script(conn)

        states = file_states(conn, schema)
        assert_whole_or_absent(states, kill)
        assert_no_unfinished_rows(conn, schema)
        applied = sum(1 for _exists, _rows, success in states.values() if success)
        seen_partial_runs += 0 < applied < FILE_COUNT
        if applied == FILE_COUNT:
            # Start over, so later kills land in the middle of a run again.
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        elif kill < KILLS - 1:
            # An operator who checked that the holder is dead; the last kill leaves the stale lease.
            unlock(settings)

    rerun = subprocess.run([sys.executable, str(tmp_path / "migrator.py"), str(folder)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)

    assert rerun.returncode == 0, rerun.stderr
    states = file_states(conn, schema)
    assert states == {n: (True, ROWS_PER_FILE, True) for n in range(1, FILE_COUNT + 1)}
    assert seen_partial_runs >= 3
    assert time.monotonic() - started < 90


SLOW_SECOND = """\
CREATE TABLE ${schema}.during (id int);
INSERT INTO ${schema}.during VALUES (1);
SELECT pg_sleep(3);
INSERT INTO ${schema}.during VALUES (2);
"""


@pytest.mark.slow
@pytest.mark.pgbouncer
def test_pgbouncer_restart_mid_run(tmp_path, tmp_path_factory, db_url, conn, schema):
    # A folder like the shared fixture's: as root, pgbouncer runs as another user who
    # cannot enter the per-test tmp_path.
    bouncer = PgBouncer(tmp_path_factory.mktemp("bouncer"), db_url)
    bouncer.start()
    try:
        folder = write_files(tmp_path / "sql", {"0001_events.sql": "CREATE TABLE ${schema}.events (id int);\n",
                                                "0002_during.sql": SLOW_SECOND,
                                                "0003_after.sql": "CREATE TABLE ${schema}.after (id int);\n"})
        env = suite_env(bouncer.url, schema)
        process = start_migrator(tmp_path, folder, env)
        deadline = time.monotonic() + 30
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%SELECT pg_sleep(3)%%' "
                               "AND pid <> pg_backend_pid()"
                               ).fetchone()[0]:
            assert time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        bouncer.restart()
        out, err = process.communicate(timeout=60)

        assert process.returncode == 3, (out, err)
        assert "Traceback" not in err
        assert "0002_during.sql" in err
        assert "connection" in err
        assert {r.version for r in history.read_history(conn, schema) if r.success} == {1}
        assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.during",)).fetchone()[0] is None

        rerun = subprocess.run([sys.executable, str(tmp_path / "migrator.py"), str(folder)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        # The lease was released after the restart, so the rerun did not wait for it to expire.
        assert "waiting" not in rerun.stdout
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(schema, "during"))).fetchone()[0] == 2
        assert {r.version for r in history.read_history(conn, schema) if r.success} == {1, 2, 3}
    finally:
        bouncer.stop()
