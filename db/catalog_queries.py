"""Named catalog queries of the diff engine.

Every name is qualified with ``pg_catalog`` so a user's objects on the ``search_path``
cannot shadow a catalog table or function, and every value is a bound parameter. The
queries run on PostgreSQL 15 and later (``indnullsnotdistinct`` first appeared in 15).
"""

from __future__ import annotations

# One round trip for the whole schema: a single JSON document with every table, column,
# constraint, index, comment and enum type of the schema named by %(schema)s.
#
# What it leaves out, and why:
# - objects that an extension created (pg_depend deptype 'e'): the extension owns them and
#   recreates them on upgrade, so they are never part of a model;
# - views, sequences, foreign tables and composite types (relkind other than 'r' and 'p'):
#   the snapshot has no such objects;
# - partitions (relispartition): they follow their partitioned parent;
# - dropped columns (attisdropped) and system columns (attnum <= 0);
# - NOT NULL constraints (contype 'n', PostgreSQL 18): attnotnull already states them;
# - indexes that back a primary key, unique or exclusion constraint: they are compared as
#   those constraints.
SCHEMA_SNAPSHOT = """
WITH target AS (
    SELECT n.oid, n.nspname
    FROM pg_catalog.pg_namespace n
    WHERE n.nspname = %(schema)s
),
extension_members AS (
    SELECT d.classid, d.objid
    FROM pg_catalog.pg_depend d
    WHERE d.deptype = 'e'
),
relations AS (
    SELECT c.oid, c.relname
    FROM pg_catalog.pg_class c
    JOIN target t ON t.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND NOT c.relispartition
      AND NOT EXISTS (
          SELECT 1 FROM extension_members e
          WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = c.oid)
)
SELECT pg_catalog.json_build_object(
    'exists', EXISTS (SELECT 1 FROM target),
    'quoted_schema', pg_catalog.quote_ident(%(schema)s),
    'is_visible', %(schema)s = ANY (pg_catalog.current_schemas(false)),
    'tables', COALESCE((
        SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
            'name', r.relname,
            'comment', (SELECT d.description FROM pg_catalog.pg_description d
                        WHERE d.objoid = r.oid AND d.objsubid = 0
                          AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass),
            'columns', (
                SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                    'name', a.attname,
                    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                    'nullable', NOT a.attnotnull,
                    'default', CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END,
                    'generated', CASE WHEN a.attgenerated <> '' THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END,
                    -- 'v' (VIRTUAL) exists from PostgreSQL 18 on.
                    'generated_storage', CASE a.attgenerated WHEN 's' THEN 'stored' WHEN 'v' THEN 'virtual' END,
                    'identity', a.attidentity,
                    'collation', CASE WHEN a.attcollation <> ty.typcollation
                                      THEN pg_catalog.quote_ident(co.collname) END,
                    'comment', cd.description
                ) ORDER BY a.attnum)
                FROM pg_catalog.pg_attribute a
                JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
                LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
                -- A join instead of col_description(), an SQL function that runs one query per column.
                LEFT JOIN pg_catalog.pg_description cd
                       ON cd.objoid = a.attrelid AND cd.objsubid = a.attnum
                      AND cd.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
                WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
            ),
            'constraints', (
                SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                    'name', k.conname,
                    'type', k.contype,
                    'columns', (
                        SELECT pg_catalog.json_agg(a.attname ORDER BY u.ord)
                        FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY u(attnum, ord)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
                    ),
                    'expression', CASE WHEN k.contype = 'c' THEN pg_catalog.pg_get_expr(k.conbin, k.conrelid) END,
                    'definition', CASE WHEN k.contype NOT IN ('p', 'f', 'u', 'c')
                                       THEN pg_catalog.pg_get_constraintdef(k.oid) END,
                    'target_schema', tn.nspname,
                    'target_table', tc.relname,
                    'target_columns', (
                        SELECT pg_catalog.json_agg(a.attname ORDER BY u.ord)
                        FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY u(attnum, ord)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum
                    ),
                    'on_delete', k.confdeltype,
                    'on_update', k.confupdtype,
                    'deferrable', k.condeferrable,
                    'initially_deferred', k.condeferred,
                    'nulls_not_distinct', COALESCE(ki.indnullsnotdistinct, false)
                ) ORDER BY k.conname)
                FROM pg_catalog.pg_constraint k
                LEFT JOIN pg_catalog.pg_class tc ON tc.oid = k.confrelid
                LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
                LEFT JOIN pg_catalog.pg_index ki ON ki.indexrelid = k.conindid AND k.contype = 'u'
                WHERE k.conrelid = r.oid AND k.contype <> 'n'
            ),
            'indexes', (
                SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                    'name', ic.relname,
                    'unique', i.indisunique,
                    'method', am.amname,
                    'nulls_not_distinct', i.indnullsnotdistinct,
                    'predicate', pg_catalog.pg_get_expr(i.indpred, i.indrelid),
                    'key_count', i.indnkeyatts,
                    'keys', (
                        SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                            'expression', pg_catalog.pg_get_indexdef(i.indexrelid, p.n, true),
                            'is_column', i.indkey[p.n - 1] <> 0,
                            'option', i.indoption[p.n - 1],
                            'opclass', CASE WHEN NOT opc.opcdefault THEN opc.opcname END,
                            'collation', CASE WHEN i.indcollation[p.n - 1] NOT IN (0, 100, COALESCE(ka.attcollation, 0))
                                              THEN pg_catalog.quote_ident(kco.collname) END
                        ) ORDER BY p.n)
                        FROM pg_catalog.generate_series(1, i.indnatts) p(n)
                        LEFT JOIN pg_catalog.pg_opclass opc ON opc.oid = i.indclass[p.n - 1]
                        LEFT JOIN pg_catalog.pg_attribute ka
                               ON ka.attrelid = i.indrelid AND ka.attnum = i.indkey[p.n - 1]
                        LEFT JOIN pg_catalog.pg_collation kco ON kco.oid = i.indcollation[p.n - 1]
                    )
                ) ORDER BY ic.relname)
                FROM pg_catalog.pg_index i
                JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                JOIN pg_catalog.pg_am am ON am.oid = ic.relam
                WHERE i.indrelid = r.oid
                  AND NOT EXISTS (
                      SELECT 1 FROM pg_catalog.pg_constraint k
                      WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                        AND k.contype IN ('p', 'u', 'x'))
            )
        ) ORDER BY r.relname)
        FROM relations r
    ), '[]'::pg_catalog.json),
    'enums', COALESCE((
        SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
            'name', ty.typname,
            'values', (
                SELECT pg_catalog.json_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_catalog.pg_enum e
                WHERE e.enumtypid = ty.oid
            )
        ) ORDER BY ty.typname)
        FROM pg_catalog.pg_type ty
        JOIN target t ON t.oid = ty.typnamespace
        WHERE ty.typtype = 'e'
          AND NOT EXISTS (
              SELECT 1 FROM extension_members e
              WHERE e.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND e.objid = ty.oid)
    ), '[]'::pg_catalog.json)
)
"""
