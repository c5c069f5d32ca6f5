"""A cache of the model snapshot of TextLoom's own models, so a no-op run skips SQLAlchemy.

Importing SQLAlchemy and the models takes most of the time of a ``db.migrate`` that has
nothing to do. The snapshot they produce depends only on the source files of ``models/``,
the code that builds snapshots, the SQLAlchemy version, the server version (which renders
expressions), the schema name and the type prefix, so those make the cache key. Models
given with ``--models`` are never cached, because their imports are unknown.

NOTE: the cache is unpickled, so it is trusted as much as ``__pycache__``: it lives in
the checkout's ``.textloom/cache`` and is never shared.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import pickle
import tempfile
from pathlib import Path

import psycopg

from db.snapshot import SchemaSnapshot

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_DIR / ".textloom" / "cache"
# Bump when the pickled types change shape in a way the key's source hashes would miss.
CACHE_FORMAT = 1
# Older entries beyond this count are deleted, so many schemas (tests) cannot fill the disk.
MAX_ENTRIES = 20
_KEY_SOURCES = ("models", "db/model_schema.py", "db/snapshot.py", "db/catalog.py", "db/catalog_queries.py")


def textloom_snapshot(conn: psycopg.Connection, schema: str, type_prefix: str | None) -> SchemaSnapshot:
    """Return the snapshot of TextLoom's models for ``schema``, from the cache when it is current."""
    path = CACHE_DIR / f"models-{_key(conn, schema, type_prefix)}.pickle"
    try:
        with path.open("rb") as handle:
            snapshot = pickle.load(handle)
        if isinstance(snapshot, SchemaSnapshot):
            log.debug("model snapshot read from %s", path)
            return snapshot
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        pass

    from db.model_schema import snapshot_from_metadata
    from models import SCHEMA, metadata

    snapshot = snapshot_from_metadata(metadata, schema, source_schema=SCHEMA, conn=conn, type_prefix=type_prefix)
    _write(path, snapshot)
    return snapshot


def _key(conn: psycopg.Connection, schema: str, type_prefix: str | None) -> str:
    digest = hashlib.sha256()
    for part in (str(CACHE_FORMAT), importlib.metadata.version("sqlalchemy"), str(conn.info.server_version),
                 schema, type_prefix or ""):
        digest.update(part.encode() + b"\0")
    for source in _KEY_SOURCES:
        root = PROJECT_DIR / source
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def _write(path: Path, snapshot: SchemaSnapshot) -> None:
    # Written to a temporary file and renamed, so a concurrent reader never sees half a file.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            pickle.dump(snapshot, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
        entries = sorted(path.parent.glob("models-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[MAX_ENTRIES:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        # A read-only checkout only loses the speed-up.
        log.warning("could not write the model snapshot cache %s: %s", path, exc)
