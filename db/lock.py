"""The migration lock: a lease row that holds through pgbouncer transaction pooling.

A session advisory lock would stay on whichever server connection pgbouncer happened to
use, and a lock held in an open transaction would make ``CREATE INDEX CONCURRENTLY`` wait
for ever. So the lock is a row with an owner and an expiry time. The holder renews the
expiry from a background thread. A holder killed with SIGKILL stops renewing, so the next
migrator takes the row over once it has expired, after at most ``ttl`` seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from db.config import Settings
from db.connection import connect
from db.errors import DatabaseError, MigrationError
from db.history import LOCK_TABLE, table
from db.i18n import _

log = logging.getLogger(__name__)

# How long release() keeps trying when the server cannot be reached, in seconds.
_RELEASE_RETRY_S = 5.0


@dataclass(frozen=True)
class LockHolder:
    """The holder of the lock, as stored in the lock row."""

    owner: uuid.UUID
    host: str
    pid: int
    acquired_at: dt.datetime
    expires_at: dt.datetime


class MigrationLock:
    """Acquire, renew and release the lock row of one schema."""

    def __init__(self, url: str, schema: str, *, ttl: float = 30.0, wait_timeout: float = 600.0,
                 connect_timeout: int = 5, on_wait: Callable[[LockHolder], None] | None = None) -> None:
        self.url = url
        self.schema = schema
        self.ttl = max(ttl, 1.0)
        self.wait_timeout = wait_timeout
        self.connect_timeout = connect_timeout
        self.on_wait = on_wait
        self.owner = uuid.uuid4()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_settings(cls, settings: Settings, on_wait: Callable[[LockHolder], None] | None = None) -> MigrationLock:
        """Build the lock of the configured schema, with the configured expiry and wait times."""
        return cls(settings.database_url, settings.schema, ttl=settings.migration_lock_ttl,
                   wait_timeout=settings.lock_wait_timeout, connect_timeout=settings.connect_timeout,
                   on_wait=on_wait)

    def acquire(self, conn: psycopg.Connection) -> None:
        """Take the lock, waiting while another live migrator holds it."""
        deadline = time.monotonic() + self.wait_timeout
        reported: uuid.UUID | None = None
        delay = 0.05
        while True:
            acquired, holder = self._try_acquire(conn)
            if acquired:
                break
            if holder is None:
                continue  # the lock expired between the two queries: try again at once
            if holder.owner != reported:
                reported = holder.owner
                if self.on_wait:
                    self.on_wait(holder)
            if time.monotonic() >= deadline:
                raise MigrationError(
                    _("timed out after {seconds:.0f} s waiting for the migration lock held by host {host}, "
                      "pid {pid}, since {since}", seconds=self.wait_timeout, host=holder.host, pid=holder.pid,
                      since=holder.acquired_at.isoformat(timespec="seconds")),
                    hint=_("if that migrator is dead, run `invoke db.unlock`"),
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

        self._thread = threading.Thread(target=self._renew_loop, name="textloom-lock-renewal", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lock row, on a fresh connection if need be."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        # A run that failed because pgbouncer or the server restarted gets here while the
        # restart may still be under way: retry briefly rather than leave the lease to expire.
        deadline = time.monotonic() + min(self.ttl, _RELEASE_RETRY_S)
        delay = 0.1
        while True:
            try:
                with connect(self.url, connect_timeout=self.connect_timeout) as conn:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE owner = %s").format(table(self.schema, LOCK_TABLE)),
                                 (self.owner,))
                return
            except (DatabaseError, psycopg.Error) as exc:
                if time.monotonic() + delay < deadline:
                    log.info("could not release the migration lock, retrying in %.1f s: %s", delay, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                # The lock expires by itself after ttl seconds, so this only delays the next run.
                log.warning("could not release the migration lock, it expires in %.0f s: %s", self.ttl, exc)
                return

    def _try_acquire(self, conn: psycopg.Connection) -> tuple[bool, LockHolder | None]:
        """Insert or take over an expired lock row; when busy, also return the holder."""
        with conn.transaction():
            row = conn.execute(sql.SQL(
                "INSERT INTO {t} AS l (id, owner, host, pid, acquired_at, expires_at) "
                "VALUES (true, %(owner)s, %(host)s, %(pid)s, now(), now() + %(ttl)s * interval '1 second') "
                "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, host = excluded.host, pid = excluded.pid, "
                "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at "
                "WHERE l.expires_at < now() "
                "RETURNING owner"
            ).format(t=table(self.schema, LOCK_TABLE)), {
                "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "ttl": self.ttl,
            }).fetchone()
            if row is not None:
                log.debug("migration lock acquired by %s", self.owner)
                return True, None
            return False, current_holder(conn, self.schema)

    def _renew_loop(self) -> None:
        interval = self.ttl / 3
        conn: psycopg.Connection | None = None
        while not self._stop.wait(interval):
            try:
                if conn is None or conn.closed:
                    conn = connect(self.url, connect_timeout=self.connect_timeout)
                cur = conn.execute(sql.SQL(
                    "UPDATE {} SET expires_at = now() + %s * interval '1 second' WHERE owner = %s"
                ).format(table(self.schema, LOCK_TABLE)), (self.ttl, self.owner))
                if cur.rowcount == 0:
                    log.warning("the migration lock was taken over by another migrator")
                    self.lost.set()
                    return
            except (DatabaseError, psycopg.Error) as exc:
                # A short outage (pgbouncer restart) is survivable while the lease has time left.
                log.warning("could not renew the migration lock: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def current_holder(conn: psycopg.Connection, schema: str) -> LockHolder | None:
    """Return the live holder of the lock, or None when it is free or expired."""
    row = conn.execute(sql.SQL(
        "SELECT owner, host, pid, acquired_at, expires_at FROM {} WHERE expires_at >= now()"
    ).format(table(schema, LOCK_TABLE))).fetchone()
    return LockHolder(*row) if row else None


def force_unlock(conn: psycopg.Connection, schema: str) -> LockHolder | None:
    """Delete the lock row whatever its state; return who held it."""
    row = conn.execute(sql.SQL(
        "DELETE FROM {} RETURNING owner, host, pid, acquired_at, expires_at"
    ).format(table(schema, LOCK_TABLE))).fetchone()
    return LockHolder(*row) if row else None
