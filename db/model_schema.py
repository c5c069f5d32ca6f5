"""Turn SQLAlchemy ``MetaData`` into a :class:`~db.snapshot.SchemaSnapshot`.

Every table is first normalised offline: types, simple defaults, plain-column indexes and
the names PostgreSQL gives unnamed constraints are written as the server would write
them. What cannot be normalised offline (CHECK and index expressions, partial index
predicates, generated columns, unknown types or defaults) is recorded as
:class:`~db.snapshot.NotComparable`. With a connection, the server then renders the tables
that hold such objects. Their DDL runs in a scratch schema inside a transaction that is
always rolled back, and the catalog query of :mod:`db.catalog` reads them back. Those
expressions so take the exact form the live catalog shows. Whatever even the
server cannot render stays not comparable and is never reported as a change.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Callable, Iterable

import psycopg
import sqlalchemy as sa
from pglast import keywords as pg_keywords
from sqlalchemy.dialects import postgresql

from db import model_render
from db.model_render import PreparedModels
from db.i18n import _
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

log = logging.getLogger(__name__)

DIALECT = postgresql.dialect()

# The schema name as the server quotes it, and whether the schema is on the search_path.
_VISIBILITY_QUERY = "SELECT pg_catalog.quote_ident(%(schema)s), %(schema)s = ANY (pg_catalog.current_schemas(false))"


def snapshot_from_metadata(metadata: sa.MetaData, schema: str, *, source_schema: str | None = None,
                           conn: psycopg.Connection | None = None, type_prefix: str | None = None,
                           before_server: Callable[[], object] | None = None) -> SchemaSnapshot:
    """Describe the tables of ``metadata`` as if they lived in ``schema``.

    Tables whose ``.schema`` is ``source_schema``, ``None`` or ``schema`` itself are taken
    and mapped to ``schema``, and tables of other schemas are left out. Every table is
    first normalised offline. With ``conn``, the server then renders the tables that hold
    something offline normalisation cannot handle (see the module docstring). The connection
    must be in autocommit mode and is left as it was. ``type_prefix`` is how the server
    qualifies the schema's own types (:attr:`SchemaSnapshot.type_prefix` of the catalog
    snapshot); without it, one more round trip fetches it from the server.
    ``before_server`` is called before the first query on ``conn``, so a caller whose other
    thread still uses the connection can wait for it.
    """
    if conn is None:
        prefix = type_prefix if type_prefix is not None else _offline_prefix(schema)
        return prepare(metadata, schema, source_schema=source_schema, type_prefix=prefix).offline

    round_trips = 0
    if type_prefix is None:
        if before_server is not None:
            before_server()
        quoted, is_visible = conn.execute(_VISIBILITY_QUERY, {"schema": schema}).fetchone()
        type_prefix = "" if is_visible else quoted + "."
        round_trips += 1
    prepared = prepare(metadata, schema, source_schema=source_schema, type_prefix=type_prefix,
                       server_version=conn.info.server_version)
    return model_render.finish(conn, prepared, round_trips=round_trips, before_server=before_server)


def prepare(metadata: sa.MetaData, schema: str, *, source_schema: str | None, type_prefix: str,
            server_version: int | None = None) -> PreparedModels:
    """Normalise the tables offline and compile the DDL of those the server must render.

    The result is plain data that :func:`db.model_render.finish` completes with a
    connection. ``server_version`` makes the DDL what SQLAlchemy would send to that server.
    """
    tables = select_tables(metadata, schema, source_schema)
    offline = _offline_snapshot(tables, schema, source_schema, type_prefix)
    unresolved = frozenset(note.object.split(".")[0] for note in offline.not_comparable)
    subset = [table for table in tables if table.name in unresolved]
    scratch = model_render.SCRATCH_PLACEHOLDER
    ddl = render_ddl(subset, {None: scratch, source_schema: scratch, schema: scratch},
                     server_version=server_version) if subset else []
    return PreparedModels(offline, unresolved, tuple(ddl))


def select_tables(metadata: sa.MetaData, schema: str, source_schema: str | None) -> list[sa.Table]:
    """Return the tables of ``metadata`` that map to ``schema``, in the metadata's order."""
    # No dependency order is needed, because rendered tables are created without their
    # foreign keys. Sorting a thousand tables would cost more than the rest of the snapshot.
    accepted = {None, source_schema, schema}
    return [table for table in metadata.tables.values() if table.schema in accepted]


