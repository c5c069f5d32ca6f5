"""The cache of TextLoom's model snapshot: same result as building it, new key on any source change."""

from __future__ import annotations

import shutil

import pytest

from db import model_cache
from db.connection import connect
from db.migrations import run_migrations
from db.model_schema import snapshot_from_metadata
from models import SCHEMA, metadata


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setattr(model_cache, "CACHE_DIR", folder)
    return folder


def test_cached_equals_fresh(settings, cache_dir):
    run_migrations(settings)
    with connect(settings.database_url) as conn:
        fresh = snapshot_from_metadata(metadata, settings.schema, source_schema=SCHEMA, conn=conn)
        first = model_cache.textloom_snapshot(conn, settings.schema, fresh.type_prefix)
        assert list(cache_dir.glob("models-*.pickle"))
        second = model_cache.textloom_snapshot(conn, settings.schema, fresh.type_prefix)
    assert first.tables == fresh.tables
    assert second.tables == fresh.tables
    assert second.enums == fresh.enums


def test_key_follows_model_source(conn, tmp_path, monkeypatch):
    project = tmp_path / "project"
    for source in model_cache._KEY_SOURCES:
        origin = model_cache.PROJECT_DIR / source
        target = project / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(origin, target)
    monkeypatch.setattr(model_cache, "PROJECT_DIR", project)

    before = model_cache._key(conn, "textloom_core", None)
    assert model_cache._key(conn, "textloom_core", None) == before
    assert model_cache._key(conn, "other_schema", None) != before

    models_file = project / "models" / "db_models.py"
    models_file.write_text(models_file.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert model_cache._key(conn, "textloom_core", None) != before


def test_broken_cache_file_rebuilt(settings, cache_dir):
    run_migrations(settings)
    with connect(settings.database_url) as conn:
        key = model_cache._key(conn, settings.schema, None)
        cache_dir.mkdir()
        (cache_dir / f"models-{key}.pickle").write_bytes(b"not a pickle")
        snapshot = model_cache.textloom_snapshot(conn, settings.schema, None)
    assert set(snapshot.tables) >= {"tasks", "video_projects"}
