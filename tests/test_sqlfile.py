"""Tests for db/sqlfile.py: names, encodings, checksums, splitting, COPY data and guards.

The splitting cases are applied to the real test server, so a statement cut in the
wrong place fails there and not only in a comparison of strings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db import sqlfile
from db.errors import MigrationError
from db.sqlfile import (
    CHECKSUM_VERSION,
    NO_TRANSACTION_DIRECTIVE,
    Statement,
    checksum,
    discover,
    parse_name,
    read_sql_file,
    split_sql,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def apply(conn: psycopg.Connection, schema: str, statements: Sequence[Statement]) -> None:
    """Create ``schema`` and run ``statements`` in it inside one transaction."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for statement in statements:
            if statement.copy_data is None:
                cur.execute(statement.text)
            else:
                with cur.copy(statement.text) as copy:
                    copy.write(statement.copy_data)


def query(conn: psycopg.Connection, schema: str, template: str) -> list[tuple]:
    """Run ``template`` with ``{}`` replaced by the quoted schema name."""
    return conn.execute(sql.SQL(template).format(sql.Identifier(schema))).fetchall()


def error_of(text: str, **kwargs: object) -> MigrationError:
    with pytest.raises(MigrationError) as caught:
        split_sql(text, source="0007_case.sql", **kwargs)
    return caught.value


# Splitting cases applied to the server ----------------------------------------------------


ESCAPE_AND_TIGHT_DOLLAR = """\
CREATE TABLE quote_check (label text CHECK (label <> E'it\\'s'));
CREATE FUNCTION semicolon_text() RETURNS text AS $$ BEGIN RETURN E'x;y'; END; $$LANGUAGE plpgsql;
"""


def test_escape_string_tight_dollar(conn, schema):
    statements = split_sql(ESCAPE_AND_TIGHT_DOLLAR)

    assert [s.tag for s in statements] == ["CreateStmt", "CreateFunctionStmt"]
    assert [s.line for s in statements] == [1, 2]
    assert statements[1].text.endswith("$$LANGUAGE plpgsql")
    apply(conn, schema, statements)
    assert query(conn, schema, "SELECT {}.semicolon_text()") == [("x;y",)]
    with pytest.raises(psycopg.errors.CheckViolation):
        query(conn, schema, "INSERT INTO {}.quote_check VALUES (E'it\\'s') RETURNING 1")


BEGIN_ATOMIC_BODY = """\
CREATE TABLE job (id int, done boolean);
CREATE FUNCTION atomic_marker() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;
CREATE FUNCTION job_state() RETURNS text LANGUAGE sql
BEGIN ATOMIC
    SELECT count(*) AS pending FROM job WHERE NOT done;
    SELECT CASE WHEN count(*) = 0 THEN 'idle' ELSE 'busy' END FROM job;
END;
SELECT 1;
"""


def test_begin_atomic_body(conn, schema):
    statements = split_sql(BEGIN_ATOMIC_BODY)

    assert [s.tag for s in statements] == ["CreateStmt", "CreateFunctionStmt", "CreateFunctionStmt", "SelectStmt"]
    assert [s.line for s in statements] == [1, 2, 3, 8]
    assert statements[2].text.endswith("END")
    apply(conn, schema, statements)
    assert query(conn, schema, "SELECT {}.job_state()") == [("idle",)]
    assert query(conn, schema, "SELECT {}.atomic_marker()") == [(1,)]


def test_begin_atomic_three_statements():
    text = BEGIN_ATOMIC_BODY.split("\n", 1)[1]

    statements = split_sql(text)

    assert len(statements) == 3
    assert statements[2].text == "SELECT 1"


COMMENTS_AND_LITERALS = """\
-- a comment; with a 'quote and "double quote
/* a /* b; */ don't; */
CREATE TABLE note (
    label text DEFAULT 'a;b', -- trailing; comment
    body text
);
INSERT INTO note (body) VALUES ('it''s; ok');
COMMENT ON TABLE note IS 'x;y';
"""


def test_comments_and_literals(conn, schema):
    statements = split_sql(COMMENTS_AND_LITERALS)

    assert [s.tag for s in statements] == ["CreateStmt", "InsertStmt", "CommentStmt"]
    assert [s.line for s in statements] == [3, 7, 8]
    apply(conn, schema, statements)
    assert query(conn, schema, "SELECT label, body FROM {}.note") == [("a;b", "it's; ok")]


COPY_CSV = (
    "-- pg_dump style data\n"
    "CREATE TABLE copy_target (id int, label text);\n"
    "COPY copy_target (id, label) FROM stdin WITH (FORMAT csv);\n"
    "1,plain\n"
    '2,"semi;colon"\n'
    '3,"it\'s ""quoted"""\n'
    "4,$$ /* -- not SQL\n"
    "\\.\n"
    "CREATE INDEX copy_target_label ON copy_target (label);\n"
)


