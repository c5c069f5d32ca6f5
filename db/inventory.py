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

_COLUMNS = """
SELECT c.relname, a.attname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
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


def columns_by_table(conn: psycopg.Connection, schema: str) -> dict[str, list[str]]:
    columns: dict[str, list[str]] = {}
    for table, column in conn.execute(_COLUMNS, (schema,)):
        columns.setdefault(table, []).append(column)
    return columns


def server_version(conn: psycopg.Connection) -> tuple[int, str]:
    """Return ``server_version_num`` and the human-readable version string."""
    row = conn.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')").fetchone()
    return row[0], row[1]
