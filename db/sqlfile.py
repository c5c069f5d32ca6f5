"""Read one migration file into statements, ready for the runner.

A migration is a file named ``NNNN_description.sql`` in UTF-8. Reading it takes these
steps, and every check runs before the runner executes anything:

1. Decode the bytes: a leading byte-order mark is dropped, an invalid byte is an error,
   and CRLF or CR line endings become LF.
2. Cut out the data of ``COPY ... FROM STDIN`` blocks (as pg_dump writes them), because
   that data is not SQL. Reject psql meta-commands such as ``\\connect``.
3. Replace ``${name}`` placeholders outside COPY data.
4. Split and classify the statements with pglast, which wraps PostgreSQL's own parser.

The checksum covers the file content before placeholders are replaced, with the
byte-order mark dropped and line endings normalised, so converting a file to CRLF does
not change it while any real edit does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pglast import ast, parser
from pglast.enums import (
    AlterSubscriptionType,
    AlterTableType,
    DiscardMode,
    ReindexObjectType,
    TransactionStmtKind,
)

from db.errors import MigrationError
from db.i18n import _

log = logging.getLogger(__name__)

CHECKSUM_VERSION = 1
NO_TRANSACTION_DIRECTIVE = "-- textloom:no-transaction"

NAME_PATTERN = "NNNN_description.sql"
_NAME_RE = re.compile(r"(?P<version>[0-9]{4,})_(?P<description>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql")
_PLACEHOLDER_RE = re.compile(r"\$\{(?P<name>[^{}\n]*)\}")
_COPY_TERMINATOR_RE = re.compile(r"^\\\.$", re.MULTILINE)
_COPY_WORD_RE = re.compile("copy", re.IGNORECASE)
_DIRECTIVE_LIKE_RE = re.compile(r"--\s*textloom\s*:", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"
# Characters scanned first when looking for the next COPY FROM STDIN. Any size gives the same result.
_FIRST_CHUNK_SIZE = 8192

# Token names of pglast's scanner.
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_SEMICOLON = "ASCII_59"
_BACKSLASH = "ASCII_92"


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a migration file."""

    index: int
    line: int
    text: str
    tag: str
    needs_no_transaction: bool
    copy_data: str | None


@dataclass(frozen=True)
class SqlFile:
    """A migration file, read, checked and split into statements."""

    path: Path
    version: int
    description: str
    checksum: str
    checksum_version: int
    is_transactional: bool
    statements: tuple[Statement, ...]


# Files and names ----------------------------------------------------------------------


def parse_name(path: Path) -> tuple[int, str]:
    """Return the version and description from a file name such as ``0001_create_core_tables.sql``."""
    match = _NAME_RE.fullmatch(path.name)
    if match is None:
        raise MigrationError(
            _("invalid migration file name {file}: expected {pattern}, such as 0001_create_core_tables.sql",
              file=path, pattern=NAME_PATTERN),
            hint=_("rename the file: at least four digits, an underscore, then lower-case words "
                   "joined by underscores, and the .sql extension"),
        )
    return int(match["version"]), match["description"]


def discover(directory: Path) -> list[Path]:
    """List the migration files of ``directory`` (not its subfolders), sorted by version.

    Hidden files such as editor lock files are skipped. Any other file ending in ``.sql``
    must have a valid name, and no two files may share a version.
    """
    if not directory.is_dir():
        raise MigrationError(
            _("migration folder {folder} not found", folder=directory),
            hint=_("create the folder or point the setting at the folder that holds the .sql files"),
        )

    by_version: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() != ".sql" or not path.is_file():
            continue
        version, _description = parse_name(path)
        other = by_version.get(version)
        if other is not None:
            raise MigrationError(
                _("duplicate migration version {version}: {first} and {second}",
                  version=version, first=other, second=path),
                hint=_("give one of the two files the next free version number"),
            )
        by_version[version] = path

    return [by_version[version] for version in sorted(by_version)]


def checksum(raw: bytes) -> str:
    """Return the sha256 hex digest of file content with the BOM dropped and line endings as LF."""
    content = raw.removeprefix(_BOM).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(content).hexdigest()