# -- DDL for server rendering -----------------------------------------------------------


def _compile(clause: sa.sql.ClauseElement | str) -> str:
    """Compile a model expression to SQL text, with bound values rendered as literals."""
    if isinstance(clause, str):
        return clause
    return str(clause.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True}))


def render_ddl(tables: list[sa.Table], schema_map: dict[str | None, str], *,
               server_version: int | None = None) -> list[str]:
    """Compile the DDL that creates ``tables`` without their foreign keys, schemas renamed by ``schema_map``.

    Enum types and sequences the tables use come first, comments last. ``server_version``
    (such as 150018) makes the DDL what SQLAlchemy would send to that server: before
    PostgreSQL 18 a generated column without ``persisted`` is ``STORED``.
    """
    dialect = postgresql.dialect()
    if server_version is not None:
        dialect.supports_virtual_generated_columns = server_version >= 180000
    elements: list[sa.schema.ExecutableDDLElement] = []

    enums = {}
    for table in tables:
        for column in table.columns:
            enum = _native_enum(column.type)
            if enum is not None:
                enums.setdefault((enum.schema, enum.name), enum)
            if isinstance(column.default, sa.Sequence):
                elements.append(sa.schema.CreateSequence(column.default))
    elements[:0] = [postgresql.CreateEnumType(enum) for enum in enums.values()]

    for table in tables:
        elements.append(sa.schema.CreateTable(table, include_foreign_key_constraints=[]))
        elements += [sa.schema.CreateIndex(index) for index in table.indexes]
        if table.comment is not None:
            elements.append(sa.schema.SetTableComment(table))
        elements += [sa.schema.SetColumnComment(column) for column in table.columns if column.comment is not None]

    with warnings.catch_warnings():
        # SQLAlchemy warns that a computed column without ``persisted`` becomes STORED before
        # PostgreSQL 18. That is what the server does too, so the rendered DDL is right.
        warnings.filterwarnings("ignore", message="Computed column .* is being created as 'STORED'",
                                category=sa.exc.SAWarning)
        return [str(element.compile(dialect=dialect, schema_translate_map=schema_map,
                                    render_schema_translate=True)).strip() for element in elements]


# -- offline normalisation -------------------------------------------------------------


