"""Load models given as ``package.module:attribute``, and cache what they describe between runs.

Importing SQLAlchemy and a model module takes most of the time of a ``db.diff``, or of a
``db.migrate`` with nothing to do: 1,000 tables take SQLAlchemy about a second to build.
What the cache keeps (:class:`db.model_render.PreparedModels`) depends only on the code
that ran and on what that code read. So, while it imports the models, the cache records:

- the file of every module the import loaded, and of every loaded module of the models'
  own top-level package;
- every module the import looked for and did not find;
- every file it opened or asked about with ``os.stat`` (``os.path.exists``, ``Path.is_file``
  and the like), found or not, and every folder it listed, through an audit hook and a
  wrapper around ``os.stat``;
- every environment variable it read through ``os.environ`` or ``os.getenv``, of which
  only a hash is stored.

An entry is used while each of those is unchanged: same file content (same size and
mtime, or else the same hash), same folder names, same variables. Its key contains the spec,
the schema, the type prefix, the server version, the Python and SQLAlchemy versions,
``sys.path``, the working folder and the source of the code that builds snapshots. What
the server renders from the models is not cached: :func:`db.model_render.finish` runs on
every use, against the live database.

An import that ran earlier in the same process cannot be watched, so its result is not
written. Models that depend on anything else, such as the date or a query, need
``TEXTLOOM_MODEL_CACHE=off``; ``refresh`` rebuilds the entry once.
``TEXTLOOM_CACHE_DIR`` moves the cache elsewhere.

NOTE: the cache is unpickled, so it is trusted as much as ``__pycache__``: it lives in
the checkout's ``.textloom/cache`` and is never shared.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import pickle
import re
import sys
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from db.connection import mask_passwords
from db.errors import ConfigError, UsageError
from db.i18n import _, language
from db.model_render import PreparedModels, finish
from db.snapshot import SchemaSnapshot

log = logging.getLogger(__name__)

TEXTLOOM_MODELS = "models:metadata"
PROJECT_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("TEXTLOOM_CACHE_DIR") or PROJECT_DIR / ".textloom" / "cache")
# Bump when the pickled entry changes shape in a way the key's source hashes would miss.
CACHE_FORMAT = 2
# Older entries beyond this count are deleted, so many schemas (tests) cannot fill the disk.
MAX_ENTRIES = 20
_CODE_SOURCES = ("db/model_cache.py", "db/model_schema.py", "db/model_render.py", "db/snapshot.py",
                 "db/catalog.py", "db/catalog_queries.py")
_DOTTED_NAME_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_CACHE_MODES = {"on": "on", "1": "on", "true": "on", "yes": "on", "off": "off", "0": "off", "false": "off",
                "no": "off", "refresh": "refresh"}
_HASH_ITERATIONS = 5_000
# A file changed less than this before the import started may have changed during it, on
# file systems whose clock is coarse too, so such an import is not cached.
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class LoadedModels:
    """A MetaData and the one schema its tables name (None when they name none or several)."""

    metadata: Any
    source_schema: str | None


def load(spec: str) -> LoadedModels:
    """Import ``package.module:attribute`` (a MetaData or a declarative base) and find its schema."""
    import sqlalchemy as sa

    module_name, attribute = split_spec(spec)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except ModuleNotFoundError as exc:
        if exc.name and not module_name.startswith(exc.name) and not exc.name.startswith(module_name):
            raise UsageError(_("cannot load models from {value!r}: they import {missing}, which is not installed",
                               value=spec, missing=exc.name),
                             hint=_("install the package that provides {missing} in this environment",
                                    missing=exc.name)) from None
        raise UsageError(_("cannot load models from {value!r}: {error}", value=spec, error=exc),
                         hint=_("check the module path and that it imports from the project folder")) from None
    except (ImportError, AttributeError) as exc:
        raise UsageError(_("cannot load models from {value!r}: {error}", value=spec, error=exc),
                         hint=_("check the module path and that it imports from the project folder")) from None
    except (Exception, SystemExit) as exc:
        # The models' own code failed. Its traceback belongs to that code, not to this tool.
        raise UsageError(_("importing the models of {value!r} failed: {error}", value=spec,
                           error=mask_passwords(f"{type(exc).__name__}: {exc}")),
                         hint=_("fix the models module; `python -c \"import {module}\"` shows the whole traceback",
                                module=module_name)) from None

    metadata = target if isinstance(target, sa.MetaData) else getattr(target, "metadata", None)
    # A Table has a metadata attribute too, but it names one table, not the models.
    if isinstance(target, sa.Table) or not isinstance(metadata, sa.MetaData):
        raise UsageError(_("{value!r} is not a SQLAlchemy MetaData or declarative base", value=spec),
                         hint=_("point --models at a MetaData object or a declarative base class"))
    # Not sorted_tables: that property sorts every table by its foreign keys, which is slow.
    schemas = {table.schema for table in metadata.tables.values() if table.schema}
    return LoadedModels(metadata, schemas.pop() if len(schemas) == 1 else None)


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``package.module:attribute`` into module and attribute; UsageError when malformed."""
    module_name, _sep, attribute = spec.partition(":")
    if not _DOTTED_NAME_RE.fullmatch(module_name) or not _DOTTED_NAME_RE.fullmatch(attribute):
        raise UsageError(_("invalid --models value {value!r}: expected package.module:attribute", value=spec),
                         hint=_("for example --models myapp.models:Base.metadata"))
    return module_name, attribute


