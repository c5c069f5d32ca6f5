"""Settings from the environment and the ``db:`` section of ``invoke.yaml``.

Precedence, highest first: environment variables, ``invoke.yaml`` (or any file Invoke
loads), built-in defaults. Every setting is validated here so that a bad value fails
before any connection is opened, naming the key it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from db.errors import ConfigError
from db.i18n import _

ENVIRONMENTS = ("development", "production")
DEFAULT_SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# PostgreSQL truncates identifiers at 63 bytes; a longer schema name would silently differ.
_SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")


@dataclass(frozen=True)
class Settings:
    """Validated settings of one task run. Times are in seconds."""

    database_url: str | None = None
    schema: str = "textloom_core"
    env: str = "development"
    connect_timeout: int = 5
    lock_timeout: float = 5.0
    statement_timeout: float = 0.0
    lock_retries: int = 5
    migration_lock_ttl: float = 30.0
    lock_wait_timeout: float = 600.0
    service_url: str | None = None
    migrations_dir: str = ""

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def sql_dir(self) -> Path:
        """Folder of the numbered migration files: ``migrations_dir`` or the project's ``sql/``."""
        return Path(self.migrations_dir) if self.migrations_dir else DEFAULT_SQL_DIR


# setting name -> environment variable
ENV_KEYS = {
    "database_url": "DATABASE_URL",
    "schema": "TEXTLOOM_DB_SCHEMA",
    "env": "TEXTLOOM_ENV",
    "connect_timeout": "TEXTLOOM_CONNECT_TIMEOUT",
    "lock_timeout": "TEXTLOOM_LOCK_TIMEOUT",
    "statement_timeout": "TEXTLOOM_STATEMENT_TIMEOUT",
    "lock_retries": "TEXTLOOM_LOCK_RETRIES",
    "migration_lock_ttl": "TEXTLOOM_MIGRATION_LOCK_TTL",
    "lock_wait_timeout": "TEXTLOOM_LOCK_WAIT_TIMEOUT",
    "service_url": "TEXTLOOM_SERVICE_URL",
    "migrations_dir": "TEXTLOOM_MIGRATIONS_DIR",
}


def load_settings(file_section: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Merge the ``db:`` section of invoke.yaml with the environment and validate the result."""
    environ = os.environ if environ is None else environ
    file_section = dict(file_section or {})

    unknown = sorted(set(file_section) - set(ENV_KEYS))
    if unknown:
        raise ConfigError(
            _("unknown key db.{key} in invoke.yaml", key=unknown[0]),
            hint=_("valid keys: {keys}", keys=", ".join(sorted(ENV_KEYS))),
        )

    raw: dict[str, tuple[str, Any]] = {}
    for name, value in file_section.items():
        if value is not None:
            raw[name] = (f"db.{name} (invoke.yaml)", value)
    for name, variable in ENV_KEYS.items():
        value = environ.get(variable)
        if value is not None and value != "":
            raw[name] = (variable, value)

    defaults = Settings()
    values = {}
    for field in fields(Settings):
        if field.name in raw:
            source, value = raw[field.name]
            values[field.name] = _coerce(field.name, source, value, type(getattr(defaults, field.name)))
    settings = Settings(**values)
    _validate(settings, raw)
    return settings


def _coerce(name: str, source: str, value: Any, kind: type) -> Any:
    if kind in (int, float):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(
                _("invalid value {value!r} for {key}: expected a number", value=value, key=source),
                hint=_("set {key} to a number such as 5", key=source),
            ) from None
        if number < 0:
            raise ConfigError(
                _("invalid value {value!r} for {key}: must not be negative", value=value, key=source),
                hint=_("set {key} to 0 or more", key=source),
            )
        return number
    return str(value).strip()


def _validate(settings: Settings, raw: Mapping[str, tuple[str, Any]]) -> None:
    def source(name: str) -> str:
        return raw.get(name, (ENV_KEYS[name], None))[0]

    if not _SCHEMA_PATTERN.match(settings.schema):
        raise ConfigError(
            _("invalid schema name {value!r} in {key}", value=settings.schema, key=source("schema")),
            hint=_("use lower-case letters, digits and underscores, at most 63 characters"),
        )
    if settings.schema.startswith("pg_") or settings.schema == "information_schema":
        raise ConfigError(
            _("invalid schema name {value!r} in {key}: PostgreSQL reserves it for system catalogs",
              value=settings.schema, key=source("schema")),
            hint=_("use a schema of TextLoom's own, such as textloom_core"))
    if settings.migrations_dir and not Path(settings.migrations_dir).is_dir():
        raise ConfigError(
            _("invalid folder {value!r} in {key}: not found or not a folder", value=settings.migrations_dir,
              key=source("migrations_dir")),
            hint=_("point it at the folder that holds the numbered .sql files, or unset it to use sql/"))
    if settings.env not in ENVIRONMENTS:
        raise ConfigError(
            _("invalid environment {value!r} in {key}", value=settings.env, key=source("env")),
            hint=_("use one of: {choices}", choices=", ".join(ENVIRONMENTS)),
        )
    if settings.connect_timeout < 1:
        raise ConfigError(
            _("invalid value {value!r} for {key}: must be at least 1",
              value=settings.connect_timeout, key=source("connect_timeout")),
            hint=_("set {key} to a number such as 5", key=source("connect_timeout")),
        )
    if settings.service_url and not settings.service_url.startswith(("http://", "https://")):
        raise ConfigError(
            _("invalid URL {value!r} in {key}", value=settings.service_url, key=source("service_url")),
            hint=_("use an http:// or https:// URL"),
        )
