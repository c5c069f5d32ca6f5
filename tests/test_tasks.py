"""The tasks as a user runs them: `invoke db.*` in a subprocess, with exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-Pa55"


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `invoke ARGS` in the project folder with only the given suite variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTLOOM_", "DATABASE_URL", "LC_", "LANG"))}
    base["TEXTLOOM_LANG"] = "en"
    if "TEXTLOOM_CACHE_DIR" in os.environ:
        base["TEXTLOOM_CACHE_DIR"] = os.environ["TEXTLOOM_CACHE_DIR"]
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=base, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(db_url: str, schema: str) -> dict[str, str]:
    """Environment that points the tasks at the test server and schema, with a password to mask."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(db_url)
    params["password"] = PASSWORD  # the test server trusts local connections and ignores it
    return {"DATABASE_URL": make_conninfo(**params), "TEXTLOOM_DB_SCHEMA": schema}


def assert_no_password(result: subprocess.CompletedProcess) -> None:
    assert PASSWORD not in result.stdout
    assert PASSWORD not in result.stderr


def test_list_shows_tasks():
    result = invoke("--list")
    assert result.returncode == 0
    for name in ("db.create", "db.check", "db.verify", "db.drop", "db.reset", "db.seed", "db.schema",
                 "db.server.start", "db.server.stop", "db.server.status"):
        assert name in result.stdout


def test_schema_creates_only_schema(env, conn, schema):
    result = invoke("db.schema", env=env)
    assert result.returncode == 0, result.stderr
    assert schema in result.stdout
    tables = conn.execute("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s", (schema,)).fetchone()[0]
    assert tables == 0


def test_create_then_create_again(env, conn, schema):
    first = invoke("db.create", env=env)
    assert first.returncode == 0, first.stderr
    assert "0001_create_core_tables.sql" in first.stderr

    second = invoke("db.create", env=env)
    assert second.returncode == 0, second.stderr
    assert "Nothing to do" in second.stderr
    assert_no_password(first)
    assert_no_password(second)

    rows = conn.execute(sql.SQL("SELECT version, success FROM {}").format(
        sql.Identifier(schema, "textloom_migration_history"))).fetchall()
    assert rows == [(1, True)]


def test_check_and_verify_healthy(env):
    assert invoke("db.create", env=env).returncode == 0

    check = invoke("db.check", env=env)
    assert check.returncode == 0, check.stderr
    assert "video_projects" in check.stdout
    assert "textloom_migration_history" in check.stdout

    verify = invoke("db.verify", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert_no_password(verify)

    document = json.loads(invoke("db.verify", "--json", env=env).stdout)
    assert document["healthy"] is True
    assert {c["status"] for c in document["checks"]} <= {"ok", "skipped"}


def test_check_json_is_one_document(env):
    assert invoke("db.create", env=env).returncode == 0
    result = invoke("db.check", "--json", env=env)
    assert result.returncode == 0
    document = json.loads(result.stdout)
    names = [t["name"] for t in document["tables"]]
    assert len(names) == 8
    assert all(t["present"] for t in document["tables"])
    assert [t["name"] for t in document["bookkeeping"]] == ["textloom_migration_history", "textloom_migration_lock"]


def test_verify_names_missing_table(env, conn, schema):
    assert invoke("db.create", env=env).returncode == 0
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "sub_video_tasks")))

    result = invoke("db.verify", "--json", env=env)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["healthy"] is False
    failed = [c for c in document["checks"] if c["status"] == "failed"]
    assert any("sub_video_tasks" in c["detail"] for c in failed)
    assert all(c["hint"] for c in failed)


def test_verify_names_missing_column(env, conn, schema):
    assert invoke("db.create", env=env).returncode == 0
    conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN updated_at").format(sql.Identifier(schema, "personas")))

    result = invoke("db.verify", env=env)
    assert result.returncode == 1
    assert "personas.updated_at" in result.stdout


def test_verify_reports_pending(env):
    result = invoke("db.verify", env=env)
    assert result.returncode == 1
    assert "db.create" in result.stdout or "db.migrate" in result.stdout


