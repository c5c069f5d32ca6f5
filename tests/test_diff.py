"""The comparison logic on snapshots alone: no server involved."""

from __future__ import annotations

from dataclasses import replace

import pytest
from psycopg import sql

from db.diff import ChangeKind, Hazard, classify_type_change, default_key, diff_snapshots, quote, render_script
from db.snapshot import (
    CheckConstraint,
    Column,
    Enum,
    ForeignKey,
    Index,
    IndexKey,
    NotComparable,
    PrimaryKey,
    SchemaSnapshot,
    Table,
    UniqueConstraint,
)

ID = Column("id", "uuid", nullable=False, default="gen_random_uuid()")


def snapshot(*columns: Column, enums: tuple[Enum, ...] = (), **table_fields) -> SchemaSnapshot:
    table = Table("tasks", (ID, *columns), primary_key=PrimaryKey("tasks_pkey", ("id",)), **table_fields)
    return SchemaSnapshot("app", {"tasks": table}, {enum.name: enum for enum in enums})


def kinds(model: SchemaSnapshot, db: SchemaSnapshot) -> list[tuple[str, str]]:
    return [(change.kind, change.hazard) for change in diff_snapshots(model, db)]


# (case id, model column, db column, expected changes)
COLUMN_CASES = [
    ("jsonb keys reordered",
     Column("meta", "jsonb", default="""'{"z": 1, "a": 2}'::jsonb"""),
     Column("meta", "jsonb", default="""'{"a": 2, "z": 1}'::jsonb"""), []),
    ("jsonb value differs",
     Column("meta", "jsonb", default="""'{"a": 3}'::jsonb"""),
     Column("meta", "jsonb", default="""'{"a": 2}'::jsonb"""), [(ChangeKind.ALTER_DEFAULT, Hazard.SAFE)]),
    ("empty comment", Column("note", "text", comment=""), Column("note", "text"), []),
    ("comment removed", Column("note", "text"), Column("note", "text", comment="x"),
     [(ChangeKind.ALTER_COMMENT, Hazard.SAFE)]),
    ("varchar unbounded", Column("t", "character varying"), Column("t", "character varying(20)"),
     [(ChangeKind.ALTER_TYPE, Hazard.SAFE)]),
    ("varchar bounded", Column("t", "character varying(20)"), Column("t", "character varying"),
     [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
    ("varchar same", Column("t", "character varying(20)"), Column("t", "character varying(20)"), []),
    ("uuid default", Column("r", "uuid", default="gen_random_uuid()"),
     Column("r", "uuid", default="gen_random_uuid()"), []),
    ("now spellings", Column("s", "timestamp with time zone", default="now()"),
     Column("s", "timestamp with time zone", default="CURRENT_TIMESTAMP"), []),
    ("number casts", Column("p", "numeric(10,2)", default="'0'::numeric"),
     Column("p", "numeric(10,2)", default="0"), []),
    ("negative number", Column("p", "integer", default="'-1'::integer"),
     Column("p", "integer", default="(-1)"), []),
    ("number differs", Column("p", "integer", default="1"), Column("p", "integer", default="2"),
     [(ChangeKind.ALTER_DEFAULT, Hazard.SAFE)]),
    ("boolean spellings", Column("f", "boolean", default="'t'::boolean"), Column("f", "boolean", default="true"),
     []),
    ("text casts", Column("l", "text", default="'x'::character varying"), Column("l", "text", default="'x'::text"),
     []),
    ("quote in literal", Column("l", "text", default="'it''s'::text"), Column("l", "text", default="'it''s'::text"),
     []),
    ("default added", Column("l", "text", default="'x'::text"), Column("l", "text"),
     [(ChangeKind.ALTER_DEFAULT, Hazard.SAFE)]),
    ("nullable to not null", Column("l", "text", nullable=False), Column("l", "text"),
     [(ChangeKind.ALTER_NULLABLE, Hazard.NEEDS_REVIEW)]),
    ("identity kind", Column("n", "bigint", nullable=False, identity="always"),
     Column("n", "bigint", nullable=False, identity="by default"), [(ChangeKind.ALTER_IDENTITY, Hazard.SAFE)]),
    ("timestamp zone", Column("s", "timestamp with time zone"), Column("s", "timestamp without time zone"),
     [(ChangeKind.ALTER_TYPE, Hazard.NEEDS_REVIEW)]),
    ("array type", Column("a", "integer[]"), Column("a", "integer"), [(ChangeKind.ALTER_TYPE, Hazard.REWRITES)]),
]


@pytest.mark.parametrize(("model_column", "db_column", "expected"), [case[1:] for case in COLUMN_CASES],
                         ids=[case[0] for case in COLUMN_CASES])
def test_column_cases(model_column, db_column, expected):
    assert kinds(snapshot(model_column), snapshot(db_column)) == expected


def test_uuid_default_repeatable():
    model = snapshot(Column("r", "uuid", default="gen_random_uuid()"))
    results = {tuple(diff_snapshots(model, snapshot(Column("r", "uuid", default="gen_random_uuid()"))))
               for _ in range(20)}
    assert results == {()}


def test_comment_removed_sql():
    changes = diff_snapshots(snapshot(Column("note", "text")), snapshot(Column("note", "text", comment="x")))
    assert [change.sql for change in changes] == [('COMMENT ON COLUMN "app"."tasks"."note" IS NULL',)]


def test_new_column_volatile_default():
    changes = diff_snapshots(snapshot(Column("r", "uuid", nullable=False, default="gen_random_uuid()")), snapshot())
    assert [(change.kind, change.hazard) for change in changes] == [(ChangeKind.ADD_COLUMN, Hazard.REWRITES)]


TYPE_CASES = [
    ("character varying(20)", "character varying", Hazard.SAFE, False),
    ("character varying(20)", "character varying(30)", Hazard.SAFE, False),
    ("character varying(20)", "text", Hazard.SAFE, False),
    ("text", "character varying", Hazard.SAFE, False),
    ("character varying(30)", "character varying(20)", Hazard.REWRITES, False),
    ("text", "character varying(20)", Hazard.REWRITES, False),
    ("numeric(8,2)", "numeric(10,2)", Hazard.SAFE, False),
    ("numeric(8,2)", "numeric", Hazard.SAFE, False),
    ("numeric(8,2)", "numeric(8,3)", Hazard.REWRITES, False),
    ("integer", "bigint", Hazard.REWRITES, False),
    ("text", "integer", Hazard.REWRITES, True),
    ("timestamp without time zone", "timestamp with time zone", Hazard.NEEDS_REVIEW, False),
    ("integer", "integer[]", Hazard.REWRITES, True),
]


@pytest.mark.parametrize(("db_type", "model_type", "hazard", "needs_cast"), TYPE_CASES)
def test_type_change_hazard(db_type, model_type, hazard, needs_cast):
    assert classify_type_change(db_type, model_type) == (hazard, needs_cast)


def test_default_key_bad_json():
    assert default_key("'{not json'::jsonb") == ("expression", "'{not json'::jsonb")


# -- constraints and indexes -----------------------------------------------------------

INDEX = Index("ix_tasks_title", (IndexKey("title"),))
CHECK = CheckConstraint("tasks_n_check", "(n > 0)")
UNIQUE = UniqueConstraint("tasks_title_key", ("title",))
FK = ForeignKey("tasks_owner_fkey", ("owner",), "app", "owners", ("id",))

TABLE_CASES = [
    ("index only in model", dict(indexes=(INDEX,)), {}, [(ChangeKind.ADD_INDEX, Hazard.SAFE)]),
    ("index only in db", {}, dict(indexes=(INDEX,)), [(ChangeKind.DROP_INDEX, Hazard.DESTRUCTIVE)]),
    ("index renamed", dict(indexes=(INDEX,)), dict(indexes=(replace(INDEX, name="old"),)),
     [(ChangeKind.RENAME_INDEX, Hazard.SAFE)]),
    ("partial predicate", dict(indexes=(replace(INDEX, predicate="(n > 0)"),)),
     dict(indexes=(replace(INDEX, predicate="(n > 1)"),)), [(ChangeKind.ALTER_INDEX, Hazard.LOCKS)]),
    ("index made unique", dict(indexes=(replace(INDEX, unique=True),)), dict(indexes=(INDEX,)),
     [(ChangeKind.ALTER_INDEX, Hazard.NEEDS_REVIEW)]),
    ("descending key", dict(indexes=(replace(INDEX, keys=(IndexKey("title", descending=True),)),)),
     dict(indexes=(INDEX,)), [(ChangeKind.ALTER_INDEX, Hazard.LOCKS)]),
    ("check only in model", dict(check_constraints=(CHECK,)), {}, [(ChangeKind.ADD_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("check only in db", {}, dict(check_constraints=(CHECK,)), [(ChangeKind.DROP_CONSTRAINT, Hazard.DESTRUCTIVE)]),
    ("check changed", dict(check_constraints=(CHECK,)), dict(check_constraints=(replace(CHECK, expression="(n > 1)"),)),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("unnamed unique renamed", dict(unique_constraints=(UNIQUE,)),
     dict(unique_constraints=(replace(UNIQUE, name="uq_title"),)), [(ChangeKind.RENAME_CONSTRAINT, Hazard.SAFE)]),
    ("nulls not distinct", dict(unique_constraints=(replace(UNIQUE, nulls_not_distinct=True),)),
     dict(unique_constraints=(UNIQUE,)), [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("fk action", dict(foreign_keys=(replace(FK, on_delete="CASCADE"),)), dict(foreign_keys=(FK,)),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("fk deferrable", dict(foreign_keys=(replace(FK, deferrable=True),)), dict(foreign_keys=(FK,)),
     [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]),
    ("table comment empty", dict(comment=""), {}, []),
]


@pytest.mark.parametrize(("model_fields", "db_fields", "expected"), [case[1:] for case in TABLE_CASES],
                         ids=[case[0] for case in TABLE_CASES])
def test_table_cases(model_fields, db_fields, expected):
    columns = (Column("title", "text"), Column("n", "integer"), Column("owner", "uuid"))
    assert kinds(snapshot(*columns, **model_fields), snapshot(*columns, **db_fields)) == expected


def test_primary_key_columns_changed():
    model = snapshot(Column("code", "integer", nullable=False))
    db_table = replace(model.tables["tasks"], primary_key=PrimaryKey("tasks_pkey", ("code",)))
    db = SchemaSnapshot("app", {"tasks": db_table})
    assert kinds(model, db) == [(ChangeKind.ALTER_CONSTRAINT, Hazard.NEEDS_REVIEW)]


def test_primary_key_missing():
    model = snapshot()
    db = SchemaSnapshot("app", {"tasks": replace(model.tables["tasks"], primary_key=None)})
    changes = diff_snapshots(model, db)
    assert [(change.kind, change.is_transactional) for change in changes] == [(ChangeKind.ADD_CONSTRAINT, False)]


# -- enums, tables and not comparable objects ------------------------------------------

ENUM_CASES = [
    ("value appended", ("a", "b", "c"), ("a", "b"), [(ChangeKind.ADD_ENUM_VALUE, Hazard.SAFE)]),
    ("value inserted first", ("z", "a"), ("a",), [(ChangeKind.ADD_ENUM_VALUE, Hazard.SAFE)]),
    ("value removed", ("a",), ("a", "b"), [(ChangeKind.ALTER_ENUM, Hazard.NEEDS_REVIEW)]),
    ("values reordered", ("b", "a"), ("a", "b"), [(ChangeKind.ALTER_ENUM, Hazard.NEEDS_REVIEW)]),
    ("same values", ("a", "b"), ("a", "b"), []),
]


@pytest.mark.parametrize(("model_values", "db_values", "expected"), [case[1:] for case in ENUM_CASES],
                         ids=[case[0] for case in ENUM_CASES])
def test_enum_cases(model_values, db_values, expected):
    model = snapshot(enums=(Enum("status", model_values),))
    db = snapshot(enums=(Enum("status", db_values),))
    assert kinds(model, db) == expected


def test_enum_value_position_sql():
    model = snapshot(enums=(Enum("status", ("new", "a", "mid", "b")),))
    db = snapshot(enums=(Enum("status", ("a", "b")),))
    (change,) = diff_snapshots(model, db)
    assert change.sql == ("""ALTER TYPE "app"."status" ADD VALUE 'new' BEFORE 'a'""",
                          """ALTER TYPE "app"."status" ADD VALUE 'mid' AFTER 'a'""")
    assert not change.is_transactional


def test_missing_schema_created_first():
    model = snapshot(enums=(Enum("status", ("a",)),))
    db = SchemaSnapshot("app", exists=False)
    assert [change.kind for change in diff_snapshots(model, db)] == [
        ChangeKind.ADD_SCHEMA, ChangeKind.ADD_ENUM, ChangeKind.ADD_TABLE]


def test_not_comparable_never_a_change():
    model = snapshot(Column("total", "integer", default="weird()"))
    model = replace(model, not_comparable=(NotComparable("tasks.total", "cannot render"),))
    changes = diff_snapshots(model, snapshot(Column("total", "integer")))
    assert [(change.kind, change.sql) for change in changes] == [(ChangeKind.NOT_COMPARABLE, ())]


def test_unrendered_index_not_dropped():
    model = snapshot(Column("title", "text"), indexes=(Index("ix_model", ()),))
    model = replace(model, not_comparable=(NotComparable("tasks.ix_model", "expression"),))
    db = snapshot(Column("title", "text"), indexes=(INDEX,))
    assert {change.kind for change in diff_snapshots(model, db)} == {ChangeKind.NOT_COMPARABLE}


def test_drop_table_commented_out():
    db = SchemaSnapshot("app", {"old": Table("old", (ID,))})
    script = render_script(diff_snapshots(SchemaSnapshot("app"), db))
    assert '-- DROP TABLE "app"."old";' in script
    assert "\nDROP TABLE" not in script


def test_script_notes_no_transaction():
    model = snapshot(Column("title", "text"), indexes=(INDEX,))
    script = render_script(diff_snapshots(model, snapshot(Column("title", "text"))))
    assert "autocommit" in script
    assert 'CREATE INDEX CONCURRENTLY "ix_tasks_title" ON "app"."tasks" USING btree (title);' in script


def test_serial_column_created_as_serial():
    table = Table("jobs", (Column("id", "integer", nullable=False, default="nextval('jobs_id_seq'::regclass)"),))
    (change,) = diff_snapshots(SchemaSnapshot("app", {"jobs": table}), SchemaSnapshot("app"))
    assert '"id" serial NOT NULL' in change.sql[0]


@pytest.mark.parametrize(("parts", "expected"), [
    (("tasks",), '"tasks"'),
    (("app", "Tasks"), '"app"."Tasks"'),
    (("we\"ird",), '"we""ird"'),
])
def test_quote_identifiers(parts, expected):
    assert quote(*parts) == expected
    assert quote(*parts) == sql.Identifier(*parts).as_string(None)
