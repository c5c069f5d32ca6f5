"""TextLoom database tasks. Run `invoke --list` for the list, `invoke --help TASK` for options."""

from __future__ import annotations

import dataclasses
import functools
import gc
import sys
from collections.abc import Callable
from typing import Any

import psycopg
from invoke import Collection, Context, task
from invoke.exceptions import Exit

from db import maintenance, migrations, report, verify
from db.config import Settings, load_settings
from db.connection import mask_url
from db.embedded import EmbeddedServer
from db.errors import EXIT_DATABASE, EXIT_PROBLEM, ConfigError, DatabaseError, ProblemFound, TextLoomError, UsageError
from db.i18n import _
from db.progress import ConsoleProgress

# What the imports created lives until the process exits. Frozen, it is left out of every
# full garbage collection, the one at exit included. With psycopg loaded that saves about
# 40 ms per command (bench/migrate.py, 2 vCPUs).
gc.freeze()


def db_task(*args: Any, **kwargs: Any) -> Callable:
    """Declare a task whose help is translated and whose suite errors become exit codes."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return db_task()(args[0])
    english_help = dict(kwargs.get("help", {}))
    kwargs["help"] = {name: _(text) for name, text in english_help.items()}

    def decorate(body: Callable) -> Any:
        @functools.wraps(body)
        def run(c: Context, *a: Any, **kw: Any) -> Any:
            try:
                return body(c, *a, **kw)
            except TextLoomError as exc:
                if not isinstance(exc, ProblemFound):
                    report.error(exc)
                raise Exit(code=exc.exit_code) from None
            except KeyboardInterrupt:
                # The open transaction was rolled back and the lock released on the way out.
                report.notice(_("interrupted: an unfinished transaction was rolled back; "
                                "`invoke db.history` shows what was applied"))
                raise Exit(code=130) from None
            except psycopg.Error as exc:
                # A server error the suite did not anticipate: still a clean message and exit 3.
                report.error(DatabaseError(_("database error: {error}", error=str(exc).strip()),
                                           hint=_("run the task again with INVOKE_DEBUG=1 for details")))
                raise Exit(code=EXIT_DATABASE) from None

        # The English texts stay on the function for the catalog extractor.
        run.__wrapped_doc__ = body.__doc__.strip() if body.__doc__ else None
        run.__help_en__ = english_help
        run.__doc__ = _(run.__wrapped_doc__) if run.__wrapped_doc__ else None
        return task(*args, **kwargs)(run)

    return decorate


@functools.cache
def _embedded_url() -> str:
    server = EmbeddedServer()
    status = server.start()
    values = {"version": server.version(), "url": status.url, "path": ".textloom/pgdata"}
    if status.was_started:
        report.notice(_("Started the embedded PostgreSQL {version} at {url} (data in {path}); set DATABASE_URL "
                        "to use another server.", **values))
    else:
        report.notice(_("Using the embedded PostgreSQL {version} at {url} (data in {path}); set DATABASE_URL "
                        "to use another server.", **values))
    return status.url


def settings_for(c: Context) -> Settings:
    """Load the settings; without DATABASE_URL, start or reuse the embedded server."""
    settings = load_settings(c.config.get("db") or {})
    if settings.database_url:
        return settings
    if settings.is_production:
        # An unset secret must not turn a production deploy into a run on a throwaway server.
        raise ConfigError(_("DATABASE_URL is not set, and TEXTLOOM_ENV=production never uses the embedded server"),
                          hint=_("set DATABASE_URL to the production database"))
    return dataclasses.replace(settings, database_url=_embedded_url())


def _require_destructive_ok(c: Context, settings: Settings, action: str, yes: bool, allow_production: bool) -> None:
    if settings.is_production and not allow_production:
        raise UsageError(_("refusing to {action} in production (TEXTLOOM_ENV=production)", action=action),
                         hint=_("add --allow-production if you really mean it"))
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(_("refusing to {action} without confirmation: stdin is not a terminal", action=action),
                         hint=_("add --yes to confirm in scripts and CI"))
    dbname = maintenance.database_name(settings)
    answer = input(_("This will {action} in schema {schema} of database {dbname} ({url}).\n"
                     "Type the database name to confirm: ", action=action, schema=settings.schema,
                     dbname=dbname, url=mask_url(settings.database_url)))
    if answer.strip() != dbname:
        raise UsageError(_("confirmation did not match {dbname}; nothing was changed", dbname=dbname))


def _table_names() -> tuple[str, ...]:
    # Imported on use: SQLAlchemy takes a large share of the start-up time of a task.
    from models import TABLE_NAMES

    return TABLE_NAMES


# --- tasks --------------------------------------------------------------------------


@db_task
def schema(c):
    """Create the schema only."""
    settings = settings_for(c)
    created = maintenance.create_schema(settings)
    report.echo(_("Created schema {schema}.", schema=settings.schema) if created
                else _("Schema {schema} already exists.", schema=settings.schema))


@db_task(help={"allow_out_of_order": "apply a pending file whose version is below the highest applied one"})
def create(c, allow_out_of_order=False):
    """Create the schema and apply every pending migration."""
    settings = settings_for(c)
    result = migrations.run_migrations(settings, sql_dir=settings.sql_dir, allow_out_of_order=allow_out_of_order,
                                       progress=ConsoleProgress())
    if not result.applied:
        report.notice(_("Nothing to do: schema {schema} is up to date.", schema=settings.schema))


@db_task(help={"json": "print one JSON document instead of a table"})
def check(c, json=False):
    """List the expected tables with presence, estimated rows and size."""
    settings = settings_for(c)
    tables, bookkeeping = maintenance.table_overview(settings, _table_names())
    if json:
        report.json_document({"schema": settings.schema, "tables": tables, "bookkeeping": bookkeeping})
    else:
        report.echo(_("Tables of schema {schema}:", schema=settings.schema))
        report.table_stats(tables)
        report.echo()
        report.echo(_("Migration bookkeeping:"))
        report.table_stats(bookkeeping)
    if any(not t.present for t in tables):
        raise ProblemFound("missing tables")


@db_task(help={"json": "print one JSON document instead of a table",
               "strict": "exit non-zero on warnings too"})
def verify_(c, json=False, strict=False):
    """Check that the database is ready for TextLoom; exit 0 only when every check passes."""
    from models import SCHEMA, metadata

    settings = settings_for(c)
    results = verify.run_checks(settings, metadata, source_schema=SCHEMA)
    healthy = verify.is_healthy(results, strict=strict)
    if json:
        report.json_document({"healthy": healthy, "checks": results})
    else:
        report.table(([r.name, report.label(r.status), r.detail, r.hint] for r in results),
                     [_("check"), _("status"), _("detail"), _("hint")])
    if not healthy:
        raise ProblemFound("verify failed")


@db_task(help={"yes": "do not ask for confirmation (needed when stdin is not a terminal)",
               "allow_production": "allow this in production (TEXTLOOM_ENV=production)"})
def drop(c, yes=False, allow_production=False):
    """Drop every object in the suite's schema: tables, functions, types, history (confirms first)."""
    settings = settings_for(c)
    _require_destructive_ok(c, settings, _("drop every object"), yes, allow_production)
    dropped = maintenance.drop_suite(settings)
    report.echo(_("Dropped {count} objects from schema {schema}.", count=len(dropped), schema=settings.schema))


