"""Reading a live schema from pg_catalog."""

from __future__ import annotations

import pytest
from psycopg import sql

from db.catalog import read_schema
from db.schema_diff import count_round_trips
from db.snapshot import Column, ForeignKey, IndexKey, PrimaryKey, UniqueConstraint

DDL = """
CREATE TYPE status AS ENUM ('queued', 'running', 'done');
CREATE TABLE owners (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
CREATE TABLE tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner uuid REFERENCES owners ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    code varchar(20) UNIQUE NULLS NOT DISTINCT,
    price numeric(10,2) DEFAULT 0 CHECK (price >= 0),
    state status NOT NULL DEFAULT 'queued',
    label text COLLATE "C",
    doubled numeric GENERATED ALWAYS AS (price * 2) STORED
);
CREATE INDEX ix_open ON tasks (lower(code) DESC, price) INCLUDE (label) WHERE state <> 'done';
COMMENT ON TABLE tasks IS 'Work to do';
COMMENT ON COLUMN tasks.code IS 'Short code';
"""


@pytest.fixture
def tasks_schema(conn, schema):
    quoted = sql.Identifier(schema).as_string(conn)
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA {quoted}; SET LOCAL search_path TO {quoted}; {DDL}")
    return schema


def test_read_columns(conn, tasks_schema):
    tasks = read_schema(conn, tasks_schema).tables["tasks"]
    assert [column.name for column in tasks.columns] == ["id", "owner", "code", "price", "state", "label", "doubled"]
    assert tasks.column("id") == Column("id", "bigint", nullable=False, identity="always")
    assert tasks.column("code").type == "character varying(20)"
    assert tasks.column("code").comment == "Short code"
    assert tasks.column("state").default == f"'queued'::{tasks_schema}.status"
    assert tasks.column("label").collation == '"C"'
    assert tasks.column("doubled").generated == "(price * (2)::numeric)"
    assert tasks.column("doubled").default is None
    assert tasks.comment == "Work to do"


def test_read_constraints(conn, tasks_schema):
    tasks = read_schema(conn, tasks_schema).tables["tasks"]
    assert tasks.primary_key == PrimaryKey("tasks_pkey", ("id",))
    assert tasks.foreign_keys == (ForeignKey("tasks_owner_fkey", ("owner",), tasks_schema, "owners", ("id",),
                                             on_delete="CASCADE", deferrable=True, initially_deferred=True),)
    assert tasks.unique_constraints == (UniqueConstraint("tasks_code_key", ("code",), nulls_not_distinct=True),)
    assert [check.name for check in tasks.check_constraints] == ["tasks_price_check"]


def test_read_index_parts(conn, tasks_schema):
    (index,) = read_schema(conn, tasks_schema).tables["tasks"].indexes
    assert index.name == "ix_open"
    assert index.keys == (IndexKey("lower(code::text)", is_column=False, descending=True, nulls_first=True),
                          IndexKey("price"))
    assert index.include == ("label",)
    assert index.predicate == f"(state <> 'done'::{tasks_schema}.status)"


def test_read_enum_values(conn, tasks_schema):
    snapshot = read_schema(conn, tasks_schema)
    assert snapshot.enums["status"].values == ("queued", "running", "done")


def test_missing_schema_empty(conn, schema):
    snapshot = read_schema(conn, schema)
    assert not snapshot.exists
    assert snapshot.tables == {}


def test_one_round_trip(conn, tasks_schema):
    with count_round_trips(conn) as round_trips:
        read_schema(conn, tasks_schema)
    assert round_trips.count == 1


def test_extension_objects_left_out(conn, schema):
    available = conn.execute("SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'citext'").fetchone()
    if available is None:
        pytest.skip("the citext extension is not installed on this server")
    quoted = sql.Identifier(schema).as_string(conn)
    conn.execute(f"CREATE SCHEMA {quoted}")
    conn.execute(f"CREATE EXTENSION IF NOT EXISTS citext SCHEMA {quoted}")
    try:
        # Make a table a member of the extension, as an extension's own script would.
        conn.execute(f"CREATE TABLE {quoted}.ext_table (id int); CREATE TABLE {quoted}.own_table (id int)")
        conn.execute(f"ALTER EXTENSION citext ADD TABLE {quoted}.ext_table")
        assert set(read_schema(conn, schema).tables) == {"own_table"}
        conn.execute(f"ALTER EXTENSION citext DROP TABLE {quoted}.ext_table")
    finally:
        conn.execute("DROP EXTENSION IF EXISTS citext")


def test_exclusion_not_comparable(conn, schema):
    quoted = sql.Identifier(schema).as_string(conn)
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA {quoted}; CREATE TABLE {quoted}.slots (r int4range, "
                     "EXCLUDE USING gist (r WITH &&))")
    snapshot = read_schema(conn, schema)
    assert [note.object for note in snapshot.not_comparable] == ["slots.slots_r_excl"]