def quote_ident(name: str) -> str:
    """Quote ``name`` the way the server's ``quote_ident`` does: only when it must."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and not _is_quoted_keyword(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _is_quoted_keyword(name: str) -> bool:
    return name in pg_keywords.RESERVED_KEYWORDS or name in pg_keywords.COL_NAME_KEYWORDS \
        or name in pg_keywords.TYPE_FUNC_NAME_KEYWORDS


def default_name(table: str, columns: Iterable[str], label: str) -> str:
    """Return the name PostgreSQL gives an unnamed constraint or index, such as ``tasks_owner_fkey``.

    Like the server's ``makeObjectName``, the table and column parts are shortened, the
    longer one first, until the whole name fits in 63 bytes.
    NOTE: the server appends a number when that name is taken; that case is not known offline.
    """
    name1, name2 = table, "_".join(columns)
    available = 63 - len(label) - 1 - (1 if name2 else 0)
    while len(name1.encode()) + len(name2.encode()) > available:
        if len(name1.encode()) > len(name2.encode()):
            name1 = name1[:-1]
        else:
            name2 = name2[:-1]
    return "_".join(part for part in (name1, name2, label) if part)


def _offline_prefix(schema: str) -> str:
    # NOTE: offline there is no search_path to look at, so the schema's own types are
    # written qualified, as the server does when the schema is not on the search_path.
    return quote_ident(schema) + "."


def _offline_snapshot(tables: list[sa.Table], schema: str, source_schema: str | None,
                      type_prefix: str) -> SchemaSnapshot:
    model_schemas = {None, source_schema, schema}
    notes: list[NotComparable] = []
    snapshots = {}
    enums: dict[str, Enum] = {}
    for table in tables:
        snapshots[table.name] = _offline_table(table, schema, model_schemas, type_prefix, notes)
        for column in table.columns:
            enum = _native_enum(column.type)
            if enum is not None and enum.schema in model_schemas:
                enums[enum.name] = Enum(enum.name, tuple(enum.enums))
    return SchemaSnapshot(schema=schema, tables=snapshots, enums=enums, not_comparable=tuple(notes),
                          exists=True, type_prefix=type_prefix)


def _offline_table(table: sa.Table, schema: str, model_schemas: set, prefix: str,
                   notes: list[NotComparable]) -> Table:
    columns = tuple(_offline_column(table, column, model_schemas, prefix, notes) for column in table.columns)

    primary_key = None
    if table.primary_key.columns:
        name = _constraint_name(table.primary_key) or default_name(table.name, (), "pkey")
        primary_key = PrimaryKey(name, tuple(c.name for c in table.primary_key.columns))

    foreign_keys, uniques, checks = [], [], []
    # Column-level CHECK constraints live on their column, not in table.constraints.
    inline_checks = {constraint: column.name for column in table.columns for constraint in column.constraints}
    for constraint in sorted([*table.constraints, *inline_checks], key=lambda c: _constraint_name(c) or ""):
        if isinstance(constraint, sa.ForeignKeyConstraint):
            foreign_keys.append(_offline_fk(table, constraint, schema, model_schemas))
        elif isinstance(constraint, sa.UniqueConstraint):
            uniques.append(_offline_unique(table, constraint))
        elif isinstance(constraint, sa.CheckConstraint):
            # NOTE: PostgreSQL names an unnamed table-level CHECK after a column it uses;
            # offline only the column-level case is known, so others get <table>_check.
            column = inline_checks.get(constraint)
            name = _constraint_name(constraint) or default_name(table.name, [column] if column else [], "check")
            notes.append(NotComparable(f"{table.name}.{name}",
                                       _("CHECK expressions are compared only when a connection renders them")))
            checks.append(CheckConstraint(name, str(constraint.sqltext), source=_compile(constraint.sqltext)))

    indexes = []
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        indexes.append(_offline_index(table, index, notes))

    return Table(table.name, columns, primary_key, tuple(foreign_keys), tuple(uniques), tuple(checks),
                 tuple(indexes), table.comment or None)


def _offline_column(table: sa.Table, column: sa.Column, model_schemas: set, prefix: str,
                    notes: list[NotComparable]) -> Column:
    type_name, collation = canonical_type(column.type, model_schemas, prefix)
    if type_name is None:
        notes.append(NotComparable(f"{table.name}.{column.name}",
                                   _("type {type} has no known canonical form offline", type=str(column.type))))
        type_name = str(column.type.compile(dialect=DIALECT)).lower()

    default = None
    generated = None
    generated_storage = None
    identity = None
    if column.identity is not None:
        identity = "always" if column.identity.always else "by default"
    elif isinstance(column.server_default, sa.Computed):
        generated = str(column.server_default.sqltext)
        # Without persisted the storage depends on the server version, so rendering decides it.
        generated_storage = {True: "stored", False: "virtual"}.get(column.server_default.persisted)
        notes.append(NotComparable(f"{table.name}.{column.name}",
                                   _("generated expressions are compared only when a connection renders them")))
    elif column.server_default is not None:
        default = canonical_default(column.server_default, type_name, _native_enum(column.type) is not None)
        if default is None:
            notes.append(NotComparable(f"{table.name}.{column.name}",
                                       _("default {default} has no known canonical form offline",
                                         default=_server_default_text(column.server_default))))
    elif isinstance(column.default, sa.Sequence):
        notes.append(NotComparable(f"{table.name}.{column.name}",
                                   _("sequence defaults are compared only when a connection renders them")))
    elif column is table.autoincrement_column and type_name in ("integer", "bigint", "smallint"):
        # create_all makes this column SERIAL, whose sequence PostgreSQL names <table>_<column>_seq.
        sequence = quote_ident(default_name(table.name, [column.name], "seq"))
        default = f"nextval('{prefix}{sequence}'::regclass)"

    nullable = column.nullable and identity is None
    return Column(column.name, type_name, nullable, default, identity, generated, collation, column.comment or None,
                  generated_storage)


def _offline_fk(table: sa.Table, constraint: sa.ForeignKeyConstraint, schema: str, model_schemas: set) -> ForeignKey:
    target = constraint.referred_table
    columns = tuple(c.name for c in constraint.columns)
    name = _constraint_name(constraint) or default_name(table.name, columns, "fkey")
    return ForeignKey(
        name=name,
        columns=columns,
        target_schema=schema if target.schema in model_schemas else target.schema,
        target_table=target.name,
        target_columns=tuple(element.column.name for element in constraint.elements),
        on_delete=(constraint.ondelete or "NO ACTION").upper(),
        on_update=(constraint.onupdate or "NO ACTION").upper(),
        deferrable=bool(constraint.deferrable),
        initially_deferred=(constraint.initially or "").upper() == "DEFERRED",
    )


def _offline_unique(table: sa.Table, constraint: sa.UniqueConstraint) -> UniqueConstraint:
    columns = tuple(c.name for c in constraint.columns)
    name = _constraint_name(constraint) or default_name(table.name, columns, "key")
    return UniqueConstraint(
        name=name,
        columns=columns,
        nulls_not_distinct=bool(constraint.dialect_options["postgresql"].get("nulls_not_distinct")),
        deferrable=bool(constraint.deferrable),
        initially_deferred=(constraint.initially or "").upper() == "DEFERRED",
    )


def _offline_index(table: sa.Table, index: sa.Index, notes: list[NotComparable]) -> Index:
    options = index.dialect_options["postgresql"]
    name = str(index.name)
    if options.get("where") is not None or options.get("ops") or not all(
            isinstance(expression, sa.Column) for expression in index.expressions):
        notes.append(NotComparable(f"{table.name}.{name}", _(
            "index expressions, predicates and operator classes are compared only when a connection renders them")))
        # A placeholder the diff skips by name; it carries the predicate's source for _merge.
        where = options.get("where")
        return Index(name, keys=(), predicate_source=None if where is None else _compile(where))

    keys = tuple(IndexKey(quote_ident(column.name)) for column in index.expressions)
    include = tuple(quote_ident(c if isinstance(c, str) else c.name) for c in options.get("include") or ())
    return Index(name, keys, unique=bool(index.unique), method=options.get("using") or "btree", include=include,
                 nulls_not_distinct=bool(options.get("nulls_not_distinct")))


def _constraint_name(constraint: sa.Constraint | sa.Index) -> str | None:
    # The preparer applies the metadata's naming convention and truncates long names
    # exactly as create_all does; None means the server will choose the name.
    if constraint.name is None:
        return None
    name = DIALECT.identifier_preparer.format_constraint(constraint, _alembic_quote=False)
    return None if name is None else str(name)


def _native_enum(type_: sa.types.TypeEngine) -> sa.Enum | None:
    if isinstance(type_, sa.ARRAY):
        type_ = type_.item_type
    if isinstance(type_, sa.Enum) and type_.native_enum:
        return type_
    return None


# Spellings that SQLAlchemy's PostgreSQL compiler produces, mapped to format_type's output.
_TYPE_ALIASES = {
    "varchar": "character varying",
    "char": "character",
    "nchar": "character",
    "nvarchar": "character varying",
    "decimal": "numeric",
    "int": "integer",
    "int4": "integer",
    "int8": "bigint",
    "int2": "smallint",
    "serial": "integer",
    "bigserial": "bigint",
    "smallserial": "smallint",
    "bool": "boolean",
    "float8": "double precision",
    "float4": "real",
    "timestamptz": "timestamp with time zone",
    "timetz": "time with time zone",
}
_KNOWN_TYPES = {
    "integer", "bigint", "smallint", "boolean", "text", "date", "bytea", "json", "jsonb", "uuid", "inet",
    "cidr", "macaddr", "money", "tsvector", "tsquery", "double precision", "real", "numeric", "interval",
    "character varying", "character", "bit", "bit varying", "oid", "xml", "citext", "int4range",
    "int8range", "numrange", "tsrange", "tstzrange", "daterange", "point", "hstore",
}


def canonical_type(type_: sa.types.TypeEngine, model_schemas: set, prefix: str) -> tuple[str | None, str | None]:
    """Return the ``format_type`` spelling of ``type_`` and its collation, or None when unknown."""
    enum = _native_enum(type_)
    if enum is not None:
        qualifier = prefix if enum.schema in model_schemas else quote_ident(enum.schema) + "."
        suffix = "[]" if isinstance(type_, sa.ARRAY) else ""
        return qualifier + quote_ident(enum.name) + suffix, None

    return _canonical_type_text(DIALECT.type_compiler_instance.process(type_))


@functools.lru_cache(maxsize=4096)
def _canonical_type_text(text: str) -> tuple[str | None, str | None]:
    collation = None
    match = re.search(r'\s+COLLATE\s+(.+)$', text)
    if match:
        text, collation = text[:match.start()], match.group(1)

    array = text.endswith("[]")
    base = re.sub(r"(\[\])+$", "", text).strip().lower()
    base = re.sub(r"\s*,\s*", ",", base)
    canonical = _canonical_base(base)
    if canonical is None:
        return None, collation
    return canonical + ("[]" if array else ""), collation


def _canonical_base(base: str) -> str | None:
    match = re.fullmatch(r"([a-z ]+?)\s*(?:\((\d+(?:,\d+)?)\))?(\s+with(?:out)? time zone)?", base)
    if not match:
        return None
    name, args, zone = match.group(1), match.group(2), (match.group(3) or "").strip()
    name = _TYPE_ALIASES.get(name, name)

    if name in ("timestamp", "time"):
        zone = zone or "without time zone"
        return f"{name}{f'({args})' if args else ''} {zone}"
    if name == "float":
        return "real" if args and int(args) <= 24 else "double precision"
    if name == "character" and not args:
        args = "1"
    if name not in _KNOWN_TYPES:
        return None
    return f"{name}({args})" if args else name


_FUNCTION_CALL = re.compile(r"[a-z_][a-z0-9_]*\(\)")
_KEYWORD_DEFAULTS = {"current_timestamp": "CURRENT_TIMESTAMP", "current_date": "CURRENT_DATE",
                     "localtimestamp": "LOCALTIMESTAMP", "current_user": "CURRENT_USER"}
_LITERAL_CASTS = {"text": "text", "character varying": "character varying", "jsonb": "jsonb", "json": "json",
                  "uuid": "uuid", "date": "date", "inet": "inet", "bytea": "bytea"}


def _server_default_text(server_default: sa.schema.FetchedValue) -> str:
    arg = getattr(server_default, "arg", server_default)
    return arg if isinstance(arg, str) else str(getattr(arg, "text", arg))


def canonical_default(server_default: sa.schema.FetchedValue, type_name: str, is_enum: bool = False) -> str | None:
    """Return a server default as ``pg_get_expr`` would render it, or None when unsure.

    Only simple forms are handled offline: literals of common types, booleans, whole
    numbers, and calls without arguments such as ``now()`` or ``gen_random_uuid()``.
    """
    arg = getattr(server_default, "arg", None)
    if isinstance(arg, str):
        return _literal_default(arg, type_name, is_enum)
    if isinstance(arg, sa.sql.elements.TextClause):
        text = arg.text.strip()
    elif isinstance(arg, sa.sql.functions.FunctionElement) and not arg.clauses.clauses:
        text = f"{arg.name}()"  # the common now() and gen_random_uuid(), without a compiler
    elif isinstance(arg, (sa.sql.elements.True_, sa.sql.elements.False_)):
        text = "true" if isinstance(arg, sa.sql.elements.True_) else "false"
    elif isinstance(arg, sa.sql.ClauseElement):
        text = str(arg.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True})).strip()
    else:
        return None

    lowered = text.lower()
    if _FUNCTION_CALL.fullmatch(lowered):
        return lowered
    if lowered in _KEYWORD_DEFAULTS:
        return _KEYWORD_DEFAULTS[lowered]
    if lowered in ("true", "false") and type_name == "boolean":
        return lowered
    match = re.fullmatch(r"'((?:[^']|'')*)'(?:::([a-z ]+))?", text, flags=re.IGNORECASE)
    if match:
        return _literal_default(match.group(1).replace("''", "'"), type_name, is_enum)
    if re.fullmatch(r"\d+", text) and type_name in ("integer", "bigint", "smallint"):
        return text
    return None


def _literal_default(value: str, type_name: str, is_enum: bool) -> str | None:
    if is_enum:
        return "'" + value.replace("'", "''") + "'::" + type_name
    base = re.sub(r"\(.*\)$", "", type_name)
    if base == "boolean" and value.lower() in ("true", "t", "false", "f", "yes", "no", "on", "off", "1", "0"):
        return "true" if value.lower() in ("true", "t", "yes", "on", "1") else "false"
    if base in ("integer", "bigint", "smallint") and re.fullmatch(r"\d+", value):
        return value
    if base == "numeric" and re.fullmatch(r"-?\d+(\.\d+)?", value):
        return f"'{value}'::numeric"
    if base == "character":
        return "'" + value.replace("'", "''") + "'::bpchar"
    if base in _LITERAL_CASTS:
        return "'" + value.replace("'", "''") + "'::" + _LITERAL_CASTS[base]
    return None