@db_task(help={"yes": "do not ask for confirmation (needed when stdin is not a terminal)",
               "allow_production": "allow this in production (TEXTLOOM_ENV=production)"})
def reset(c, yes=False, allow_production=False):
    """Drop everything, then create it again (confirms first)."""
    settings = settings_for(c)
    _require_destructive_ok(c, settings, _("drop and re-create every object"), yes, allow_production)
    dropped = maintenance.drop_suite(settings)
    report.echo(_("Dropped {count} objects from schema {schema}.", count=len(dropped), schema=settings.schema))
    migrations.run_migrations(settings, sql_dir=settings.sql_dir, progress=ConsoleProgress())


@db_task
def seed(c):
    """Load development data; running it again adds nothing."""
    settings = settings_for(c)
    if settings.is_production:
        raise UsageError(_("refusing to load development data in production (TEXTLOOM_ENV=production)"),
                         hint=_("seed data is for development databases only"))
    inserted = maintenance.seed(settings)
    report.echo(_("Seed data loaded: {count} rows inserted.", count=inserted))


@db_task(help={"dry_run": "print the plan and change nothing",
               "allow_out_of_order": "apply a pending file whose version is below the highest applied one",
               "no_auto": "skip the comparison with the models after the files",
               "models": "compare these models instead of TextLoom's: package.module:attribute"})
