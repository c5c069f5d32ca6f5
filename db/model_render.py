"""Finish a model snapshot on the server: run the DDL of what offline normalisation left open.

:mod:`db.model_schema` turns SQLAlchemy models into :class:`PreparedModels`: an offline
snapshot, the tables it could not normalise, and their DDL. This module needs neither
SQLAlchemy nor the models. It runs that DDL in a scratch schema inside a transaction that
is always rolled back, reads the tables back through :mod:`db.catalog`, and merges them
into the offline snapshot. The model snapshot cache stores PreparedModels and calls
:func:`finish` on every run, so what the server renders always reflects the live
database (its functions, types and extensions), never a cached result.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import psycopg
from psycopg import sql

from db import catalog
from db.i18n import _
from db.snapshot import CheckConstraint, ForeignKey, Index, IndexKey, NotComparable, SchemaSnapshot, Table

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "textloom_scratch_"
# The scratch schema that prepared DDL names. Each run replaces it with a fresh random name.
SCRATCH_PLACEHOLDER = SCRATCH_PREFIX + "0" * 12
# BEGIN, the DDL, the catalog query, ROLLBACK.
RENDER_ROUND_TRIPS = 4


@dataclass(frozen=True)
class PreparedModels:
    """The models as far as they can be described offline, and the DDL the server must render."""

    offline: SchemaSnapshot
    # Tables holding something offline normalisation could not handle.
    unresolved: frozenset[str]
    # CREATE statements for those tables in the schema SCRATCH_PLACEHOLDER, foreign keys left out.
    ddl: tuple[str, ...]


def finish(conn: psycopg.Connection | None, prepared: PreparedModels, *, round_trips: int = 0,
           before_server: Callable[[], object] | None = None) -> SchemaSnapshot:
    """Render the unresolved tables on the server and merge them into the offline snapshot.

    Without ``conn`` or without unresolved tables, return the offline snapshot.
    ``before_server`` is called before the first query on ``conn``.
    """
    offline = prepared.offline
    if conn is None or not prepared.unresolved:
        return replace(offline, round_trips=round_trips)

    if before_server is not None:
        before_server()
    try:
        rendered = _render(conn, prepared)
    except psycopg.Error as exc:
        # The model may use what this database lacks, such as an extension type. Those
        # objects stay not comparable rather than being guessed, and the note reports it.
        log.info("rendering %d model tables on the server failed: %s", len(prepared.unresolved),
                 str(exc).strip().splitlines()[0])
        note = NotComparable(offline.schema, _("the server could not create the model's tables ({error}); "
                                               "expressions were compared offline where possible",
                                               error=str(exc).strip().splitlines()[0]))
        return replace(_with_notes(offline, [note]), round_trips=round_trips + RENDER_ROUND_TRIPS)
    return _merge(offline, rendered, prepared.unresolved, round_trips + RENDER_ROUND_TRIPS)


def _render(conn: psycopg.Connection, prepared: PreparedModels) -> SchemaSnapshot:
    scratch = SCRATCH_PREFIX + uuid.uuid4().hex[:12]
    ddl = [statement.replace(SCRATCH_PLACEHOLDER, scratch) for statement in prepared.ddl]

    # The DDL has no parameters, so psycopg sends all of it as one simple query. The
    # transaction is rolled back on success and on error, so the scratch schema is not kept.
    with conn.transaction(force_rollback=True):
        create_schema = sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)).as_string(conn)
        conn.execute(";\n".join([create_schema, *ddl]))
        rendered = catalog.read_schema(conn, scratch)

    log.debug("rendered %d model tables in scratch schema %s", len(prepared.unresolved), scratch)
    return _retarget(rendered, scratch, prepared.offline.schema, prepared.offline.type_prefix)


def _merge(offline: SchemaSnapshot, rendered: SchemaSnapshot, names: frozenset[str], round_trips: int) -> SchemaSnapshot:
    # Rendered tables were created without foreign keys (their targets are not there), so
    # those still come from the offline snapshot.
    tables = dict(offline.tables)
    for name in names:
        tables[name] = _with_sources(replace(rendered.tables[name], foreign_keys=offline.tables[name].foreign_keys),
                                     offline.tables[name])
    notes = tuple(note for note in offline.not_comparable if note.object.split(".")[0] not in names)
    return replace(offline, tables=tables, not_comparable=notes + rendered.not_comparable, round_trips=round_trips)


def _with_sources(rendered: Table, offline: Table) -> Table:
    """Give the server-rendered checks and index predicates the model's own text for DDL."""
    check_sources = {check.name: check.source for check in offline.check_constraints}
    predicate_sources = {index.name: index.predicate_source for index in offline.indexes}
    return replace(
        rendered,
        check_constraints=tuple(replace(check, source=check_sources.get(check.name))
                                for check in rendered.check_constraints),
        indexes=tuple(replace(index, predicate_source=predicate_sources.get(index.name))
                      for index in rendered.indexes),
    )


def _retarget(rendered: SchemaSnapshot, scratch: str, schema: str, prefix: str) -> SchemaSnapshot:
    # The scratch name is a random identifier that needs no quoting, so replacing it as
    # text (also inside literals such as nextval('scratch.seq'::regclass)) cannot hit user text.
    def fix(text: str | None) -> str | None:
        return None if text is None else text.replace(scratch + ".", prefix)

    tables = {}
    for table in rendered.tables.values():
        tables[table.name] = Table(
            name=table.name,
            columns=tuple(replace(c, type=fix(c.type), default=fix(c.default), generated=fix(c.generated))
                          for c in table.columns),
            primary_key=table.primary_key,
            foreign_keys=tuple(_retarget_fk(fk, scratch, schema) for fk in table.foreign_keys),
            unique_constraints=table.unique_constraints,
            check_constraints=tuple(CheckConstraint(k.name, fix(k.expression)) for k in table.check_constraints),
            indexes=tuple(_retarget_index(index, fix) for index in table.indexes),
            comment=table.comment,
        )
    return SchemaSnapshot(schema=schema, tables=tables, enums=rendered.enums,
                          not_comparable=rendered.not_comparable, exists=True, type_prefix=prefix)


def _retarget_fk(fk: ForeignKey, scratch: str, schema: str) -> ForeignKey:
    if fk.target_schema != scratch:
        return fk
    return ForeignKey(fk.name, fk.columns, schema, fk.target_table, fk.target_columns, fk.on_delete,
                      fk.on_update, fk.deferrable, fk.initially_deferred)


def _retarget_index(index: Index, fix: Callable[[str | None], str | None]) -> Index:
    keys = tuple(IndexKey(fix(k.expression), k.is_column, k.descending, k.nulls_first, k.opclass, k.collation)
                 for k in index.keys)
    return Index(index.name, keys, index.unique, index.method, index.include, fix(index.predicate),
                 index.nulls_not_distinct)


def _with_notes(snapshot: SchemaSnapshot, notes: Iterable[NotComparable]) -> SchemaSnapshot:
    return SchemaSnapshot(snapshot.schema, snapshot.tables, snapshot.enums,
                          snapshot.not_comparable + tuple(notes), snapshot.exists, snapshot.type_prefix)
