"""Each health check of db.verify, made to pass and made to fail against a real server."""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db import history, verify
from db.config import Settings
from db.connection import connect
from db.migrations import run_migrations
from models import SCHEMA, metadata


def run_one(check, settings: Settings, conn: psycopg.Connection | None = None) -> verify.CheckResult:
    """Run one check with its own connection (or the one given)."""
    ctx = verify.VerifyContext(settings, metadata, SCHEMA)
    if conn is not None:
        ctx.conn = conn
        return check(ctx)
    with connect(settings.database_url) as own:
        ctx.conn = own
        return check(ctx)


@pytest.fixture
def created(settings: Settings) -> Settings:
    """Settings of a schema with every migration applied."""
    run_migrations(settings)
    return settings


@pytest.fixture
def role(conn: psycopg.Connection, db_url: str) -> Iterator[str]:
    """A login role without superuser rights, and a URL for it."""
    name = "r_" + uuid.uuid4().hex[:10]
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(settings: Settings, role: str) -> Settings:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(settings.database_url)
    params["user"] = role
    return dataclasses.replace(settings, database_url=make_conninfo(**params))


def test_all_checks_pass_when_created(created):
    results = verify.run_checks(created, metadata, source_schema=SCHEMA)
    failed = [r for r in results if r.status == verify.FAILED]
    assert failed == []
    assert verify.is_healthy(results)


def test_connection_failure_has_hint(settings):
    unreachable = dataclasses.replace(settings, database_url="postgresql://nobody@127.0.0.1:1/nowhere",
                                      connect_timeout=2)
    results = verify.run_checks(unreachable, metadata, source_schema=SCHEMA)
    assert results[0].status == verify.FAILED
    assert "DATABASE_URL" in results[0].hint
    assert all(r.status in (verify.FAILED, verify.SKIPPED) for r in results)


def test_connection_detects_direct(created):
    result = run_one(verify.check_connection, created)
    assert result.status == verify.OK
    assert "direct" in result.detail


def test_connection_detects_pgbouncer(created, pgbouncer):
    through = dataclasses.replace(created, database_url=pgbouncer.url)
    results = verify.run_checks(through, metadata, source_schema=SCHEMA, checks=[verify.check_connection])
    assert results[0].status == verify.OK
    assert "pooler" in results[0].detail


def test_server_version_below_minimum(created, monkeypatch):
    monkeypatch.setattr(verify, "MIN_SERVER_VERSION", 990000)
    monkeypatch.setattr(verify, "MIN_SERVER_LABEL", "99")
    result = run_one(verify.check_server_version, created)
    assert result.status == verify.FAILED
    assert "99" in result.hint


def test_server_version_newer_than_tested(created, monkeypatch):
    monkeypatch.setattr(verify, "MAX_TESTED_VERSION", 9)
    result = run_one(verify.check_server_version, created)
    assert result.status == verify.WARNING
    assert result.hint


def test_schema_missing(settings):
    result = run_one(verify.check_schema, settings)
    assert result.status == verify.FAILED
    assert "db.create" in result.hint


def test_models_difference_named(created, conn):
    conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN duration_ms").format(
        sql.Identifier(created.schema, "media_items")))
    result = run_one(verify.check_models, created)
    assert result.status == verify.FAILED
    assert "media_items.duration_ms" in result.detail
    assert "db.diff" in result.hint


def test_models_match_when_created(created):
    result = run_one(verify.check_models, created)
    assert result.status == verify.OK, result.detail


def test_migrations_pending(settings, conn):
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.schema)))
    result = run_one(verify.check_migrations, settings)
    assert result.status == verify.FAILED
    assert "0001_create_core_tables.sql" in result.detail
    assert "db.migrate" in result.hint


