"""The model snapshot cache: same result as a fresh import, and a new import whenever an input changes.

Each test writes a small model package into tmp_path. ``forget`` removes it from
``sys.modules`` between calls, as a new process would start without it.
"""

from __future__ import annotations

import importlib
import os
import py_compile
import sys
import time
import uuid

import pytest

from db import model_cache
from db.connection import connect
from db.errors import ConfigError, UsageError
from db.migrations import run_migrations
from db.model_schema import snapshot_from_metadata
from models import SCHEMA, metadata

MODELS = """\
import os
from pathlib import Path

import sqlalchemy as sa

from {package}.columns import extra_columns

HERE = Path(__file__).parent
metadata = sa.MetaData()
names = (HERE / "tables.txt").read_text().split()
names += sorted(path.stem for path in (HERE / "defs").iterdir())
for number in range(int(os.environ.get("{variable}", "1"))):
    names.append(f"counted_{{number}}")
if (HERE / "state" / "flag").exists():
    names.append("flagged")
try:
    names += (HERE / "data" / "more.txt").read_text().split()
except FileNotFoundError:
    pass
try:
    from {package} import extra
    names += extra.NAMES
except ImportError:
    pass
try:
    import {package}_plugin
    names += {package}_plugin.NAMES
except ImportError:
    pass
try:
    from {package} import broken
    names += broken.NAMES
except RuntimeError:
    pass
if os.access(HERE / "state" / "access", os.R_OK):
    names.append("accessible")
try:
    names += sorted(os.listdir(HERE / "later"))
except FileNotFoundError:
    pass
import {package}_shadowed
names += {package}_shadowed.NAMES
for name in names:
    sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True), *extra_columns())
"""

COLUMNS = """\
import sqlalchemy as sa


def extra_columns():
    return [sa.Column("label", sa.Text)]
"""


