"""The errors luigi_pipelines raises, and the pure parsing that makes PostgreSQL's COPY errors readable."""
from __future__ import annotations

import re
from dataclasses import dataclass

_COPY_CONTEXT = re.compile(r"COPY \S+, line (?P<line>\d+)(?:, column (?P<column>[^:]+))?")
_MAX_REASON = 300  # PostgreSQL quotes the bad value in full; a 4 MiB field must not become a 4 MiB log line


class PipelineError(Exception):
    """Base class of every error luigi_pipelines raises on purpose."""


class ConfigurationError(PipelineError):
    """A task or a configuration section is declared wrongly."""


class LoadError(PipelineError):
    """A partition could not be loaded; the transaction was rolled back and nothing changed."""


class BadInputError(LoadError):
    """A source object's content is invalid: the message names the key, the line and the reason (and PostgreSQL's
    detail of it, when it gave one)."""

    def __init__(self, message: str, line: int | None = None, column: str | None = None, reason: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.line = line
        self.column = column
        self.reason = reason
        self.detail = detail


class DataCheckError(LoadError):
    """A data check of severity ``error`` found violations in the partition's rows (``checks``): the load rolled
    back, and the partition's previous load, if any, is kept. ``results`` are the checks that failed."""

    def __init__(self, message: str, results: tuple = ()):
        super().__init__(message)
        self.results = results


class CopyAborted(LoadError):
    """COPY stopped because reading its input failed (the reader's own error says why)."""


class SourceError(LoadError):
    """A source object could not be read from S3 (missing, changed, unreachable)."""


@dataclass(frozen=True)
class CopyErrorPosition:
    """Where PostgreSQL says a COPY failed."""

    line: int | None
    column: str | None


def copy_error_position(context: str | None) -> CopyErrorPosition:
    """Extract the line and column from a COPY error's CONTEXT (``COPY t, line 3, column amount: ...``)."""
    match = _COPY_CONTEXT.search(context or "")
    if not match:
        return CopyErrorPosition(None, None)
    return CopyErrorPosition(int(match.group("line")), match.group("column"))


def describe_bad_input(source: str, position: CopyErrorPosition, reason: str) -> str:
    """One sentence naming the source, the line, the column and the reason."""
    where = source
    if position.line is not None:
        where += f" line {position.line}"
    if position.column:
        where += f" column {position.column}"
    if len(reason) > _MAX_REASON:
        reason = f"{reason[:_MAX_REASON]}... ({len(reason) - _MAX_REASON} more characters)"
    return f"{where}: {reason}"