def test_many_pending_names_shortened(settings, conn, tmp_path):
    folder = tmp_path / "sql"
    folder.mkdir()
    for number in range(1, 9):
        (folder / f"{number:04d}_t{number}.sql").write_text(f"CREATE TABLE ${{schema}}.t{number} (id int);\n")
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.schema)))

    result = run_one(verify.check_migrations, dataclasses.replace(settings, migrations_dir=folder))

    assert result.detail == "8 pending: 0001_t1.sql, 0002_t2.sql, 0003_t3.sql, 0004_t4.sql, 0005_t5.sql and 3 more"


def test_migrations_failed_row(created, conn):
    with conn.transaction():
        history.insert_row(conn, created.schema, version=9999, name="9999_broken.sql", kind=history.KIND_FILE,
                           status=history.STATUS_FAILED, statement_count=3, statements_done=2, error="boom")
    result = run_one(verify.check_migrations, created)
    assert result.status == verify.FAILED
    assert "9999_broken.sql" in result.detail
    assert "db.repair" in result.hint


def test_lock_held_warns(created, conn):
    conn.execute(sql.SQL(
        "INSERT INTO {} (owner, host, pid, expires_at) VALUES (gen_random_uuid(), 'build-7', 4242, "
        "now() + interval '1 minute')").format(sql.Identifier(created.schema, history.LOCK_TABLE)))
    result = run_one(verify.check_lock, created)
    assert result.status == verify.WARNING
    assert "build-7" in result.detail
    assert "4242" in result.detail
    assert "db.unlock" in result.hint


def test_uuid_function_not_executable(created, conn, role):
    conn.execute("REVOKE EXECUTE ON FUNCTION gen_random_uuid() FROM PUBLIC")
    try:
        result = run_one(verify.check_uuid_function, as_role(created, role))
    finally:
        conn.execute("GRANT EXECUTE ON FUNCTION gen_random_uuid() TO PUBLIC")
    assert result.status == verify.FAILED
    assert result.hint


def test_trigger_function_missing(created, conn):
    conn.execute(sql.SQL("DROP FUNCTION {}() CASCADE").format(sql.Identifier(created.schema, "set_updated_at")))
    result = run_one(verify.check_trigger_function, created)
    assert result.status == verify.FAILED
    assert "set_updated_at" in result.detail
    assert "db.migrate" in result.hint


def test_privileges_without_create(created, role):
    result = run_one(verify.check_privileges, as_role(created, role))
    assert result.status == verify.FAILED
    assert f"GRANT CREATE ON SCHEMA {created.schema} TO {role}" == result.hint


def test_privileges_not_owner(created, conn, role):
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
        sql.Identifier(created.schema), sql.Identifier(role)))
    result = run_one(verify.check_privileges, as_role(created, role))
    assert result.status == verify.FAILED
    assert "video_projects" in result.detail
    assert role in result.hint


def test_superuser_in_production_warns(created):
    production = dataclasses.replace(created, env="production")
    result = run_one(verify.check_superuser, production)
    assert result.status == verify.WARNING
    assert "superuser" in result.hint


def test_superuser_in_development_ok(created):
    assert run_one(verify.check_superuser, created).status == verify.OK


def test_pooling_detects_prepared_statements(created, db_url):
    with psycopg.connect(db_url, autocommit=True, prepare_threshold=0) as risky:
        for _ in range(3):
            risky.execute("SELECT 1 WHERE %s::int = 1", (1,))
        result = run_one(verify.check_pooling, created, conn=risky)
    assert result.status == verify.FAILED
    assert "prepare_threshold" in result.hint


