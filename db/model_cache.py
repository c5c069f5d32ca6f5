"""Load models given as ``package.module:attribute``, and cache their snapshot between runs.

Importing SQLAlchemy and a model module takes most of the time of a ``db.diff``, or of a
``db.migrate`` with nothing to do: 1,000 tables take SQLAlchemy about a second to build.
The snapshot depends only on the code that ran and on what that code read. So, while it
imports the models, the cache records:

- the file of every module the import loaded, and of every loaded module of the models'
  own top-level package;
- every file the import opened and every folder it listed, through an audit hook;
- every environment variable it read through ``os.environ`` or ``os.getenv``.

An entry is used while each of those files has the same content (same size and mtime, or
else the same hash), each folder the same names and each variable the same value. Its key
holds the spec, the schema, the type prefix, the server version (the server renders
expressions), the Python and SQLAlchemy versions, ``sys.path``, the working folder and
the source of the code that builds snapshots.

An import that ran earlier in the same process cannot be watched, so its snapshot is not
written. Models whose tables depend on anything else, such as the date or a query, need
``TEXTLOOM_MODEL_CACHE=off``. ``TEXTLOOM_CACHE_DIR`` moves the cache elsewhere.

NOTE: the cache is unpickled, so it is trusted as much as ``__pycache__``: it lives in
the checkout's ``.textloom/cache`` and is never shared.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import pickle
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from db.errors import UsageError
from db.i18n import _
from db.snapshot import SchemaSnapshot

log = logging.getLogger(__name__)

TEXTLOOM_MODELS = "models:metadata"
PROJECT_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("TEXTLOOM_CACHE_DIR") or PROJECT_DIR / ".textloom" / "cache")
# Bump when the pickled entry changes shape in a way the key's source hashes would miss.
CACHE_FORMAT = 2
# Older entries beyond this count are deleted, so many schemas (tests) cannot fill the disk.
MAX_ENTRIES = 20
_CODE_SOURCES = ("db/model_cache.py", "db/model_schema.py", "db/snapshot.py", "db/catalog.py",
                 "db/catalog_queries.py")
_OFF_VALUES = frozenset({"0", "off", "false", "no"})


@dataclass(frozen=True)
class LoadedModels:
    """A MetaData and the one schema its tables name (None when they name none or several)."""

    metadata: Any
    source_schema: str | None


def load(spec: str) -> LoadedModels:
    """Import ``package.module:attribute`` (a MetaData or a declarative base) and find its schema."""
    module_name, attribute = split_spec(spec)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(_("cannot load models from {value!r}: {error}", value=spec, error=exc),
                         hint=_("check the module path and that it imports from the project folder")) from None

    metadata = getattr(target, "metadata", target)
    # Not sorted_tables: that property sorts every table by its foreign keys, which is slow.
    if not hasattr(metadata, "tables") or not hasattr(metadata, "create_all"):
        raise UsageError(_("{value!r} is not a SQLAlchemy MetaData or declarative base", value=spec),
                         hint=_("point --models at a MetaData object or a declarative base class"))
    schemas = {table.schema for table in metadata.tables.values() if table.schema}
    return LoadedModels(metadata, schemas.pop() if len(schemas) == 1 else None)


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``package.module:attribute`` into module and attribute; UsageError when malformed."""
    module_name, _sep, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(_("invalid --models value {value!r}: expected package.module:attribute", value=spec),
                         hint=_("for example --models myapp.models:Base.metadata"))
    return module_name, attribute


