"""Compare a model snapshot with a database snapshot and plan the changes between them.

:func:`diff_snapshots` is a pure function of two :class:`~db.snapshot.SchemaSnapshot`
values. Each kind of object has its comparator, which sorts the objects into three sets as
Alembic's autogenerate does: only in the model (add), only in the database (drop) and in
both (compare). Every :class:`Change` carries its hazard and the SQL that makes the
database match the model. That SQL stays online where PostgreSQL allows it. Indexes are
built ``CONCURRENTLY``, and constraints are added ``NOT VALID`` and validated afterwards.
``SET NOT NULL`` follows a validated CHECK, so it needs no long exclusive lock.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import re
from decimal import Decimal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields

from db.i18n import _
from db.snapshot import (
    CheckConstraint,
    Column,
    Enum,
    ForeignKey,
    Index,
    IndexKey,
    PrimaryKey,
    SchemaSnapshot,
    Table,
    UniqueConstraint,
)

log = logging.getLogger(__name__)

# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63


class ChangeKind(enum.StrEnum):
    """The kind of a change; each value is a stable name for reports and JSON."""

    ADD_SCHEMA = "add_schema"
    ADD_ENUM = "add_enum"
    ADD_ENUM_VALUE = "add_enum_value"
    ALTER_ENUM = "alter_enum"
    DROP_ENUM = "drop_enum"
    ADD_TABLE = "add_table"
    DROP_TABLE = "drop_table"
    ADD_COLUMN = "add_column"
    DROP_COLUMN = "drop_column"
    ALTER_TYPE = "alter_type"
    ALTER_COLLATION = "alter_collation"
    ALTER_NULLABLE = "alter_nullable"
    ALTER_DEFAULT = "alter_default"
    ALTER_IDENTITY = "alter_identity"
    ALTER_GENERATED = "alter_generated"
    ADD_CONSTRAINT = "add_constraint"
    DROP_CONSTRAINT = "drop_constraint"
    ALTER_CONSTRAINT = "alter_constraint"
    RENAME_CONSTRAINT = "rename_constraint"
    ADD_INDEX = "add_index"
    DROP_INDEX = "drop_index"
    ALTER_INDEX = "alter_index"
    RENAME_INDEX = "rename_index"
    ALTER_COMMENT = "alter_comment"
    NOT_COMPARABLE = "not_comparable"


class Hazard(enum.StrEnum):
    """Risk level of applying a change; :attr:`risk` explains it in one line."""

    SAFE = "safe"
    LOCKS = "locks"
    REWRITES = "rewrites"
    DESTRUCTIVE = "destructive"
    NEEDS_REVIEW = "needs_review"

    @property
    def risk(self) -> str:
        return {
            Hazard.SAFE: _("no data change and only a brief catalog lock"),
            Hazard.LOCKS: _("holds a lock that can make other sessions wait while it runs"),
            Hazard.REWRITES: _("rewrites or rescans the table under an ACCESS EXCLUSIVE lock, and can fail on "
                               "existing values"),
            Hazard.DESTRUCTIVE: _("removes an object or its data, which the model cannot restore"),
            Hazard.NEEDS_REVIEW: _("can fail on existing rows or change how stored values are read: "
                                   "check the data first"),
        }[self]

    @property
    def is_hazardous(self) -> bool:
        """True for changes that are never applied without a person reading them first."""
        return self not in (Hazard.SAFE, Hazard.LOCKS)


@dataclass(frozen=True)
class Change:
    """One difference between the model and the database, with the SQL that removes it.

    ``object`` is a dotted name such as ``tasks``, ``tasks.status`` (a column) or
    ``tasks.tasks_pkey`` (a constraint or index). When ``is_transactional`` is False, the
    statements must run one by one outside a transaction block (``CREATE INDEX
    CONCURRENTLY``, ``ALTER TYPE ... ADD VALUE``).
    """

    kind: ChangeKind
    object: str
    model_value: object
    db_value: object
    hazard: Hazard
    sql: tuple[str, ...] = ()
    is_transactional: bool = True
    detail: str = ""


# The order in which the planned changes are applied: types before the tables that use
# them, tables before their constraints, constraints a new one may depend on dropped first.
_PHASES = [
    ChangeKind.ADD_SCHEMA, ChangeKind.ADD_ENUM, ChangeKind.ADD_ENUM_VALUE, ChangeKind.ALTER_ENUM,
    ChangeKind.DROP_CONSTRAINT, ChangeKind.DROP_INDEX, ChangeKind.ADD_TABLE, ChangeKind.ADD_COLUMN,
    ChangeKind.ALTER_TYPE, ChangeKind.ALTER_COLLATION, ChangeKind.ALTER_GENERATED, ChangeKind.ALTER_DEFAULT,
    ChangeKind.ALTER_NULLABLE, ChangeKind.ALTER_IDENTITY, ChangeKind.RENAME_CONSTRAINT, ChangeKind.RENAME_INDEX,
    ChangeKind.ALTER_CONSTRAINT, ChangeKind.ADD_CONSTRAINT, ChangeKind.ALTER_INDEX, ChangeKind.ADD_INDEX,
    ChangeKind.ALTER_COMMENT, ChangeKind.DROP_COLUMN, ChangeKind.DROP_TABLE, ChangeKind.DROP_ENUM,
    ChangeKind.NOT_COMPARABLE,
]


def diff_snapshots(model: SchemaSnapshot, db: SchemaSnapshot) -> list[Change]:
    """Return the changes that make ``db`` match ``model``, in the order to apply them."""
    context = _Context(model.schema, skipped={note.object for note in model.not_comparable + db.not_comparable})
    changes: list[Change] = []

    if not db.exists:
        changes.append(Change(ChangeKind.ADD_SCHEMA, model.schema, model.schema, None, Hazard.SAFE,
                              (f"CREATE SCHEMA {quote(model.schema)}",)))
    changes += _compare_enums(context, model.enums, db.enums)
    changes += _compare_tables(context, model.tables, db.tables)
    for note in model.not_comparable + db.not_comparable:
        changes.append(Change(ChangeKind.NOT_COMPARABLE, note.object, None, None, Hazard.NEEDS_REVIEW,
                              detail=note.reason))

    changes.sort(key=lambda change: _PHASES.index(change.kind))
    for change in changes:
        log.info("detected %s on %s (%s)", change.kind, change.object, change.hazard)
    return changes


@dataclass
class _Context:
    schema: str
    skipped: set[str] = field(default_factory=set)

    def table(self, name: str) -> str:
        return quote(self.schema, name)

    def is_skipped(self, table: str, name: str | None = None) -> bool:
        return table in self.skipped or (name is not None and f"{table}.{name}" in self.skipped)


# -- quoting ---------------------------------------------------------------------------


def quote(*parts: str) -> str:
    """Quote an identifier, qualified when given several parts (``"app"."tasks"``).

    The result is the same as ``psycopg.sql.Identifier(*parts).as_string(None)``, which
    tests check, without its cost on the thousands of names of a large schema.
    """
    return ".".join(_quote_part(part) for part in parts)


@functools.lru_cache(maxsize=65536)
def _quote_part(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'



def quote_literal(value: str) -> str:
    """Quote a string literal for a server with ``standard_conforming_strings`` on (the default)."""
    return "'" + value.replace("'", "''") + "'"


def _truncate(name: str) -> str:
    encoded = name.encode()
    return encoded[:MAX_IDENTIFIER_BYTES].decode(errors="ignore") if len(encoded) > MAX_IDENTIFIER_BYTES else name


# -- enums -----------------------------------------------------------------------------


def _compare_enums(context: _Context, model_enums: dict[str, Enum], db_enums: dict[str, Enum]) -> list[Change]:
    changes = []
    for name in model_enums.keys() - db_enums.keys():
        values = ", ".join(quote_literal(value) for value in model_enums[name].values)
        changes.append(Change(ChangeKind.ADD_ENUM, name, model_enums[name].values, None, Hazard.SAFE,
                              (f"CREATE TYPE {context.table(name)} AS ENUM ({values})",)))
    for name in db_enums.keys() - model_enums.keys():
        changes.append(Change(ChangeKind.DROP_ENUM, name, None, db_enums[name].values, Hazard.DESTRUCTIVE,
                              (f"DROP TYPE {context.table(name)}",)))
    for name in sorted(model_enums.keys() & db_enums.keys()):
        changes += _compare_enum_values(context, model_enums[name], db_enums[name])
    return sorted(changes, key=lambda change: change.object)


def _compare_enum_values(context: _Context, model_enum: Enum, db_enum: Enum) -> list[Change]:
    model_values, db_values = model_enum.values, db_enum.values
    if model_values == db_values:
        return []

    # Values can only be added in place; removing or reordering needs the type recreated.
    if [value for value in model_values if value in db_values] != list(db_values):
        return [Change(ChangeKind.ALTER_ENUM, model_enum.name, model_values, db_values, Hazard.NEEDS_REVIEW,
                       detail=_("values were removed or reordered; PostgreSQL can only add enum values, so the "
                                "type must be recreated and every column using it converted"))]

    statements = []
    for position, value in enumerate(model_values):
        if value in db_values:
            continue
        if position == 0:
            anchor = f"BEFORE {quote_literal(model_values[1])}" if len(model_values) > 1 else ""
        else:
            anchor = f"AFTER {quote_literal(model_values[position - 1])}"
        statements.append(f"ALTER TYPE {context.table(model_enum.name)} ADD VALUE {quote_literal(value)} {anchor}"
                          .rstrip())
    # A value added inside a transaction cannot be used before that transaction commits.
    return [Change(ChangeKind.ADD_ENUM_VALUE, model_enum.name, model_values, db_values, Hazard.SAFE,
                   tuple(statements), is_transactional=False)]


# -- tables ----------------------------------------------------------------------------


def _compare_tables(context: _Context, model_tables: dict[str, Table], db_tables: dict[str, Table]) -> list[Change]:
    changes = []
    for name in sorted(model_tables.keys() - db_tables.keys()):
        if not context.is_skipped(name):
            changes += _add_table(context, model_tables[name])
    for name in sorted(db_tables.keys() - model_tables.keys()):
        if not context.is_skipped(name):
            changes.append(Change(ChangeKind.DROP_TABLE, name, None, name, Hazard.DESTRUCTIVE,
                                  (f"DROP TABLE {context.table(name)}",)))
    for name in sorted(model_tables.keys() & db_tables.keys()):
        if not context.is_skipped(name):
            changes += _compare_table(context, model_tables[name], db_tables[name])
    return changes


def _add_table(context: _Context, table: Table) -> list[Change]:
    definitions = [_column_definition(table.name, column) for column in table.columns]
    if table.primary_key is not None:
        definitions.append(_primary_key_clause(table.primary_key))
    definitions += [_unique_clause(unique) for unique in table.unique_constraints]
    definitions += [f"CONSTRAINT {quote(check.name)} CHECK {_parenthesised(check.source or check.expression)}"
                    for check in table.check_constraints]
    statements = [f"CREATE TABLE {context.table(table.name)} (\n    " + ",\n    ".join(definitions) + "\n)"]

    # The table is new and empty, so its indexes are built at once inside the transaction.
    statements += [_create_index(context, table.name, index, concurrently=False) for index in table.indexes]
    if table.comment:
        statements.append(f"COMMENT ON TABLE {context.table(table.name)} IS {quote_literal(table.comment)}")
    statements += [f"COMMENT ON COLUMN {context.table(table.name)}.{quote(column.name)} IS "
                   f"{quote_literal(column.comment)}" for column in table.columns if column.comment]

    changes = [Change(ChangeKind.ADD_TABLE, table.name, table.name, None, Hazard.SAFE, tuple(statements))]
    # Foreign keys come after every new table exists, since they may point at one another.
    for fk in table.foreign_keys:
        changes.append(Change(ChangeKind.ADD_CONSTRAINT, f"{table.name}.{fk.name}", fk, None, Hazard.SAFE,
                              (f"ALTER TABLE {context.table(table.name)} ADD {_foreign_key_clause(fk)}",)))
    return changes


def _compare_table(context: _Context, model_table: Table, db_table: Table) -> list[Change]:
    changes = _compare_columns(context, model_table, db_table)
    changes += _compare_primary_key(context, model_table, db_table)
    changes += _compare_constraints(context, model_table.name, model_table.unique_constraints,
                                    db_table.unique_constraints, _UNIQUE_RULES)
    changes += _compare_constraints(context, model_table.name, model_table.check_constraints,
                                    db_table.check_constraints, _CHECK_RULES)
    changes += _compare_constraints(context, model_table.name, model_table.foreign_keys,
                                    db_table.foreign_keys, _FOREIGN_KEY_RULES)
    changes += _compare_indexes(context, model_table, db_table)
    if normalise_comment(model_table.comment) != normalise_comment(db_table.comment):
        changes.append(_comment_change(context, model_table.name, None, model_table.comment, db_table.comment))
    return changes


# -- columns ---------------------------------------------------------------------------


def _compare_columns(context: _Context, model_table: Table, db_table: Table) -> list[Change]:
    changes = []
    table = model_table.name
    db_names = {column.name for column in db_table.columns}
    model_names = {column.name for column in model_table.columns}

    for column in model_table.columns:
        if column.name not in db_names and not context.is_skipped(table, column.name):
            changes.append(_add_column(context, table, column))
    for column in db_table.columns:
        if column.name not in model_names and not context.is_skipped(table, column.name):
            changes.append(Change(ChangeKind.DROP_COLUMN, f"{table}.{column.name}", None, column.type,
                                  Hazard.DESTRUCTIVE,
                                  (f"ALTER TABLE {context.table(table)} DROP COLUMN {quote(column.name)}",)))
    for column in model_table.columns:
        db_column = db_table.column(column.name)
        if db_column is not None and not context.is_skipped(table, column.name):
            changes += _compare_column(context, table, column, db_column)
    return changes


def _add_column(context: _Context, table: str, column: Column) -> Change:
    statement = f"ALTER TABLE {context.table(table)} ADD COLUMN {_column_definition(table, column)}"
    statements = [statement]
    if column.comment:
        statements.append(f"COMMENT ON COLUMN {context.table(table)}.{quote(column.name)} IS "
                          f"{quote_literal(column.comment)}")

    # Since PostgreSQL 11 a constant default is only stored in the catalog. A volatile
    # default, an identity or a stored generated column makes PostgreSQL fill every row.
    if column.generated is not None or column.identity is not None or _is_volatile(column.default):
        hazard = Hazard.REWRITES
    elif not column.nullable and column.default is None:
        hazard = Hazard.NEEDS_REVIEW
    else:
        hazard = Hazard.SAFE
    return Change(ChangeKind.ADD_COLUMN, f"{table}.{column.name}", column.type, None, hazard, tuple(statements))


def _compare_column(context: _Context, table: str, model: Column, db: Column) -> list[Change]:
    if model == db:
        return []
    name = f"{table}.{model.name}"
    alter = f"ALTER TABLE {context.table(table)} ALTER COLUMN {quote(model.name)}"

    if _generation(model) != _generation(db):
        # A generated column contains derived data only, so dropping and adding it loses nothing.
        statements = (f"ALTER TABLE {context.table(table)} DROP COLUMN {quote(model.name)}",
                      f"ALTER TABLE {context.table(table)} ADD COLUMN {_column_definition(table, model)}")
        return [Change(ChangeKind.ALTER_GENERATED, name, _generation(model), _generation(db), Hazard.REWRITES,
                       statements)]

    changes = []
    is_default_rewritten = False
    if model.type != db.type:
        change, is_default_rewritten = _alter_type(alter, name, model, db)
        changes.append(change)
    if model.collation != db.collation and model.type == db.type:
        collation = model.collation or '"default"'
        changes.append(Change(ChangeKind.ALTER_COLLATION, name, model.collation, db.collation, Hazard.REWRITES,
                              (f"{alter} TYPE {model.type} COLLATE {collation}",)))
    if not is_default_rewritten and not is_same_default(model.default, db.default):
        statement = f"{alter} SET DEFAULT {model.default}" if model.default is not None else f"{alter} DROP DEFAULT"
        changes.append(Change(ChangeKind.ALTER_DEFAULT, name, model.default, db.default, Hazard.SAFE,
                              (statement,)))
    if model.nullable != db.nullable:
        changes.append(_alter_nullable(context, table, alter, model))
    if model.identity != db.identity:
        changes.append(_alter_identity(alter, name, model, db))
    if normalise_comment(model.comment) != normalise_comment(db.comment):
        changes.append(_comment_change(context, table, model.name, model.comment, db.comment))
    return changes


def _alter_type(alter: str, name: str, model: Column, db: Column) -> tuple[Change, bool]:
    hazard, needs_cast = classify_type_change(db.type, model.type)
    collate = f" COLLATE {model.collation}" if model.collation else ""
    using = f" USING {quote(model.name)}::{model.type}" if needs_cast else ""
    statement = f"{alter} TYPE {model.type}{collate}{using}"
    if not needs_cast or db.default is None:
        return Change(ChangeKind.ALTER_TYPE, name, model.type, db.type, hazard, (statement,)), False

    # The old default may not cast to the new type, so it is dropped first and the model's set after.
    statements = [f"{alter} DROP DEFAULT", statement]
    if model.default is not None:
        statements.append(f"{alter} SET DEFAULT {model.default}")
    return Change(ChangeKind.ALTER_TYPE, name, model.type, db.type, hazard, tuple(statements)), True


def _alter_nullable(context: _Context, table: str, alter: str, model: Column) -> Change:
    name = f"{table}.{model.name}"
    if model.nullable:
        return Change(ChangeKind.ALTER_NULLABLE, name, True, False, Hazard.SAFE, (f"{alter} DROP NOT NULL",))

    # SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock unless a validated CHECK
    # already proves the column has no NULL; that CHECK validates under a weaker lock.
    check = quote(_truncate(f"{table}_{model.name}_not_null_check"))
    statements = (
        f"ALTER TABLE {context.table(table)} ADD CONSTRAINT {check} CHECK ({quote(model.name)} IS NOT NULL) NOT VALID",
        f"ALTER TABLE {context.table(table)} VALIDATE CONSTRAINT {check}",
        f"{alter} SET NOT NULL",
        f"ALTER TABLE {context.table(table)} DROP CONSTRAINT {check}",
    )
    return Change(ChangeKind.ALTER_NULLABLE, name, False, True, Hazard.NEEDS_REVIEW, statements,
                  detail=_("fails while any row has NULL in the column"))


def _alter_identity(alter: str, name: str, model: Column, db: Column) -> Change:
    if model.identity is None:
        return Change(ChangeKind.ALTER_IDENTITY, name, None, db.identity, Hazard.NEEDS_REVIEW,
                      (f"{alter} DROP IDENTITY",))
    generated = "ALWAYS" if model.identity == "always" else "BY DEFAULT"
    if db.identity is None:
        return Change(ChangeKind.ALTER_IDENTITY, name, model.identity, None, Hazard.NEEDS_REVIEW,
                      (f"{alter} ADD GENERATED {generated} AS IDENTITY",),
                      detail=_("the new sequence starts at 1 and may collide with existing values"))
    return Change(ChangeKind.ALTER_IDENTITY, name, model.identity, db.identity, Hazard.SAFE,
                  (f"{alter} SET GENERATED {generated}",))


def _generation(column: Column) -> str | None:
    """Describe how a column is generated, such as ``(a * 2) STORED``; None when it is not."""
    if column.generated is None:
        return None
    if column.generated_storage is None:
        return f"({column.generated})"
    return f"({column.generated}) {column.generated_storage.upper()}"


def _column_definition(table: str, column: Column) -> str:
    parts = [quote(column.name), _serial_type(table, column) or column.type]
    if column.collation:
        parts.append(f"COLLATE {column.collation}")
    if column.generated is not None:
        storage = "VIRTUAL" if column.generated_storage == "virtual" else "STORED"
        parts.append(f"GENERATED ALWAYS AS ({column.generated}) {storage}")
    elif column.identity is not None:
        parts.append(f"GENERATED {'ALWAYS' if column.identity == 'always' else 'BY DEFAULT'} AS IDENTITY")
    elif column.default is not None and not _serial_type(table, column):
        parts.append(f"DEFAULT {column.default}")
    if not column.nullable:
        parts.append("NOT NULL")
    return " ".join(parts)


_SERIAL_TYPES = {"integer": "serial", "bigint": "bigserial", "smallint": "smallserial"}


def _serial_type(table: str, column: Column) -> str | None:
    # A column whose default is nextval() of the sequence named as SERIAL names it was most
    # likely declared SERIAL; declaring it so again creates the sequence the default needs.
    if column.type not in _SERIAL_TYPES or column.default is None:
        return None
    sequence = re.escape(_truncate(f"{table}_{column.name}_seq"))
    if re.fullmatch(rf"nextval\('(?:[^'.]+\.)?\"?{sequence}\"?'::regclass\)", column.default):
        return _SERIAL_TYPES[column.type]
    return None


_STRING_TYPES = {"text", "character varying"}
_NUMBER_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}
_TIMESTAMP_TYPES = {"timestamp without time zone", "timestamp with time zone"}


def _split_type(type_name: str) -> tuple[str, tuple[int, ...], bool]:
    is_array = type_name.endswith("[]")
    bare = type_name.removesuffix("[]")
    match = re.fullmatch(r"(.+?)\((\d+(?:,\d+)*)\)(.*)", bare)
    if not match:
        return bare, (), is_array
    base = (match.group(1) + match.group(3)).strip()
    return base, tuple(int(number) for number in match.group(2).split(",")), is_array


def classify_type_change(db_type: str, model_type: str) -> tuple[Hazard, bool]:
    """Return the hazard of changing ``db_type`` to ``model_type`` and whether it needs ``USING``.

    Widening ``character varying`` or ``numeric`` and moving between ``character varying``
    and ``text`` are binary coercible, so PostgreSQL rewrites nothing (since 9.2).
    """
    db_base, db_args, db_array = _split_type(db_type)
    model_base, model_args, model_array = _split_type(model_type)
    if db_array != model_array:
        return Hazard.REWRITES, True

    if db_base in _STRING_TYPES and model_base in _STRING_TYPES:
        if not model_args:
            return Hazard.SAFE, False
        if db_base == "character varying" and db_args and model_args[0] >= db_args[0]:
            return Hazard.SAFE, False
        return Hazard.REWRITES, False
    if db_base == model_base == "numeric":
        if not model_args:
            return Hazard.SAFE, False
        if db_args and len(db_args) == len(model_args) and model_args[0] >= db_args[0] \
                and db_args[1:] == model_args[1:]:
            return Hazard.SAFE, False
        return Hazard.REWRITES, False
    if db_base in _TIMESTAMP_TYPES and model_base in _TIMESTAMP_TYPES:
        # The stored instants are reinterpreted in the session's TimeZone.
        return Hazard.NEEDS_REVIEW, False

    is_same_family = any(db_base in family and model_base in family
                         for family in (_STRING_TYPES, _NUMBER_TYPES, _TIMESTAMP_TYPES))
    return Hazard.REWRITES, not is_same_family and db_base != model_base


# -- defaults and comments -------------------------------------------------------------

_VOLATILE_FUNCTIONS = ("gen_random_uuid(", "uuid_generate_v4(", "random(", "clock_timestamp(", "nextval(",
                       "timeofday(", "uuidv4(", "uuidv7(")
_NOW_SPELLINGS = {"now()", "current_timestamp", "transaction_timestamp()"}
# A number, bare or cast to a numeric type, as in 0, (-1)::integer or '2.50'::numeric.
_NUMBER = re.compile(r"\(?(-?\d+(?:\.\d+)?)\)?(?:::(?:smallint|integer|bigint|numeric|real|double precision)"
                     r"(?:\(\d+(?:,\d+)?\))?)?")
_BOOLEAN_SPELLINGS = {"t": "true", "true": "true", "yes": "true", "on": "true", "1": "true",
                      "f": "false", "false": "false", "no": "false", "off": "false", "0": "false"}
_LITERAL_WITH_CAST = re.compile(r"'((?:[^']|'')*)'::([a-z ]+(?:\(\d+(?:,\d+)?\))?)")


def _is_volatile(default: str | None) -> bool:
    return default is not None and any(function in default.lower() for function in _VOLATILE_FUNCTIONS)


@functools.lru_cache(maxsize=65536)
def default_key(default: str | None) -> object:
    """Return a value that is equal for two defaults exactly when they mean the same.

    ``now()`` and ``CURRENT_TIMESTAMP`` are one function, numbers compare by value whatever
    their cast (``0``, ``'0'::numeric``), jsonb literals compare as JSON values (PostgreSQL
    reorders their keys), and string literals compare by their text whether cast to
    ``text`` or ``character varying``.
    """
    if default is None:
        return None
    text = default.strip()
    while text.startswith("(") and text.endswith(")") and _is_balanced(text[1:-1]):
        text = text[1:-1].strip()
    if text.lower() in _NOW_SPELLINGS:
        return ("now",)

    number = _NUMBER.fullmatch(text)
    if number:
        return ("number", Decimal(number.group(1)).normalize())
    match = _LITERAL_WITH_CAST.fullmatch(text)
    if not match:
        return ("expression", text)
    value, cast = match.group(1).replace("''", "'"), match.group(2)
    if _split_type(cast)[0] in _NUMBER_TYPES and _NUMBER.fullmatch(value):
        return ("number", Decimal(value).normalize())
    if cast == "boolean" and value.lower() in _BOOLEAN_SPELLINGS:
        return ("expression", _BOOLEAN_SPELLINGS[value.lower()])
    if cast in ("jsonb", "json"):
        try:
            return ("json", json.dumps(json.loads(value), sort_keys=True))
        except ValueError:
            return ("expression", text)
    if cast in ("text", "character varying") or cast.startswith("character varying("):
        return ("string", value)
    return ("literal", value, cast)


def _is_balanced(text: str) -> bool:
    depth = 0
    for character in text:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            return False
    return depth == 0


def is_same_default(model_default: str | None, db_default: str | None) -> bool:
    return default_key(model_default) == default_key(db_default)


def normalise_comment(comment: str | None) -> str | None:
    """PostgreSQL stores an empty comment as no comment, so ``""`` and None are equal."""
    return comment or None


def _comment_change(context: _Context, table: str, column: str | None, model: str | None, db: str | None) -> Change:
    value = quote_literal(model) if model else "NULL"
    if column is None:
        target, name = f"TABLE {context.table(table)}", table
    else:
        target, name = f"COLUMN {context.table(table)}.{quote(column)}", f"{table}.{column}"
    return Change(ChangeKind.ALTER_COMMENT, name, normalise_comment(model), normalise_comment(db), Hazard.SAFE,
                  (f"COMMENT ON {target} IS {value}",))


# -- constraints -----------------------------------------------------------------------


@dataclass(frozen=True)
class _ConstraintRules:
    """The comparison key and the SQL builder of one kind of constraint."""

    definition: Callable[[object], object]
    add: Callable[[_Context, str, object], tuple[tuple[str, ...], bool]]


def _constraint_definition(constraint: object) -> object:
    # Every compared field but the name; fields declared with compare=False (DDL sources) are left out.
    return tuple((f.name, getattr(constraint, f.name)) for f in fields(constraint) if f.compare and f.name != "name")


def _add_unique(context: _Context, table: str, unique: UniqueConstraint) -> tuple[tuple[str, ...], bool]:
    # Building the index concurrently and then attaching it keeps writes going meanwhile.
    nulls = " NULLS NOT DISTINCT" if unique.nulls_not_distinct else ""
    columns = ", ".join(quote(column) for column in unique.columns)
    return (
        f"CREATE UNIQUE INDEX CONCURRENTLY {quote(unique.name)} ON {context.table(table)} ({columns}){nulls}",
        f"ALTER TABLE {context.table(table)} ADD CONSTRAINT {quote(unique.name)} UNIQUE USING INDEX "
        f"{quote(unique.name)}{_deferrable_clause(unique)}",
    ), False


def _add_check(context: _Context, table: str, check: CheckConstraint) -> tuple[tuple[str, ...], bool]:
    return (
        f"ALTER TABLE {context.table(table)} ADD CONSTRAINT {quote(check.name)} CHECK "
        f"{_parenthesised(check.source or check.expression)} NOT VALID",
        f"ALTER TABLE {context.table(table)} VALIDATE CONSTRAINT {quote(check.name)}",
    ), True


def _add_foreign_key(context: _Context, table: str, fk: ForeignKey) -> tuple[tuple[str, ...], bool]:
    return (
        f"ALTER TABLE {context.table(table)} ADD {_foreign_key_clause(fk)} NOT VALID",
        f"ALTER TABLE {context.table(table)} VALIDATE CONSTRAINT {quote(fk.name)}",
    ), True


_UNIQUE_RULES = _ConstraintRules(_constraint_definition, _add_unique)
_CHECK_RULES = _ConstraintRules(_constraint_definition, _add_check)
_FOREIGN_KEY_RULES = _ConstraintRules(_constraint_definition, _add_foreign_key)


def _compare_constraints(context: _Context, table: str, model_items: Sequence, db_items: Sequence,
                         rules: _ConstraintRules) -> list[Change]:
    model_by_name = {item.name: item for item in model_items if not context.is_skipped(table, item.name)}
    db_by_name = {item.name: item for item in db_items if not context.is_skipped(table, item.name)}
    changes = []
    drop = f"ALTER TABLE {context.table(table)} DROP CONSTRAINT"

    only_model, only_db, renames = _match_renames(model_by_name, db_by_name, rules.definition)
    for model_item, db_item in renames:
        changes.append(Change(ChangeKind.RENAME_CONSTRAINT, f"{table}.{model_item.name}", model_item.name,
                              db_item.name, Hazard.SAFE,
                              (f"ALTER TABLE {context.table(table)} RENAME CONSTRAINT {quote(db_item.name)} "
                               f"TO {quote(model_item.name)}",)))
    for item in only_model:
        statements, is_transactional = rules.add(context, table, item)
        changes.append(Change(ChangeKind.ADD_CONSTRAINT, f"{table}.{item.name}", item, None, Hazard.NEEDS_REVIEW,
                              statements, is_transactional,
                              detail=_("fails if existing rows violate the constraint")))
    for item in only_db:
        if _is_possibly_unrendered(context, table, model_items):
            changes.append(_unmatched_note(table, item.name))
            continue
        changes.append(Change(ChangeKind.DROP_CONSTRAINT, f"{table}.{item.name}", None, item, Hazard.DESTRUCTIVE,
                              (f"{drop} {quote(item.name)}",)))
    for name in sorted(model_by_name.keys() & db_by_name.keys()):
        model_item, db_item = model_by_name[name], db_by_name[name]
        if rules.definition(model_item) == rules.definition(db_item):
            continue
        statements, is_transactional = rules.add(context, table, model_item)
        changes.append(Change(ChangeKind.ALTER_CONSTRAINT, f"{table}.{name}", model_item, db_item,
                              Hazard.NEEDS_REVIEW, (f"{drop} {quote(name)}", *statements), is_transactional,
                              detail=_("the old constraint is dropped first, so nothing enforces it until the new one is validated")))
    return changes


def _match_renames(model_by_name: dict, db_by_name: dict, definition: Callable) -> tuple[list, list, list]:
    """Pair objects that differ only by name; return (only in model, only in db, renamed pairs)."""
    only_model = [model_by_name[name] for name in sorted(model_by_name.keys() - db_by_name.keys())]
    only_db = [db_by_name[name] for name in sorted(db_by_name.keys() - model_by_name.keys())]
    renames = []
    for model_item in list(only_model):
        match = next((db_item for db_item in only_db if definition(db_item) == definition(model_item)), None)
        if match is not None:
            renames.append((model_item, match))
            only_model.remove(model_item)
            only_db.remove(match)
    return only_model, only_db, renames


def _is_possibly_unrendered(context: _Context, table: str, model_items: Sequence) -> bool:
    # An object only in the database may be the model's object that could not be rendered
    # under the same name, so it is reported as not comparable rather than dropped.
    return any(context.is_skipped(table, item.name) for item in model_items)


def _unmatched_note(table: str, name: str) -> Change:
    return Change(ChangeKind.NOT_COMPARABLE, f"{table}.{name}", None, name, Hazard.NEEDS_REVIEW,
                  detail=_("only in the database, and the model has objects of this kind that could not be "
                           "compared"))


def _compare_primary_key(context: _Context, model_table: Table, db_table: Table) -> list[Change]:
    model_pk, db_pk = model_table.primary_key, db_table.primary_key
    table = model_table.name
    if model_pk == db_pk:
        return []
    if model_pk is not None and db_pk is not None and model_pk.columns == db_pk.columns:
        return [Change(ChangeKind.RENAME_CONSTRAINT, f"{table}.{model_pk.name}", model_pk.name, db_pk.name,
                       Hazard.SAFE, (f"ALTER TABLE {context.table(table)} RENAME CONSTRAINT {quote(db_pk.name)} "
                                     f"TO {quote(model_pk.name)}",))]

    statements = []
    if db_pk is not None:
        statements.append(f"ALTER TABLE {context.table(table)} DROP CONSTRAINT {quote(db_pk.name)}")
    if model_pk is None:
        return [Change(ChangeKind.DROP_CONSTRAINT, f"{table}.{db_pk.name}", None, db_pk, Hazard.DESTRUCTIVE,
                       tuple(statements))]

    # The unique index is built concurrently; attaching it then only checks NOT NULL.
    columns = ", ".join(quote(column) for column in model_pk.columns)
    statements += [
        f"CREATE UNIQUE INDEX CONCURRENTLY {quote(model_pk.name)} ON {context.table(table)} ({columns})",
        f"ALTER TABLE {context.table(table)} ADD CONSTRAINT {quote(model_pk.name)} PRIMARY KEY USING INDEX "
        f"{quote(model_pk.name)}",
    ]
    kind = ChangeKind.ADD_CONSTRAINT if db_pk is None else ChangeKind.ALTER_CONSTRAINT
    return [Change(kind, f"{table}.{model_pk.name}", model_pk, db_pk, Hazard.NEEDS_REVIEW, tuple(statements),
                   is_transactional=False,
                   detail=_("fails on duplicate or NULL keys; foreign keys to the old key must be dropped first"))]


def _primary_key_clause(pk: PrimaryKey) -> str:
    return f"CONSTRAINT {quote(pk.name)} PRIMARY KEY ({', '.join(quote(column) for column in pk.columns)})"


def _unique_clause(unique: UniqueConstraint) -> str:
    nulls = " NULLS NOT DISTINCT" if unique.nulls_not_distinct else ""
    columns = ", ".join(quote(column) for column in unique.columns)
    return f"CONSTRAINT {quote(unique.name)} UNIQUE{nulls} ({columns}){_deferrable_clause(unique)}"


def _foreign_key_clause(fk: ForeignKey) -> str:
    columns = ", ".join(quote(column) for column in fk.columns)
    target_columns = ", ".join(quote(column) for column in fk.target_columns)
    clause = (f"CONSTRAINT {quote(fk.name)} FOREIGN KEY ({columns}) REFERENCES "
              f"{quote(fk.target_schema, fk.target_table)} ({target_columns})")
    if fk.on_delete != "NO ACTION":
        clause += f" ON DELETE {fk.on_delete}"
    if fk.on_update != "NO ACTION":
        clause += f" ON UPDATE {fk.on_update}"
    return clause + _deferrable_clause(fk)


def _deferrable_clause(constraint: UniqueConstraint | ForeignKey) -> str:
    if not constraint.deferrable:
        return ""
    return " DEFERRABLE INITIALLY DEFERRED" if constraint.initially_deferred else " DEFERRABLE"


def _parenthesised(expression: str) -> str:
    text = expression.strip()
    if text.startswith("(") and text.endswith(")") and _is_balanced(text[1:-1]):
        return text
    return f"({text})"


# -- indexes ---------------------------------------------------------------------------


def _compare_indexes(context: _Context, model_table: Table, db_table: Table) -> list[Change]:
    table = model_table.name
    model_by_name = {index.name: index for index in model_table.indexes if not context.is_skipped(table, index.name)}
    db_by_name = {index.name: index for index in db_table.indexes if not context.is_skipped(table, index.name)}
    changes = []

    only_model, only_db, renames = _match_renames(model_by_name, db_by_name, _index_definition)
    for model_index, db_index in renames:
        changes.append(Change(ChangeKind.RENAME_INDEX, f"{table}.{model_index.name}", model_index.name,
                              db_index.name, Hazard.SAFE,
                              (f"ALTER INDEX {context.table(db_index.name)} RENAME TO {quote(model_index.name)}",)))
    for index in only_model:
        changes.append(Change(ChangeKind.ADD_INDEX, f"{table}.{index.name}", index, None, Hazard.SAFE,
                              (_create_index(context, table, index, concurrently=True),), is_transactional=False))
    for index in only_db:
        if _is_possibly_unrendered(context, table, model_table.indexes):
            changes.append(_unmatched_note(table, index.name))
            continue
        changes.append(Change(ChangeKind.DROP_INDEX, f"{table}.{index.name}", None, index, Hazard.DESTRUCTIVE,
                              (f"DROP INDEX CONCURRENTLY {context.table(index.name)}",), is_transactional=False))
    for name in sorted(model_by_name.keys() & db_by_name.keys()):
        if not model_by_name[name].same_definition(db_by_name[name]):
            changes.append(_replace_index(context, table, model_by_name[name], db_by_name[name]))
    return changes


def _index_definition(index: Index) -> object:
    return (index.keys, index.unique, index.method, index.include, index.predicate, index.nulls_not_distinct)


def _replace_index(context: _Context, table: str, model: Index, db: Index) -> Change:
    # The new index is built beside the old one, so queries keep an index throughout.
    temporary = _truncate(f"{model.name}_new")
    built = Index(temporary, model.keys, model.unique, model.method, model.include, model.predicate,
                  model.nulls_not_distinct)
    statements = (
        _create_index(context, table, built, concurrently=True),
        f"DROP INDEX CONCURRENTLY {context.table(db.name)}",
        f"ALTER INDEX {context.table(temporary)} RENAME TO {quote(model.name)}",
    )
    hazard = Hazard.NEEDS_REVIEW if model.unique and not db.unique else Hazard.LOCKS
    return Change(ChangeKind.ALTER_INDEX, f"{table}.{model.name}", model, db, hazard, statements,
                  is_transactional=False)


def _create_index(context: _Context, table: str, index: Index, *, concurrently: bool) -> str:
    parts = ["CREATE UNIQUE INDEX" if index.unique else "CREATE INDEX"]
    if concurrently:
        parts.append("CONCURRENTLY")
    parts.append(f"{quote(index.name)} ON {context.table(table)} USING {index.method}")
    parts.append("(" + ", ".join(_index_key(key) for key in index.keys) + ")")
    if index.include:
        parts.append("INCLUDE (" + ", ".join(index.include) + ")")
    if index.nulls_not_distinct:
        parts.append("NULLS NOT DISTINCT")
    if index.predicate:
        parts.append(f"WHERE {index.predicate_source or index.predicate}")
    return " ".join(parts)


def _index_key(key: IndexKey) -> str:
    parts = [key.expression if key.is_column else f"({key.expression})"]
    if key.collation:
        parts.append(f"COLLATE {key.collation}")
    if key.opclass:
        parts.append(key.opclass)
    if key.descending:
        parts.append("DESC" if key.nulls_first else "DESC NULLS LAST")
    elif key.nulls_first:
        parts.append("NULLS FIRST")
    return " ".join(parts)


# -- script ----------------------------------------------------------------------------


def render_script(changes: Iterable[Change], *, no_transaction_directive: str | None = None) -> str:
    """Render changes as a SQL script for review.

    Hazardous changes (see :attr:`Hazard.is_hazardous`) are commented out with their
    hazard, so running the script as it is applies only the safe ones. With
    ``no_transaction_directive``, the script is a migration file that starts with that
    directive, so the runner commits each statement on its own.
    """
    changes = list(changes)
    lines = [_("-- Schema changes planned by TextLoom: {count} change(s).", count=len(changes))]
    if no_transaction_directive:
        lines.insert(0, no_transaction_directive)
        lines.append(_("-- The first line makes the runner commit each statement on its own, so no lock is "
                       "held longer than one statement and concurrent builds can run."))
    elif any(not change.is_transactional and change.sql for change in changes):
        lines.append(_("-- Statements marked 'no transaction' cannot run inside a transaction block: run this "
                       "script in autocommit mode (psql without --single-transaction)."))
    if any(change.hazard.is_hazardous and change.sql for change in changes):
        lines.append(_("-- Hazardous statements are commented out: read them, then uncomment the ones to run."))

    for change in changes:
        lines.append("")
        lines.append(f"-- {change.kind} {change.object}: {change.hazard} ({change.hazard.risk})")
        if change.detail:
            lines.append(f"-- {change.detail}")
        if not change.is_transactional and change.sql:
            lines.append(_("-- no transaction"))
        for statement in change.sql:
            text = statement + ";"
            if change.hazard.is_hazardous:
                text = "\n".join("-- " + line for line in text.splitlines())
            lines.append(text)
    return "\n".join(lines) + "\n"
