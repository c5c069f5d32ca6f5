"""Small catalog look-ups for check, verify and drop: which tables exist, their size.

The full schema snapshot for diffs lives in db/catalog.py; these queries stay separate
because they answer simpler questions in one cheap round trip each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

# reltuples is -1 for a table never vacuumed or analysed (PostgreSQL 14 and later).
_TABLE_STATS = """
SELECT c.relname, c.reltuples::bigint, pg_catalog.pg_total_relation_size(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
"""

@dataclass(frozen=True)
class TableStats:
    """Presence, estimated row count and total size (with indexes and TOAST) of one table."""

    name: str
    present: bool
    estimated_rows: int | None = None
    size_bytes: int | None = None


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %s)", (schema,)).fetchone()
    return bool(row[0])


def table_stats(conn: psycopg.Connection, schema: str, names: Sequence[str]) -> list[TableStats]:
    """Return one entry per requested name, in the order given, present or not."""
    found = {name: (rows, size) for name, rows, size in conn.execute(_TABLE_STATS, (schema, list(names)))}
    result = []
    for name in names:
        if name in found:
            rows, size = found[name]
            result.append(TableStats(name, True, rows if rows >= 0 else None, size))
        else:
            result.append(TableStats(name, False))
    return result


def server_version(conn: psycopg.Connection) -> tuple[int, str]:
    """Return ``server_version_num`` and the human-readable version string."""
    row = conn.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')").fetchone()
    return row[0], row[1]


# Objects of one schema in the order to drop them, each name already quoted (regclass,
# regprocedure and regtype casts quote and qualify). Some objects are left out because
# something else drops them: objects an extension owns go with the extension, partitions
# with their parent, sequences owned by a column with their table, and row and array
# types with what they belong to.
_SCHEMA_OBJECTS = """
WITH target AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s),
members AS (SELECT classid, objid FROM pg_catalog.pg_depend WHERE deptype = 'e')
SELECT kind, pg_catalog.array_agg(name ORDER BY name)
FROM (
    SELECT CASE c.relkind WHEN 'v' THEN 1 WHEN 'm' THEN 2 WHEN 'f' THEN 3 WHEN 'S' THEN 5 ELSE 4 END AS step,
           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
           c.oid::pg_catalog.regclass::text AS name
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = (SELECT oid FROM target)
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND NOT c.relispartition
      AND NOT EXISTS (SELECT 1 FROM members m
                      WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND m.objid = c.oid)
      AND NOT (c.relkind = 'S' AND EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend d
          WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
            AND d.deptype IN ('a', 'i')))
    UNION ALL
    SELECT 6, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
           p.oid::pg_catalog.regprocedure::text
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = (SELECT oid FROM target)
      AND NOT EXISTS (SELECT 1 FROM members m
                      WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND m.objid = p.oid)
    UNION ALL
    SELECT 7, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::pg_catalog.regtype::text
    FROM pg_catalog.pg_type t
    WHERE t.typnamespace = (SELECT oid FROM target)
      AND t.typtype IN ('e', 'd', 'r', 'c', 'm')
      AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c')
      AND NOT EXISTS (SELECT 1 FROM members m
                      WHERE m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND m.objid = t.oid)
) AS objects
GROUP BY step, kind
ORDER BY step, kind
"""


def schema_objects(conn: psycopg.Connection, schema: str) -> list[tuple[str, list[str]]]:
    """Return (kind, quoted names) pairs for every droppable object of ``schema``, dependants first."""
    return [(kind, names) for kind, names in conn.execute(_SCHEMA_OBJECTS, {"schema": schema})]