def model_snapshot(conn: psycopg.Connection, spec: str, schema: str, type_prefix: str, *,
                   before_server: Callable[[], object] | None = None) -> SchemaSnapshot:
    """Return the snapshot of the models of ``spec`` for ``schema``, the models read from the cache if current.

    ``before_server`` is called before the first query on ``conn``
    (see :func:`db.model_render.finish`).
    """
    module_name, _attribute = split_spec(spec)
    mode = cache_mode()
    path = None if mode == "off" else CACHE_DIR / f"models-{_key(conn, spec, schema, type_prefix)}.pickle"
    prepared = _read(path) if path is not None and mode == "on" else None

    if prepared is None:
        from db.model_schema import prepare  # imported only now: it loads SQLAlchemy

        is_fresh_import = module_name not in sys.modules
        with _recording(module_name) as recorder:
            models = load(spec)
        prepared = prepare(models.metadata, schema, source_schema=models.source_schema, type_prefix=type_prefix,
                           server_version=conn.info.server_version)
        dependencies = recorder.dependencies() if path is not None and is_fresh_import else None
        if dependencies is not None:
            _write(path, _Entry(dependencies, prepared))
    return finish(conn, prepared, before_server=before_server)


def cache_mode() -> str:
    """Return ``on``, ``off`` or ``refresh`` from TEXTLOOM_MODEL_CACHE; ConfigError for another value."""
    value = os.environ.get("TEXTLOOM_MODEL_CACHE", "on").strip().lower()
    if value not in _CACHE_MODES:
        raise ConfigError(_("invalid TEXTLOOM_MODEL_CACHE value {value!r}", value=value),
                          hint=_("use on, off, or refresh to rebuild the cached models once"))
    return _CACHE_MODES[value]


def _key(conn: psycopg.Connection, spec: str, schema: str, type_prefix: str | None) -> str:
    digest = hashlib.sha256()
    try:
        sqlalchemy_version = importlib.metadata.version("sqlalchemy")
    except importlib.metadata.PackageNotFoundError:
        sqlalchemy_version = "-"
    # The language too: the notes of what could not be compared are stored translated.
    for part in (str(CACHE_FORMAT), spec, schema, type_prefix or "", str(conn.info.server_version), sys.version,
                 sqlalchemy_version, language(), os.getcwd(), *sys.path):
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
    """An environment variable; only a salted, slow hash of its value is kept, since it may be a password."""

    name: str
    salt: bytes
    value_hash: bytes | None

    @classmethod
    def of(cls, name: str, value: str | None) -> _Variable:
        salt = os.urandom(16)
        return cls(name, salt, _value_hash(value, salt))

    def is_current(self) -> bool:
        return _value_hash(os.environ.get(self.name), self.salt) == self.value_hash


