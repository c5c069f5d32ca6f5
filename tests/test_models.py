"""Checks on the core table models, and that sql/0001 builds the tables they describe.

The column comparison here is deliberately simple (names, types, nullability). A schema
diff of models against the live catalog will cover defaults, constraints and indexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql

from models import SCHEMA, TABLE_NAMES, metadata

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
CREATE_FILE = SQL_DIR / "0001_create_core_tables.sql"
SEED_FILE = SQL_DIR / "seed" / "dev_seed.sql"

CJK = re.compile(r"[\u4e00-\u9fff]")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
NAME_PREFIXES = {
    sa.PrimaryKeyConstraint: "pk_",
    sa.UniqueConstraint: "uq_",
    sa.CheckConstraint: "ck_",
    sa.ForeignKeyConstraint: "fk_",
}

TABLES = [metadata.tables[f"{SCHEMA}.{name}"] for name in TABLE_NAMES]
TABLE_IDS = list(TABLE_NAMES)
STATUS_TABLES = [table for table in TABLES if "status" in table.c]


def apply_sql_file(conn: psycopg.Connection, path: Path, schema: str) -> None:
    """Run one SQL file in one transaction, with ``${schema}`` replaced by the quoted name."""
    text = path.read_text(encoding="utf-8").replace("${schema}", sql.Identifier(schema).as_string(conn))
    with conn.transaction():
        conn.execute(text)


def row_counts(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    counts = {}
    for name in TABLE_NAMES:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        counts[name] = conn.execute(query).fetchone()[0]
    return counts


def render_type(type_: sa.types.TypeEngine) -> str:
    return type_.compile(dialect=postgresql.dialect())


def leading_index_columns(table: sa.Table) -> set[str]:
    """Columns that lead an index covering every row: full indexes, unique constraints, the pk."""
    leading = set()
    for index in table.indexes:
        if index.dialect_options["postgresql"]["where"] is None and index.columns:
            leading.add(next(iter(index.columns)).name)
    for constraint in table.constraints:
        if isinstance(constraint, (sa.UniqueConstraint, sa.PrimaryKeyConstraint)) and constraint.columns:
            leading.add(next(iter(constraint.columns)).name)
    return leading


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    url = sa.engine.make_url(db_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def core_schema(conn: psycopg.Connection, schema: str) -> str:
    """The test's schema with sql/0001 applied (the runner creates the schema before the first file)."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    apply_sql_file(conn, CREATE_FILE, schema)
    return schema


def test_table_names_cover_metadata():
    assert len(TABLE_NAMES) == 8
    assert sorted(TABLE_NAMES) == sorted(table.name for table in metadata.tables.values())
    assert all(table.schema == SCHEMA for table in metadata.tables.values())


def test_table_names_list_parents_first():
    position = {name: i for i, name in enumerate(TABLE_NAMES)}
    for table in TABLES:
        for fk in table.foreign_keys:
            parent = fk.column.table.name
            assert position[parent] < position[table.name], f"{table.name} is listed before its parent {parent}"


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_comments_are_chinese(table: sa.Table):
    assert table.comment and CJK.search(table.comment), f"table {table.name} lacks a Chinese comment"
    for column in table.columns:
        assert column.comment and CJK.search(column.comment), f"column {table.name}.{column.name} lacks a Chinese comment"


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_foreign_keys_are_indexed(table: sa.Table):
    leading = leading_index_columns(table)
    for fk in table.foreign_keys:
        assert fk.parent.name in leading, f"{table.name}.{fk.parent.name} leads no index"


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_foreign_keys_choose_ondelete(table: sa.Table):
    for fk in table.foreign_keys:
        assert fk.ondelete in {"CASCADE", "SET NULL", "RESTRICT"}, f"{fk.constraint.name}: ondelete={fk.ondelete!r}"
        if fk.ondelete == "SET NULL":
            assert fk.parent.nullable, f"{table.name}.{fk.parent.name} is NOT NULL but its foreign key sets it to NULL"


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_primary_key_is_uuid(table: sa.Table):
    assert [column.name for column in table.primary_key.columns] == ["id"]

    id_column = table.c.id
    assert render_type(id_column.type) == "UUID"
    assert str(id_column.server_default.arg) == "gen_random_uuid()"


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_timestamps_default_to_now(table: sa.Table):
    for name in ("created_at", "updated_at"):
        column = table.c[name]
        assert render_type(column.type) == "TIMESTAMP WITH TIME ZONE", f"{table.name}.{name}"
        assert column.nullable is False, f"{table.name}.{name}"
        assert column.server_default is not None, f"{table.name}.{name} has no server default"