def model_snapshot(conn: psycopg.Connection, spec: str, schema: str, type_prefix: str | None, *,
                   before_server: Callable[[], object] | None = None) -> SchemaSnapshot:
    """Return the snapshot of the models of ``spec`` for ``schema``, from the cache when it is current.

    ``before_server`` is passed on to :func:`db.model_schema.snapshot_from_metadata`.
    """
    module_name, _attribute = split_spec(spec)
    enabled = os.environ.get("TEXTLOOM_MODEL_CACHE", "on").strip().lower() not in _OFF_VALUES
    path = CACHE_DIR / f"models-{_key(conn, spec, schema, type_prefix)}.pickle" if enabled else None
    if path is not None:
        snapshot = _read(path)
        if snapshot is not None:
            return snapshot

    from db.model_schema import snapshot_from_metadata  # imported only now: it loads SQLAlchemy

    is_fresh_import = module_name not in sys.modules
    with _recording(module_name) as recorder:
        models = load(spec)
    snapshot = snapshot_from_metadata(models.metadata, schema, source_schema=models.source_schema, conn=conn,
                                      type_prefix=type_prefix, before_server=before_server)
    if path is not None and is_fresh_import:
        _write(path, _Entry(recorder.dependencies(), snapshot))
    return snapshot


def _key(conn: psycopg.Connection, spec: str, schema: str, type_prefix: str | None) -> str:
    digest = hashlib.sha256()
    try:
        sqlalchemy_version = importlib.metadata.version("sqlalchemy")
    except importlib.metadata.PackageNotFoundError:
        sqlalchemy_version = "-"
    for part in (str(CACHE_FORMAT), spec, schema, type_prefix or "", str(conn.info.server_version), sys.version,
                 sqlalchemy_version, os.getcwd(), *sys.path):
        digest.update(part.encode(errors="surrogateescape") + b"\0")
    for source in _CODE_SOURCES:
        digest.update(source.encode() + b"\0" + (PROJECT_DIR / source).read_bytes() + b"\0")
    return digest.hexdigest()[:32]


# Entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    mtime_ns: int
    sha256: str

    def is_current(self) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        if (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns):
            return True
        # Touched or checked out again: the content decides.
        return stat.st_size == self.size and _file_hash(self.path) == self.sha256


@dataclass(frozen=True)
class _Folder:
    path: str
    names_sha256: str

    def is_current(self) -> bool:
        return _names_hash(self.path) == self.names_sha256


@dataclass(frozen=True)
class _Variable:
    name: str
    value: str | None

    def is_current(self) -> bool:
        return os.environ.get(self.name) == self.value


@dataclass(frozen=True)
class _Environment:
    """The import read the whole environment, so every variable counts."""

    sha256: str

    def is_current(self) -> bool:
        return _environment_hash() == self.sha256


@dataclass(frozen=True)
class _Entry:
    dependencies: tuple[_File | _Folder | _Variable | _Environment, ...]
    snapshot: SchemaSnapshot


def _read(path: Path) -> SchemaSnapshot | None:
    try:
        with path.open("rb") as handle:
            entry = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return None
    if not isinstance(entry, _Entry) or not isinstance(entry.snapshot, SchemaSnapshot):
        return None
    stale = next((dependency for dependency in entry.dependencies if not dependency.is_current()), None)
    if stale is not None:
        log.debug("model snapshot cache %s is stale: %s changed", path, stale)
        return None
    log.debug("model snapshot read from %s", path)
    return entry.snapshot


