"""Compare SQLAlchemy models with a live schema in one call.

Tasks, health checks and the migration runner all need the same three steps (read the
catalog, read the models, compare), so they share :func:`compare`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from db import catalog
from db.diff import Change, ChangeKind, diff_snapshots
from db.snapshot import NotComparable, SchemaSnapshot

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffResult:
    """The changes that make the database match the models, and what could not be compared."""

    changes: tuple[Change, ...]
    not_comparable: tuple[NotComparable, ...]
    round_trips: int
    model_snapshot: SchemaSnapshot
    db_snapshot: SchemaSnapshot

    @property
    def is_empty(self) -> bool:
        """True when the database matches the models in everything that could be compared."""
        return not self.changes

    @property
    def has_hazards(self) -> bool:
        return any(change.hazard.is_hazardous for change in self.changes)


def compare(conn: psycopg.Connection, metadata: sa.MetaData, schema: str, *,
            source_schema: str | None = None, exclude_tables: Collection[str] = ()) -> DiffResult:
    """Read ``schema`` and the tables of ``metadata``, and return what differs.

    ``source_schema`` is the schema the models name (such as ``textloom_core``) when the
    database schema has another name; see :func:`db.model_schema.snapshot_from_metadata`.
    Tables named in ``exclude_tables`` (the migration bookkeeping, say) are left out of
    the database side, so they are never reported as only in the database.
    """
    from db import model_schema  # imported on use: it loads SQLAlchemy

    def model_snapshot(type_prefix: str, before_server: Callable[[], object]) -> SchemaSnapshot:
        return model_schema.snapshot_from_metadata(metadata, schema, source_schema=source_schema, conn=conn,
                                                   type_prefix=type_prefix, before_server=before_server)

    return compare_with(conn, schema, model_snapshot, exclude_tables=exclude_tables)


ModelSnapshotBuilder = Callable[[str, Callable[[], object]], SchemaSnapshot]


def compare_with(conn: psycopg.Connection, schema: str, model_snapshot: ModelSnapshotBuilder, *,
                 exclude_tables: Collection[str] = ()) -> DiffResult:
    """Like :func:`compare`, with the model side built by ``model_snapshot(type_prefix, before_server)``.

    The callback gets the schema's type prefix, so a cached model snapshot can be used
    when the models have not changed. The catalog query runs in a second thread while this
    one builds the model snapshot, so the server's work and Python's overlap. The callback
    must call ``before_server()`` before it sends anything on ``conn``: that waits for the
    catalog query, which must not run inside a transaction the callback opens.
    """
    type_prefix = _type_prefix(conn, schema)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog") as pool:
        catalog_read = pool.submit(catalog.read_schema, conn, schema)
        model = model_snapshot(type_prefix, catalog_read.result)
        db_snapshot = catalog_read.result()
    if exclude_tables:
        kept = {name: table for name, table in db_snapshot.tables.items() if name not in exclude_tables}
        db_snapshot = dataclasses.replace(db_snapshot, tables=kept)

    planned = diff_snapshots(model, db_snapshot)
    changes = tuple(change for change in planned if change.kind != ChangeKind.NOT_COMPARABLE)
    notes = model.not_comparable + db_snapshot.not_comparable
    log.info("schema %s: %d change(s), %d object(s) not comparable", schema, len(changes), len(notes))
    round_trips = 1 + db_snapshot.round_trips + model.round_trips
    return DiffResult(changes, notes, round_trips, model, db_snapshot)


def _type_prefix(conn: psycopg.Connection, schema: str) -> str:
    """Return how the server qualifies the schema's own types: empty when it is on the search_path."""
    quoted, is_visible = conn.execute(
        "SELECT pg_catalog.quote_ident(%(schema)s), %(schema)s = ANY (pg_catalog.current_schemas(false))",
        {"schema": schema}).fetchone()
    return "" if is_visible else quoted + "."


@dataclass
class RoundTrips:
    """Count of the requests a block sent that each waited for the server's reply."""

    count: int = 0


@contextlib.contextmanager
def count_round_trips(conn: psycopg.Connection) -> Iterator[RoundTrips]:
    """Count the round trips of ``conn`` inside the block from libpq's protocol trace.

    Each simple ``Query`` message and each ``Sync`` of the extended protocol ends with the
    server's ReadyForQuery, so their number is the number of round trips.
    """
    counter = RoundTrips()
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield counter
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            for line in trace:
                fields = line.split("\t")
                if fields[0] == "F" and len(fields) > 2 and fields[2].strip() in ("Query", "Sync"):
                    counter.count += 1
