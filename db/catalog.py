"""Read the live schema from ``pg_catalog`` into a :class:`~db.snapshot.SchemaSnapshot`.

The whole schema comes back from one query as one JSON document, so reading a schema of
a thousand tables costs one round trip, the same as reading one table.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from db import catalog_queries
from db.errors import DatabaseError
from db.i18n import _
from db.snapshot import (
    FK_ACTIONS,
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

# pg_index.indoption bits, from PostgreSQL's catalog/pg_index.h.
_INDOPTION_DESC = 0x0001
_INDOPTION_NULLS_FIRST = 0x0002

_IDENTITY = {"a": "always", "d": "by default", "": None}


def read_schema(conn: psycopg.Connection, schema: str) -> SchemaSnapshot:
    """Read every table and enum type of ``schema``; a missing schema gives an empty snapshot."""
    try:
        row = conn.execute(catalog_queries.SCHEMA_SNAPSHOT, {"schema": schema}).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(
            _("reading the catalog of schema {schema} failed: {error}", schema=schema, error=str(exc).strip()),
            hint=_("check that the user may read pg_catalog and that the server runs PostgreSQL 15 or later"),
        ) from exc

    return snapshot_from_document(schema, row[0])


def snapshot_from_document(schema: str, document: dict[str, Any]) -> SchemaSnapshot:
    """Build a snapshot from the JSON document of :data:`catalog_queries.SCHEMA_SNAPSHOT`."""
    notes: list[NotComparable] = []
    tables = {}
    for raw in document["tables"]:
        table, table_notes = _table(raw)
        tables[table.name] = table
        notes.extend(table_notes)

    enums = {raw["name"]: Enum(raw["name"], tuple(raw["values"] or ())) for raw in document["enums"]}
    prefix = "" if document["is_visible"] else document["quoted_schema"] + "."
    log.debug("read %d tables and %d enums of schema %s", len(tables), len(enums), schema)
    return SchemaSnapshot(schema=schema, tables=tables, enums=enums, not_comparable=tuple(notes),
                          exists=document["exists"], type_prefix=prefix, round_trips=1)


def _table(raw: dict[str, Any]) -> tuple[Table, list[NotComparable]]:
    name = raw["name"]
    columns = tuple(_column(column) for column in raw["columns"] or ())
    notes = []

    primary_key = None
    foreign_keys, uniques, checks = [], [], []
    for constraint in raw["constraints"] or ():
        kind = constraint["type"]
        if kind == "p":
            primary_key = PrimaryKey(constraint["name"], tuple(constraint["columns"]))
        elif kind == "f":
            foreign_keys.append(_foreign_key(constraint))
        elif kind == "u":
            uniques.append(UniqueConstraint(
                constraint["name"], tuple(constraint["columns"]),
                nulls_not_distinct=constraint["nulls_not_distinct"],
                deferrable=constraint["deferrable"], initially_deferred=constraint["initially_deferred"]))
        elif kind == "c":
            checks.append(CheckConstraint(constraint["name"], constraint["expression"]))
        else:
            # Exclusion constraints and constraint triggers have no counterpart in the snapshot.
            notes.append(NotComparable(f"{name}.{constraint['name']}",
                                       _("constraint type {kind} is not compared: {definition}",
                                         kind=kind, definition=constraint["definition"])))

    table = Table(
        name=name,
        columns=columns,
        primary_key=primary_key,
        foreign_keys=tuple(foreign_keys),
        unique_constraints=tuple(uniques),
        check_constraints=tuple(checks),
        indexes=tuple(_index(index) for index in raw["indexes"] or ()),
        comment=raw["comment"],
    )
    return table, notes


def _column(raw: dict[str, Any]) -> Column:
    return Column(
        name=raw["name"],
        type=raw["type"],
        nullable=raw["nullable"],
        default=raw["default"],
        identity=_IDENTITY[raw["identity"]],
        generated=raw["generated"],
        collation=raw["collation"],
        comment=raw["comment"],
        generated_storage=raw["generated_storage"],
    )


def _foreign_key(raw: dict[str, Any]) -> ForeignKey:
    return ForeignKey(
        name=raw["name"],
        columns=tuple(raw["columns"]),
        target_schema=raw["target_schema"],
        target_table=raw["target_table"],
        target_columns=tuple(raw["target_columns"]),
        on_delete=FK_ACTIONS[raw["on_delete"]],
        on_update=FK_ACTIONS[raw["on_update"]],
        deferrable=raw["deferrable"],
        initially_deferred=raw["initially_deferred"],
    )


def _index(raw: dict[str, Any]) -> Index:
    key_count = raw["key_count"]
    parts = raw["keys"] or []
    keys = tuple(
        IndexKey(
            expression=part["expression"],
            is_column=part["is_column"],
            descending=bool((part["option"] or 0) & _INDOPTION_DESC),
            nulls_first=bool((part["option"] or 0) & _INDOPTION_NULLS_FIRST),
            opclass=part["opclass"],
            collation=part["collation"],
        )
        for part in parts[:key_count]
    )
    return Index(
        name=raw["name"],
        keys=keys,
        unique=raw["unique"],
        method=raw["method"],
        include=tuple(part["expression"] for part in parts[key_count:]),
        predicate=raw["predicate"],
        nulls_not_distinct=raw["nulls_not_distinct"],
    )
