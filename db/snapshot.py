"""The snapshot types that the catalog reader and the model reader both produce.

A snapshot describes one PostgreSQL schema: its tables and enum types, every value in the
canonical text form the server itself renders (``character varying(20)``, ``now()``,
``(price > (0)::numeric)``), so the diff can compare them as plain values. These are
frozen dataclasses with no I/O; their sequences are tuples, so tables, columns and
constraints are hashable and compare by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Foreign key actions as ``pg_constraint.confdeltype`` stores them, spelled as in SQL.
FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class Column:
    """One table column; ``type`` is what ``format_type`` returns, such as ``integer[]``."""

    name: str
    type: str
    nullable: bool = True
    default: str | None = None
    identity: str | None = None  # None, "always" or "by default"
    generated: str | None = None  # the expression of a GENERATED ALWAYS AS column
    collation: str | None = None  # only when it differs from the type's default collation
    comment: str | None = None
    # "stored" or "virtual" (PostgreSQL 18) for a generated column; None when not generated
    # or, on the model side, not known without the server.
    generated_storage: str | None = None


@dataclass(frozen=True)
class PrimaryKey:
    """The primary key constraint of a table."""

    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key constraint; actions are spelled as in SQL (``NO ACTION``, ``CASCADE``)."""

    name: str
    columns: tuple[str, ...]
    target_schema: str
    target_table: str
    target_columns: tuple[str, ...]
    on_delete: str = "NO ACTION"
    on_update: str = "NO ACTION"
    deferrable: bool = False
    initially_deferred: bool = False


@dataclass(frozen=True)
class UniqueConstraint:
    """A UNIQUE constraint (not a unique index, which is an :class:`Index`)."""

    name: str
    columns: tuple[str, ...]
    nulls_not_distinct: bool = False
    deferrable: bool = False
    initially_deferred: bool = False


@dataclass(frozen=True)
class CheckConstraint:
    """A CHECK constraint with its expression as ``pg_get_expr`` renders it.

    ``source`` is the expression as the model wrote it, and serves DDL only. PostgreSQL
    renders some expressions differently once its own rendering is parsed again (an IN
    list over a varchar column, say), so DDL built from the model's text keeps the next
    diff empty.
    """

    name: str
    expression: str
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class IndexKey:
    """One key of an index: a column name or an expression, with its options.

    ``expression`` is what ``pg_get_indexdef(index, n, true)`` returns: a quoted column name
    when ``is_column`` is true, otherwise an expression without its outer parentheses.
    """

    expression: str
    is_column: bool = True
    descending: bool = False
    nulls_first: bool = False
    opclass: str | None = None  # only when it is not the default operator class
    collation: str | None = None  # only when it differs from the key's default collation


@dataclass(frozen=True)
class Index:
    """An index that backs no constraint."""

    name: str
    keys: tuple[IndexKey, ...]
    unique: bool = False
    method: str = "btree"
    include: tuple[str, ...] = ()
    predicate: str | None = None
    nulls_not_distinct: bool = False
    # The predicate as the model wrote it, for DDL only; see CheckConstraint.source.
    predicate_source: str | None = field(default=None, compare=False)

    def same_definition(self, other: Index) -> bool:
        """Return True when both indexes would be built the same way, whatever their names."""
        return (self.keys, self.unique, self.method, self.include, self.predicate, self.nulls_not_distinct) == (
            other.keys, other.unique, other.method, other.include, other.predicate, other.nulls_not_distinct)


@dataclass(frozen=True)
class Table:
    """An ordinary or partitioned table of the schema."""

    name: str
    columns: tuple[Column, ...]
    primary_key: PrimaryKey | None = None
    foreign_keys: tuple[ForeignKey, ...] = ()
    unique_constraints: tuple[UniqueConstraint, ...] = ()
    check_constraints: tuple[CheckConstraint, ...] = ()
    indexes: tuple[Index, ...] = ()
    comment: str | None = None

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


@dataclass(frozen=True)
class Enum:
    """An enum type of the schema with its labels in sort order."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class NotComparable:
    """An object that one side cannot describe in canonical form, and why.

    ``object`` uses the same dotted names as changes, such as ``tasks.ix_tasks_title``.
    The diff reports it and makes no change for it.
    """

    object: str
    reason: str


@dataclass(frozen=True)
class SchemaSnapshot:
    """Everything the diff compares in one schema.

    ``type_prefix`` is how the server qualifies the schema's own types in this session:
    ``""`` when the schema is on the ``search_path``, otherwise its quoted name and a dot.
    ``exists`` is False for a schema that the database does not have yet.
    ``round_trips`` is the number of server round trips that building the snapshot took.
    """

    schema: str
    tables: dict[str, Table] = field(default_factory=dict)
    enums: dict[str, Enum] = field(default_factory=dict)
    not_comparable: tuple[NotComparable, ...] = ()
    exists: bool = True
    type_prefix: str = ""
    round_trips: int = 0
