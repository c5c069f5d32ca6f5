"""Benchmark the schema diff against SQLAlchemy reflection and Alembic's compare_metadata.

Builds a schema of 1,000 tables (uuid key, eight more columns of mixed types with
defaults, a foreign key to the previous table, two indexes and a comment), then measures
on that one schema and model, in the same run:

- TextLoom's diff: catalog read + model snapshot + comparison, and its round trips;
- SQLAlchemy's ``MetaData.reflect`` of the schema;
- Alembic's ``compare_metadata`` of the same models.

Run with ``uv run --group bench python bench/diff.py [DATABASE_URL] [--tables N]``.
Without a URL it starts an embedded server in a temporary folder and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from db import catalog, model_schema  # noqa: E402
from db.connection import connect  # noqa: E402
from db.diff import diff_snapshots  # noqa: E402
from db.embedded import EmbeddedServer  # noqa: E402
from db.schema_diff import compare, count_round_trips  # noqa: E402

from bench_models import SCHEMA, build_metadata  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent


def create_schema(url: str, metadata: sa.MetaData) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        connection.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
        metadata.create_all(connection)
    engine.dispose()


def measure(label: str, function, repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    best = min(timings)
    print(f"{label:<40} best {best:8.3f} s   median {statistics.median(timings):8.3f} s   ({repeat} runs)")
    return best


TARGET_ROUND_TRIPS = 3
TARGET_VS_ALEMBIC = 9.0
TARGET_VS_ALEMBIC_CHECK = 4.0


def run(url: str, table_count: int, repeat: int) -> bool:
    """Measure everything on one schema of ``table_count`` tables; return True when every target is met."""
    metadata = build_metadata(table_count)
    started = time.perf_counter()
    create_schema(url, metadata)
    print(f"created {table_count} tables in {time.perf_counter() - started:.1f} s")

    with connect(url) as conn:
        with count_round_trips(conn) as catalog_trips:
            db_snapshot = catalog.read_schema(conn, SCHEMA)
        with count_round_trips(conn) as total_trips:
            result = compare(conn, metadata, SCHEMA, source_schema=SCHEMA)
        print(f"changes found: {len(result.changes)}, not comparable: {len(result.not_comparable)}")
        print(f"round trips: catalog read {catalog_trips.count}, whole compare {total_trips.count}")

        ours = measure("textloom compare (catalog+model+diff)",
                       lambda: compare(conn, metadata, SCHEMA, source_schema=SCHEMA), repeat)
        measure("  catalog read only", lambda: catalog.read_schema(conn, SCHEMA), repeat)
        model_snapshot = model_schema.snapshot_from_metadata(metadata, SCHEMA, source_schema=SCHEMA, conn=conn)
        measure("  model snapshot only", lambda: model_schema.snapshot_from_metadata(
            metadata, SCHEMA, source_schema=SCHEMA, conn=conn), repeat)
        measure("  diff only", lambda: diff_snapshots(model_snapshot, db_snapshot), repeat)

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    reflect = measure("sqlalchemy MetaData.reflect", lambda: sa.MetaData().reflect(engine, schema=SCHEMA), repeat)

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def alembic_compare() -> None:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parents: type_ != "schema" or name == SCHEMA,
                "compare_server_default": True,
            })
            diffs = compare_metadata(context, metadata)
            print(f"  alembic reported {len(diffs)} difference(s)")

    alembic = measure("alembic compare_metadata", alembic_compare, repeat)
    engine.dispose()

    print(f"speed-up over MetaData.reflect:      {reflect / ours:6.1f}x")
    print(f"speed-up over alembic compare_metadata: {alembic / ours:6.1f}x")

    cold, warm, alembic_process = compare_processes(url, table_count)
    print(f"whole process: alembic check {alembic_process:.2f} s; invoke db.diff {warm:.2f} s with the model cache "
          f"(speed-up {alembic_process / warm:.1f}x), {cold:.2f} s without it "
          f"(speed-up {alembic_process / cold:.1f}x)")
    checks = {
        f"round trips {total_trips.count} <= {TARGET_ROUND_TRIPS}": total_trips.count <= TARGET_ROUND_TRIPS,
        f"in process {alembic / ours:.1f}x >= {TARGET_VS_ALEMBIC}x": alembic / ours >= TARGET_VS_ALEMBIC,
        f"whole process, model cache filled, {alembic_process / warm:.1f}x >= {TARGET_VS_ALEMBIC_CHECK}x":
            alembic_process / warm >= TARGET_VS_ALEMBIC_CHECK,
    }
    for check, met in checks.items():
        print(f"  {'met   ' if met else 'MISSED'} {check}")
    return all(checks.values())


ALEMBIC_ENV = """
from alembic import context
from sqlalchemy import create_engine

