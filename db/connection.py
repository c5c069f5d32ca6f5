"""Open psycopg connections that are safe behind pgbouncer in transaction pooling mode.

Every connection is in autocommit mode with ``prepare_threshold=None``, so psycopg never
creates a server-side prepared statement, and the suite never issues a session-level
``SET``: settings that must apply to a piece of work are set with ``SET LOCAL`` inside
the transaction that does it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
from psycopg import conninfo as pg_conninfo

from db.errors import ConfigError, DatabaseError
from db.i18n import _

log = logging.getLogger(__name__)

APPLICATION_NAME = "textloom-db"
MASK = "***"


def parse_url(url: str) -> dict[str, str]:
    """Split a libpq URL or key/value string into its parameters.

    The parser's own messages quote the string they failed on, password included, so
    none of them is shown: the errors here name only the part that is wrong.
    """
    _check_url_form(url)
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(
            _("invalid DATABASE_URL: it is neither a postgresql:// URL nor a key=value connection string"),
            hint=_("use a URL such as postgresql://user@localhost:5432/textloom; write characters such as "
                   "@, : and % in the user name or password as %40, %3A and %25"),
        ) from None

    # libpq accepts a comma-separated list of ports, one per host.
    port = params.get("port", "")
    if port and not all(part.strip().isdigit() for part in port.split(",")):
        raise ConfigError(
            _("invalid DATABASE_URL {url}: port {port!r} is not a number", url=mask_url(url), port=port),
            hint=_("use a URL such as postgresql://user@localhost:5432/textloom"),
        )
    return params


def _check_url_form(url: str) -> None:
    """Reject URL mistakes that libpq would misread, before anything quotes the URL."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        return  # a key=value string
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            _("invalid DATABASE_URL: the scheme {scheme!r} is not supported", scheme=scheme),
            hint=_("start the URL with postgresql:// (SQLAlchemy's postgresql+psycopg:// is not a libpq URL)"),
        )
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        raise ConfigError(
            _("invalid DATABASE_URL: the user name or password contains an unencoded @"),
            hint=_("write @ as %40 in the user name or password, for example postgresql://app:p%40ss@db/textloom"),
        )


def mask_url(url: str) -> str:
    """Return ``url`` in URL form with the password replaced by ``***``."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return _("<unparsable connection string>")

    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = params.pop("dbname", "")

    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + MASK
    netloc = (auth + "@" if auth else "") + (quote(host, safe="") if host.startswith("/") else host)
    if port:
        netloc += ":" + port
    query = "&".join(f"{key}={MASK if key in ('sslpassword',) else value}" for key, value in sorted(params.items()))
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


_URL_PASSWORD_RE = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<tail>@)", re.IGNORECASE)
_KEYWORD_PASSWORD_RE = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """Replace the passwords of URLs and of ``password=...`` pairs inside any text with ``***``."""
    text = _URL_PASSWORD_RE.sub(lambda match: match["head"] + MASK + match["tail"], text)
    return _KEYWORD_PASSWORD_RE.sub(lambda match: match["head"] + MASK, text)


def describe_target(url: str) -> str:
    """Name host, port and database of ``url`` for error messages."""
    params = parse_url(url)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return _("host {host}, port {port}, database {dbname}", host=host, port=port, dbname=dbname)


def connect(url: str, *, connect_timeout: int = 5, application_name: str = APPLICATION_NAME) -> psycopg.Connection:
    """Open one autocommit connection without server-side prepared statements."""
    parse_url(url)
    log.debug("connecting to %s", mask_url(url))
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=connect_timeout,
            application_name=application_name,
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            _("cannot connect to PostgreSQL at {target}: {error}",
              target=describe_target(url), error=_first_line(_strip_secret(str(exc), url))),
            hint=_("check that the server is running and reachable, and that DATABASE_URL ({url}) "
                   "names the right host, port, user and database", url=mask_url(url)),
        ) from None
    return conn


@contextlib.contextmanager
def connection(url: str, *, connect_timeout: int = 5) -> Iterator[psycopg.Connection]:
    """Open a connection for the length of a ``with`` block."""
    conn = connect(url, connect_timeout=connect_timeout)
    try:
        yield conn
    finally:
        conn.close()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _strip_secret(text: str, url: str) -> str:
    try:
        password = pg_conninfo.conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    return text.replace(password, MASK) if password else text
