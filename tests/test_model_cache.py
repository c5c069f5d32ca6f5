"""The model snapshot cache: same result as a fresh import, and a new import whenever an input changes.

Each test writes a small model package into tmp_path. ``forget`` removes it from
``sys.modules`` between calls, as a new process would start without it.
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid

import pytest

from db import model_cache
from db.connection import connect
from db.errors import UsageError
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
        (self.folder / "defs").mkdir(parents=True)
        (self.folder / "__init__.py").write_text("")
        (self.folder / "columns.py").write_text(COLUMNS)
        (self.folder / "tables.txt").write_text("alpha beta\n")
        (self.folder / "models.py").write_text(MODELS.format(package=self.name, variable=self.variable))
        self.spec = f"{self.name}.models:metadata"
        monkeypatch.syspath_prepend(str(root))

    def forget(self) -> None:
        for name in [name for name in sys.modules if name.split(".")[0] == self.name]:
            del sys.modules[name]

    @property
    def is_imported(self) -> bool:
        return f"{self.name}.models" in sys.modules

    def edit(self, relative: str, text: str) -> None:
        path = self.folder / relative
        path.write_text(text)
        # Far enough from the first write that a coarse file system clock still tells them apart.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


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
    return set(model_cache.model_snapshot(conn, package.spec, schema, None).tables)


def test_second_run_skips_the_import(conn, schema, package, cache_dir):
    first = model_cache.model_snapshot(conn, package.spec, schema, None)
    assert package.is_imported
    assert len(list(cache_dir.glob("models-*.pickle"))) == 1

    package.forget()
    second = model_cache.model_snapshot(conn, package.spec, schema, None)

    assert not package.is_imported
    assert second.tables == first.tables
    assert set(second.tables) == {"alpha", "beta", "counted_0"}


@pytest.mark.parametrize("relative, text, expected", [
    ("models.py", None, "gamma_from_code"),
    ("columns.py", COLUMNS.replace('"label"', '"caption"'), None),
    ("tables.txt", "alpha beta delta\n", "delta"),
])
def test_changed_source_or_file_is_read_again(conn, schema, package, relative, text, expected):
    before = model_cache.model_snapshot(conn, package.spec, schema, None)
    if text is None:
        text = (package.folder / relative).read_text() + 'sa.Table("gamma_from_code", metadata)\n'
    package.edit(relative, text)

    package.forget()
    after = model_cache.model_snapshot(conn, package.spec, schema, None)

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


def test_changed_variable_is_seen(conn, schema, package, monkeypatch):
    monkeypatch.setenv(package.variable, "2")
    assert {"counted_0", "counted_1"} <= tables(conn, package, schema)
    monkeypatch.setenv(package.variable, "3")
    assert "counted_2" in tables(conn, package, schema)
    monkeypatch.delenv(package.variable)
    assert "counted_1" not in tables(conn, package, schema)


def test_touched_but_unchanged_file_keeps_the_entry(conn, schema, package):
    model_cache.model_snapshot(conn, package.spec, schema, None)
    package.edit("models.py", (package.folder / "models.py").read_text())

    package.forget()
    model_cache.model_snapshot(conn, package.spec, schema, None)

    assert not package.is_imported


def test_cache_off_imports_every_time(conn, schema, package, cache_dir, monkeypatch):
    monkeypatch.setenv("TEXTLOOM_MODEL_CACHE", "off")
    model_cache.model_snapshot(conn, package.spec, schema, None)
    package.forget()
    model_cache.model_snapshot(conn, package.spec, schema, None)
    assert package.is_imported
    assert not cache_dir.exists()


def test_import_done_earlier_is_not_written(conn, schema, package, cache_dir):
    # The recorder could not watch this import, so it cannot tell what the snapshot depends on.
    __import__(f"{package.name}.models")
    model_cache.model_snapshot(conn, package.spec, schema, None)
    assert not cache_dir.exists()


def test_broken_cache_file_rebuilt(conn, schema, package, cache_dir):
    model_cache.model_snapshot(conn, package.spec, schema, None)
    (entry,) = cache_dir.glob("models-*.pickle")
    entry.write_bytes(b"not a pickle")
    assert "alpha" in tables(conn, package, schema)
    assert package.is_imported


@pytest.mark.parametrize("spec", ["no_colon", ":metadata", "module:"])
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