def test_pooling_ok_through_pgbouncer(created, pgbouncer):
    through = dataclasses.replace(created, database_url=pgbouncer.url)
    results = verify.run_checks(through, metadata, source_schema=SCHEMA, checks=[verify.check_pooling])
    assert results[0].status == verify.OK


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    delay = 0.0

    def do_GET(self):  # noqa: N802 - the name http.server calls
        time.sleep(self.delay)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, type[_Handler]]]:
    """A small HTTP server on 127.0.0.1 whose response the test sets."""
    handler = type("Handler", (_Handler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health", handler
    server.shutdown()
    server.server_close()


def test_service_skipped_when_unset(settings):
    result = verify.check_service(verify.VerifyContext(settings, metadata))
    assert result.status == verify.SKIPPED
    assert "TEXTLOOM_SERVICE_URL" in result.hint


def test_service_healthy(settings, service):
    url, _handler = service
    result = verify.check_service(verify.VerifyContext(dataclasses.replace(settings, service_url=url), metadata))
    assert result.status == verify.OK
    assert "HTTP 200" in result.detail


def test_service_unhealthy_status(settings, service):
    url, handler = service
    handler.status = 503
    result = verify.check_service(verify.VerifyContext(dataclasses.replace(settings, service_url=url), metadata))
    assert result.status == verify.FAILED
    assert "503" in result.detail
    assert result.hint


def test_service_timeout_fails(settings, service, monkeypatch):
    url, handler = service
    handler.delay = 2.0
    monkeypatch.setattr(verify, "SERVICE_TIMEOUT_S", 0.3)
    started = time.monotonic()
    result = verify.check_service(verify.VerifyContext(dataclasses.replace(settings, service_url=url), metadata))
    assert result.status == verify.FAILED
    assert time.monotonic() - started < 1.5
    assert "TEXTLOOM_SERVICE_URL" in result.hint


def test_service_refused_fails(settings):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/health"
    result = verify.check_service(verify.VerifyContext(dataclasses.replace(settings, service_url=url), metadata))
    assert result.status == verify.FAILED
    assert result.hint


def test_strict_fails_on_warning(created, conn):
    """A held lock is only a warning, which --strict turns into a failure."""
    from test_tasks import invoke

    conn.execute(sql.SQL(
        "INSERT INTO {} (owner, host, pid, expires_at) VALUES (gen_random_uuid(), 'build-7', 4242, "
        "now() + interval '1 minute')").format(sql.Identifier(created.schema, history.LOCK_TABLE)))
    env = {"DATABASE_URL": created.database_url, "TEXTLOOM_DB_SCHEMA": created.schema}

    assert invoke("db.verify", env=env).returncode == 0
    strict = invoke("db.verify", "--strict", env=env)
    assert strict.returncode == 1
    assert "build-7" in strict.stdout


@pytest.fixture
def replica(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A streaming standby of the test server, made with pg_basebackup; yields its URL."""
    import os
    import subprocess

    from psycopg.conninfo import conninfo_to_dict

    from db.embedded import EmbeddedServer, server_os_user

    if os.environ.get("TEXTLOOM_TEST_DATABASE_URL"):
        pytest.skip("needs a test server started by the tests, to copy it with pg_basebackup")
    bin_dir = os.environ.get("TEXTLOOM_TEST_PG_BIN")
    # A standby refuses to start with fewer connections than its primary allows.
    standby = EmbeddedServer(tmp_path_factory.mktemp("standby") / "data", bin_dir=Path(bin_dir) if bin_dir else None,
                             extra_options=("-c", "max_connections=200"))
    standby.data_dir.mkdir(mode=0o700)
    account = server_os_user()
    if account is not None:
        os.chown(standby.data_dir.parent, account.pw_uid, account.pw_gid)
        os.chown(standby.data_dir, account.pw_uid, account.pw_gid)
    params = conninfo_to_dict(db_url)
    subprocess.run([str(standby.bin_dir / "pg_basebackup"), "-h", params["host"], "-p", params["port"],
                    "-U", params.get("user", "postgres"), "-D", str(standby.data_dir), "-R", "-X", "stream",
                    "--checkpoint=fast"],
                   check=True, capture_output=True, user=account.pw_uid if account else None, cwd="/")
    status = standby.start()
    try:
        yield status.url
    finally:
        standby.stop()


def test_replica_fails_with_hint(settings, replica):
    result = run_one(verify.check_primary, dataclasses.replace(settings, database_url=replica))
    assert result.status == verify.FAILED
    assert "primary" in result.hint