def _write(path: Path, entry: _Entry) -> None:
    # Written to a temporary file and renamed, so a concurrent reader never sees half a file.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            _PlainPickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(entry)
        os.replace(handle.name, path)
        entries = sorted(path.parent.glob("models-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[MAX_ENTRIES:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        # A read-only checkout only loses the speed-up.
        log.warning("could not write the model snapshot cache %s: %s", path, exc)


class _PlainPickler(pickle.Pickler):
    """Pickle str subclasses as plain str.

    SQLAlchemy names are ``quoted_name`` objects. Unpickling them would import SQLAlchemy,
    which is what the cache is there to avoid.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, str) and type(obj) is not str:
            return str, (str(obj),)
        return NotImplemented


def _file_hash(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _names_hash(path: str) -> str | None:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return None
    return hashlib.sha256("\0".join(names).encode(errors="surrogateescape")).hexdigest()


def _environment_hash() -> str:
    items = sorted(os.environ.items())
    return hashlib.sha256(repr(items).encode(errors="surrogateescape")).hexdigest()


# Recording what an import reads ---------------------------------------------------------


class _RecordingEnviron(MutableMapping):
    """Stands in for ``os.environ`` during the import and notes each variable read."""

    def __init__(self, real: MutableMapping[str, str]) -> None:
        self.real = real
        self.read: dict[str, str | None] = {}
        self.read_all = False

    def __getitem__(self, key: str) -> str:
        self.read[key] = self.real.get(key)
        return self.real[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read[key] = self.real.get(key)
        return self.real.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read[key] = self.real.get(key)
        return key in self.real

    def __iter__(self) -> Iterator[str]:
        self.read_all = True
        return iter(self.real)

    def __len__(self) -> int:
        self.read_all = True
        return len(self.real)

    def copy(self) -> dict[str, str]:
        self.read_all = True
        return dict(self.real)

    def __setitem__(self, key: str, value: str) -> None:
        self.real[key] = value

    def __delitem__(self, key: str) -> None:
        del self.real[key]


class _Recorder:
    """Collects what one import reads: modules, files, folders and environment variables."""

    def __init__(self, module_name: str) -> None:
        self.package = module_name.split(".", 1)[0]
        self.thread = threading.get_ident()
        self.modules_before = set(sys.modules)
        self.opened: set[str] = set()
        self.listed: set[str] = set()
        self.environ = _RecordingEnviron(os.environ)

    def on_event(self, event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and _reads(args[1], args[2]):
            self.opened.add(os.path.abspath(os.fsdecode(args[0])))
        elif event in ("os.listdir", "os.scandir") and isinstance(args[0], (str, bytes, os.PathLike)):
            self.listed.add(os.path.abspath(os.fsdecode(args[0])))

    def dependencies(self) -> tuple[_File | _Folder | _Variable | _Environment, ...]:
        files = set(self.opened)
        for name, module in list(sys.modules.items()):
            if name not in self.modules_before or name.split(".", 1)[0] == self.package:
                origin = getattr(module, "__file__", None)
                if origin:
                    files.add(os.path.abspath(origin))
        found: list[_File | _Folder | _Variable | _Environment] = []
        for path in sorted(files):
            # Bytecode follows its source; folders opened with os.open are listed below.
            if path.endswith(".pyc") or not os.path.isfile(path):
                continue
            stat = os.stat(path)
            found.append(_File(path, stat.st_size, stat.st_mtime_ns, _file_hash(path) or ""))
        found += [_Folder(path, _names_hash(path) or "") for path in sorted(self.listed) if os.path.isdir(path)]
        if self.environ.read_all:
            found.append(_Environment(_environment_hash()))
        else:
            found += [_Variable(name, value) for name, value in sorted(self.environ.read.items())]
        return tuple(found)


def _reads(mode: str | None, flags: int | None) -> bool:
    """Tell whether an ``open`` audit event opens the file for reading (os.open has no mode)."""
    if isinstance(mode, str):
        return "r" in mode or "+" in mode
    return not isinstance(flags, int) or flags & os.O_ACCMODE != os.O_WRONLY


_active: _Recorder | None = None
_active_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    recorder = _active
    # Only the importing thread counts: a lock renewal thread may open files meanwhile.
    if recorder is not None and threading.get_ident() == recorder.thread:
        recorder.on_event(event, args)


class _recording:
    """Context manager that records what the import inside it reads."""

    def __init__(self, module_name: str) -> None:
        self.recorder = _Recorder(module_name)

    def __enter__(self) -> _Recorder:
        global _active, _hook_installed
        _active_lock.acquire()
        if not _hook_installed:
            # An audit hook cannot be removed; outside a recording it returns at once.
            sys.addaudithook(_audit)
            _hook_installed = True
        _active = self.recorder
        os.environ = self.recorder.environ  # type: ignore[assignment]
        return self.recorder

    def __exit__(self, *exc_info: object) -> None:
        global _active
        os.environ = self.recorder.environ.real  # type: ignore[assignment]
        _active = None
        _active_lock.release()
