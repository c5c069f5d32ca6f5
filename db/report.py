"""Everything the tasks print: tables for people, one JSON document for machines, errors.

Progress and notices go to stderr so that ``--json`` output on stdout stays one parseable
document. Tables go through tabulate.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from db.errors import TextLoomError
from db.i18n import _


def label(value: str) -> str:
    """Translate a status word stored in English (history status, check result, checksum state)."""
    labels = {
        "ok": _("ok"),
        "warning": _("warning"),
        "failed": _("failed"),
        "skipped": _("skipped"),
        "applied": _("applied"),
        "baselined": _("baselined"),
        "running": _("running"),
        "pending": _("pending"),
        "changed": _("changed"),
        "missing file": _("missing file"),
        "safe": _("safe"),
        "locks": _("locks"),
        "rewrites": _("rewrites"),
        "destructive": _("destructive"),
        "needs_review": _("needs_review"),
    }
    return labels.get(value, value)


def echo(message: str = "") -> None:
    print(message, flush=True)


def notice(message: str) -> None:
    """A side remark that must never mix with stdout (which may carry JSON)."""
    print(message, file=sys.stderr, flush=True)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    from tabulate import tabulate  # imported on use: it is slow to import and JSON output needs none

    echo(tabulate(list(rows), headers=list(headers), tablefmt="simple", disable_numparse=True))


def table_stats(stats: Iterable[Any]) -> None:
    """Print TableStats rows: name, present or missing, estimated rows, size."""
    table(([s.name, _("present") if s.present else _("missing"),
            "-" if s.estimated_rows is None else str(s.estimated_rows), format_bytes(s.size_bytes)]
           for s in stats), [_("table"), _("status"), _("estimated rows"), _("size")])


def changes(items: Sequence[Any], notes: Sequence[Any] = ()) -> None:
    """Print diff changes as a table, then the objects that could not be compared."""
    if items:
        table(([c.kind, c.object, label(c.hazard), _short(c.model_value), _short(c.db_value)] for c in items),
              [_("change"), _("object"), _("hazard"), _("model"), _("database")])
    for note in notes:
        notice(_("warning: {object} not compared: {reason}", object=note.object, reason=note.reason))


def _short(value: Any) -> str:
    if value is None:
        return "-"
    text = str(getattr(value, "name", value)) if hasattr(value, "__dataclass_fields__") else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def json_document(document: Any) -> None:
    echo(json.dumps(document, ensure_ascii=False, indent=2, default=_json_default))


def error(exc: TextLoomError) -> None:
    notice(_("error: {message}", message=exc.message))
    if exc.hint:
        notice(_("hint: {hint}", hint=exc.hint))


def format_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