from bench_models import SCHEMA, metadata

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_schemas=True,
        include_name=lambda name, type_, parents: type_ != "schema" or name == SCHEMA,
        compare_server_default=True,
        version_table_schema=SCHEMA,
    )
    with context.begin_transaction():
        context.run_migrations()
"""


def compare_processes(url: str, table_count: int) -> tuple[float, float, float]:
    """Time `invoke db.diff` and `alembic check` as whole processes on the same schema and models.

    `invoke db.diff` runs twice over: with an empty model cache each time (a first run, as
    on a fresh clone), and with the cache that one earlier run left (a run after it).
    Return the best cold, warm and Alembic times.
    """
    with tempfile.TemporaryDirectory(prefix="textloom-alembic-") as folder:
        root = Path(folder)
        (root / "versions").mkdir()
        (root / "env.py").write_text(ALEMBIC_ENV)
        (root / "script.py.mako").write_text("")
        sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        (root / "alembic.ini").write_text(f"[alembic]\nscript_location = {root}\nsqlalchemy.url = {sa_url}\n")

        # Bytecode caching on, as a default Python install has it; PYTHONDONTWRITEBYTECODE
        # would make every run compile SQLAlchemy, psycopg and Alembic again.
        inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = {**inherited, "DATABASE_URL": url, "TEXTLOOM_DB_SCHEMA": SCHEMA,
               "TEXTLOOM_BENCH_TABLES": str(table_count), "PYTHONPATH": f"{PROJECT_DIR}:{BENCH_DIR}"}
        diff_command = [sys.executable, "-m", "invoke", "db.diff", "--models", "bench_models:metadata"]
        cold = _time_process(diff_command, env, PROJECT_DIR, label="invoke db.diff, empty model cache",
                             fresh_cache_dir=root / "cold-cache")
        warm_env = {**env, "TEXTLOOM_CACHE_DIR": str(root / "warm-cache")}
        _time_process(diff_command, warm_env, PROJECT_DIR, label="invoke db.diff, filling the cache", repeat=1)
        warm = _time_process(diff_command, warm_env, PROJECT_DIR, label="invoke db.diff, model cache filled")
        alembic = _time_process([sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), "check"],
                                env, PROJECT_DIR, label="alembic check")
    return cold, warm, alembic


def _time_process(command: list[str], env: dict[str, str], cwd: Path, *, label: str, repeat: int = 3,
                  fresh_cache_dir: Path | None = None) -> float:
    timings = []
    for attempt in range(repeat):
        run_env = env
        if fresh_cache_dir is not None:
            run_env = {**env, "TEXTLOOM_CACHE_DIR": str(fresh_cache_dir / str(attempt))}
        started = time.perf_counter()
        result = subprocess.run(command, env=run_env, cwd=cwd, capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        if result.returncode != 0:
            print(f"  {label} exited with {result.returncode}: {result.stdout[-300:]}{result.stderr[-300:]}")
    best = min(timings)
    print(f"{label:<40} best {best:8.3f} s   ({repeat} runs)")
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="PostgreSQL URL; an embedded server is started without one")
    parser.add_argument("--tables", type=int, default=1000, help="number of tables to create (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each TextLoom measurement (default 3)")
    args = parser.parse_args()

    if args.url:
        met = run(args.url, args.tables, args.repeat)
        print("all targets met" if met else "some targets missed")
        return 0 if met else 1
    with tempfile.TemporaryDirectory(prefix="textloom-bench-") as folder:
        server = EmbeddedServer(Path(folder) / "data", extra_options=("-c", "fsync=off", "-c", "max_locks_per_transaction=256"))
        status = server.start()
        try:
            print(f"embedded PostgreSQL {server.version()} on port {status.port}")
            met = run(status.url, args.tables, args.repeat)
        finally:
            server.stop()
    print("all targets met" if met else "some targets missed")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
