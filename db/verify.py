"""Health checks for ``db.verify``. Each returns a CheckResult; one failing check never stops the others.

The checks share one connection, opened once and timed by the connection check. A check
that needs the connection reports itself as not checked when there is none.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from db import history, inventory
from db.config import Settings
from db.connection import connect
from db.errors import TextLoomError
from db.i18n import _
from db.lock import current_holder
from db.migrations import pending_migrations, problem_hints

# The catalog query reads pg_index.indnullsnotdistinct, which PostgreSQL 15 introduced.
MIN_SERVER_VERSION = 150000
MIN_SERVER_LABEL = "15"
# The newest major version the test suite runs against; newer ones get a warning.
MAX_TESTED_VERSION = 18
TRIGGER_FUNCTION = "set_updated_at"
SERVICE_TIMEOUT_S = 3.0

OK = "ok"
WARNING = "warning"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its status, what was seen, and what to do when it is not ok."""

    name: str
    status: str
    detail: str
    hint: str = ""


@dataclass
class VerifyContext:
    """State shared by the checks: settings, the models, and an open connection (if any)."""

    settings: Settings
    metadata: Any
    source_schema: str | None = None
    conn: psycopg.Connection | None = None
    connect_error: TextLoomError | None = None
    connect_ms: float = 0.0


Check = Callable[[VerifyContext], CheckResult]


def run_checks(settings: Settings, metadata: Any, *, source_schema: str | None = None,
               checks: list[Check] | None = None) -> list[CheckResult]:
    """Open one connection and run every check against it."""
    ctx = VerifyContext(settings, metadata, source_schema)
    started = time.perf_counter()
    try:
        ctx.conn = connect(settings.database_url, connect_timeout=settings.connect_timeout)
    except TextLoomError as exc:
        ctx.connect_error = exc
    ctx.connect_ms = (time.perf_counter() - started) * 1000
    try:
        return [check(ctx) for check in (checks or DEFAULT_CHECKS)]
    finally:
        if ctx.conn is not None:
            ctx.conn.close()


def is_healthy(results: list[CheckResult], *, strict: bool = False) -> bool:
    bad = (FAILED, WARNING) if strict else (FAILED,)
    return not any(r.status in bad for r in results)


def _not_connected(name: str) -> CheckResult:
    return CheckResult(name, FAILED, _("not checked: no connection"), _("fix the connection check first"))


def _guard_connection(name: str) -> Callable[[Check], Check]:
    """Wrap a check so it reports 'no connection' instead of running without one."""
    def decorate(check: Callable[[VerifyContext, psycopg.Connection], CheckResult]) -> Check:
        def run(ctx: VerifyContext) -> CheckResult:
            if ctx.conn is None:
                return _not_connected(_(name))
            try:
                return check(ctx, ctx.conn)
            except pg_errors.InsufficientPrivilege as exc:
                return CheckResult(_(name), FAILED, _("the check failed: {error}", error=str(exc).strip()),
                                   _("grant this role read access to the schema and its tables, or run "
                                     "`invoke db.verify` as the schema owner"))
            except psycopg.Error as exc:
                return CheckResult(_(name), FAILED, _("the check failed: {error}", error=str(exc).strip()),
                                   _("run `invoke db.verify` again; if it persists, check the server log"))
        run.__name__ = check.__name__
        return run
    return decorate


# --- connection ---------------------------------------------------------------------


def check_connection(ctx: VerifyContext) -> CheckResult:
    name = _("connection")
    if ctx.conn is None:
        error = ctx.connect_error
        return CheckResult(name, FAILED, error.message if error else "", (error.hint or "") if error else "")

    route = _describe_route(ctx.conn)
    return CheckResult(name, OK, _("connected in {ms:.0f} ms, {route}", ms=ctx.connect_ms, route=route))


def _describe_route(conn: psycopg.Connection) -> str:
    """Say whether a pooler sits between us and the server, and how that was detected.

    A pooler such as pgbouncer accepts the connection itself, so the process id it reports
    at login is not the id of the server process that runs our queries.
    """
    login_pid = conn.info.backend_pid
    server_pid, server_port = conn.execute("SELECT pg_catalog.pg_backend_pid(), pg_catalog.inet_server_port()").fetchone()
    if login_pid != server_pid:
        return _("through a connection pooler such as pgbouncer (the login process id {login} differs from "
                 "the server process id {server})", login=login_pid, server=server_pid)
    if server_port is None:
        return _("direct to the server (unix socket)")
    return _("direct to the server (port {port})", port=server_port)