def test_copy_csv_applies(conn, schema):
    statements = split_sql(COPY_CSV)

    assert [s.tag for s in statements] == ["CreateStmt", "CopyStmt", "IndexStmt"]
    assert [s.line for s in statements] == [2, 3, 9]
    assert statements[1].text == "COPY copy_target (id, label) FROM stdin WITH (FORMAT csv)"
    assert statements[1].copy_data == '1,plain\n2,"semi;colon"\n3,"it\'s ""quoted"""\n4,$$ /* -- not SQL\n'
    assert statements[2].copy_data is None
    apply(conn, schema, statements)

    rows = query(conn, schema, "SELECT id, label FROM {}.copy_target ORDER BY id")
    assert rows == [(1, "plain"), (2, "semi;colon"), (3, 'it\'s "quoted"'), (4, "$$ /* -- not SQL")]
    indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", [schema]).fetchall()
    assert indexes == [("copy_target_label",)]


COPY_TEXT = (
    "CREATE TABLE copy_text (id int, label text, note text);\n"
    "COPY copy_text (id, label, note) FROM stdin;\n"
    "1\tsemi;colon\t\\N\n"
    "2\tit's\ta\\ttab\n"
    "3\t\\\\.\tbackslash dot\n"
    "\\.\n"
    "-- 中文注释：数据之后\n"
    "SELECT 1;\n"
)


def test_copy_text_format(conn, schema):
    statements = split_sql(COPY_TEXT)

    assert [s.tag for s in statements] == ["CreateStmt", "CopyStmt", "SelectStmt"]
    assert [s.line for s in statements] == [1, 2, 8]
    assert statements[1].copy_data == "1\tsemi;colon\t\\N\n2\tit's\ta\\ttab\n3\t\\\\.\tbackslash dot\n"
    apply(conn, schema, statements)
    rows = query(conn, schema, "SELECT id, label, note FROM {}.copy_text ORDER BY id")
    assert rows == [(1, "semi;colon", None), (2, "it's", "a\ttab"), (3, "\\.", "backslash dot")]


def test_copy_blocks_in_a_row():
    block = "COPY t FROM stdin;\n{n}\t'\n\\.\n"
    text = "".join(block.format(n=n) for n in range(3)) + "SELECT 1;\n"

    statements = split_sql(text)

    assert [s.line for s in statements] == [1, 4, 7, 10]
    assert [s.copy_data for s in statements] == ["0\t'\n", "1\t'\n", "2\t'\n", None]


MULTILINE_COPY = (
    "CREATE TABLE t (a text);\n"
    "COPY t (a)\n"
    "    FROM stdin\n"
    "    WITH (FORMAT csv, HEADER true);\n"
    "a\n"
    '"x;\n'
    'y"\n'
    "\\.\n"
    "SELECT 1;\n"
)


def test_copy_statement_on_lines(conn, schema):
    statements = split_sql(MULTILINE_COPY)

    assert [s.line for s in statements] == [1, 2, 9]
    assert statements[1].copy_data == 'a\n"x;\ny"\n'
    apply(conn, schema, statements)
    assert query(conn, schema, "SELECT a FROM {}.t") == [("x;\ny",)]


@pytest.mark.parametrize("chunk_size", [1, 5, 40])
def test_copy_scan_chunk_size(monkeypatch, chunk_size):
    texts = [MULTILINE_COPY, COPY_CSV, COPY_TEXT, MULTIBYTE_LINES, BEGIN_ATOMIC_BODY]
    expected = [split_sql(text) for text in texts]

    monkeypatch.setattr(sqlfile, "_FIRST_CHUNK_SIZE", chunk_size)

    assert [split_sql(text) for text in texts] == expected


def test_copy_empty_data():
    statements = split_sql("COPY t FROM stdin;\n\\.\nSELECT 1;")

    assert statements[0].copy_data == ""
    assert statements[1].line == 3


@pytest.mark.parametrize("text, line", [
    ("SELECT 1;\nCOPY t FROM stdin;\n1\tx\n", 2),
    ("SELECT 1;\n\nCOPY t (a)\n  FROM stdin;", 3),
    ("COPY t FROM stdin;\n1\n\\. \n", 1),
], ids=["no-terminator", "at-end-of-file", "terminator-with-space"])
def test_copy_without_terminator(text, line):
    error = error_of(text)

    assert f"line {line}" in error.message
    assert "\\." in error.message
    assert "0007_case.sql" in error.message