@dataclass(frozen=True)
class _PathState:
    """The state ``os.stat`` reported for a path: missing, a file, a folder or something else."""

    path: str
    state: str

    def is_current(self) -> bool:
        return _path_state(self.path) == self.state


@dataclass(frozen=True)
class _MissingModule:
    """A module the import looked for and did not find, with the folders it searched."""

    name: str
    search_path: tuple[str, ...] | None

    def is_current(self) -> bool:
        try:
            if self.search_path is None:
                # A top-level name: every finder is asked, and no module code runs.
                return importlib.util.find_spec(self.name) is None
            # PathFinder searches the parent's folders without importing the parent.
            return importlib.machinery.PathFinder.find_spec(self.name, list(self.search_path)) is None
        except (ImportError, ValueError):
            return False


@dataclass(frozen=True)
class _Environment:
    """The import read the whole environment, so every variable counts."""

    sha256: str

    def is_current(self) -> bool:
        return _environment_hash() == self.sha256


@dataclass(frozen=True)
class _ModuleOrigin:
    """A module the import loaded, and the file it was found in."""

    name: str
    search_path: tuple[str, ...] | None
    origin: str

    def is_current(self) -> bool:
        try:
            if self.search_path is None:
                # Every finder is asked, as the import does; no module code runs.
                spec = importlib.util.find_spec(self.name)
            else:
                spec = importlib.machinery.PathFinder.find_spec(self.name, list(self.search_path))
        except (ImportError, ValueError):
            return False
        return spec is not None and spec.origin == self.origin


_Dependency = _File | _Folder | _Variable | _Environment | _PathState | _MissingModule | _ModuleOrigin


@dataclass(frozen=True)
class _Entry:
    dependencies: tuple[_Dependency, ...]
    prepared: PreparedModels


def _read(path: Path) -> PreparedModels | None:
    try:
        with path.open("rb") as handle:
            entry = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return None
    if not isinstance(entry, _Entry) or not isinstance(entry.prepared, PreparedModels):
        return None
    stale = next((dependency for dependency in entry.dependencies if not dependency.is_current()), None)
    if stale is not None:
        log.debug("model snapshot cache %s is stale: %s changed", path, stale)
        return None
    log.debug("models read from the cache %s", path)
    return entry.prepared


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


def _value_hash(value: str | None, salt: bytes) -> bytes | None:
    if value is None:
        return None
    # About 2 ms per variable: cheap for a check, slow for guessing a weak password.
    return hashlib.pbkdf2_hmac("sha256", value.encode(errors="surrogateescape"), salt, _HASH_ITERATIONS)