@pytest.mark.parametrize("table", STATUS_TABLES, ids=[table.name for table in STATUS_TABLES])
def test_status_column_is_checked(table: sa.Table):
    names = {constraint.name for constraint in table.constraints if isinstance(constraint, sa.CheckConstraint)}
    assert f"ck_{table.name}_status" in names


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_constraint_names_follow_convention(table: sa.Table):
    for constraint in table.constraints:
        prefix = NAME_PREFIXES[type(constraint)]
        assert constraint.name.startswith(prefix + table.name), f"{constraint.name} in {table.name}"
        assert len(constraint.name.encode()) <= MAX_IDENTIFIER_BYTES, f"{constraint.name} is too long"
    for index in table.indexes:
        assert index.name.startswith("ix_" + table.name), f"{index.name} in {table.name}"
        assert len(index.name.encode()) <= MAX_IDENTIFIER_BYTES, f"{index.name} is too long"


def test_sql_columns_match_models(engine: sa.Engine, core_schema: str):
    inspector = sa.inspect(engine)

    assert sorted(inspector.get_table_names(schema=core_schema)) == sorted(TABLE_NAMES)
    for table in TABLES:
        expected = [(column.name, render_type(column.type), column.nullable) for column in table.columns]
        actual = [
            (column["name"], render_type(column["type"]), column["nullable"])
            for column in inspector.get_columns(table.name, schema=core_schema)
        ]
        assert actual == expected, f"columns of {table.name} differ"


def test_sql_file_starts_with_comment():
    first_line = CREATE_FILE.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("-- ")


def test_sql_file_never_names_schema():
    text = CREATE_FILE.read_text(encoding="utf-8") + SEED_FILE.read_text(encoding="utf-8")
    assert SCHEMA not in text


def test_trigger_on_every_updated_at_table(conn: psycopg.Connection, core_schema: str):
    rows = conn.execute(
        """
        SELECT c.relname
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE c.relnamespace = %s::regnamespace AND p.proname = 'set_updated_at' AND NOT t.tgisinternal
        """,
        (sql.Identifier(core_schema).as_string(conn),),
    ).fetchall()

    expected = sorted(table.name for table in TABLES if "updated_at" in table.c)
    assert sorted(row[0] for row in rows) == expected


def test_trigger_sets_updated_at(conn: psycopg.Connection, core_schema: str):
    personas = sql.Identifier(core_schema, "personas")
    persona_id, created_at, updated_at = conn.execute(
        sql.SQL("INSERT INTO {} (name, display_name) VALUES ('tester', '测试') "
                "RETURNING id, created_at, updated_at").format(personas)
    ).fetchone()

    # Autocommit puts the UPDATE in a transaction of its own, so now() has moved on.
    new_created_at, new_updated_at = conn.execute(
        sql.SQL("UPDATE {} SET display_name = '测试员' WHERE id = %s RETURNING created_at, updated_at").format(personas),
        (persona_id,),
    ).fetchone()

    assert new_updated_at > updated_at
    assert new_created_at == created_at


def test_seed_twice_adds_nothing(conn: psycopg.Connection, core_schema: str):
    apply_sql_file(conn, SEED_FILE, core_schema)
    first = row_counts(conn, core_schema)
    apply_sql_file(conn, SEED_FILE, core_schema)
    second = row_counts(conn, core_schema)

    assert all(count > 0 for count in first.values()), first
    assert second == first


def test_project_delete_cascades(conn: psycopg.Connection, core_schema: str):
    apply_sql_file(conn, SEED_FILE, core_schema)
    before = row_counts(conn, core_schema)

    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(core_schema, "video_projects")))
    after = row_counts(conn, core_schema)

    for name in ("video_projects", "tasks", "media_items", "material_analyses", "script_contents", "sub_video_tasks"):
        assert after[name] == 0, f"{name} kept rows after the project was deleted"
    assert after["personas"] == before["personas"]
    assert after["prompt_templates"] == before["prompt_templates"]


def test_default_persona_restricts_delete(conn: psycopg.Connection, core_schema: str):
    apply_sql_file(conn, SEED_FILE, core_schema)
    personas = sql.Identifier(core_schema, "personas")
    in_use = sql.SQL("DELETE FROM {} WHERE id IN (SELECT default_persona_id FROM {})").format(
        personas, sql.Identifier(core_schema, "video_projects"))

    # PostgreSQL 18 raises RestrictViolation (23001), older versions ForeignKeyViolation.
    with pytest.raises(psycopg.errors.IntegrityError, match="fk_video_projects_default_persona_id_personas"):
        conn.execute(in_use)


def test_deleting_template_nulls_script_reference(conn: psycopg.Connection, core_schema: str):
    apply_sql_file(conn, SEED_FILE, core_schema)
    scripts = sql.Identifier(core_schema, "script_contents")

    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(core_schema, "prompt_templates")))
    remaining = conn.execute(sql.SQL("SELECT count(*), count(prompt_template_id) FROM {}").format(scripts)).fetchone()

    assert remaining == (1, 0)