def test_copy_to_stdout_rejected():
    error = error_of("SELECT 1;\nCOPY (SELECT 1) TO STDOUT;")

    assert "line 2" in error.message
    assert "COPY TO STDOUT" in error.message


def test_copy_from_server_file_is_sql():
    statements = split_sql("COPY t FROM '/tmp/t.csv';\nSELECT 1;")

    assert [s.copy_data for s in statements] == [None, None]


# Line numbers ---------------------------------------------------------------------------------


MULTIBYTE_LINES = """\
-- 迁移：创建核心表；注意 "引号" 和 'quotes'
/* 块注释；中文 😀 */
CREATE TABLE 表一 (名字 text DEFAULT '默认；值');

-- 第二条语句
INSERT INTO 表一 VALUES ('中文；😀');
    SELECT '多行
字符串' AS 值;
"""


def test_lines_after_multibyte_comments():
    statements = split_sql(MULTIBYTE_LINES)

    assert [s.line for s in statements] == [3, 6, 7]
    assert statements[0].text == "CREATE TABLE 表一 (名字 text DEFAULT '默认；值')"
    assert statements[1].text == "INSERT INTO 表一 VALUES ('中文；😀')"
    assert statements[2].text == "SELECT '多行\n字符串' AS 值"


def test_multibyte_statements_apply(conn, schema):
    apply(conn, schema, split_sql(MULTIBYTE_LINES))

    assert query(conn, schema, "SELECT 名字 FROM {}.表一") == [("中文；😀",)]


@pytest.mark.parametrize("text", ["", "\n\n", "-- only a comment\n", "/* 注释 */\n-- x;\n", ";\n;"],
                         ids=["empty", "blank", "line-comment", "block-comment", "semicolons"])
def test_no_statements(text):
    assert split_sql(text) == ()


@pytest.mark.parametrize("text, expected", [
    ("SELECT 1 -- no semicolon\n-- 结束\n", "SELECT 1"),
    ("SELECT 1 /* a */ + /* b */ 2 /* c */;", "SELECT 1 /* a */ + /* b */ 2"),
    ("/* 前 */ SELECT 1\n\n", "SELECT 1"),
], ids=["trailing-line-comments", "inner-comments-kept", "leading-block-comment"])
def test_statement_text_trimmed(text, expected):
    (statement,) = split_sql(text)

    assert statement.text == expected


def test_statement_fields():
    statements = split_sql("SELECT 1;\n\n  CREATE TABLE t (a int)  ;  -- done\nSELECT 2")

    assert statements == (
        Statement(index=1, line=1, text="SELECT 1", tag="SelectStmt", needs_no_transaction=False, copy_data=None),
        Statement(index=2, line=3, text="CREATE TABLE t (a int)", tag="CreateStmt",
                  needs_no_transaction=False, copy_data=None),
        Statement(index=3, line=4, text="SELECT 2", tag="SelectStmt", needs_no_transaction=False, copy_data=None),
    )


# Parse errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, line, column, near", [
    ("SELECT 1;\nSELEC 2;", 2, 1, "SELEC"),
    ("-- 中文注释，很长的一行\nCREATE TABLE 表 (a int,, b int);", 2, 23, ","),
    ("SELECT 1;\nSELECT 'unterminated", 2, 8, "unterminated quoted string"),
    ("CREATE TABLE ${schema}.t (a int) oops;", 1, 34, "oops"),
], ids=["keyword", "after-chinese", "unterminated-string", "after-placeholder"])
def test_parse_error_position(text, line, column, near):
    error = error_of(text, placeholders={"schema": '"a_much_longer_schema_name"'})

    assert f"line {line}, column {column}" in error.message
    assert near in error.message
    assert "0007_case.sql" in error.message
    assert error.hint


# Non-transactional statements -------------------------------------------------------------------