class ModelPackage:
    """A model package on sys.path whose tables come from code, a file, a folder and a variable."""

    def __init__(self, root, monkeypatch) -> None:
        self.name = "cachetest_" + uuid.uuid4().hex[:8]
        self.variable = self.name.upper() + "_COUNT"
        self.folder = root / self.name
        for folder in ("defs", "state", "data"):
            (self.folder / folder).mkdir(parents=True)
        # Imported before the models, so the import system lists the folder before the recording.
        (root / f"{self.name}_early.py").write_text("")
        (self.folder / "broken.py").write_text("raise RuntimeError('not ready')\n")
        # Found in the second folder on sys.path; a file in the first would shadow it.
        (root.parent / "later_on_path").mkdir()
        (root.parent / "later_on_path" / f"{self.name}_shadowed.py").write_text("NAMES = []\n")
        (self.folder / "__init__.py").write_text("")
        (self.folder / "columns.py").write_text(COLUMNS)
        (self.folder / "tables.txt").write_text("alpha beta\n")
        (self.folder / "models.py").write_text(MODELS.format(package=self.name, variable=self.variable))
        self.spec = f"{self.name}.models:metadata"
        monkeypatch.syspath_prepend(str(root.parent / "later_on_path"))
        monkeypatch.syspath_prepend(str(root))
        # A minute old: the cache does not trust files changed just before the import.
        for path in [root, root.parent / "later_on_path", *root.parent.glob("later_on_path/*"), self.folder,
                     *self.folder.rglob("*")]:
            os.utime(path, ns=(time.time_ns() - 60_000_000_000,) * 2)
        # Current bytecode, as an application that ran before leaves it: the import then
        # reads broken.py's .pyc, not broken.py.
        py_compile.compile(str(self.folder / "broken.py"), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        for path in [self.folder, self.folder / "__pycache__", *self.folder.glob("__pycache__/*")]:
            os.utime(path, ns=(time.time_ns() - 60_000_000_000,) * 2)

    def forget(self) -> None:
        for name in [name for name in sys.modules if name.split(".")[0].startswith(self.name)]:
            del sys.modules[name]

    @property
    def is_imported(self) -> bool:
        return f"{self.name}.models" in sys.modules

    def edit(self, relative: str, text: str) -> None:
        """Rewrite a file and date it half a minute ago, later than before and old enough to cache."""
        path = self.folder / relative
        path.write_text(text)
        os.utime(path, ns=(time.time_ns() - 30_000_000_000,) * 2)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setattr(model_cache, "CACHE_DIR", folder)
    monkeypatch.delenv("TEXTLOOM_MODEL_CACHE", raising=False)
    return folder


@pytest.fixture
def package(tmp_path, monkeypatch, cache_dir):
    created = ModelPackage(tmp_path / "src", monkeypatch)
    yield created
    created.forget()


def tables(conn, package: ModelPackage, schema: str) -> set[str]:
    package.forget()
    return set(model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.").tables)


def test_second_run_skips_the_import(conn, schema, package, cache_dir):
    first = model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert package.is_imported
    assert len(list(cache_dir.glob("models-*.pickle"))) == 1

    package.forget()
    second = model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")

    assert not package.is_imported
    assert second.tables == first.tables
    assert set(second.tables) == {"alpha", "beta", "counted_0"}


@pytest.mark.parametrize("relative, text, expected", [
    ("models.py", None, "gamma_from_code"),
    ("columns.py", COLUMNS.replace('"label"', '"caption"'), None),
    ("tables.txt", "alpha beta delta\n", "delta"),
])
def test_changed_source_or_file_is_read_again(conn, schema, package, relative, text, expected):
    before = model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    if text is None:
        text = (package.folder / relative).read_text() + 'sa.Table("gamma_from_code", metadata)\n'
    package.edit(relative, text)

    package.forget()
    after = model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")

    assert package.is_imported
    if expected:
        assert expected in after.tables
    else:
        assert [c.name for c in after.tables["alpha"].columns] == ["id", "caption"]
        assert [c.name for c in before.tables["alpha"].columns] == ["id", "label"]


def test_new_file_in_listed_folder_is_seen(conn, schema, package):
    assert "epsilon" not in tables(conn, package, schema)
    (package.folder / "defs" / "epsilon.yaml").write_text("")
    assert "epsilon" in tables(conn, package, schema)


def test_file_changed_during_import_not_cached(conn, schema, package, cache_dir):
    # Its content at the import may differ from its content now, and the cache cannot tell.
    package.edit("tables.txt", "alpha beta\n")
    os.utime(package.folder / "tables.txt")
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert not cache_dir.exists()


@pytest.mark.parametrize("create, table", [
    ("data/more.txt", "zeta"),
    ("state/flag", "flagged"),
    ("../{package}_plugin.py", "theta"),
    ("state/access", "accessible"),
    ("later/iota", "iota"),
    ("broken.py", "kappa"),
    ("../{package}_shadowed.py", "lambda"),
], ids=["file read", "existence checked", "optional module", "os.access", "folder listed", "module fixed",
        "module shadowed"])
def test_missing_at_import_then_created_is_seen(conn, schema, package, create, table):
    __import__(f"{package.name}_early")
    assert table not in tables(conn, package, schema)
    path = package.folder / create.format(package=package.name)
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"NAMES = ['{table}']\n" if path.suffix == ".py" else f"{table}\n")
    os.utime(path, ns=(time.time_ns() - 30_000_000_000,) * 2)
    # The import system keeps listings of folders; a new process starts without them.
    importlib.invalidate_caches()
    assert table in tables(conn, package, schema)


def test_deleted_flag_file_is_seen(conn, schema, package):
    (package.folder / "state" / "flag").write_text("")
    assert "flagged" in tables(conn, package, schema)
    (package.folder / "state" / "flag").unlink()
    assert "flagged" not in tables(conn, package, schema)


def test_variable_value_not_stored(conn, schema, package, cache_dir, monkeypatch):
    monkeypatch.setenv(package.variable, "1")
    monkeypatch.setenv("CACHETEST_SECRET", "s3cr3t-password")
    (package.folder / "columns.py").write_text(COLUMNS + "import os\nSECRET = os.environ['CACHETEST_SECRET']\n")
    os.utime(package.folder / "columns.py", ns=(time.time_ns() - 30_000_000_000,) * 2)
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    (entry,) = cache_dir.glob("models-*.pickle")
    assert b"s3cr3t-password" not in entry.read_bytes()

    monkeypatch.setenv("CACHETEST_SECRET", "another")
    package.forget()
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert package.is_imported


def test_changed_variable_is_seen(conn, schema, package, monkeypatch):
    monkeypatch.setenv(package.variable, "2")
    assert {"counted_0", "counted_1"} <= tables(conn, package, schema)
    monkeypatch.setenv(package.variable, "3")
    assert "counted_2" in tables(conn, package, schema)
    monkeypatch.delenv(package.variable)
    assert "counted_1" not in tables(conn, package, schema)


def test_touched_but_unchanged_file_keeps_the_entry(conn, schema, package):
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    package.edit("models.py", (package.folder / "models.py").read_text())

    package.forget()
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")

    assert not package.is_imported


def test_cache_off_imports_every_time(conn, schema, package, cache_dir, monkeypatch):
    monkeypatch.setenv("TEXTLOOM_MODEL_CACHE", "off")
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    package.forget()
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert package.is_imported
    assert not cache_dir.exists()


def test_import_done_earlier_is_not_written(conn, schema, package, cache_dir):
    # The recorder could not watch this import, so it cannot tell what the snapshot depends on.
    __import__(f"{package.name}.models")
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert not cache_dir.exists()


def test_broken_cache_file_rebuilt(conn, schema, package, cache_dir):
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    (entry,) = cache_dir.glob("models-*.pickle")
    entry.write_bytes(b"not a pickle")
    assert "alpha" in tables(conn, package, schema)
    assert package.is_imported


def test_refresh_imports_again(conn, schema, package, monkeypatch):
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    package.forget()
    monkeypatch.setenv("TEXTLOOM_MODEL_CACHE", "refresh")
    model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert package.is_imported


def test_unknown_cache_mode_rejected(conn, schema, package, monkeypatch):
    monkeypatch.setenv("TEXTLOOM_MODEL_CACHE", "maybe")
    with pytest.raises(ConfigError):
        model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")


def test_server_rendering_runs_every_time(conn, schema, package):
    # The CHECK calls a function that does not exist yet, so the server cannot render it.
    conn.execute(f'CREATE SCHEMA "{schema}"')
    package.edit("columns.py", COLUMNS.replace(
        'sa.Column("label", sa.Text)]',
        f'sa.Column("label", sa.Text, sa.CheckConstraint("\\"{schema}\\".is_short(label)"))]'))
    first = model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")
    assert any("could not create" in note.reason for note in first.not_comparable)

    conn.execute(f'CREATE FUNCTION "{schema}".is_short(value text) RETURNS boolean '
                 "LANGUAGE sql IMMUTABLE RETURN length(value) < 10")
    package.forget()
    second = model_cache.model_snapshot(conn, package.spec, schema, f"{schema}.")

    assert not package.is_imported
    assert second.not_comparable == ()
    assert second.tables["alpha"].check_constraints


@pytest.mark.parametrize("body, spec_attribute", [
    ("raise KeyError('SETTING')\n", "metadata"),
    ("import sqlalchemy as sa\nmetadata = sa.MetaData()\nt = sa.Table('t', metadata)\n", "t"),
], ids=["module raises", "attribute is a table"])
def test_bad_models_module_is_usage_error(tmp_path, monkeypatch, body, spec_attribute):
    name = "badmodels_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError):
        model_cache.load(f"{name}:{spec_attribute}")
    sys.modules.pop(name, None)


def test_models_error_hides_password(tmp_path, monkeypatch):
    name = "badmodels_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('cannot reach postgresql://app:s3cret@db/textloom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError) as caught:
        model_cache.load(f"{name}:metadata")
    assert "s3cret" not in caught.value.message
    assert "postgresql://app:***@db/textloom" in caught.value.message


@pytest.mark.parametrize("spec", ["no_colon", ":metadata", "module:", ".relative:metadata", "..up:metadata"])
def test_malformed_spec_is_a_usage_error(spec):
    with pytest.raises(UsageError):
        model_cache.split_spec(spec)


def test_textloom_models_match_a_fresh_snapshot(settings, cache_dir):
    run_migrations(settings)
    with connect(settings.database_url) as conn:
        fresh = snapshot_from_metadata(metadata, settings.schema, source_schema=SCHEMA, conn=conn)
        cached = model_cache.model_snapshot(conn, model_cache.TEXTLOOM_MODELS, settings.schema, fresh.type_prefix)
    assert cached.tables == fresh.tables
    assert cached.enums == fresh.enums


def test_key_follows_schema_and_server_inputs(conn):
    key = model_cache._key(conn, "a.b:metadata", "s1", None)
    assert model_cache._key(conn, "a.b:metadata", "s1", None) == key
    assert model_cache._key(conn, "a.b:metadata", "s2", None) != key
    assert model_cache._key(conn, "a.c:metadata", "s1", None) != key
    assert model_cache._key(conn, "a.b:metadata", "s1", "public.") != key
