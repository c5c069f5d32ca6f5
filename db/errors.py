"""The suite's exception hierarchy and the exit codes the tasks map it to."""

from __future__ import annotations

# Exit codes shared by every task; documented in README.md.
EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3


class TextLoomError(Exception):
    """Base error of the suite: a message for people, a hint, and an exit code."""

    exit_code = EXIT_DATABASE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(TextLoomError):
    """A setting is missing or invalid."""

    exit_code = EXIT_USAGE


class UsageError(TextLoomError):
    """The request cannot be carried out as given (bad flag, refused operation)."""

    exit_code = EXIT_USAGE


class DatabaseError(TextLoomError):
    """The server could not be reached or rejected a statement."""

    exit_code = EXIT_DATABASE


class MigrationError(TextLoomError):
    """A migration file is invalid, failed, or disagrees with the history."""

    exit_code = EXIT_DATABASE


class ProblemFound(TextLoomError):
    """A check or comparison found a problem; the report has already been printed."""

    exit_code = EXIT_PROBLEM