def _path_state(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "other"


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
        self.started_ns = time.time_ns()
        self.modules_before = set(sys.modules)
        self.opened: set[str] = set()
        self.listed: set[str] = set()
        self.asked: set[str] = set()
        self.missing_modules: set[tuple[str, tuple[str, ...] | None]] = set()
        self.environ = _RecordingEnviron(os.environ)

    def is_recording(self) -> bool:
        # Only the importing thread counts: another thread may open files meanwhile.
        return threading.get_ident() == self.thread

    def on_event(self, event: str, args: tuple) -> None:
        if event == "open" and _is_path(args[0]) and _reads(args[1], args[2]):
            self.opened.add(os.path.abspath(os.fsdecode(args[0])))
        elif event in ("os.listdir", "os.scandir") and _is_path(args[0]):
            self.listed.add(os.path.abspath(os.fsdecode(args[0])))

    def dependencies(self) -> tuple[_Dependency, ...] | None:
        """List what the import read; None when a file or folder changed too recently to trust."""
        files = set(self.opened)
        for name, module in list(sys.modules.items()):
            if name not in self.modules_before or name.split(".", 1)[0] == self.package:
                origin = getattr(module, "__file__", None)
                if origin:
                    files.add(os.path.abspath(origin))
        # Reading a module's current bytecode stands for reading its source.
        files = {_source_of(path) if path.endswith(".pyc") else path for path in files} - {None}
        found: list[_Dependency] = []
        for path in sorted(files):
            if not os.path.isfile(path):
                found.append(_PathState(path, _path_state(path)))
                continue
            status = os.stat(path)
            found.append(_File(path, status.st_size, status.st_mtime_ns, _file_hash(path) or ""))
        folders = sorted(path for path in self.listed if os.path.isdir(path))
        found += [_Folder(path, _names_hash(path) or "") for path in folders]
        found += [_PathState(path, _path_state(path)) for path in sorted((self.asked | self.listed) - files - set(folders))]
        found += [_MissingModule(name, search_path) for name, search_path in sorted(self.missing_modules, key=str)]
        found += self._module_origins()

        recent = [path for path in (*files, *folders)
                  if os.path.exists(path) and os.stat(path).st_mtime_ns > self.started_ns - _RACY_WINDOW_NS]
        if recent:
            log.debug("models not cached: %s changed just before or during the import", recent[0])
            return None
        if self.environ.read_all:
            found.append(_Environment(_environment_hash()))
        else:
            found += [_Variable.of(name, value) for name, value in sorted(self.environ.read.items())]
        return tuple(found)


    def _module_origins(self) -> list[_ModuleOrigin]:
        """Note where each module the import loaded was found, so a module that shadows it is seen."""
        origins = []
        for name, module in sorted(sys.modules.items()):
            spec = getattr(module, "__spec__", None)
            if name in self.modules_before or spec is None or not spec.origin or not spec.has_location:
                continue
            parent = sys.modules.get(name.rpartition(".")[0]) if "." in name else None
            search_path = tuple(parent.__path__) if parent is not None and hasattr(parent, "__path__") else None
            if "." in name and search_path is None:
                continue
            origins.append(_ModuleOrigin(name, search_path, spec.origin))
        return origins


def _source_of(path: str) -> str | None:
    try:
        return importlib.util.source_from_cache(path)
    except ValueError:
        return None


def _is_path(value: object) -> bool:
    return isinstance(value, (str, bytes, os.PathLike))


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
    if recorder is not None and recorder.is_recording():
        recorder.on_event(event, args)


def _watching_stat(real_stat: Callable) -> Callable:
    """Wrap ``os.stat``, ``os.lstat`` or ``os.access`` so the recorder notes which paths the import checks.

    No audit event covers them, and ``os.path.exists``, ``Path.is_file`` and the like call
    them. The import system does not: it calls the ``posix`` module directly.
    """
    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = _active
        if recorder is not None and recorder.is_recording() and _is_path(path) and "dir_fd" not in kwargs:
            recorder.asked.add(os.path.abspath(os.fsdecode(path)))
        return real_stat(path, *args, **kwargs)

    return stat


class _MissingModuleFinder:
    """Last on ``sys.meta_path`` during a recording: notes each module no finder found."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        recorder = _active
        if recorder is not None and recorder.is_recording():
            recorder.missing_modules.add((name, tuple(path) if path is not None else None))
        return None


class _recording:
    """Context manager that records what the import inside it reads."""

    def __init__(self, module_name: str) -> None:
        self.recorder = _Recorder(module_name)
        self.real_stat = os.stat
        self.real_lstat = os.lstat
        self.real_access = os.access

    def __enter__(self) -> _Recorder:
        global _active, _hook_installed
        _active_lock.acquire()
        if not _hook_installed:
            # An audit hook cannot be removed; outside a recording it returns at once.
            sys.addaudithook(_audit)
            _hook_installed = True
        _active = self.recorder
        os.environ = self.recorder.environ  # type: ignore[assignment]
        os.stat = _watching_stat(self.real_stat)
        os.lstat = _watching_stat(self.real_lstat)
        os.access = _watching_stat(self.real_access)
        sys.meta_path.append(_MissingModuleFinder)  # type: ignore[arg-type]
        return self.recorder

    def __exit__(self, *exc_info: object) -> None:
        global _active
        if _MissingModuleFinder in sys.meta_path:
            sys.meta_path.remove(_MissingModuleFinder)  # type: ignore[arg-type]
        os.stat = self.real_stat
        os.lstat = self.real_lstat
        os.access = self.real_access
        os.environ = self.recorder.environ.real  # type: ignore[assignment]
        _active = None
        _active_lock.release()
