"""Measure how long a migration stalls writers on a large table, online versus naive DDL.

Usage: ``uv run --group bench python bench/online.py [--url URL] [--rows 1000000]``

Without ``--url`` the script starts an embedded PostgreSQL in a temporary folder with
fsync off and stops it at the end. For each variant it fills ``orders`` with ``--rows``
rows in a schema of its own and starts a writer thread that inserts one row every few
milliseconds on its own connection. It then applies the migration with
``run_migrations`` and reports the maximum gap between two successful writes:

- online: CREATE INDEX CONCURRENTLY in a no-transaction file, a foreign key added NOT
  VALID and validated in a later file, and a nullable column;
- naive: the same changes in one transactional file, with a plain CREATE INDEX and the
  foreign key validated at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.config import Settings  # noqa: E402
from db.embedded import EmbeddedServer  # noqa: E402
from db.migrations import run_migrations  # noqa: E402

FAST_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
LOCK_TIMEOUT_S = 1.0
WRITE_INTERVAL_S = 0.003
STALL_RATIO_TARGET = 0.1

SETUP = """\
CREATE SCHEMA {schema};
CREATE TABLE {schema}.customers (id integer PRIMARY KEY);
INSERT INTO {schema}.customers SELECT g FROM generate_series(1, 1000) AS g;
CREATE TABLE {schema}.orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL,
    amount      integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {schema}.orders (customer_id, amount)
SELECT g % 1000 + 1, g % 977 FROM generate_series(1, {rows}) AS g;
VACUUM ANALYZE {schema}.orders;
"""

ONLINE = {
    "0001_orders_customer_index.sql": "-- textloom:no-transaction\n"
                                      "CREATE INDEX CONCURRENTLY orders_customer_idx ON ${schema}.orders "
                                      "(customer_id);\n",
    "0002_orders_customer_fk.sql": "ALTER TABLE ${schema}.orders ADD CONSTRAINT orders_customer_fk "
                                   "FOREIGN KEY (customer_id) REFERENCES ${schema}.customers (id) NOT VALID;\n",
    "0003_validate_orders_customer_fk.sql": "ALTER TABLE ${schema}.orders VALIDATE CONSTRAINT orders_customer_fk;\n",
    "0004_orders_note.sql": "ALTER TABLE ${schema}.orders ADD COLUMN note text;\n",
}

NAIVE = {
    "0001_orders_changes.sql": "CREATE INDEX orders_customer_idx ON ${schema}.orders (customer_id);\n"
                               "ALTER TABLE ${schema}.orders ADD CONSTRAINT orders_customer_fk "
                               "FOREIGN KEY (customer_id) REFERENCES ${schema}.customers (id);\n"
                               "ALTER TABLE ${schema}.orders ADD COLUMN note text;\n",
}


class Writer(threading.Thread):
    """Insert a row every few milliseconds and record when each insert returned."""

    def __init__(self, url: str, schema: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.schema = schema
        self.stop = threading.Event()
        self.finished: list[float] = []
        self.errors = 0

    def run(self) -> None:
        insert = sql.SQL("INSERT INTO {} (customer_id, amount) VALUES (%s, %s)").format(
            sql.Identifier(self.schema, "orders"))
        with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
            number = 0
            while not self.stop.is_set():
                number += 1
                try:
                    conn.execute(insert, (number % 1000 + 1, number))
                    self.finished.append(time.perf_counter())
                except psycopg.Error:
                    self.errors += 1
                time.sleep(WRITE_INTERVAL_S)

    def longest_gap(self, start: float, end: float) -> float:
        """Return the maximum time between two successful writes that overlaps [start, end]."""
        times = self.finished
        gaps = [b - a for a, b in zip(times, times[1:]) if b >= start and a <= end]
        return max(gaps, default=0.0)


def fill(url: str, schema: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for statement in SETUP.format(schema=schema, rows=rows).split(";\n"):
            if statement.strip():
                conn.execute(statement)


def measure(url: str, schema: str, files: dict[str, str], workdir: Path, rows: int) -> tuple[float, float, float]:
    """Return the maximum write stall during the migration, the one before it, and the run time."""
    fill(url, schema, rows)
    folder = workdir / schema
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(content)

    writer = Writer(url, schema)
    writer.start()
    time.sleep(1.0)
    idle_start = writer.finished[0] if writer.finished else time.perf_counter()
    started = time.perf_counter()
    run_migrations(Settings(database_url=url, schema=schema, lock_timeout=LOCK_TIMEOUT_S), sql_dir=folder)
    ended = time.perf_counter()
    time.sleep(0.5)
    writer.stop.set()
    writer.join()
    if writer.errors:
        raise SystemExit(f"the writer saw {writer.errors} failed inserts during {schema}")
    return writer.longest_gap(started, ended), writer.longest_gap(idle_start, started), ended - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing server to use; by default an embedded one is started")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table before the migration")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="textloom-online-"))
    server = None
    try:
        url = args.url
        if url is None:
            server = EmbeddedServer(workdir / "data", extra_options=FAST_OPTIONS)
            url = server.start().url
        online = measure(url, "bench_online", ONLINE, workdir, args.rows)
        naive = measure(url, "bench_naive", NAIVE, workdir, args.rows)
        with psycopg.connect(url, autocommit=True) as conn:
            for schema in ("bench_online", "bench_naive"):
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    ratio = online[0] / naive[0] if naive[0] else float("inf")
    print(f"{args.rows} rows, one insert every {WRITE_INTERVAL_S * 1000:.0f} ms, lock_timeout {LOCK_TIMEOUT_S:.1f} s")
    print(f"  {'':8} {'max stall':>10} {'idle max gap':>13} {'migration':>10}")
    for label, (stall, idle, duration) in (("online", online), ("naive", naive)):
        print(f"  {label:8} {stall * 1000:8.0f} ms {idle * 1000:10.0f} ms {duration:8.2f} s")
    print(f"  online / naive stall: {ratio:.3f} (target < {STALL_RATIO_TARGET})")
    met = online[0] < LOCK_TIMEOUT_S and ratio < STALL_RATIO_TARGET
    print("all targets met" if met else "some targets missed")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