NO_TRANSACTION_CASES = [
    ("CREATE INDEX CONCURRENTLY i ON t (a)", "CREATE INDEX CONCURRENTLY"),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "CREATE INDEX CONCURRENTLY"),
    ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
    ("REINDEX INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
    ("REINDEX (VERBOSE) TABLE CONCURRENTLY t", "REINDEX CONCURRENTLY"),
    ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX CONCURRENTLY"),
    ("REINDEX SCHEMA s", "REINDEX SCHEMA"),
    ("REINDEX DATABASE", "REINDEX DATABASE"),
    ("REINDEX SYSTEM", "REINDEX SYSTEM"),
    ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "DETACH PARTITION"),
    ("VACUUM", "VACUUM"),
    ("VACUUM ANALYZE t", "VACUUM"),
    ("VACUUM (FULL, ANALYZE) t", "VACUUM"),
    ("CREATE DATABASE d", "CREATE DATABASE"),
    ("DROP DATABASE IF EXISTS d", "DROP DATABASE"),
    ("ALTER DATABASE d SET TABLESPACE ts", "ALTER DATABASE SET TABLESPACE"),
    ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
    ("ALTER SYSTEM RESET ALL", "ALTER SYSTEM"),
    ("CREATE TABLESPACE ts LOCATION '/srv/ts'", "CREATE TABLESPACE"),
    ("DROP TABLESPACE ts", "DROP TABLESPACE"),
    ("CLUSTER", "CLUSTER"),
    ("CLUSTER VERBOSE", "CLUSTER"),
    ("CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p", "CREATE SUBSCRIPTION"),
    ("CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p WITH (create_slot = true)", "CREATE SUBSCRIPTION"),
    ("ALTER SUBSCRIPTION s REFRESH PUBLICATION", "ALTER SUBSCRIPTION"),
    ("ALTER SUBSCRIPTION s SET PUBLICATION p", "ALTER SUBSCRIPTION"),
    ("ALTER SUBSCRIPTION s ADD PUBLICATION p WITH (refresh = true)", "ALTER SUBSCRIPTION"),
    ("ALTER SUBSCRIPTION s SET (failover = true)", "ALTER SUBSCRIPTION"),
    ("DROP SUBSCRIPTION s", "DROP SUBSCRIPTION"),
    ("DISCARD ALL", "DISCARD ALL"),
]

TRANSACTIONAL_CASES = [
    "CREATE INDEX i ON t (a)",
    "DROP INDEX i",
    "REINDEX TABLE t",
    "ALTER TABLE p DETACH PARTITION c",
    "ANALYZE t",
    "CLUSTER t",
    "CLUSTER t USING i",
    "ALTER DATABASE d SET work_mem = '64MB'",
    "CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p WITH (connect = false)",
    "CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p WITH (create_slot = false)",
    "ALTER SUBSCRIPTION s SET PUBLICATION p WITH (refresh = false)",
    "ALTER SUBSCRIPTION s DISABLE",
    "DISCARD PLANS",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY m",
]


@pytest.mark.parametrize("statement, kind", NO_TRANSACTION_CASES, ids=[c[0] for c in NO_TRANSACTION_CASES])
def test_no_transaction_detected(statement, kind):
    (parsed,) = split_sql(statement + ";")

    assert parsed.needs_no_transaction is True


@pytest.mark.parametrize("statement", TRANSACTIONAL_CASES)
def test_transactional_not_flagged(statement):
    (parsed,) = split_sql(statement + ";")

    assert parsed.needs_no_transaction is False


@pytest.mark.parametrize("statement, kind", NO_TRANSACTION_CASES, ids=[c[0] for c in NO_TRANSACTION_CASES])
def test_no_transaction_needs_directive(tmp_path, statement, kind):
    path = write(tmp_path, "0003_maintenance.sql", f"-- 维护\nSELECT 1;\n\n{statement};\n")

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert str(path) in caught.value.message
    assert "line 4" in caught.value.message
    assert kind in caught.value.message
    assert NO_TRANSACTION_DIRECTIVE in caught.value.hint
    assert "first line" in caught.value.hint


@pytest.mark.parametrize("statement, kind", NO_TRANSACTION_CASES, ids=[c[0] for c in NO_TRANSACTION_CASES])
def test_no_transaction_with_directive(tmp_path, statement, kind):
    path = write(tmp_path, "0003_maintenance.sql", f"{NO_TRANSACTION_DIRECTIVE}\nSELECT 1;\n{statement};\n")

    migration = read_sql_file(path)

    assert migration.is_transactional is False
    assert [s.needs_no_transaction for s in migration.statements] == [False, True]


def test_concurrent_index_applies(tmp_path, conn, schema):
    text = (f"{NO_TRANSACTION_DIRECTIVE}\n"
            "CREATE TABLE ${schema}.item (id int);\n"
            "CREATE INDEX CONCURRENTLY item_id ON ${schema}.item (id);\n")
    path = write(tmp_path, "0004_index_items.sql", text)
    quoted = sql.Identifier(schema).as_string(conn)
    migration = read_sql_file(path, {"schema": quoted})
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    for statement in migration.statements:
        conn.execute(statement.text)

    valid = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'item_id'",
        [schema]).fetchall()
    assert valid == [(True,)]


# Header directive -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    f"{NO_TRANSACTION_DIRECTIVE}\n",
    f"-- 说明：建索引\n\n{NO_TRANSACTION_DIRECTIVE}\n",
    f"/* licence */\n  {NO_TRANSACTION_DIRECTIVE}  \n",
], ids=["first-line", "after-comments", "indented"])
def test_directive_in_header(tmp_path, header):
    path = write(tmp_path, "0005_index.sql", header + "CREATE INDEX CONCURRENTLY i ON t (a);\n")

    assert read_sql_file(path).is_transactional is False


