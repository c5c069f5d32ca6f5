"""Health checks. Each returns a CheckResult; one failing check never stops the others."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from db import inventory
from db.config import Settings
from db.connection import connect
from db.errors import TextLoomError
from db.i18n import _
from db.migrations import pending_migrations

MIN_SERVER_VERSION = 140000  # BEGIN ATOMIC function bodies and reltuples = -1 need 14
MIN_SERVER_LABEL = "14"

OK = "ok"
WARNING = "warning"
FAILED = "failed"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its status, what was seen, and what to do when it is not ok."""

    name: str
    status: str
    detail: str
    hint: str = ""


@dataclass
class VerifyContext:
    """What the checks share: settings, an open connection (if any), the expected tables."""

    settings: Settings
    expected_columns: dict[str, list[str]]
    conn: psycopg.Connection | None = None
    connect_error: TextLoomError | None = None
    connect_ms: float = 0.0
    results: list[CheckResult] = field(default_factory=list)


Check = Callable[[VerifyContext], CheckResult]


def run_checks(settings: Settings, expected_columns: dict[str, list[str]], checks: list[Check] | None = None) -> list[CheckResult]:
    """Open one connection and run every check against it."""
    ctx = VerifyContext(settings, expected_columns)
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


def _not_connected(name: str, ctx: VerifyContext) -> CheckResult:
    return CheckResult(name, FAILED, _("not checked: no connection"),
                       _("fix the connection check first"))


def check_connection(ctx: VerifyContext) -> CheckResult:
    name = _("connection")
    if ctx.conn is None:
        error = ctx.connect_error
        return CheckResult(name, FAILED, error.message if error else "", error.hint or "" if error else "")
    return CheckResult(name, OK, _("connected in {ms:.0f} ms", ms=ctx.connect_ms))


def check_server_version(ctx: VerifyContext) -> CheckResult:
    name = _("server version")
    if ctx.conn is None:
        return _not_connected(name, ctx)
    number, label = inventory.server_version(ctx.conn)
    if number < MIN_SERVER_VERSION:
        return CheckResult(name, FAILED, _("PostgreSQL {version} is older than the minimum {minimum}",
                                           version=label, minimum=MIN_SERVER_LABEL),
                           _("upgrade the server to PostgreSQL {minimum} or later", minimum=MIN_SERVER_LABEL))
    return CheckResult(name, OK, _("PostgreSQL {version} (minimum {minimum})", version=label, minimum=MIN_SERVER_LABEL))


def check_schema(ctx: VerifyContext) -> CheckResult:
    name = _("schema")
    if ctx.conn is None:
        return _not_connected(name, ctx)
    if not inventory.schema_exists(ctx.conn, ctx.settings.schema):
        return CheckResult(name, FAILED, _("schema {schema} is missing", schema=ctx.settings.schema),
                           _("run `invoke db.create`"))
    return CheckResult(name, OK, _("schema {schema} exists", schema=ctx.settings.schema))


def check_tables(ctx: VerifyContext) -> CheckResult:
    name = _("tables")
    if ctx.conn is None:
        return _not_connected(name, ctx)
    actual = inventory.columns_by_table(ctx.conn, ctx.settings.schema)
    missing_tables = [t for t in ctx.expected_columns if t not in actual]
    missing_columns = [f"{t}.{c}" for t, cols in ctx.expected_columns.items() if t in actual
                       for c in cols if c not in actual[t]]
    if missing_tables or missing_columns:
        parts = []
        if missing_tables:
            parts.append(_("missing tables: {names}", names=", ".join(missing_tables)))
        if missing_columns:
            parts.append(_("missing columns: {names}", names=", ".join(missing_columns)))
        return CheckResult(name, FAILED, "; ".join(parts),
                           _("run `invoke db.migrate`, or `invoke db.diff` to see every difference"))
    return CheckResult(name, OK, _("all {count} tables have their expected columns", count=len(ctx.expected_columns)))


def check_migrations(ctx: VerifyContext) -> CheckResult:
    name = _("migrations")
    if ctx.conn is None:
        return _not_connected(name, ctx)
    try:
        plan = pending_migrations(ctx.conn, ctx.settings)
    except TextLoomError as exc:
        return CheckResult(name, FAILED, exc.message, exc.hint or "")
    if plan.problems:
        return CheckResult(name, FAILED, "; ".join(plan.problems),
                           _("run `invoke db.history` for details, then `invoke db.repair` or `invoke db.resolve`"))
    if plan.pending:
        return CheckResult(name, FAILED, _("{count} pending: {names}", count=len(plan.pending),
                                           names=", ".join(m.name for m in plan.pending)),
                           _("run `invoke db.migrate`"))
    return CheckResult(name, OK, _("{count} applied, none pending", count=len(plan.local)))


DEFAULT_CHECKS: list[Check] = [check_connection, check_server_version, check_schema, check_tables, check_migrations]