def read_sql_file(path: Path, placeholders: Mapping[str, str] | None = None) -> SqlFile:
    """Read, check and split one migration file.

    Raises MigrationError when the file cannot be used as it is: an invalid name or byte,
    a psql meta-command, an unterminated COPY block, an unknown placeholder, a parse
    error or transaction control. A statement that cannot run in a transaction is an
    error too, unless the file starts with the ``-- textloom:no-transaction`` line.
    """
    version, description = parse_name(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MigrationError(
            _("cannot read migration file {file}: {error}", file=path, error=exc.strerror or exc),
            hint=_("check that the file exists and is readable"),
        ) from exc

    parsed = _split(_decode(raw, path), str(path), placeholders)
    if not parsed.has_directive:
        _check_transactional(parsed, str(path))

    log.debug("read %s: %d statements, transactional=%s", path, len(parsed.statements),
              not parsed.has_directive)
    return SqlFile(
        path=path,
        version=version,
        description=description,
        checksum=checksum(raw),
        checksum_version=CHECKSUM_VERSION,
        is_transactional=not parsed.has_directive,
        statements=parsed.statements,
    )


def split_sql(text: str, *, source: str = "<string>",
              placeholders: Mapping[str, str] | None = None) -> tuple[Statement, ...]:
    """Split SQL held in memory into statements, with the same checks as a file.

    Statements that cannot run in a transaction are marked, not rejected: the caller
    decides how to run them.
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return _split(text, source, placeholders).statements


def _decode(raw: bytes, path: Path) -> str:
    body = raw.removeprefix(_BOM)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(raw) - len(body))
        line = raw[:offset].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise MigrationError(
            _("{file} is not valid UTF-8: byte 0x{byte} at byte offset {offset} (line {line})",
              file=path, byte=f"{raw[offset]:02x}", offset=offset, line=line),
            hint=_("save the file as UTF-8; nothing has run"),
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Splitting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    statements: tuple[Statement, ...]
    no_transaction_kinds: tuple[str | None, ...]
    has_directive: bool


@dataclass(frozen=True)
class _CopyBlock:
    line: int
    data: str


def _split(text: str, source: str, placeholders: Mapping[str, str] | None) -> _Parsed:
    _check_no_nul(text, source)
    masked, blocks = _cut_copy_data(text, source)
    sql_text, source_map = _substitute(masked, placeholders or {}, source)
    raw_stmts = _parse(sql_text, source, source_map)
    bounds = [_statement_bounds(sql_text, raw_stmt) for raw_stmt in raw_stmts]

    header_end = source_map.to_source(bounds[0][0]) if bounds else len(masked)
    has_directive = _has_directive(masked, source, header_end)

    statements: list[Statement] = []
    kinds: list[str | None] = []
    pending_blocks = list(blocks)
    line, counted_to = 1, 0
    for index, (raw_stmt, (start, end)) in enumerate(zip(raw_stmts, bounds), start=1):
        # Counting on from the previous statement keeps large dumps linear.
        line += sql_text.count("\n", counted_to, start)
        counted_to = start
        text = sql_text[start:end]
        _check_session_state(raw_stmt, text, source, line)
        kind, copy_data = None, None
        if _needs_tree(raw_stmt):
            node = parser.parse_sql(text)[0].stmt
            _check_statement(node, source, line, has_directive)
            kind = _no_transaction_kind(node)
            copy_data = _take_copy_data(node, line, pending_blocks, source)
        statements.append(Statement(
            index=index,
            line=line,
            text=text,
            tag=raw_stmt.tag,
            needs_no_transaction=kind is not None,
            copy_data=copy_data,
        ))
        kinds.append(kind)

    if pending_blocks:
        raise _unmatched_copy_data(source, pending_blocks[0].line)
    return _Parsed(tuple(statements), tuple(kinds), has_directive)


def _check_no_nul(text: str, source: str) -> None:
    # libpg_query reads a C string, so everything after a NUL would be silently dropped.
    if "\x00" not in text:
        return
    line, _column = _line_column(text, text.index("\x00"))
    raise MigrationError(
        _("{file}, line {line}: the text contains a NUL character, which PostgreSQL cannot accept",
          file=source, line=line),
        hint=_("remove the NUL character; nothing has run"),
    )


@dataclass(frozen=True)
class _RawStatement:
    """A statement as the parser's JSON output gives it, with character offsets."""

    location: int
    length: int | None
    tag: str
    body: dict


# Statement kinds that a check or a classification below looks at. Statements of other
# kinds need no parse tree. IndexStmt, DropStmt and AlterTableStmt are common, so the
# JSON output decides whether their tree is needed (see _needs_tree).
_TREE_TAGS = frozenset({
    "CopyStmt", "VariableSetStmt", "TransactionStmt", "ReindexStmt", "VacuumStmt", "CreatedbStmt",
    "DropdbStmt", "AlterDatabaseStmt", "AlterSystemStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt",
    "ClusterStmt", "CreateSubscriptionStmt", "AlterSubscriptionStmt", "DropSubscriptionStmt", "DiscardStmt",
})


def _parse(sql_text: str, source: str, source_map: _SourceMap) -> list[_RawStatement]:
    """Parse the text once into JSON, which costs a tenth of building pglast's Python tree.

    Only a statement whose kind a check looks at is parsed again on its own into a tree
    (``_needs_tree``). In a typical migration few statements are of those kinds.
    """
    try:
        document = json.loads(parser.parse_sql_json(sql_text))
    except parser.ParseError as exc:
        raise _syntax_error(sql_text, source, source_map, exc) from None

    to_char = _CharOffsets(sql_text)
    statements = []
    for entry in document.get("stmts", ()):
        ((tag, body),) = entry["stmt"].items()
        start = entry.get("stmt_location", 0)
        length = entry.get("stmt_len", 0)
        char_start = to_char(start)
        char_length = to_char(start + length) - char_start if length else None
        statements.append(_RawStatement(char_start, char_length, tag, body))
    return statements


class _CharOffsets:
    """Turn the parser's UTF-8 byte offsets into offsets of the Python string.

    The offsets asked for never decrease, so each byte is decoded once.
    """

    def __init__(self, text: str) -> None:
        self.is_ascii = text.isascii()
        self.data = b"" if self.is_ascii else text.encode()
        self.byte = 0
        self.char = 0

    def __call__(self, offset: int) -> int:
        if self.is_ascii:
            return offset
        self.char += len(self.data[self.byte:offset].decode())
        self.byte = offset
        return self.char


def _needs_tree(raw: _RawStatement) -> bool:
    if raw.tag in ("IndexStmt", "DropStmt"):
        return bool(raw.body.get("concurrent"))
    if raw.tag == "AlterTableStmt":
        return any(cmd.get("AlterTableCmd", {}).get("subtype") == "AT_DetachPartition"
                   for cmd in raw.body.get("cmds", ()))
    return raw.tag in _TREE_TAGS


def _syntax_error(sql_text: str, source: str, source_map: _SourceMap, exc: parser.ParseError) -> MigrationError:
    # parse_sql reports the position in characters, where the JSON parser may count bytes.
    try:
        parser.parse_sql(sql_text)
    except parser.ParseError as tree_exc:
        exc = tree_exc
    message = exc.args[0]
    position = exc.args[1] if len(exc.args) > 1 and exc.args[1] is not None else 0
    position = min(position, len(sql_text))
    line, _column = _line_column(sql_text, position)
    line_start = sql_text.rfind("\n", 0, position) + 1
    line_end = sql_text.find("\n", position)
    near = sql_text[line_start:line_end if line_end >= 0 else len(sql_text)].strip()
    # The column counts characters of the file as written, before placeholders were replaced.
    column = source_map.to_source(position) - source_map.to_source(line_start) + 1
    version = ".".join(str(part) for part in parser.get_postgresql_version())
    return MigrationError(
        _("invalid SQL in {file} at line {line}, column {column}: {error}",
          file=source, line=line, column=column, error=message),
        hint=_("fix the SQL near: {near} (checked with the PostgreSQL {version} parser; nothing has run)",
               near=near[:120], version=version),
    )


def _statement_bounds(sql_text: str, raw_stmt: _RawStatement) -> tuple[int, int]:
    """Return the statement's span without surrounding whitespace, comments and semicolon."""
    start = raw_stmt.location
    end = start + raw_stmt.length if raw_stmt.length else len(sql_text)
    tokens = [token for token in parser.scan(sql_text[start:end]) if token.name not in _COMMENT_TOKENS]
    return start + tokens[0].start, start + tokens[-1].end + 1


def _line_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return line, column


# COPY data and psql meta-commands -------------------------------------------------------


def _cut_copy_data(text: str, source: str) -> tuple[str, list[_CopyBlock]]:
    """Blank out the data of each COPY FROM STDIN block and return it separately.

    Blanking replaces each character but line breaks with a space, so offsets and line
    numbers of the remaining SQL stay those of the file. Since the data is not SQL, the
    scanner may fail inside it. Scanning therefore runs one window at a time, from a
    statement boundary to the next ``\\.`` line, and only trusts the tokens before the
    first COPY FROM STDIN or the first lexical error.
    """
    if "\\" not in text and not _COPY_WORD_RE.search(text):
        # Neither a meta-command nor a COPY can be there: skip the scan, the costly part.
        return text, []
    pieces: list[str] = []
    blocks: list[_CopyBlock] = []
    position = 0
    line_at_position = 1
    while position < len(text):
        copy_span = _find_copy_from_stdin(text, position, source)
        if copy_span is None:
            break

        copy_start, copy_end = copy_span
        copy_line = line_at_position + text.count("\n", position, copy_start)
        line_end = text.find("\n", copy_end)
        # The data starts on the line after the statement, as psql reads it.
        data_start = line_end + 1
        terminator = _COPY_TERMINATOR_RE.search(text, data_start) if line_end >= 0 else None
        if terminator is None:
            raise MigrationError(
                _("{file}, line {line}: COPY FROM STDIN has no terminating line \\. after its data",
                  file=source, line=copy_line),
                hint=_("end the data with a line that holds only \\. as pg_dump writes it; nothing has run"),
            )

        blocks.append(_CopyBlock(line=copy_line, data=text[data_start:terminator.start()]))
        pieces.append(text[position:data_start])
        pieces.append(re.sub(r"[^\n]", " ", text[data_start:terminator.end()]))
        line_at_position = copy_line + text.count("\n", copy_start, terminator.end())
        position = terminator.end()

    pieces.append(text[position:])
    return "".join(pieces), blocks


def _find_copy_from_stdin(text: str, position: int, source: str) -> tuple[int, int] | None:
    """Return the start and the end (past the semicolon) of the next COPY FROM STDIN.

    Raises MigrationError for a psql meta-command found on the way. The scan starts with
    a small chunk and grows it, so the data after a COPY is barely scanned.
    """
    window_end = _next_terminator_end(text, position)
    chunk_size = _FIRST_CHUNK_SIZE
    while True:
        chunk_end = min(_line_end_after(text, position + chunk_size), window_end)
        tokens, complete = _scan_prefix(text, position, chunk_end)
        copy_span = _scan_for_copy(text, tokens, source, is_whole_text=complete and chunk_end == len(text))
        if copy_span is not None:
            return copy_span
        if chunk_end < window_end:
            chunk_size *= 4
            continue
        if complete or window_end == len(text):
            return None
        # A string, dollar quote or comment may contain the \. line: widen the window.
        window_end = _next_terminator_end(text, window_end)


def _line_end_after(text: str, position: int) -> int:
    line_end = text.find("\n", position)
    return len(text) if line_end < 0 else line_end + 1


def _next_terminator_end(text: str, position: int) -> int:
    match = _COPY_TERMINATOR_RE.search(text, position)
    return len(text) if match is None else min(match.end() + 1, len(text))


def _scan_prefix(text: str, start: int, end: int) -> tuple[list[parser.Token], bool]:
    """Scan ``text[start:end]``, returning the tokens before the first lexical error.

    The tokens carry offsets into ``text``. The flag is True when the whole range scanned.
    """
    limit = end - start
    complete = True
    while limit > 0:
        try:
            tokens = parser.scan(text[start:start + limit])
        except parser.ParseError as exc:
            error_at = exc.args[1] if len(exc.args) > 1 else None
            complete = False
            limit = error_at if error_at is not None and error_at < limit else 0
            continue
        return [token._replace(start=token.start + start, end=token.end + start) for token in tokens], complete
    return [], False


def _scan_for_copy(text: str, tokens: list[parser.Token], source: str,
                   *, is_whole_text: bool) -> tuple[int, int] | None:
    at_statement_start = True
    for number, token in enumerate(tokens):
        if token.name in _COMMENT_TOKENS:
            continue
        if token.name == _BACKSLASH:
            _reject_meta_command(text, token.start, source)
        if at_statement_start and token.name == "COPY":
            copy_end = _copy_from_stdin_end(text, tokens, number, is_whole_text=is_whole_text)
            if copy_end is not None:
                return token.start, copy_end
        at_statement_start = token.name == _SEMICOLON
    return None


def _copy_from_stdin_end(text: str, tokens: list[parser.Token], first: int, *, is_whole_text: bool) -> int | None:
    """Return the offset past the semicolon if tokens[first:] start a COPY FROM STDIN."""
    last = first
    while last + 1 < len(tokens) and tokens[last].name != _SEMICOLON:
        last += 1
    if tokens[last].name != _SEMICOLON and not is_whole_text:
        # The statement may go on past the scanned chunk, with WITH (FORMAT csv) for example.
        return None
    body_end = tokens[last].start if tokens[last].name == _SEMICOLON else tokens[last].end + 1
    # Placeholders are replaced later, so here an identifier takes their place.
    candidate_sql = _PLACEHOLDER_RE.sub("placeholder", text[tokens[first].start:body_end])
    try:
        candidate = parser.parse_sql(candidate_sql)
    except parser.ParseError:
        # Left to the final parse, which reports the error with its position.
        return None
    if len(candidate) != 1 or not _is_copy_from_stdin(candidate[0].stmt):
        return None
    return tokens[last].end + 1


def _is_copy_from_stdin(node: ast.Node) -> bool:
    return isinstance(node, ast.CopyStmt) and bool(node.is_from) and node.filename is None


def _reject_meta_command(text: str, position: int, source: str) -> None:
    line, _column = _line_column(text, position)
    command = text[position:].split(None, 1)[0]
    if command == "\\.":
        raise MigrationError(
            _("{file}, line {line}: the line \\. ends COPY data, but no COPY ... FROM STDIN comes before it",
              file=source, line=line),
            hint=_("check the COPY statement above the data, or remove the line; nothing has run"),
        )
    raise MigrationError(
        _("{file}, line {line}: psql meta-command {command} is not supported in migration files",
          file=source, line=line, command=command),
        hint=_("remove the line; migrations run through a database driver, not psql, and nothing has run"),
    )


def _take_copy_data(node: ast.Node, line: int, pending_blocks: list[_CopyBlock], source: str) -> str | None:
    """Pair a COPY FROM STDIN statement with the next data block cut from the text."""
    if not _is_copy_from_stdin(node):
        return None
    if not pending_blocks or pending_blocks[0].line != line:
        raise _unmatched_copy_data(source, line)
    return pending_blocks.pop(0).data


def _unmatched_copy_data(source: str, line: int) -> MigrationError:
    # Only a COPY that is not at the start of a statement gets here, for example one
    # inside a BEGIN ATOMIC body, because the data block search looks at statement starts.
    return MigrationError(
        _("{file}, line {line}: cannot match a COPY FROM STDIN statement with its data block",
          file=source, line=line),
        hint=_("write COPY ... FROM STDIN as a statement of its own, with the data on the following lines "
               "and a line \\. after it, as pg_dump does; nothing has run"),
    )


# Placeholders ---------------------------------------------------------------------------


class _SourceMap:
    """Map offsets in the substituted text back to offsets in the text before substitution."""

    def __init__(self) -> None:
        # (start in new text, end in new text, start in old text, end in old text)
        self._spans: list[tuple[int, int, int, int]] = []

    def add(self, new_start: int, new_end: int, old_start: int, old_end: int) -> None:
        self._spans.append((new_start, new_end, old_start, old_end))

    def to_source(self, position: int) -> int:
        shift = 0
        for new_start, new_end, old_start, old_end in self._spans:
            if position < new_start:
                break
            if position < new_end:
                return old_start
            shift = old_end - new_end
        return position + shift


def _substitute(text: str, placeholders: Mapping[str, str], source: str) -> tuple[str, _SourceMap]:
    """Replace each ``${name}``, including those in comments and string literals."""
    for name, value in placeholders.items():
        if "\n" in value or "\r" in value:
            raise MigrationError(
                _("placeholder ${{{name}}} has a value with a line break", name=name),
                hint=_("pass a single-line value so line numbers in error messages stay right"),
            )

    source_map = _SourceMap()
    pieces: list[str] = []
    position = 0
    new_length = 0
    for match in _PLACEHOLDER_RE.finditer(text):
        name = match["name"]
        if name not in placeholders:
            line, _column = _line_column(text, match.start())
            raise MigrationError(
                _("{file}, line {line}: unknown placeholder ${{{name}}}", file=source, line=line, name=name),
                hint=_("the known placeholders are: {known}; fix the name or pass a value; nothing has run",
                       known=", ".join(sorted(placeholders)) or "none"),
            )
        pieces.append(text[position:match.start()])
        new_length += match.start() - position
        value = placeholders[name]
        source_map.add(new_length, new_length + len(value), match.start(), match.end())
        pieces.append(value)
        new_length += len(value)
        position = match.end()

    pieces.append(text[position:])
    return "".join(pieces), source_map


# Header directive -----------------------------------------------------------------------


def _has_directive(masked: str, source: str, header_end: int) -> bool:
    """Return True when a comment line before the first statement is exactly the directive.

    Raises MigrationError for a misspelt ``-- textloom:`` directive there, which would
    otherwise be ignored without a word.
    """
    found = False
    for token in parser.scan(masked[:header_end]):
        comment = masked[token.start:token.end + 1].rstrip()
        if token.name != "SQL_COMMENT" or not _DIRECTIVE_LIKE_RE.match(comment):
            continue
        line_start = masked.rfind("\n", 0, token.start) + 1
        if comment == NO_TRANSACTION_DIRECTIVE and not masked[line_start:token.start].strip():
            found = True
            continue
        line, _column = _line_column(masked, token.start)
        raise MigrationError(
            _("{file}, line {line}: invalid directive {comment}", file=source, line=line, comment=comment),
            hint=_("the only directive is {directive}, alone on its own line before the first statement",
                   directive=NO_TRANSACTION_DIRECTIVE),
        )
    return found


# Classification -------------------------------------------------------------------------


_TRANSACTION_COMMANDS = {
    TransactionStmtKind.TRANS_STMT_BEGIN: "BEGIN",
    TransactionStmtKind.TRANS_STMT_START: "START TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT: "COMMIT",
    TransactionStmtKind.TRANS_STMT_ROLLBACK: "ROLLBACK",
    TransactionStmtKind.TRANS_STMT_SAVEPOINT: "SAVEPOINT",
    TransactionStmtKind.TRANS_STMT_RELEASE: "RELEASE SAVEPOINT",
    TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "ROLLBACK TO SAVEPOINT",
    TransactionStmtKind.TRANS_STMT_PREPARE: "PREPARE TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED: "COMMIT PREPARED",
    TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
}


_VAR_SET_MULTI = 3


def _check_statement(node: ast.Node, source: str, line: int, has_directive: bool) -> None:
    """Reject statements that no migration may contain, whatever its header."""
    if isinstance(node, ast.CopyStmt) and node.filename is None and not node.is_from:
        raise MigrationError(
            _("{file}, line {line}: COPY TO STDOUT sends rows to the client, which a migration cannot use",
              file=source, line=line),
            hint=_("remove the statement or write to a server file with COPY ... TO 'path'; nothing has run"),
        )

    # SET TRANSACTION (kind VAR_SET_MULTI) ends with the transaction, like SET LOCAL.
    if isinstance(node, ast.VariableSetStmt) and not node.is_local and node.kind != _VAR_SET_MULTI:
        raise MigrationError(
            _("{file}, line {line}: a session-level SET or RESET is not allowed in a migration, because it would "
              "stay on a pooled server connection after the migration", file=source, line=line),
            hint=_("write SET LOCAL, which ends with the transaction, or pass the value to one statement; "
                   "nothing has run"),
        )

    if isinstance(node, ast.TransactionStmt):
        if has_directive:
            hint = _("remove it: in a file with {directive} each statement commits on its own; nothing has run",
                     directive=NO_TRANSACTION_DIRECTIVE)
        else:
            hint = _("remove it: the runner applies the whole file in one transaction, or, with {directive} "
                     "as the first line, runs each statement on its own; nothing has run",
                     directive=NO_TRANSACTION_DIRECTIVE)
        raise MigrationError(
            _("{file}, line {line}: transaction control ({command}) is not allowed in a migration, "
              "because the runner manages transactions",
              file=source, line=line, command=_TRANSACTION_COMMANDS.get(node.kind, "transaction statement")),
            hint=hint,
        )


# Functions whose effect lasts for the session; their _xact_ forms end with the transaction.
_SESSION_LOCK_FUNCTIONS = frozenset({"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
                                     "pg_try_advisory_lock_shared"})
_CURSOR_OPT_HOLD = 0x0020


def _check_session_state(raw: _RawStatement, text: str, source: str, line: int) -> None:
    """Reject statements whose effect outlives the transaction on the server connection.

    Through pgbouncer in transaction pooling mode, such state stays on a server connection
    that other clients use next, as a session SET would.
    """
    kind = _session_state_kind(raw, text)
    if kind is None:
        return
    raise MigrationError(
        _("{file}, line {line}: {kind} lasts beyond the transaction, so it would stay on a pooled server "
          "connection after the migration", file=source, line=line, kind=kind),
        hint=_("{instead}; nothing has run", instead=_session_state_instead(kind)),
    )


def _session_state_instead(kind: str) -> str:
    return {
        "PREPARE": _("run the statement itself instead of preparing it"),
        "LISTEN": _("remove it, since a migration receives no notifications"),
        "DECLARE ... WITH HOLD": _("declare the cursor without WITH HOLD"),
        "CREATE TEMPORARY TABLE": _("add ON COMMIT DROP"),
        "pg_advisory_lock()": _("use pg_advisory_xact_lock(), which ends with the transaction"),
        "set_config(..., false)": _("pass true as the third argument, which ends the setting with the transaction"),
    }[kind]


def _session_state_kind(raw: _RawStatement, text: str) -> str | None:
    body = raw.body
    if raw.tag == "PrepareStmt":
        return "PREPARE"
    if raw.tag == "ListenStmt":
        return "LISTEN"
    if raw.tag == "DeclareCursorStmt" and body.get("options", 0) & _CURSOR_OPT_HOLD:
        return "DECLARE ... WITH HOLD"
    if raw.tag == "CreateStmt":
        relation, on_commit = body.get("relation", {}), body.get("oncommit")
    elif raw.tag == "CreateTableAsStmt":
        relation, on_commit = body.get("into", {}).get("rel", {}), body.get("into", {}).get("onCommit")
    else:
        relation, on_commit = {}, None
    if relation.get("relpersistence") == "t" and on_commit != "ONCOMMIT_DROP":
        return "CREATE TEMPORARY TABLE"
    lowered = text.lower()
    if "advisory" in lowered or "set_config" in lowered:
        for call in _function_calls(body):
            name = call.get("funcname", [{}])[-1].get("String", {}).get("sval")
            if name in _SESSION_LOCK_FUNCTIONS:
                return "pg_advisory_lock()"
            if name == "set_config" and not _is_constant_true(call.get("args", [])[2:3]):
                return "set_config(..., false)"
    return None


def _function_calls(node: object) -> Iterator[dict]:
    """Yield every FuncCall node of a statement's JSON parse tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "FuncCall":
                yield value
            yield from _function_calls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _function_calls(item)


def _is_constant_true(args: list) -> bool:
    """Tell whether the one argument given is the constant true (a string such as 'on' counts)."""
    if len(args) != 1:
        return False
    constant = args[0].get("A_Const", {})
    if "boolval" in constant:
        return bool(constant["boolval"].get("boolval"))
    value = constant.get("sval", {}).get("sval")
    return isinstance(value, str) and value.lower() in ("true", "on", "yes", "1", "t")


def _check_transactional(parsed: _Parsed, source: str) -> None:
    for statement, kind in zip(parsed.statements, parsed.no_transaction_kinds):
        if kind is None:
            continue
        raise MigrationError(
            _("{file}, line {line}: {kind} cannot run inside a transaction block, "
              "but this file runs in one transaction",
              file=source, line=statement.line, kind=kind),
            hint=_("put {directive} as the first line of the file, so its statements run one by one "
                   "outside a transaction; nothing has run", directive=NO_TRANSACTION_DIRECTIVE),
        )


def _no_transaction_kind(node: ast.Node) -> str | None:
    """Name the statement kind if PostgreSQL rejects it inside a transaction block, else None.

    The list covers the commands that PostgreSQL 15 to 18 reject inside a transaction
    block, as far as the syntax shows it. DROP SUBSCRIPTION is rejected only when the
    subscription has a replication slot, which only the catalog shows, so it is always marked.
    """
    match node:
        case ast.IndexStmt(concurrent=True):
            return "CREATE INDEX CONCURRENTLY"
        case ast.DropStmt(concurrent=True):
            return "DROP INDEX CONCURRENTLY"
        case ast.ReindexStmt():
            return _reindex_kind(node)
        case ast.AlterTableStmt():
            return _detach_concurrently_kind(node)
        case ast.VacuumStmt(is_vacuumcmd=True):
            return "VACUUM"
        case ast.CreatedbStmt():
            return "CREATE DATABASE"
        case ast.DropdbStmt():
            return "DROP DATABASE"
        case ast.AlterDatabaseStmt() if any(option.defname == "tablespace" for option in node.options or ()):
            return "ALTER DATABASE SET TABLESPACE"
        case ast.AlterSystemStmt():
            return "ALTER SYSTEM"
        case ast.CreateTableSpaceStmt():
            return "CREATE TABLESPACE"
        case ast.DropTableSpaceStmt():
            return "DROP TABLESPACE"
        case ast.ClusterStmt(relation=None):
            # NOTE: CLUSTER on a partitioned table is rejected too, which the syntax cannot show.
            return "CLUSTER without a table name"
        case ast.CreateSubscriptionStmt():
            return _create_subscription_kind(node)
        case ast.AlterSubscriptionStmt():
            return _alter_subscription_kind(node)
        case ast.DropSubscriptionStmt():
            return "DROP SUBSCRIPTION"
        case ast.DiscardStmt(target=DiscardMode.DISCARD_ALL):
            return "DISCARD ALL"
    return None


def _reindex_kind(node: ast.ReindexStmt) -> str | None:
    if any(param.defname == "concurrently" and _option_is_true(param) for param in node.params or ()):
        return "REINDEX CONCURRENTLY"
    whole = {
        ReindexObjectType.REINDEX_OBJECT_SCHEMA: "REINDEX SCHEMA",
        ReindexObjectType.REINDEX_OBJECT_SYSTEM: "REINDEX SYSTEM",
        ReindexObjectType.REINDEX_OBJECT_DATABASE: "REINDEX DATABASE",
    }
    return whole.get(node.kind)


def _detach_concurrently_kind(node: ast.AlterTableStmt) -> str | None:
    for cmd in node.cmds or ():
        if (isinstance(cmd, ast.AlterTableCmd) and cmd.subtype == AlterTableType.AT_DetachPartition
                and isinstance(cmd.def_, ast.PartitionCmd) and cmd.def_.concurrent):
            return "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"
    return None


def _create_subscription_kind(node: ast.CreateSubscriptionStmt) -> str | None:
    # create_slot defaults to true, and connect = false turns it off.
    options = {option.defname: option for option in node.options or ()}
    if "connect" in options and not _option_is_true(options["connect"]):
        return None
    if "create_slot" in options and not _option_is_true(options["create_slot"]):
        return None
    return "CREATE SUBSCRIPTION with create_slot"


def _alter_subscription_kind(node: ast.AlterSubscriptionStmt) -> str | None:
    options = {option.defname: option for option in node.options or ()}
    if node.kind == AlterSubscriptionType.ALTER_SUBSCRIPTION_REFRESH:
        return "ALTER SUBSCRIPTION ... REFRESH PUBLICATION"

    publication_kinds = (
        AlterSubscriptionType.ALTER_SUBSCRIPTION_SET_PUBLICATION,
        AlterSubscriptionType.ALTER_SUBSCRIPTION_ADD_PUBLICATION,
        AlterSubscriptionType.ALTER_SUBSCRIPTION_DROP_PUBLICATION,
    )
    if node.kind in publication_kinds:
        # refresh defaults to true.
        if "refresh" in options and not _option_is_true(options["refresh"]):
            return None
        return "ALTER SUBSCRIPTION ... PUBLICATION with refresh"

    if node.kind == AlterSubscriptionType.ALTER_SUBSCRIPTION_OPTIONS and ({"failover", "two_phase"} & options.keys()):
        return "ALTER SUBSCRIPTION ... SET (failover or two_phase)"
    return None


def _option_is_true(option: ast.DefElem) -> bool:
    """Read a boolean option the way PostgreSQL's defGetBoolean does, where no value means true."""
    value = option.arg
    if value is None:
        return True
    if isinstance(value, ast.Boolean):
        return bool(value.boolval)
    if isinstance(value, ast.Integer):
        return value.ival != 0
    if isinstance(value, ast.String):
        return value.sval.lower() not in ("false", "off", "0", "no")
    return True