@pytest.mark.parametrize("text", [
    f"SELECT 1;\n{NO_TRANSACTION_DIRECTIVE}\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
    f"/*\n{NO_TRANSACTION_DIRECTIVE}\n*/\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
    f"SELECT 1; {NO_TRANSACTION_DIRECTIVE}\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
    f"SELECT '\n{NO_TRANSACTION_DIRECTIVE}\n';\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
], ids=["after-statement", "in-block-comment", "after-code", "in-string"])
def test_directive_elsewhere_ignored(tmp_path, text):
    path = write(tmp_path, "0005_index.sql", text)

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert "CREATE INDEX CONCURRENTLY" in caught.value.message


def test_no_directive_is_transactional(tmp_path):
    path = write(tmp_path, "0001_create_core_tables.sql", "-- 核心表\nCREATE TABLE t (a int);\n")

    migration = read_sql_file(path)

    assert migration.is_transactional is True
    assert migration.version == 1
    assert migration.description == "create_core_tables"
    assert migration.checksum_version == CHECKSUM_VERSION
    assert migration.path == path


@pytest.mark.parametrize("line_text, comment", [
    ("-- textloom:no-transactions", "-- textloom:no-transactions"),
    ("-- textloom: no_transaction", "-- textloom: no_transaction"),
    ("--TEXTLOOM:no-transaction", "--TEXTLOOM:no-transaction"),
    (f"/* note */ {NO_TRANSACTION_DIRECTIVE}", NO_TRANSACTION_DIRECTIVE),
], ids=["plural", "spaced", "upper-case", "after-block-comment"])
def test_invalid_directive_rejected(line_text, comment):
    error = error_of(f"-- header\n{line_text}\nCREATE INDEX CONCURRENTLY i ON t (a);")

    assert "line 2" in error.message
    assert comment in error.message
    assert "invalid directive" in error.message
    assert NO_TRANSACTION_DIRECTIVE in error.hint


# Transaction control ----------------------------------------------------------------------------


TRANSACTION_CONTROL = [
    ("BEGIN", "BEGIN"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN"),
    ("START TRANSACTION", "START TRANSACTION"),
    ("COMMIT", "COMMIT"),
    ("END", "COMMIT"),
    ("ROLLBACK", "ROLLBACK"),
    ("SAVEPOINT before_change", "SAVEPOINT"),
    ("RELEASE SAVEPOINT before_change", "RELEASE SAVEPOINT"),
    ("ROLLBACK TO SAVEPOINT before_change", "ROLLBACK TO SAVEPOINT"),
    ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
    ("COMMIT PREPARED 'x'", "COMMIT PREPARED"),
]


@pytest.mark.parametrize("statement, command", TRANSACTION_CONTROL, ids=[c[0] for c in TRANSACTION_CONTROL])
def test_transaction_control_rejected(tmp_path, statement, command):
    path = write(tmp_path, "0006_change.sql", f"CREATE TABLE t (a int);\n{statement};\n")

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert "line 2" in caught.value.message
    assert command in caught.value.message
    assert str(path) in caught.value.message


def test_transaction_control_no_transaction_file(tmp_path):
    path = write(tmp_path, "0006_change.sql", f"{NO_TRANSACTION_DIRECTIVE}\nCOMMIT;\n")

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert "line 2" in caught.value.message
    assert NO_TRANSACTION_DIRECTIVE in caught.value.hint
    assert "on its own" in caught.value.hint


def test_plpgsql_begin_not_transaction():
    text = "DO $$ BEGIN PERFORM 1; END $$;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;"

    assert [s.tag for s in split_sql(text)] == ["DoStmt", "CreateFunctionStmt"]


# psql meta-commands ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, line, command", [
    ("\\connect textloom\nSELECT 1;", 1, "\\connect"),
    ("SELECT 1;\n\\set ON_ERROR_STOP on\nSELECT 2;", 2, "\\set"),
    ("-- 中文\nSELECT 1;\n\n   \\i other.sql\n", 4, "\\i"),
    ("SELECT 1\n\\gset\n", 2, "\\gset"),
    ("COPY t FROM stdin;\n1\n\\.\nSELECT 1;\n\\echo done\n", 5, "\\echo"),
], ids=["connect", "set", "indented-include", "gset", "after-copy"])
def test_meta_command_rejected(text, line, command):
    error = error_of(text)

    assert f"line {line}" in error.message
    assert command in error.message
    assert "psql meta-command" in error.message
    assert "remove" in error.hint


