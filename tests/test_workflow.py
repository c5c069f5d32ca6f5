"""The model-change workflow end to end: edit models, db.diff, db.diff --write, db.migrate."""

from __future__ import annotations

import json
import textwrap

import pytest

from test_tasks import invoke

CHANGED_MODELS = textwrap.dedent('''
    """TextLoom's models plus one nullable column and one new index, as a developer would edit them."""
    from sqlalchemy import Column, Index, String

    from models import metadata

    media_items = metadata.tables["textloom_core.media_items"]
    media_items.append_column(Column("caption_lang", String(16), nullable=True, comment="字幕语言"))
    Index("ix_media_items_caption_lang", media_items.c.caption_lang)
''')

HAZARDOUS_MODELS = textwrap.dedent('''
    """TextLoom's models with a column narrowed: a change a person must review."""
    from sqlalchemy import String

    from models import metadata

    metadata.tables["textloom_core.personas"].c.display_name.type = String(8)
''')


@pytest.fixture
def workflow_env(db_url, schema, tmp_path):
    """Environment with a private migrations folder holding a copy of sql/, and the edited models."""
    from test_tasks import ROOT

    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for path in (ROOT / "sql").glob("*.sql"):
        (sql_dir / path.name).write_bytes(path.read_bytes())
    (tmp_path / "changed_models.py").write_text(CHANGED_MODELS, encoding="utf-8")
    (tmp_path / "hazardous_models.py").write_text(HAZARDOUS_MODELS, encoding="utf-8")
    return {"DATABASE_URL": db_url, "TEXTLOOM_DB_SCHEMA": schema, "TEXTLOOM_MIGRATIONS_DIR": str(sql_dir),
            "PYTHONPATH": f"{ROOT}:{tmp_path}"}