def migrate(c, dry_run=False, allow_out_of_order=False, no_auto=False, models=None):
    """Apply pending migrations, then the safe additive differences from the models."""
    from db import drift, model_cache
    from db.diff import render_script

    settings = settings_for(c)
    if models:
        model_cache.split_spec(models)
    progress = ConsoleProgress()
    result = migrations.run_migrations(settings, sql_dir=settings.sql_dir, dry_run=dry_run,
                                       allow_out_of_order=allow_out_of_order, progress=progress)
    for migration in result.pending if dry_run else ():
        report.echo(_("Would apply {file}", file=migration.name))
    if no_auto:
        if not result.pending:
            report.notice(_("Nothing to do: schema {schema} is up to date.", schema=settings.schema))
        return
    if dry_run and result.pending:
        report.notice(_("The comparison with the models runs after the pending files; it is not shown in a dry run."))
        return

    outcome = drift.apply_drift(settings, models, dry_run=dry_run, on_wait=progress.waiting)
    for change, elapsed_ms in outcome.applied:
        if dry_run:
            report.echo(_("Would apply {change}", change=f"{change.kind} {change.object}"))
        else:
            report.notice(_("Applied {change} in {ms} ms", change=f"{change.kind} {change.object}", ms=elapsed_ms))
    if outcome.applied and not dry_run:
        report.notice(_("These changes came from the models and exist only in this database until a migration "
                        "file holds them: run `invoke db.diff --write NAME` and commit the file."))
    if not (result.pending or outcome.applied or outcome.review):
        report.notice(_("Nothing to do: schema {schema} is up to date.", schema=settings.schema))
    if outcome.review:
        report.echo(_("{count} difference(s) need review and were not applied:", count=len(outcome.review)))
        report.echo(render_script(outcome.review))
        raise ProblemFound("changes need review")


@db_task(help={"json": "print one JSON document instead of a table",
               "sql": "print a reviewable SQL script",
               "write": "save the SQL as the next numbered file in sql/ with this description, e.g. add_clip_table",
               "models": "compare these models instead of TextLoom's: package.module:attribute",
               "strict": "exit 1 also when an object could not be compared"})
def diff(c, json=False, sql=False, write=None, models=None, strict=False):
    """Compare the models with the database; exit 1 when they differ."""
    from db import drift, model_cache
    from db.diff import render_script

    settings = settings_for(c)
    if models:
        model_cache.split_spec(models)
    result = drift.plan(settings, models)

    if write:
        path = drift.next_file_path(write, settings.sql_dir)
        changes = drift.plan_against_files(settings, models)
        if not changes:
            report.echo(_("No differences between the models and the schema the migration files build: "
                          "nothing to write."))
            return
        path.write_text(drift.render_file(changes, settings.schema), encoding="utf-8")
        report.echo(_("Wrote {count} change(s) to {path}; review it, then run `invoke db.migrate`.",
                      count=len(changes), path=path.relative_to(path.parent.parent)))
        report.notice(_("The file takes the schema that the earlier files build to the models, whatever this "
                        "database already has."))
        raise ProblemFound("differences written")
    elif json:
        report.json_document({"schema": settings.schema, "changes": result.changes,
                              "not_comparable": result.not_comparable, "round_trips": result.round_trips})
    elif sql:
        report.echo(render_script(result.changes))
    else:
        report.changes(result.changes, result.not_comparable)
        if not result.changes and result.not_comparable:
            report.echo(_("No differences in what could be compared, but {count} object(s) of schema {schema} "
                          "were not compared: see the warnings above.", count=len(result.not_comparable),
                          schema=settings.schema))
        elif not result.changes:
            report.echo(_("No differences: schema {schema} matches the models.", schema=settings.schema))
    if result.changes:
        raise ProblemFound("differences found")
    if strict and result.not_comparable:
        raise ProblemFound("objects not compared")


@db_task(help={"json": "print one JSON document instead of a table"})
def history(c, json=False):
    """Show applied, pending and failed migrations with checksum state, who, when and how long."""
    settings = settings_for(c)
    entries = migrations.describe_history(settings, settings.sql_dir)
    if json:
        report.json_document({"schema": settings.schema, "migrations": entries})
        return
    report.table(([e.version or "-", e.name, report.label(e.status), report.label(e.checksum_state), e.applied_by or "-",
                   e.applied_at or "-", "-" if e.execution_ms is None else f"{e.execution_ms} ms"]
                  for e in entries),
                 [_("version"), _("name"), _("status"), _("checksum"), _("applied by"), _("applied at"),
                  _("duration")])
    for entry in entries:
        if entry.error:
            report.echo(_("{name} stopped with an error: {error}", name=entry.name, error=entry.error))


@db_task
def repair(c):
    """Record checksums of reviewed edited files and clear failed runs so they run again."""
    from db import repair as repairing

    settings = settings_for(c)
    result = repairing.repair(settings, settings.sql_dir)
    for name in result.checksums_updated:
        report.echo(_("Recorded the new checksum of {file}.", file=name))
    for name in result.unfinished_removed:
        report.echo(_("Cleared the failed run of {file}; the next db.migrate runs it from its first statement.",
                      file=name))
    if not (result.checksums_updated or result.unfinished_removed):
        report.echo(_("Nothing to repair."))