def test_stray_copy_terminator():
    error = error_of("SELECT 1;\n\\.\nSELECT 2;")

    assert "line 2" in error.message
    assert "COPY" in error.message


@pytest.mark.parametrize("text", [
    "SELECT E'first\n\\\\second';",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$\n\\. SELECT 'x'\n$body$;",
    "/* example:\n\\connect other\n*/ SELECT 1;",
    "SELECT 'a\n\\.\nb';",
], ids=["escape-string", "dollar-quote", "block-comment", "terminator-in-string"])
def test_backslash_lines_inside_sql(text):
    assert len(split_sql(text)) == 1


# Placeholders ------------------------------------------------------------------------------------


def test_placeholder_applies(conn, schema):
    text = "CREATE TABLE ${schema}.t (a text DEFAULT '${schema}');\nINSERT INTO ${schema}.t DEFAULT VALUES;"
    quoted = sql.Identifier(schema).as_string(conn)
    statements = split_sql(text, placeholders={"schema": quoted})
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    for statement in statements:
        conn.execute(statement.text)

    assert query(conn, schema, "SELECT a FROM {}.t") == [(quoted,)]


def test_placeholder_keeps_lines():
    text = "-- ${schema}\nCREATE TABLE ${schema}.a (x int);\n\nCREATE TABLE ${schema}.b (x int);"

    statements = split_sql(text, placeholders={"schema": '"textloom_core"'})

    assert [s.line for s in statements] == [2, 4]
    assert statements[0].text == 'CREATE TABLE "textloom_core".a (x int)'


def test_placeholder_in_copy_statement(conn, schema):
    text = ("CREATE TABLE ${schema}.t (id int, label text);\n"
            "copy ${schema}.t (id, label) from stdin with (format ${format});\n"
            "1,${not_replaced}\n"
            "\\.\n")
    quoted = sql.Identifier(schema).as_string(conn)
    statements = split_sql(text, placeholders={"schema": quoted, "format": "csv"})
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    assert statements[1].text == f"copy {quoted}.t (id, label) from stdin with (format csv)"
    assert statements[1].copy_data == "1,${not_replaced}\n"
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(statements[0].text)
        with cur.copy(statements[1].text) as copy:
            copy.write(statements[1].copy_data)
    assert query(conn, schema, "SELECT id, label FROM {}.t") == [(1, "${not_replaced}")]


def test_placeholder_not_in_copy_data():
    text = "COPY t FROM stdin;\n${unknown}\t${schema}\n\\.\nSELECT 1;"

    statements = split_sql(text, placeholders={"schema": "s"})

    assert statements[0].copy_data == "${unknown}\t${schema}\n"


@pytest.mark.parametrize("text, line, name", [
    ("SELECT 1;\n\nCREATE TABLE ${shema}.t (a int);", 3, "${shema}"),
    ("-- uses ${owner}\nSELECT 1;", 1, "${owner}"),
    ("SELECT '${ schema }';", 1, "${ schema }"),
], ids=["misspelt", "in-comment", "with-spaces"])
def test_unknown_placeholder(text, line, name):
    error = error_of(text, placeholders={"schema": '"textloom_core"'})

    assert f"line {line}" in error.message
    assert name in error.message
    assert "0007_case.sql" in error.message
    assert "schema" in error.hint


def test_placeholder_without_values():
    error = error_of("CREATE TABLE ${schema}.t (a int);")

    assert "${schema}" in error.message


def test_placeholder_value_with_newline():
    error = error_of("SELECT ${value};", placeholders={"value": "1\n+ 1"})

    assert "${value}" in error.message


def test_checksum_before_substitution(tmp_path):
    path = write(tmp_path, "0002_add_index.sql", "CREATE INDEX i ON ${schema}.t (a);\n")

    first = read_sql_file(path, {"schema": '"one"'})
    second = read_sql_file(path, {"schema": '"two"'})

    assert first.checksum == second.checksum
    assert first.statements[0].text != second.statements[0].text


# Encodings and checksums ----------------------------------------------------------------------------


ENCODING_SQL = "-- 核心表；注释\nCREATE TABLE 账户 (id int);\nINSERT INTO 账户 VALUES (1);\n"


def test_bom_same_checksum(tmp_path, conn, schema):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = write(tmp_path / "a", "0001_accounts.sql", ENCODING_SQL)
    with_bom = write(tmp_path / "b", "0001_accounts.sql", b"\xef\xbb\xbf" + ENCODING_SQL.encode())

    plain_file = read_sql_file(plain)
    bom_file = read_sql_file(with_bom)

    assert bom_file.checksum == plain_file.checksum
    assert bom_file.statements == plain_file.statements
    assert bom_file.statements[0].text.startswith("CREATE TABLE")
    apply(conn, schema, bom_file.statements)
    assert query(conn, schema, "SELECT id FROM {}.账户") == [(1,)]