def test_diff_clean_after_create(workflow_env):
    assert invoke("db.create", env=workflow_env).returncode == 0
    result = invoke("db.diff", env=workflow_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No differences" in result.stdout


def test_diff_reports_model_change(workflow_env):
    assert invoke("db.create", env=workflow_env).returncode == 0

    table = invoke("db.diff", "--models", "changed_models:metadata", env=workflow_env)
    assert table.returncode == 1
    assert "media_items.caption_lang" in table.stdout

    document = json.loads(invoke("db.diff", "--json", "--models", "changed_models:metadata",
                                 env=workflow_env).stdout)
    kinds = {(c["kind"], c["object"], c["hazard"]) for c in document["changes"]}
    assert ("add_column", "media_items.caption_lang", "safe") in kinds
    assert any(c["kind"] == "add_index" and c["is_transactional"] is False for c in document["changes"])

    script = invoke("db.diff", "--sql", "--models", "changed_models:metadata", env=workflow_env)
    assert "ADD COLUMN" in script.stdout
    assert "CREATE INDEX CONCURRENTLY" in script.stdout


def test_write_then_migrate_converges(workflow_env, tmp_path):
    assert invoke("db.create", env=workflow_env).returncode == 0

    written = invoke("db.diff", "--write", "add_caption_lang", "--models", "changed_models:metadata",
                     env=workflow_env)
    assert written.returncode == 1
    path = tmp_path / "sql" / "0002_add_caption_lang.sql"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("-- textloom:no-transaction\n")
    assert "${schema}." in text
    assert workflow_env["TEXTLOOM_DB_SCHEMA"] not in text

    migrated = invoke("db.migrate", "--models", "changed_models:metadata", env=workflow_env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "0002_add_caption_lang.sql" in migrated.stderr

    after = invoke("db.diff", "--models", "changed_models:metadata", env=workflow_env)
    assert after.returncode == 0, after.stdout
    history = json.loads(invoke("db.history", "--json", env=workflow_env).stdout)
    assert [m["version"] for m in history["migrations"]] == [1, 2]


def test_migrate_applies_safe_drift(workflow_env):
    assert invoke("db.create", env=workflow_env).returncode == 0

    migrated = invoke("db.migrate", "--models", "changed_models:metadata", env=workflow_env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "add_column media_items.caption_lang" in migrated.stderr

    history = json.loads(invoke("db.history", "--json", env=workflow_env).stdout)
    auto = [m for m in history["migrations"] if m["kind"] == "auto"]
    assert {m["name"] for m in auto} >= {"add_column media_items.caption_lang"}
    assert invoke("db.diff", "--models", "changed_models:metadata", env=workflow_env).returncode == 0


def test_migrate_lists_hazardous_drift(workflow_env):
    assert invoke("db.create", env=workflow_env).returncode == 0

    result = invoke("db.migrate", "--models", "hazardous_models:metadata", env=workflow_env)
    assert result.returncode == 1
    assert "personas.display_name" in result.stdout
    assert "-- ALTER TABLE" in result.stdout

    dry = invoke("db.migrate", "--dry-run", "--models", "changed_models:metadata", env=workflow_env)
    assert dry.returncode == 0
    assert "Would apply add_column media_items.caption_lang" in dry.stdout
    assert invoke("db.diff", "--models", "changed_models:metadata", env=workflow_env).returncode == 1


def test_models_option_invalid(workflow_env):
    result = invoke("db.diff", "--models", "no_such_module:metadata", env=workflow_env)
    assert result.returncode == 2
    assert "no_such_module" in result.stderr
    assert "Traceback" not in result.stderr


def test_baseline_adopts_create_all(workflow_env, db_url, schema):
    """A database made by MetaData.create_all is adopted at version 1, then migrates normally."""
    import sqlalchemy as sa

    from models import metadata

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1),
                              execution_options={"schema_translate_map": {"textloom_core": schema}})
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(connection)
    engine.dispose()

    adopted = invoke("db.baseline", "1", env=workflow_env)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "baselined" in adopted.stdout

    again = invoke("db.baseline", "1", env=workflow_env)
    assert again.returncode == 2
    assert invoke("db.migrate", "--no-auto", env=workflow_env).returncode == 0


def test_baseline_rejects_mismatch(workflow_env, conn, schema):
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(f'CREATE TABLE "{schema}".personas (id uuid PRIMARY KEY)')
    result = invoke("db.baseline", "1", env=workflow_env)
    assert result.returncode == 3
    assert "personas" in result.stderr


def test_written_file_validates_outside_transaction(workflow_env, tmp_path):
    """A constraint added NOT VALID and validated later is written to a no-transaction file."""
    (tmp_path / "checked_models.py").write_text(textwrap.dedent('''
        from sqlalchemy import CheckConstraint

        from models import metadata

        media_items = metadata.tables["textloom_core.media_items"]
        media_items.append_constraint(CheckConstraint("duration_ms < 86400000", name="ck_media_items_duration_day"))
    '''), encoding="utf-8")
    assert invoke("db.create", env=workflow_env).returncode == 0

    written = invoke("db.diff", "--write", "limit_duration", "--models", "checked_models:metadata", env=workflow_env)
    assert written.returncode == 1
    text = (tmp_path / "sql" / "0002_limit_duration.sql").read_text(encoding="utf-8")
    assert text.startswith("-- textloom:no-transaction\n")
    assert "NOT VALID" in text
    assert "VALIDATE CONSTRAINT" in text

    # The hazardous statements are written commented out; the reviewer enables them.
    reviewed = text.replace("\n-- ALTER TABLE", "\nALTER TABLE")
    (tmp_path / "sql" / "0002_limit_duration.sql").write_text(reviewed, encoding="utf-8")
    migrated = invoke("db.migrate", "--models", "checked_models:metadata", env=workflow_env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert invoke("db.diff", "--models", "checked_models:metadata", env=workflow_env).returncode == 0


def test_auto_change_then_written_file(workflow_env, tmp_path):
    """After db.migrate applied a model change by itself, --write still captures it, and the file runs."""
    assert invoke("db.create", env=workflow_env).returncode == 0
    migrated = invoke("db.migrate", "--models", "changed_models:metadata", env=workflow_env)
    assert migrated.returncode == 0, migrated.stderr
    assert "db.diff --write" in migrated.stderr

    written = invoke("db.diff", "--write", "add_caption_lang", "--models", "changed_models:metadata",
                     env=workflow_env)
    assert written.returncode == 1, written.stdout + written.stderr
    text = (tmp_path / "sql" / "0002_add_caption_lang.sql").read_text(encoding="utf-8")
    assert "ADD COLUMN IF NOT EXISTS" in text
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in text

    again = invoke("db.migrate", "--models", "changed_models:metadata", env=workflow_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0002_add_caption_lang.sql" in again.stderr
    assert invoke("db.diff", "--models", "changed_models:metadata", env=workflow_env).returncode == 0


def test_write_replays_concurrent_files(workflow_env, tmp_path):
    """Files with CREATE INDEX CONCURRENTLY are replayed for --write and baseline."""
    (tmp_path / "sql" / "0002_index_titles.sql").write_text(
        "-- textloom:no-transaction\n"
        "CREATE INDEX CONCURRENTLY ix_media_items_caption_lang ON ${schema}.media_items (id);\n"
        "VACUUM ${schema}.media_items;\n", encoding="utf-8")
    assert invoke("db.create", env=workflow_env).returncode == 0
    written = invoke("db.diff", "--write", "align_models", "--models", "changed_models:metadata", env=workflow_env)
    assert written.returncode == 1, written.stderr
    text = (tmp_path / "sql" / "0003_align_models.sql").read_text(encoding="utf-8")
    assert "caption_lang" in text
