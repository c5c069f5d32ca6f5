"""End-to-end diff cases against a real server: find the change, apply its SQL, find none.

Each case creates a base schema with SQL, builds a model that differs from it in one way,
and checks that :func:`db.schema_diff.compare` finds exactly that change with its hazard.
The planned SQL is then applied and a second comparison must come back empty.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects.postgresql import JSONB, UUID

from db.diff import Change, ChangeKind, Hazard
from db.schema_diff import compare, count_round_trips

PROJECT_DIR = Path(__file__).resolve().parent.parent


def create_base(conn: psycopg.Connection, schema: str, ddl: str) -> None:
    quoted = sql.Identifier(schema).as_string(conn)
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA {quoted}; SET LOCAL search_path TO {quoted}; {ddl}")


def apply_changes(conn: psycopg.Connection, changes: tuple[Change, ...]) -> None:
    for change in changes:
        if change.is_transactional:
            with conn.transaction():
                for statement in change.sql:
                    conn.execute(statement)
        else:
            for statement in change.sql:
                conn.execute(statement)


def tasks_model(*columns: sa.Column | sa.Constraint | sa.Index, comment: str | None = None) -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("tasks", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), *columns,
             comment=comment)
    return metadata


class Status(enum.Enum):
    queued = 1
    running = 2
    done = 3


BASE_TASKS = "CREATE TABLE tasks (id integer PRIMARY KEY"

# (case id, base DDL, model, expected (kind, hazard) pairs)
CASES: list[tuple[str, str, Callable[[], sa.MetaData], list[tuple[ChangeKind, Hazard]]]] = [
    ("add nullable column", f"{BASE_TASKS});",
     lambda: tasks_model(sa.Column("note", sa.Text)),
     [(ChangeKind.ADD_COLUMN, Hazard.SAFE)]),
    ("add not null column", f"{BASE_TASKS});",
     lambda: tasks_model(sa.Column("note", sa.Text, nullable=False)),
     [(ChangeKind.ADD_COLUMN, Hazard.NEEDS_REVIEW)]),
    ("add column volatile default", f"{BASE_TASKS});",
     lambda: tasks_model(sa.Column("ref", UUID, server_default=sa.text("gen_random_uuid()"), nullable=False)),
     [(ChangeKind.ADD_COLUMN, Hazard.REWRITES)]),
    ("drop column", f"{BASE_TASKS}, note text);",
     lambda: tasks_model(),
     [(ChangeKind.DROP_COLUMN, Hazard.DESTRUCTIVE)]),
    ("varchar to unbounded", f"{BASE_TASKS}, title varchar(20));",
     lambda: tasks_model(sa.Column("title", sa.String())),
     [(ChangeKind.ALTER_TYPE, Hazard.SAFE)]),
    ("varchar widened", f"{BASE_TASKS}, title varchar(20));",
     lambda: tasks_model(sa.Column("title", sa.String(40))),
     [(ChangeKind.ALTER_TYPE, Hazard.SAFE)]),
    ("varchar to text", f"{BASE_TASKS}, title varchar(20));",
     lambda: tasks_model(sa.Column("title", sa.Text)),
     [(ChangeKind.ALTER_TYPE, Hazard.SAFE)]),
    ("varchar narrowed", f"{BASE_TASKS}, title varchar);",
     lambda: tasks_model(sa.Column("title", sa.String(20))),
     [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
    ("integer to bigint", f"{BASE_TASKS}, total integer DEFAULT 0);",
     lambda: tasks_model(sa.Column("total", sa.BigInteger, server_default="0")),
     [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
    ("text to integer", f"{BASE_TASKS}, total text DEFAULT '1');",
     lambda: tasks_model(sa.Column("total", sa.Integer, server_default="1")),
     [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
    ("numeric precision widened", f"{BASE_TASKS}, price numeric(8,2));",
     lambda: tasks_model(sa.Column("price", sa.Numeric(12, 2))),
     [(ChangeKind.ALTER_TYPE, Hazard.SAFE)]),
    ("numeric scale changed", f"{BASE_TASKS}, price numeric(8,2));",
     lambda: tasks_model(sa.Column("price", sa.Numeric(8, 3))),
     [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
    ("timestamp to timestamptz", f"{BASE_TASKS}, seen timestamp);",
     lambda: tasks_model(sa.Column("seen", sa.DateTime(timezone=True))),
     [(ChangeKind.ALTER_TYPE, Hazard.NEEDS_REVIEW)]),
    ("array element type", f"{BASE_TASKS}, tags integer[]);",
     lambda: tasks_model(sa.Column("tags", sa.ARRAY(sa.BigInteger))),
     [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
    ("set not null", f"{BASE_TASKS}, title text);",
     lambda: tasks_model(sa.Column("title", sa.Text, nullable=False)),
     [(ChangeKind.ALTER_NULLABLE, Hazard.NEEDS_REVIEW)]),
    ("drop not null", f"{BASE_TASKS}, title text NOT NULL);",
     lambda: tasks_model(sa.Column("title", sa.Text)),
     [(ChangeKind.ALTER_NULLABLE, Hazard.SAFE)]),
    ("jsonb default changed", f"""{BASE_TASKS}, meta jsonb DEFAULT '{{"a": 1}}');""",
     lambda: tasks_model(sa.Column("meta", JSONB, server_default=sa.text("""'{"a": 2}'::jsonb"""))),
     [(ChangeKind.ALTER_DEFAULT, Hazard.SAFE)]),
    ("default dropped", f"{BASE_TASKS}, flag boolean DEFAULT true);",
     lambda: tasks_model(sa.Column("flag", sa.Boolean)),
     [(ChangeKind.ALTER_DEFAULT, Hazard.SAFE)]),
    ("identity added", f"{BASE_TASKS}, seq bigint NOT NULL);",
     lambda: tasks_model(sa.Column("seq", sa.BigInteger, sa.Identity(always=True))),
     [(ChangeKind.ALTER_IDENTITY, Hazard.NEEDS_REVIEW)]),
    ("generated expression changed", f"{BASE_TASKS}, a integer, b integer GENERATED ALWAYS AS (a * 2) STORED);",
     lambda: tasks_model(sa.Column("a", sa.Integer), sa.Column("b", sa.Integer, sa.Computed("a * 3"))),
     [(ChangeKind.ALTER_GENERATED, Hazard.REWRITES)]),
    ("collation changed", f"{BASE_TASKS}, title text);",
     lambda: tasks_model(sa.Column("title", sa.Text(collation="C"))),
     [(ChangeKind.ALTER_COLLATION, Hazard.REWRITES)]),
    ("index added", f"{BASE_TASKS}, title text);",
     lambda: tasks_model(sa.Column("title", sa.Text, index=True)),
     [(ChangeKind.ADD_INDEX, Hazard.SAFE)]),
    ("index dropped", f"{BASE_TASKS}, title text); CREATE INDEX ix_title ON tasks (title);",
     lambda: tasks_model(sa.Column("title", sa.Text)),
     [(ChangeKind.DROP_INDEX, Hazard.DESTRUCTIVE)]),
    ("index renamed", f"{BASE_TASKS}, title text); CREATE INDEX old_name ON tasks (title);",
     lambda: tasks_model(sa.Column("title", sa.Text), sa.Index("ix_tasks_title", "title")),
     [(ChangeKind.RENAME_INDEX, Hazard.SAFE)]),
    ("partial predicate changed",
     f"{BASE_TASKS}, title text, done boolean); CREATE INDEX ix_open ON tasks (title) WHERE NOT done;",
     lambda: tasks_model(sa.Column("title", sa.Text), sa.Column("done", sa.Boolean),
                         sa.Index("ix_open", "title", postgresql_where=sa.text("done IS NULL"))),
     [(ChangeKind.ALTER_INDEX, Hazard.LOCKS)]),
    ("expression index changed",
     f"{BASE_TASKS}, title text); CREATE INDEX ix_lower ON tasks (lower(title));",
     lambda: tasks_model(sa.Column("title", sa.Text), sa.Index("ix_lower", sa.func.upper(sa.text("title")))),
     [(ChangeKind.ALTER_INDEX, Hazard.LOCKS)]),
    ("unique constraint added", f"{BASE_TASKS}, code text);",
     lambda: tasks_model(sa.Column("code", sa.Text, unique=True)),
     [(ChangeKind.ADD_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("unnamed check added", f"{BASE_TASKS}, total integer);",
     lambda: tasks_model(sa.Column("total", sa.Integer, sa.CheckConstraint("total >= 0"))),
     [(ChangeKind.ADD_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("check expression changed", f"{BASE_TASKS}, total integer CONSTRAINT ck_total CHECK (total > 0));",
     lambda: tasks_model(sa.Column("total", sa.Integer), sa.CheckConstraint("total >= 0", name="ck_total")),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("check constraint dropped", f"{BASE_TASKS}, total integer CHECK (total > 0));",
     lambda: tasks_model(sa.Column("total", sa.Integer)),
     [(ChangeKind.DROP_CONSTRAINT, Hazard.DESTRUCTIVE)]),
    ("foreign key added",
     "CREATE TABLE owners (id integer PRIMARY KEY); CREATE TABLE tasks (id integer PRIMARY KEY, owner integer);",
     lambda: _owners_model(ondelete=None),
     [(ChangeKind.ADD_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("foreign key action changed",
     "CREATE TABLE owners (id integer PRIMARY KEY); "
     "CREATE TABLE tasks (id integer PRIMARY KEY, owner integer REFERENCES owners);",
     lambda: _owners_model(ondelete="CASCADE"),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("primary key columns changed", "CREATE TABLE tasks (id integer PRIMARY KEY, code integer NOT NULL);",
     lambda: _two_key_model(),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("primary key renamed", "CREATE TABLE tasks (id integer CONSTRAINT old_pk PRIMARY KEY);",
     lambda: tasks_model(),
     [(ChangeKind.RENAME_CONSTRAINT, Hazard.SAFE)]),
    ("table comment removed", f"{BASE_TASKS}); COMMENT ON TABLE tasks IS 'x';",
     lambda: tasks_model(comment=None),
     [(ChangeKind.ALTER_COMMENT, Hazard.SAFE)]),
    ("column comment added", f"{BASE_TASKS}, title text);",
     lambda: tasks_model(sa.Column("title", sa.Text, comment="The title's text")),
     [(ChangeKind.ALTER_COMMENT, Hazard.SAFE)]),
    ("table added", "SELECT 1;",
     lambda: tasks_model(sa.Column("title", sa.Text, index=True)),
     [(ChangeKind.ADD_TABLE, Hazard.SAFE)]),
    ("table dropped", f"{BASE_TASKS}); CREATE TABLE extra (id integer);",
     lambda: tasks_model(),
     [(ChangeKind.DROP_TABLE, Hazard.DESTRUCTIVE)]),
    ("enum added", f"{BASE_TASKS});",
     lambda: tasks_model(sa.Column("status", sa.Enum(Status, name="task_status"))),
     [(ChangeKind.ADD_ENUM, Hazard.SAFE), (ChangeKind.ADD_COLUMN, Hazard.SAFE)]),
    # PostgreSQL renders these IN lists over varchar differently once its rendering is parsed
    # again, so the SQL must be built from the model's own text to converge.
    ("check with IN list over varchar added", f"{BASE_TASKS}, kind varchar(16));",
     lambda: tasks_model(sa.Column("kind", sa.String(16)),
                         sa.CheckConstraint("kind IN ('image', 'video')", name="tasks_kind_check")),
     [(ChangeKind.ADD_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("check with IN list over varchar changed",
     f"{BASE_TASKS}, kind varchar(16), CONSTRAINT tasks_kind_check CHECK (kind IN ('image')));",
     lambda: tasks_model(sa.Column("kind", sa.String(16)),
                         sa.CheckConstraint("kind IN ('image', 'video')", name="tasks_kind_check")),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("partial index with IN list over varchar added", f"{BASE_TASKS}, state varchar(16));",
     lambda: tasks_model(sa.Column("state", sa.String(16)),
                         sa.Index("tasks_open_idx", "id", postgresql_where=sa.text("state IN ('queued', 'running')"))),
     [(ChangeKind.ADD_INDEX, Hazard.SAFE)]),
    ("enum value added",
     f"CREATE TYPE task_status AS ENUM ('queued', 'done'); {BASE_TASKS}, status task_status);",
     lambda: tasks_model(sa.Column("status", sa.Enum(Status, name="task_status"))),
     [(ChangeKind.ADD_ENUM_VALUE, Hazard.SAFE)]),
]


def _owners_model(ondelete: str | None) -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("owners", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))
    sa.Table("tasks", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("owner", sa.Integer, sa.ForeignKey("owners.id", name="tasks_owner_fkey", ondelete=ondelete)))
    return metadata


def _two_key_model() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("tasks", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("code", sa.Integer, primary_key=True, autoincrement=False))
    return metadata


@pytest.mark.parametrize(("base", "model", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_change_found_and_applied(conn, schema, base, model, expected):
    create_base(conn, schema, base)
    metadata = model()

    result = compare(conn, metadata, schema)
    assert [(change.kind, change.hazard) for change in result.changes] == expected, result.changes
    assert result.not_comparable == ()

    apply_changes(conn, result.changes)
    again = compare(conn, metadata, schema)
    assert again.changes == ()


@pytest.mark.parametrize(("db_storage", "persisted"), [
    ("STORED", False), ("VIRTUAL", True), ("VIRTUAL", None), ("STORED", None), ("STORED", True),
])
def test_generated_storage_compared(conn, schema, server_version, db_storage, persisted):
    if server_version < 180000 and (db_storage == "VIRTUAL" or persisted is False):
        pytest.skip("VIRTUAL generated columns need PostgreSQL 18")
    create_base(conn, schema, f"{BASE_TASKS}, a integer, b integer GENERATED ALWAYS AS (a * 2) {db_storage});")
    metadata = tasks_model(sa.Column("a", sa.Integer), sa.Column("b", sa.Integer, sa.Computed("a * 2", persisted=persisted)))
    # Without persisted, PostgreSQL 18 makes the column VIRTUAL and earlier versions STORED.
    model_storage = {True: "STORED", False: "VIRTUAL"}.get(persisted) or (
        "VIRTUAL" if server_version >= 180000 else "STORED")

    result = compare(conn, metadata, schema)

    if model_storage == db_storage:
        assert result.changes == ()
        return
    (change,) = result.changes
    assert (change.kind, change.hazard) == (ChangeKind.ALTER_GENERATED, Hazard.REWRITES)
    assert (change.model_value, change.db_value) == (f"((a * 2)) {model_storage}", f"((a * 2)) {db_storage}")
    apply_changes(conn, result.changes)
    assert compare(conn, metadata, schema).changes == ()


def test_reverse_varchar_is_hazardous(conn, schema):
    create_base(conn, schema, f"{BASE_TASKS}, title varchar);")
    result = compare(conn, tasks_model(sa.Column("title", sa.String(20))), schema)
    assert len(result.changes) == 1
    assert result.changes[0].hazard.is_hazardous


# -- equal things written differently ----------------------------------------------------

EQUAL_CASES = [
    ("jsonb keys reordered", """meta jsonb DEFAULT '{"a": 2, "z": 1}'""",
     sa.Column("meta", JSONB, server_default=sa.text("""'{"z": 1, "a": 2}'::jsonb"""))),
    ("empty comment", "note text",
     sa.Column("note", sa.Text, comment="")),
    ("bounded varchar", "title varchar(20)",
     sa.Column("title", sa.String(20))),
    ("uuid default", "ref uuid DEFAULT gen_random_uuid()",
     sa.Column("ref", UUID, server_default=sa.text("gen_random_uuid()"))),
    ("now and current_timestamp", "seen timestamptz DEFAULT CURRENT_TIMESTAMP",
     sa.Column("seen", sa.DateTime(timezone=True), server_default=sa.func.now())),
    ("current_timestamp and now", "seen timestamptz DEFAULT now()",
     sa.Column("seen", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"))),
    ("numeric precision", "price numeric(10,2) DEFAULT 0",
     sa.Column("price", sa.Numeric(10, 2), server_default="0")),
    ("numeric literal", "price numeric(10,2) DEFAULT 0.00",
     sa.Column("price", sa.Numeric(10, 2), server_default=sa.text("0.00"))),
    ("boolean default", "flag boolean DEFAULT 't'",
     sa.Column("flag", sa.Boolean, server_default=sa.true())),
    ("boolean text default", "flag boolean DEFAULT false",
     sa.Column("flag", sa.Boolean, server_default="f")),
    ("text cast", "label text DEFAULT 'x'::text",
     sa.Column("label", sa.Text, server_default="x")),
    ("varchar cast", "label varchar(10) DEFAULT 'x'",
     sa.Column("label", sa.String(10), server_default=sa.text("'x'::text"))),
    ("integer array", "tags int4[]",
     sa.Column("tags", sa.ARRAY(sa.Integer))),
    ("text array default", "tags text[] DEFAULT '{}'",
     sa.Column("tags", sa.ARRAY(sa.Text), server_default=sa.text("'{}'::text[]"))),
    ("int alias", "total int8 DEFAULT 0",
     sa.Column("total", sa.BigInteger, server_default=sa.text("0"))),
    ("double precision", "ratio float8",
     sa.Column("ratio", sa.Float)),
    ("check written differently", "total integer CONSTRAINT ck_total CHECK (((total)>=0) AND total < 10)",
     sa.CheckConstraint("total >= 0 and (total < 10)", name="ck_total")),
    ("check cast", "label text CONSTRAINT ck_label CHECK (label IN ('a', 'b'))",
     sa.CheckConstraint("label = ANY (ARRAY['a', 'b'])", name="ck_label")),
    ("expression index", "title text); CREATE INDEX ix_lower ON tasks ((lower(title))",
     sa.Index("ix_lower", sa.func.lower(sa.text("title")))),
    ("partial index", "title text); CREATE INDEX ix_open ON tasks (title) WHERE (title IS NOT NULL",
     sa.Index("ix_open", sa.text("title"), postgresql_where=sa.text("title is not null"))),
    ("descending index", "title text); CREATE INDEX ix_desc ON tasks (title DESC NULLS FIRST",
     sa.Index("ix_desc", sa.text("title DESC"))),
]


@pytest.mark.parametrize(("column_ddl", "model_item"), [case[1:] for case in EQUAL_CASES],
                         ids=[case[0] for case in EQUAL_CASES])
def test_equal_forms_no_change(conn, schema, column_ddl, model_item):
    create_base(conn, schema, f"{BASE_TASKS}, {column_ddl});")
    items = [model_item]
    if not isinstance(model_item, sa.Column):
        items.insert(0, sa.Column(column_ddl.split()[0], _column_type(column_ddl)))

    result = compare(conn, tasks_model(*items), schema)
    assert result.changes == ()
    assert result.not_comparable == ()


def _column_type(column_ddl: str) -> sa.types.TypeEngine:
    return {"total": sa.Integer(), "label": sa.Text(), "title": sa.Text()}[column_ddl.split()[0]]


def test_uuid_default_stable(conn, schema):
    create_base(conn, schema, f"{BASE_TASKS}, ref uuid DEFAULT gen_random_uuid());")
    metadata = tasks_model(sa.Column("ref", UUID, server_default=sa.text("gen_random_uuid()")))
    for _ in range(20):
        assert compare(conn, metadata, schema).changes == ()


def test_jsonb_default_one_change(conn, schema):
    create_base(conn, schema, f"""{BASE_TASKS}, meta jsonb DEFAULT '{{"a": 2, "z": 1}}');""")
    result = compare(conn, tasks_model(sa.Column("meta", JSONB, server_default=sa.text("""'{"z": 1}'::jsonb"""))),
                     schema)
    assert [change.kind for change in result.changes] == [ChangeKind.ALTER_DEFAULT]
    assert result.changes[0].sql == (f'ALTER TABLE "{schema}"."tasks" ALTER COLUMN "meta" SET DEFAULT '
                                     """'{"z": 1}'::jsonb""",)


def test_comment_removed_sets_null(conn, schema):
    create_base(conn, schema, f"{BASE_TASKS}, note text); COMMENT ON COLUMN tasks.note IS 'x';")
    result = compare(conn, tasks_model(sa.Column("note", sa.Text)), schema)
    assert [change.sql for change in result.changes] == [(f'COMMENT ON COLUMN "{schema}"."tasks"."note" IS NULL',)]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(("model_item", "expected"), [
    (sa.Column("title", sa.Text), 2),
    (sa.Index("ix_lower", sa.func.lower(sa.text("title"))), 6),
], ids=["offline model", "rendered model"])
def test_round_trips_match_trace(conn, schema, model_item, expected):
    create_base(conn, schema, f"{BASE_TASKS}, title text);")
    items = [model_item] if isinstance(model_item, sa.Column) else [sa.Column("title", sa.Text), model_item]
    with count_round_trips(conn) as round_trips:
        result = compare(conn, tasks_model(*items), schema)
    assert result.round_trips == expected
    assert round_trips.count == expected


# -- third-party and TextLoom models ---------------------------------------------------------


def _third_party_metadata(name: str) -> sa.MetaData:
    if name == "optuna":
        from optuna.storages._rdb import models
        return models.BaseModel.metadata
    from celery.backends.database import models
    return models.ResultModelBase.metadata


@pytest.mark.parametrize("package", ["optuna", "celery"])
def test_third_party_models_round_trip(conn, db_url, schema, package):
    metadata = _third_party_metadata(package)

    # create_all through SQLAlchemy itself, as the package's users would.
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(connection.execution_options(schema_translate_map={None: schema}))
    engine.dispose()

    result = compare(conn, metadata, schema)
    assert result.changes == ()
    assert result.not_comparable == ()

    empty = f"{schema}_empty"
    planned = compare(conn, metadata, empty)
    try:
        added = {change.object for change in planned.changes if change.kind == ChangeKind.ADD_TABLE}
        assert added == set(metadata.tables)
        apply_changes(conn, planned.changes)
        assert compare(conn, metadata, empty).changes == ()
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(empty)))


@pytest.mark.skipif(not (PROJECT_DIR / "sql" / "0001_create_core_tables.sql").exists(),
                    reason="sql/0001_create_core_tables.sql is not there yet")
def test_textloom_sql_matches_models(conn, settings):
    """sql/ applied by the runner to an empty schema builds exactly what the models describe."""
    import models

    from db.history import BOOKKEEPING_TABLES
    from db.migrations import run_migrations

    run_migrations(settings)
    result = compare(conn, models.metadata, settings.schema, source_schema=models.SCHEMA,
                     exclude_tables=BOOKKEEPING_TABLES)
    assert result.changes == ()
    assert result.not_comparable == ()


def test_scratch_schema_left_behind_none(conn, schema):
    create_base(conn, schema, f"{BASE_TASKS});")
    compare(conn, tasks_model(sa.Column("title", sa.Text)), schema)
    left = conn.execute("SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname LIKE 'textloom_scratch_%'")
    assert left.fetchone()[0] == 0