def test_drop_refuses_without_tty(env):
    assert invoke("db.create", env=env).returncode == 0
    result = invoke("db.drop", env=env, stdin="")
    assert result.returncode == 2
    assert "--yes" in result.stderr


def test_drop_refuses_in_production(env, conn, schema):
    assert invoke("db.create", env=env).returncode == 0
    production = {**env, "TEXTLOOM_ENV": "production"}

    refused = invoke("db.drop", "--yes", env=production)
    assert refused.returncode == 2
    assert "--allow-production" in refused.stderr
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.tasks",)).fetchone()[0] is not None

    allowed = invoke("db.drop", "--yes", "--allow-production", env=production)
    assert allowed.returncode == 0, allowed.stderr
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.tasks",)).fetchone()[0] is None


def test_drop_with_yes_removes_everything(env, conn, schema):
    assert invoke("db.create", env=env).returncode == 0
    result = invoke("db.drop", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    left = conn.execute("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'", (schema,)).fetchone()[0]
    assert left == 0


def test_reset_and_seed_chain(env, conn, schema):
    result = invoke("db.reset", "--yes", "db.seed", env=env)
    assert result.returncode == 0, result.stderr
    assert "Seed data loaded" in result.stdout
    projects = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(schema, "video_projects"))).fetchone()[0]
    assert projects >= 1


def test_seed_twice_adds_nothing(env):
    assert invoke("db.create", env=env).returncode == 0
    first = invoke("db.seed", env=env)
    second = invoke("db.seed", env=env)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "loaded: 0 rows inserted" in second.stdout
    assert "loaded: 0 rows inserted" not in first.stdout


def test_seed_refused_in_production(env):
    result = invoke("db.seed", env={**env, "TEXTLOOM_ENV": "production"})
    assert result.returncode == 2
    assert "production" in result.stderr


def test_unreachable_server_fails_fast():
    closed_port = _closed_port()
    url = f"postgresql://textloom:{PASSWORD}@127.0.0.1:{closed_port}/textloom_db"
    result = invoke("db.verify", env={"DATABASE_URL": url, "TEXTLOOM_CONNECT_TIMEOUT": "2"}, timeout=30)
    assert result.returncode == 1
    assert str(closed_port) in result.stdout
    assert "textloom_db" in result.stdout
    assert_no_password(result)

    create = invoke("db.create", env={"DATABASE_URL": url, "TEXTLOOM_CONNECT_TIMEOUT": "2"}, timeout=30)
    assert create.returncode == 3
    assert "127.0.0.1" in create.stderr
    assert "Traceback" not in create.stderr
    assert_no_password(create)


@pytest.mark.parametrize(("variable", "value"), [
    ("TEXTLOOM_ENV", "staging"),
    ("TEXTLOOM_DB_SCHEMA", "Bad-Name"),
    ("TEXTLOOM_CONNECT_TIMEOUT", "soon"),
    ("DATABASE_URL", "postgresql://u:pw@host:notaport/db"),
])
def test_invalid_configuration_names_key(env, variable, value):
    result = invoke("db.check", env={**env, variable: value})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    if variable != "DATABASE_URL":
        assert variable in result.stderr
    assert "pw@" not in result.stderr


def test_invoke_yaml_section(env, tmp_path, schema):
    """Settings from invoke.yaml apply, and the environment wins over them."""
    config = tmp_path / "invoke.yaml"
    config.write_text("db:\n  env: production\n")
    from_file = invoke("-f", str(config), "db.seed", env=env)
    assert from_file.returncode == 2

    overridden = invoke("-f", str(config), "db.schema", env={**env, "TEXTLOOM_ENV": "development"})
    assert overridden.returncode == 0, overridden.stderr

    config.write_text("db:\n  colour: blue\n")
    unknown = invoke("-f", str(config), "db.schema", env=env)
    assert unknown.returncode == 2
    assert "db.colour" in unknown.stderr


def test_chinese_messages(env):
    result = invoke("db.seed", env={**env, "TEXTLOOM_ENV": "production", "TEXTLOOM_LANG": "zh_CN"})
    assert result.returncode == 2
    assert "生产" in result.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_chain_json_stays_clean(env):
    result = invoke("db.migrate", "db.verify", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] is True
    assert "0001_create_core_tables.sql" in result.stderr


