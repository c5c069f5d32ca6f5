"""Turning SQLAlchemy metadata into snapshots, offline and rendered by the server."""

from __future__ import annotations

import enum

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from db.model_schema import canonical_type, default_name, quote_ident, render_ddl, snapshot_from_metadata

TYPE_CASES = [
    (sa.String(), "character varying"),
    (sa.String(20), "character varying(20)"),
    (sa.Unicode(5), "character varying(5)"),
    (sa.Text(), "text"),
    (sa.Integer(), "integer"),
    (sa.BigInteger(), "bigint"),
    (sa.SmallInteger(), "smallint"),
    (sa.Numeric(10, 2), "numeric(10,2)"),
    (sa.Numeric(), "numeric"),
    (sa.Float(), "double precision"),
    (sa.Float(24), "real"),
    (sa.Boolean(), "boolean"),
    (sa.DateTime(), "timestamp without time zone"),
    (sa.DateTime(timezone=True), "timestamp with time zone"),
    (postgresql.TIMESTAMP(precision=3), "timestamp(3) without time zone"),
    (sa.Time(), "time without time zone"),
    (sa.Date(), "date"),
    (sa.LargeBinary(), "bytea"),
    (sa.Uuid(), "uuid"),
    (postgresql.JSONB(), "jsonb"),
    (sa.JSON(), "json"),
    (sa.CHAR(), "character(1)"),
    (sa.ARRAY(sa.Integer), "integer[]"),
    (postgresql.ARRAY(sa.Text, dimensions=2), "text[]"),
    (sa.Interval(), "interval"),
]


@pytest.mark.parametrize(("sa_type", "expected"), TYPE_CASES, ids=[case[1] for case in TYPE_CASES])
def test_canonical_type_offline(sa_type, expected):
    assert canonical_type(sa_type, {None}, "") == (expected, None)


def test_collation_split():
    assert canonical_type(sa.String(10, collation="C"), {None}, "") == ("character varying(10)", '"C"')


class Mood(enum.Enum):
    happy = 1


def test_enum_type_qualified():
    assert canonical_type(sa.Enum(Mood, name="mood"), {None}, "app.") == ("app.mood", None)


@pytest.mark.parametrize(("table", "columns", "label", "expected"), [
    ("tasks", ["owner"], "fkey", "tasks_owner_fkey"),
    ("tasks", [], "pkey", "tasks_pkey"),
    ("t" * 40, ["c" * 40], "key", "t" * 29 + "_" + "c" * 29 + "_key"),
])
def test_default_names(table, columns, label, expected):
    assert default_name(table, columns, label) == expected


@pytest.mark.parametrize(("name", "expected"), [("title", "title"), ("Title", '"Title"'), ("select", '"select"'),
                                               ("name", "name"), ("a b", '"a b"')])
def test_quote_ident_like_server(name, expected):
    assert quote_ident(name) == expected


def naming_model() -> sa.MetaData:
    metadata = sa.MetaData(naming_convention={
        "pk": "pk_%(table_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s", "ix": "ix_%(column_0_label)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s"})
    sa.Table("owners", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("tasks", metadata,
             sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("code", sa.String(10), unique=True),
             sa.Column("owner", sa.ForeignKey("owners.id")),
             sa.Column("total", sa.Integer, sa.CheckConstraint("total > 0", name="positive"), index=True))
    return metadata


def test_naming_convention_offline():
    tasks = snapshot_from_metadata(naming_model(), "app").tables["tasks"]
    assert tasks.primary_key.name == "pk_tasks"
    assert [unique.name for unique in tasks.unique_constraints] == ["uq_tasks_code"]
    assert [fk.name for fk in tasks.foreign_keys] == ["fk_tasks_owner"]
    assert [check.name for check in tasks.check_constraints] == ["ck_tasks_positive"]
    assert [index.name for index in tasks.indexes] == ["ix_tasks_total"]


def test_offline_matches_rendered(conn, schema):
    offline = snapshot_from_metadata(naming_model(), schema, type_prefix="")
    rendered = snapshot_from_metadata(naming_model(), schema, conn=conn, type_prefix="")
    for name in ("owners", "tasks"):
        assert offline.tables[name].columns == rendered.tables[name].columns
        assert offline.tables[name].indexes == rendered.tables[name].indexes
    assert rendered.tables["tasks"].check_constraints[0].expression == "(total > 0)"
    assert rendered.not_comparable == ()


def test_unnamed_offline_defaults():
    metadata = sa.MetaData()
    sa.Table("jobs", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("label", sa.Text, server_default="x"),
             sa.Column("done", sa.Boolean, server_default=sa.false()),
             sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now()))
    jobs = snapshot_from_metadata(metadata, "app", type_prefix="").tables["jobs"]
    assert [column.default for column in jobs.columns] == [
        "nextval('jobs_id_seq'::regclass)", "'x'::text", "false", "now()"]
    assert jobs.primary_key.name == "jobs_pkey"


def test_expression_not_comparable_offline():
    metadata = sa.MetaData()
    table = sa.Table("jobs", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.Text))
    sa.Index("ix_lower", sa.func.lower(table.c.label))
    snapshot = snapshot_from_metadata(metadata, "app")
    assert [note.object for note in snapshot.not_comparable] == ["jobs.ix_lower"]


def test_source_schema_mapped():
    metadata = sa.MetaData(schema="core")
    sa.Table("jobs", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("other", metadata, sa.Column("id", sa.Integer, primary_key=True), schema="elsewhere")
    snapshot = snapshot_from_metadata(metadata, "t_1", source_schema="core")
    assert set(snapshot.tables) == {"jobs"}


def test_render_ddl_without_foreign_keys():
    statements = render_ddl(list(naming_model().sorted_tables), {None: "scratch"})
    assert not any("FOREIGN KEY" in statement or "REFERENCES" in statement for statement in statements)
    assert statements[0].startswith("CREATE TABLE scratch.owners")


def test_unrenderable_stays_not_comparable(conn, schema):
    metadata = sa.MetaData()
    sa.Table("jobs", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("label", sa.Text, sa.CheckConstraint("no_such_function(label)", name="ck_label")))
    snapshot = snapshot_from_metadata(metadata, schema, conn=conn)
    assert "jobs.ck_label" in {note.object for note in snapshot.not_comparable}
    assert conn.info.transaction_status == 0  # idle: the failed render was rolled back