@_guard_connection("server version")
def check_server_version(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("server version")
    number, label = inventory.server_version(conn)
    if number < MIN_SERVER_VERSION:
        return CheckResult(name, FAILED, _("PostgreSQL {version} is older than the minimum {minimum}",
                                           version=label, minimum=MIN_SERVER_LABEL),
                           _("upgrade the server to PostgreSQL {minimum} or later", minimum=MIN_SERVER_LABEL))
    if number // 10000 > MAX_TESTED_VERSION:
        return CheckResult(name, WARNING, _("PostgreSQL {version} is newer than the newest tested version {tested}",
                                            version=label, tested=MAX_TESTED_VERSION),
                           _("run the test suite against this version before relying on it"))
    return CheckResult(name, OK, _("PostgreSQL {version} (supported: {minimum} to {tested})", version=label,
                                   minimum=MIN_SERVER_LABEL, tested=MAX_TESTED_VERSION))


@_guard_connection("server role")
def check_primary(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("server role")
    in_recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]
    if in_recovery:
        return CheckResult(name, FAILED, _("the server is a read-only replica"),
                           _("point DATABASE_URL at the primary server"))
    return CheckResult(name, OK, _("primary (accepts writes)"))


# --- schema and models --------------------------------------------------------------


@_guard_connection("schema")
def check_schema(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("schema")
    if not inventory.schema_exists(conn, ctx.settings.schema):
        return CheckResult(name, FAILED, _("schema {schema} is missing", schema=ctx.settings.schema),
                           _("run `invoke db.create`"))
    return CheckResult(name, OK, _("schema {schema} exists", schema=ctx.settings.schema))


@_guard_connection("tables match the models")
def check_models(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("tables match the models")
    from db.schema_diff import compare  # imported on use: it loads SQLAlchemy

    result = compare(conn, ctx.metadata, ctx.settings.schema, source_schema=ctx.source_schema,
                     exclude_tables=history.BOOKKEEPING_TABLES)
    if result.changes:
        shown = [f"{change.kind} {change.object}" for change in result.changes[:8]]
        if len(result.changes) > len(shown):
            shown.append(_("and {count} more", count=len(result.changes) - len(shown)))
        return CheckResult(name, FAILED, _("{count} difference(s): {changes}", count=len(result.changes),
                                           changes=", ".join(shown)),
                           _("run `invoke db.diff` to see each difference with its SQL and hazard; "
                             "`invoke db.migrate` applies the safe additive ones, the rest need a reviewed migration"))
    tables = len(result.model_snapshot.tables)
    if result.not_comparable:
        return CheckResult(name, WARNING, _("{count} tables match; {notes} object(s) could not be compared",
                                            count=tables, notes=len(result.not_comparable)),
                           _("run `invoke db.diff` to see which objects and why"))
    return CheckResult(name, OK, _("all {count} tables match: columns, constraints, indexes and comments",
                                   count=tables))


# --- migrations ---------------------------------------------------------------------


@_guard_connection("migrations")
def check_migrations(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("migrations")
    try:
        plan = pending_migrations(conn, ctx.settings, ctx.settings.sql_dir)
    except TextLoomError as exc:
        return CheckResult(name, FAILED, exc.message, exc.hint or "")
    if plan.problems:
        return CheckResult(name, FAILED, "; ".join(plan.problems), "; ".join(problem_hints(plan)))
    if plan.pending:
        highest = max((r.version for r in plan.rows if r.version is not None and r.success), default=0)
        late = [m.name for m in plan.pending if m.version < highest]
        hint = (_("{names} is numbered below the highest applied version {highest}: renumber it, or run "
                  "`invoke db.migrate --allow-out-of-order`", names=", ".join(late), highest=highest)
                if late else _("run `invoke db.migrate`"))
        return CheckResult(name, FAILED, _("{count} pending: {names}", count=len(plan.pending),
                                           names=_first_names([m.name for m in plan.pending])), hint)
    return CheckResult(name, OK, _("{count} applied, none pending or failed, all checksums match",
                                   count=len(plan.local)))


def _first_names(names: list[str], limit: int = 5) -> str:
    """Join the first names and count the rest, so a table cell stays readable."""
    if len(names) <= limit:
        return ", ".join(names)
    return _("{names} and {count} more", names=", ".join(names[:limit]), count=len(names) - limit)


@_guard_connection("migration lock")
def check_lock(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("migration lock")
    if not history.tables_exist(conn, ctx.settings.schema):
        return CheckResult(name, OK, _("free (no migration has run yet)"))
    holder = current_holder(conn, ctx.settings.schema)
    if holder is not None:
        return CheckResult(name, WARNING, _("held by host {host}, pid {pid}, since {since}", host=holder.host,
                                            pid=holder.pid, since=holder.acquired_at.isoformat(timespec="seconds")),
                           _("wait for that migration to finish; if its process is dead, run `invoke db.unlock`"))
    return CheckResult(name, OK, _("free"))


# --- requirements -------------------------------------------------------------------


@_guard_connection("gen_random_uuid()")
def check_uuid_function(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = "gen_random_uuid()"
    found, executable = conn.execute(
        "SELECT p IS NOT NULL, p IS NOT NULL AND pg_catalog.has_function_privilege(p, 'EXECUTE') "
        "FROM pg_catalog.to_regprocedure('gen_random_uuid()') AS p").fetchone()
    if not found:
        return CheckResult(name, FAILED, _("gen_random_uuid() is not available"),
                           _("use PostgreSQL 13 or later, or run CREATE EXTENSION pgcrypto"))
    if not executable:
        return CheckResult(name, FAILED, _("the current role may not execute gen_random_uuid()"),
                           _("GRANT EXECUTE ON FUNCTION gen_random_uuid() TO the role that inserts rows"))
    return CheckResult(name, OK, _("available"))


@_guard_connection("trigger function")
def check_trigger_function(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("trigger function")
    signature = sql.Identifier(ctx.settings.schema, TRIGGER_FUNCTION).as_string(conn) + "()"
    found = conn.execute("SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL", (signature,)).fetchone()[0]
    if not found:
        return CheckResult(name, FAILED, _("{function} is missing", function=signature),
                           _("run `invoke db.migrate`; the first migration creates it"))
    return CheckResult(name, OK, _("{function} exists", function=signature))


@_guard_connection("privileges")
def check_privileges(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("privileges")
    schema = ctx.settings.schema
    if not inventory.schema_exists(conn, schema):
        return CheckResult(name, FAILED, _("not checked: schema {schema} is missing", schema=schema),
                           _("run `invoke db.create`"))
    user, can_create, not_owned = conn.execute(
        "SELECT current_user, pg_catalog.has_schema_privilege(%(schema)s, 'CREATE'), "
        "ARRAY(SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "      WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') "
        "      AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE') ORDER BY 1)",
        {"schema": schema}).fetchone()
    if not can_create:
        return CheckResult(name, FAILED, _("role {role} cannot create objects in schema {schema}", role=user,
                                           schema=schema),
                           _("GRANT CREATE ON SCHEMA {schema} TO {role}", schema=schema, role=user))
    if not_owned:
        return CheckResult(name, FAILED, _("role {role} cannot alter tables it does not own: {names}", role=user,
                                           names=", ".join(not_owned)),
                           _("run migrations as the tables' owner, or grant its role to {role}", role=user))
    return CheckResult(name, OK, _("role {role} can create and alter objects in schema {schema}", role=user,
                                   schema=schema))


@_guard_connection("superuser")
def check_superuser(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("superuser")
    user, is_super = conn.execute(
        "SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    if is_super and ctx.settings.is_production:
        return CheckResult(name, WARNING, _("production database reached as superuser {role}", role=user),
                           _("use a role that owns the schema but is not a superuser"))
    if is_super:
        return CheckResult(name, OK, _("superuser {role} (acceptable outside production)", role=user))
    return CheckResult(name, OK, _("role {role} is not a superuser", role=user))


@_guard_connection("pgbouncer compatibility")
def check_pooling(ctx: VerifyContext, conn: psycopg.Connection) -> CheckResult:
    name = _("pgbouncer compatibility")
    if conn.prepare_threshold is not None:
        return CheckResult(name, FAILED, _("the suite's connections may create prepared statements"),
                           _("open connections through db.connection.connect, which sets prepare_threshold=None"))
    prepared = conn.execute("SELECT count(*) FROM pg_catalog.pg_prepared_statements").fetchone()[0]
    if prepared:
        return CheckResult(name, FAILED, _("{count} prepared statement(s) exist on this server session",
                                           count=prepared),
                           _("another client created prepared statements on this server session; check the pooler's settings"))
    return CheckResult(name, OK, _("no prepared statements and no session settings"))


# --- the TextLoom service -----------------------------------------------------------


def check_service(ctx: VerifyContext) -> CheckResult:
    name = _("TextLoom service")
    url = ctx.settings.service_url
    if not url:
        return CheckResult(name, SKIPPED, _("TEXTLOOM_SERVICE_URL is not set"),
                           _("set TEXTLOOM_SERVICE_URL to the service's health URL to check it"))

    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=SERVICE_TIMEOUT_S) as response:  # noqa: S310 - configured URL
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, TimeoutError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return CheckResult(name, FAILED, _("GET {url} failed: {reason}", url=url, reason=reason),
                           _("check that the service is running and that TEXTLOOM_SERVICE_URL is right"))
    latency_ms = (time.perf_counter() - started) * 1000

    if 200 <= status < 300:
        return CheckResult(name, OK, _("GET {url}: HTTP {status} in {ms:.0f} ms", url=url, status=status, ms=latency_ms))
    return CheckResult(name, FAILED, _("GET {url}: HTTP {status} in {ms:.0f} ms", url=url, status=status, ms=latency_ms),
                       _("the service answered but is not healthy; read its logs"))


DEFAULT_CHECKS: list[Check] = [
    check_connection, check_server_version, check_primary, check_schema, check_models, check_migrations,
    check_lock, check_uuid_function, check_trigger_function, check_privileges, check_superuser, check_pooling,
    check_service,
]