def test_reset_drops_tables_added_later(env, tmp_path, conn, schema):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for path in (ROOT / "sql").glob("*.sql"):
        (sql_dir / path.name).write_bytes(path.read_bytes())
    (sql_dir / "0002_add_render_presets.sql").write_text(
        "CREATE TYPE ${schema}.aspect_ratio AS ENUM ('16:9', '9:16');\n"
        "CREATE TABLE ${schema}.render_presets (id int PRIMARY KEY, ratio ${schema}.aspect_ratio);\n"
        "CREATE VIEW ${schema}.wide_presets AS SELECT id FROM ${schema}.render_presets WHERE ratio = '16:9';\n")
    with_folder = {**env, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)}

    assert invoke("db.migrate", "--no-auto", env=with_folder).returncode == 0
    reset = invoke("db.reset", "--yes", env=with_folder)
    assert reset.returncode == 0, reset.stderr
    assert conn.execute("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'render_presets'",
                        (schema,)).fetchone()[0] == 1


def test_schema_owner_without_database_create(env, conn, schema, db_url):
    """A role that owns the schema but may not create schemas in the database can still migrate."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role = f"owner_{schema}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema), sql.Identifier(role)))
        params = conninfo_to_dict(db_url)
        params["user"] = role
        result = invoke("db.create", env={**env, "DATABASE_URL": make_conninfo(**params)})
        assert result.returncode == 0, result.stderr
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_history_shows_failure(env, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0001_steps.sql").write_text(
        "-- textloom:no-transaction\n"
        "CREATE TABLE ${schema}.widths (width int);\n"
        "INSERT INTO ${schema}.widths VALUES (1080), (1080);\n"
        "CREATE UNIQUE INDEX CONCURRENTLY widths_key ON ${schema}.widths (width);\n")
    with_folder = {**env, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)}

    failed = invoke("db.migrate", "--no-auto", env=with_folder)
    assert failed.returncode == 3
    assert "DETAIL" in failed.stderr
    assert "(width)=(1080)" in failed.stderr
    assert "widths_key" in failed.stderr

    history = invoke("db.history", env=with_folder)
    assert "0001_steps.sql stopped with an error" in history.stdout


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/x",
    f"mysql://u:{PASSWORD}@127.0.0.1/x",
    f"postgresql://u:{PASSWORD}%zz@127.0.0.1/x",
    f"postgresql://postgres:{PASSWORD}@pw@127.0.0.1/x",
    f"postgresql://u:{PASSWORD}@[::1:1/x",
    f"host=127.0.0.1 password={PASSWORD} port=abc",
])
def test_bad_url_never_shows_password(url):
    result = invoke("db.check", env={"DATABASE_URL": url})
    assert result.returncode == 2, result.stderr
    assert_no_password(result)
    assert "Traceback" not in result.stderr
    assert "hint:" in result.stderr


def test_production_needs_database_url(schema):
    result = invoke("db.migrate", env={"TEXTLOOM_ENV": "production", "TEXTLOOM_DB_SCHEMA": schema})
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "embedded" not in result.stderr.lower().split("error:")[0]


def test_drop_refuses_foreign_schema(env, conn, schema):
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(schema, "customer_data")))
    result = invoke("db.drop", "--yes", env=env)
    assert result.returncode == 2
    assert "no TextLoom migration history" in result.stderr
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.customer_data",)).fetchone()[0] is not None


@pytest.mark.parametrize(("variable", "value"), [
    ("TEXTLOOM_DB_SCHEMA", "pg_textloom"),
    ("TEXTLOOM_DB_SCHEMA", "information_schema"),
    ("TEXTLOOM_MIGRATIONS_DIR", "/nonexistent/migrations"),
])
def test_invalid_setting_rejected(env, variable, value):
    result = invoke("db.check", env={**env, variable: value})
    assert result.returncode == 2
    assert variable in result.stderr


def test_empty_file_rejected(env, tmp_path, conn, schema):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0001_first.sql").write_text("CREATE TABLE ${schema}.first (id int);\n")
    (sql_dir / "0002_reviewed_out.sql").write_text("-- ALTER TABLE ${schema}.first ALTER COLUMN id TYPE bigint;\n")
    result = invoke("db.migrate", "--no-auto", env={**env, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)})
    assert result.returncode == 3
    assert "0002_reviewed_out.sql contains no statements" in result.stderr
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.first",)).fetchone()[0] is None


def test_renamed_applied_file_named(env, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0001_first.sql").write_text("CREATE TABLE ${schema}.first (id int);\n")
    with_folder = {**env, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)}
    assert invoke("db.migrate", "--no-auto", env=with_folder).returncode == 0

    (sql_dir / "0001_first.sql").rename(sql_dir / "0001_renamed.sql")
    result = invoke("db.migrate", "--no-auto", env=with_folder)
    assert result.returncode == 3
    assert "version 1 was applied as 0001_first.sql, but the file is now 0001_renamed.sql" in result.stderr

    assert invoke("db.repair", env=with_folder).returncode == 0
    assert invoke("db.migrate", "--no-auto", env=with_folder).returncode == 0


def test_failed_steps_hint_names_version(env, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0007_steps.sql").write_text(
        "-- textloom:no-transaction\n"
        "CREATE TABLE ${schema}.steps (id int);\n"
        "INSERT INTO ${schema}.missing VALUES (1);\n")
    result = invoke("db.migrate", "--no-auto", env={**env, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)})
    assert result.returncode == 3
    assert "invoke db.resolve 7" in result.stderr
    assert "invoke db.repair" in result.stderr


def test_data_error_hint_points_at_rows(env, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0001_labels.sql").write_text(
        "CREATE TABLE ${schema}.labels (label text);\n"
        "INSERT INTO ${schema}.labels VALUES ('landscape');\n")
    (sql_dir / "0002_narrow.sql").write_text("ALTER TABLE ${schema}.labels ALTER COLUMN label TYPE varchar(4);\n")
    result = invoke("db.migrate", "--no-auto", env={**env, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)})
    assert result.returncode == 3
    assert "0002_narrow.sql, line 1" in result.stderr
    assert "rows in the table" in result.stderr


def test_interrupt_rolls_back(env, tmp_path, conn, schema):
    import signal
    import time

    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "0001_slow.sql").write_text(
        "CREATE TABLE ${schema}.slow (id int);\nSELECT pg_sleep(30);\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTLOOM_", "DATABASE_URL"))}
    process = subprocess.Popen([sys.executable, "-m", "invoke", "db.migrate", "--no-auto"], cwd=ROOT,
                               env={**base, **env, "TEXTLOOM_LANG": "en", "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(30)%%' "
                           "AND pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)

    assert process.returncode == 130
    assert "Traceback" not in err
    assert "interrupted" in err
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.slow",)).fetchone()[0] is None


def test_dry_run_new_schema_plans_it(env, tmp_path):
    # A real run creates the schema with its history table, so the dry run counts it as applied.
    result = invoke("db.migrate", "--dry-run", env={**env, "TEXTLOOM_MIGRATIONS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Would apply add_schema" in result.stdout


def test_diff_not_compared_needs_strict(env, tmp_path, db_url):
    # The CHECK calls a function the database lacks, so the server cannot render the table.
    (tmp_path / "unrenderable_models.py").write_text(
        "import sqlalchemy as sa\n"
        "metadata = sa.MetaData()\n"
        "sa.Table('notes', metadata, sa.Column('id', sa.Integer, primary_key=True, autoincrement=False),\n"
        "         sa.Column('body', sa.Text, sa.CheckConstraint('no_such_function(body)')))\n")
    run_env = {**env, "PYTHONPATH": str(tmp_path)}
    schema = env["TEXTLOOM_DB_SCHEMA"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".notes (id integer PRIMARY KEY, body text)')

    plain = invoke("db.diff", "--models", "unrenderable_models:metadata", env=run_env)
    strict = invoke("db.diff", "--strict", "--models", "unrenderable_models:metadata", env=run_env)

    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "2 object(s) of schema" in plain.stdout
    assert "were not compared" in plain.stdout
    assert "No differences: schema" not in plain.stdout
    assert strict.returncode == 1