@db_task(help={"version": "version number of the failed migration that you finished by hand"})
def resolve(c, version):
    """Mark a failed migration as applied after finishing it by hand."""
    from db import repair as repairing

    settings = settings_for(c)
    name = repairing.resolve(settings, _parse_version(version))
    report.echo(_("Marked {file} as applied.", file=name))
    invalid = migrations.invalid_indexes(settings)
    if invalid:
        report.notice(_("warning: invalid indexes remain in schema {schema}: {names}; drop them with DROP INDEX "
                        "CONCURRENTLY and build them again", schema=settings.schema, names=", ".join(invalid)))


@db_task(help={"version": "the last migration version the existing database already matches"})
def baseline(c, version):
    """Adopt a database created without history: check it matches VERSION, then record it."""
    from db import baseline as baselining

    settings = settings_for(c)
    adopted = baselining.baseline(settings, _parse_version(version), settings.sql_dir)
    report.echo(_("Schema {schema} matches the migrations up to {file}; recorded {count} as baselined.",
                  schema=settings.schema, file=adopted[-1].name, count=len(adopted)))


@db_task(help={"yes": "do not ask for confirmation (needed when stdin is not a terminal)"})
def unlock(c, yes=False):
    """Release a migration lock whose holder you have confirmed is dead."""
    from db import repair as repairing

    settings = settings_for(c)
    if not yes and not sys.stdin.isatty():
        raise UsageError(_("refusing to release the lock without confirmation: stdin is not a terminal"),
                         hint=_("add --yes once you have checked that the holder is dead"))
    if not yes and input(_("Release the migration lock? [y/N] ")).strip().lower() not in ("y", "yes"):
        raise UsageError(_("nothing was changed"))
    holder = repairing.unlock(settings)
    if holder is None:
        report.echo(_("The migration lock was not held."))
    else:
        report.echo(_("Released the migration lock held by host {host}, pid {pid}, since {since}.",
                      host=holder.host, pid=holder.pid, since=holder.acquired_at.isoformat(timespec="seconds")))


def _parse_version(value: str) -> int:
    if not str(value).isdigit():
        raise UsageError(_("invalid version {value!r}: expected a number such as 3", value=value))
    return int(value)


# --- the embedded server ------------------------------------------------------------


@db_task
def server_start(c):
    """Start the embedded PostgreSQL server (or report the running one)."""
    status = EmbeddedServer().start()
    report.echo(_("Embedded PostgreSQL is running at {url} (pid {pid}).", url=status.url, pid=status.pid))


@db_task
def server_stop(c):
    """Stop the embedded PostgreSQL server."""
    stopped = EmbeddedServer().stop()
    report.echo(_("Embedded PostgreSQL stopped.") if stopped else _("Embedded PostgreSQL was not running."))


@db_task(help={"json": "print one JSON document"})
def server_status(c, json=False):
    """Show whether the embedded PostgreSQL server runs, and its URL."""
    status = EmbeddedServer().status()
    if json:
        report.json_document({"running": status.running, "url": status.url, "pid": status.pid,
                              "data_dir": str(status.data_dir)})
    elif status.running:
        report.echo(_("Embedded PostgreSQL is running at {url} (pid {pid}).", url=status.url, pid=status.pid))
    else:
        report.echo(_("Embedded PostgreSQL is not running (data folder {path}).", path=status.data_dir))
    if not status.running:
        raise Exit(code=EXIT_PROBLEM)


@db_task
def i18n_update(c):
    """Merge new messages into the .po catalogs (needs the dev dependencies)."""
    from db.i18n_catalog import update

    for path in update():
        report.echo(str(path))


@db_task
def i18n_compile(c):
    """Compile the .po catalogs into the .mo files gettext reads (needs the dev dependencies)."""
    from db.i18n import compile_catalogs

    for path in compile_catalogs():
        report.echo(str(path))


server = Collection("server")
server.add_task(server_start, "start")
server.add_task(server_stop, "stop")
server.add_task(server_status, "status")

db = Collection("db")
for _task in (schema, create, check, drop, reset, seed, migrate, diff, history, repair, resolve, baseline, unlock):
    db.add_task(_task)
db.add_task(verify_, "verify")
db.add_collection(server)

i18n = Collection("i18n")
i18n.add_task(i18n_update, "update")
i18n.add_task(i18n_compile, "compile")

ns = Collection(db, i18n)
