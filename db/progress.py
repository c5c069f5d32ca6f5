"""Progress lines of the migration runner for people at a terminal and for CI logs."""

from __future__ import annotations

import sys
import time

from db import report
from db.i18n import _
from db.lock import LockHolder
from db.migrations import LocalMigration, Progress


class ConsoleProgress(Progress):
    """One line per applied file on stderr; on a terminal also a line before each file.

    Progress goes to stderr so that stdout carries only results: in a chain such as
    ``db.migrate db.verify --json`` stdout stays one JSON document.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.started = time.perf_counter()
        self.is_terminal = sys.stderr.isatty()
        self.announces_files = self.is_terminal and not quiet

    def waiting(self, holder: LockHolder) -> None:
        report.notice(_("Waiting for the migration lock held by host {host}, pid {pid}, since {since}...",
                        host=holder.host, pid=holder.pid, since=holder.acquired_at.isoformat(timespec="seconds")))

    def applying(self, migration: LocalMigration, position: int, total: int) -> None:
        if self.is_terminal and not self.quiet:
            report.notice(_("[{position}/{total}] Applying {file} (elapsed {elapsed:.1f} s)", position=position,
                            total=total, file=migration.name, elapsed=time.perf_counter() - self.started))

    def applied(self, migration: LocalMigration, elapsed_ms: int) -> None:
        if not self.quiet:
            report.notice(_("Applied {file} in {ms} ms", file=migration.name, ms=elapsed_ms))

    def retrying(self, migration: LocalMigration, attempt: int, delay: float) -> None:
        report.notice(_("{file}: lock_timeout reached, retry {attempt} in {delay:.1f} s",
                        file=migration.name, attempt=attempt, delay=delay))