@pytest.mark.parametrize("prefix, bad", [
    (b"SELECT 1;\n", b"\xff"),
    ("-- 中文注释\nSELECT '".encode(), b"\xe4\xb8"),
    (b"\xef\xbb\xbfSELECT 1;\r\n-- x\r\n", b"\xc3\x28"),
], ids=["ff-byte", "truncated-chinese", "after-bom-and-crlf"])
def test_invalid_utf8_rejected(tmp_path, prefix, bad):
    path = write(tmp_path, "0009_bad_bytes.sql", prefix + bad + b"';\n")
    offset = len(prefix)
    line = prefix.replace(b"\r\n", b"\n").count(b"\n") + 1

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert str(path) in caught.value.message
    assert f"byte offset {offset}" in caught.value.message
    assert f"line {line}" in caught.value.message


LOCALE_SCRIPT = """
import sys
from pathlib import Path
from db.sqlfile import read_sql_file
migration = read_sql_file(Path(sys.argv[1]))
print(migration.checksum, migration.statements[0].line, ascii(migration.statements[0].text))
"""


@pytest.mark.parametrize("locale_env", [
    {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
    {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
    {"LANG": "POSIX", "LC_ALL": "POSIX", "PYTHONIOENCODING": "latin-1"},
], ids=["c-ascii", "c-utf8", "posix-latin1"])
def test_checksum_ignores_locale(tmp_path, locale_env):
    path = write(tmp_path, "0001_accounts.sql", ENCODING_SQL)
    expected = read_sql_file(path)
    env = {**os.environ, **locale_env}

    result = subprocess.run([sys.executable, "-c", LOCALE_SCRIPT, str(path)], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, check=True)

    digest, line, text = result.stdout.split(maxsplit=2)
    assert digest == expected.checksum
    assert int(line) == expected.statements[0].line
    assert text.strip() == ascii(expected.statements[0].text)


def test_line_endings_same_checksum(tmp_path):
    lf = (ENCODING_SQL + "COPY 账户 (id) FROM stdin;\n2\n3\n\\.\nSELECT 1;\n").encode()
    variants = {"lf": lf, "crlf": lf.replace(b"\n", b"\r\n"), "cr": lf.replace(b"\n", b"\r")}
    files = {}
    for name, content in variants.items():
        (tmp_path / name).mkdir()
        files[name] = read_sql_file(write(tmp_path / name, "0001_accounts.sql", content))

    assert files["crlf"].checksum == files["lf"].checksum
    assert files["cr"].checksum == files["lf"].checksum
    assert files["crlf"].statements == files["lf"].statements
    assert files["cr"].statements == files["lf"].statements
    assert files["crlf"].statements[2].copy_data == "2\n3\n"
    assert files["crlf"].statements[3].line == 8


@pytest.mark.parametrize("edited", [
    ENCODING_SQL.replace("id int", "id bigint"),
    ENCODING_SQL.replace("-- 核心表；注释", "-- 核心表"),
    ENCODING_SQL + "\n",
], ids=["int-to-bigint", "comment", "trailing-newline"])
def test_edit_changes_checksum(edited):
    assert checksum(edited.encode()) != checksum(ENCODING_SQL.encode())


def test_checksum_value():
    # sha256 of "SELECT 1;\n": a change here needs a new CHECKSUM_VERSION.
    expected = "b4e0497804e46e0a0b0b8c31975b062152d551bac49c3c2e80932567b4085dcd"

    assert checksum(b"\xef\xbb\xbfSELECT 1;\r\n") == expected
    assert CHECKSUM_VERSION == 1


def test_nul_character_rejected(tmp_path):
    path = write(tmp_path, "0008_nul.sql", b"SELECT 1;\nSELECT '\x00';\nDROP TABLE t;\n")

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert "line 2" in caught.value.message
    assert "NUL" in caught.value.message


# Names and discovery --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, version, description", [
    ("0001_create_core_tables.sql", 1, "create_core_tables"),
    ("0042_add_index_v2.sql", 42, "add_index_v2"),
    ("20240101_seed.sql", 20240101, "seed"),
])
def test_parse_name_valid(name, version, description):
    assert parse_name(Path("sql") / name) == (version, description)


@pytest.mark.parametrize("name", [
    "0001-foo.sql", "abc.sql", "0001_.sql", "001_foo.sql", "0001_Foo.sql", "0001_foo.SQL",
    "0001__foo.sql", "0001_foo_.sql", "0001_foo bar.sql", "0001_foo.sql.bak", "0001_中文.sql",
])
def test_parse_name_malformed(name):
    with pytest.raises(MigrationError) as caught:
        parse_name(Path("sql") / name)

    assert name in caught.value.message
    assert "NNNN_description.sql" in caught.value.message


def test_read_malformed_name(tmp_path):
    path = write(tmp_path, "create.sql", "SELECT 1;")

    with pytest.raises(MigrationError) as caught:
        read_sql_file(path)

    assert "create.sql" in caught.value.message


def test_discover_sorted_by_version(tmp_path):
    for name in ["0010_ten.sql", "0002_two.sql", "10000_big.sql", "9999_last.sql", "0001_one.sql"]:
        write(tmp_path, name, "SELECT 1;")
    (tmp_path / "archive").mkdir()
    write(tmp_path / "archive", "0003_old.sql", "SELECT 1;")
    write(tmp_path, "README.md", "notes")
    write(tmp_path, ".#0004_draft.sql", "")

    found = discover(tmp_path)

    assert [path.name for path in found] == ["0001_one.sql", "0002_two.sql", "0010_ten.sql", "9999_last.sql",
                                             "10000_big.sql"]


def test_discover_duplicate_version(tmp_path):
    write(tmp_path, "0001_create_core_tables.sql", "SELECT 1;")
    write(tmp_path, "00001_seed.sql", "SELECT 1;")

    with pytest.raises(MigrationError) as caught:
        discover(tmp_path)

    assert "0001_create_core_tables.sql" in caught.value.message
    assert "00001_seed.sql" in caught.value.message


@pytest.mark.parametrize("name", ["seed.sql", "0003-add.sql", "0003_Add.SQL"])
def test_discover_malformed_name(tmp_path, name):
    write(tmp_path, "0001_one.sql", "SELECT 1;")
    write(tmp_path, name, "SELECT 1;")

    with pytest.raises(MigrationError) as caught:
        discover(tmp_path)

    assert name in caught.value.message


def test_discover_missing_folder(tmp_path):
    with pytest.raises(MigrationError) as caught:
        discover(tmp_path / "missing")

    assert "missing" in caught.value.message


@pytest.mark.parametrize("statement", [
    "SET search_path = app",
    "SET SESSION statement_timeout = 0",
    "RESET lock_timeout",
    "RESET ALL",
    "SET TIME ZONE 'UTC'",
])
def test_session_set_rejected(statement):
    with pytest.raises(MigrationError) as caught:
        split_sql(f"SELECT 1;\n{statement};\n", source="0002_x.sql")
    assert "line 2" in caught.value.message
    assert "SET LOCAL" in caught.value.hint


@pytest.mark.parametrize("statement", [
    "SET LOCAL lock_timeout = '1s'",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
])
def test_transaction_scoped_set_allowed(statement):
    assert len(split_sql(f"{statement};\nSELECT 1;\n", source="0002_x.sql")) == 2


@pytest.mark.parametrize("statement, kind", [
    ("PREPARE find AS SELECT 1", "PREPARE"),
    ("LISTEN render_done", "LISTEN"),
    ("DECLARE rows_cursor CURSOR WITH HOLD FOR SELECT 1", "DECLARE ... WITH HOLD"),
    ("CREATE TEMP TABLE scratch (id int)", "CREATE TEMPORARY TABLE"),
    ("CREATE TEMPORARY TABLE scratch AS SELECT 1 AS id", "CREATE TEMPORARY TABLE"),
    ("SELECT pg_advisory_lock(42)", "pg_advisory_lock()"),
    ("SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2)", "pg_advisory_lock()"),
    ("SELECT set_config('search_path', 'app', false)", "set_config(..., false)"),
    ("SELECT 1 FROM (SELECT set_config('x.y', 'z', is_local) FROM (VALUES (true)) v(is_local)) s",
     "set_config(..., false)"),
])
def test_session_state_rejected(statement, kind):
    with pytest.raises(MigrationError) as caught:
        split_sql(f"SELECT 1;\n{statement};\n", source="0002_x.sql")
    assert f"0002_x.sql, line 2: {kind} lasts beyond the transaction" in caught.value.message
    assert "nothing has run" in caught.value.hint


@pytest.mark.parametrize("statement", [
    "DECLARE rows_cursor CURSOR FOR SELECT 1",
    "CREATE TEMP TABLE scratch (id int) ON COMMIT DROP",
    "SELECT pg_advisory_xact_lock(42)",
    "SELECT set_config('search_path', 'app', true)",
    "CREATE FUNCTION locker() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_lock(1) $$",
])
def test_transaction_scoped_state_allowed(statement):
    assert len(split_sql(f"{statement};\nSELECT 1;\n", source="0002_x.sql")) == 2
