"""What a database error means to the project: the one place that reads psycopg2's error classes and diagnostics
and turns them into luigi_pipelines's errors (``translate``; ``translating`` around a block)."""
from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors

from .. import sql as q
from ..errors import BadInputError, ConfigurationError, CopyAborted, LoadError, copy_error_position, describe_bad_input
from ..partitions import ScopedTable

# The kinds of database errors the project has words for (``translate``), for callers that translate some of them.
BAD_DATA: tuple[type[psycopg2.Error], ...] = (
    psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.StatementTooComplex)  # also: a value nested too deep
LOCK_TIMEOUT: tuple[type[psycopg2.Error], ...] = (psycopg2.errors.LockNotAvailable,)
CHECK_VIOLATION: tuple[type[psycopg2.Error], ...] = (psycopg2.errors.CheckViolation,)  # e.g. a partition's bound
MISSING_OPERATOR: tuple[type[psycopg2.Error], ...] = (psycopg2.errors.UndefinedFunction,)  # json = json, xml, point...
NO_PRIVILEGE: tuple[type[psycopg2.Error], ...] = (psycopg2.errors.InsufficientPrivilege,)
_COLUMNS = (psycopg2.errors.UndefinedColumn, psycopg2.errors.InvalidColumnReference, psycopg2.errors.GeneratedAlways)
# What a partition's transaction translates (``describe_errors``): a data error is named where the data is read
# (``copy_stream``, an object's INSERT), a transform's own SQL errors reach the task as PostgreSQL gave them.
_PARTITION = (*LOCK_TIMEOUT, *_COLUMNS, *NO_PRIVILEGE, psycopg2.OperationalError)
_OUTSIDE = re.compile(re.escape(q.GUARD_MARKER) + r'(?P<why>.*?)"?\s*$', re.DOTALL)  # a partition guard's refusal
_GRANT = "grant the loading user the right"
_LOCK = "a lock it waits for is held by another transaction, and [load] lock_timeout_s ran out"


def primary_message(exc: psycopg2.Error) -> str:
    """PostgreSQL's one-line message of ``exc`` (the driver's first line when the server sent none)."""
    return (exc.diag.message_primary if exc.diag else None) or str(exc).strip().splitlines()[0]


def translate(exc: psycopg2.Error, subject: str, *, statement: str = "", closed: bool = False, note: str = "",
              lock: str = "", fix: str = "") -> Exception:
    """The project's error for the database error ``exc`` met about ``subject`` (a partition, an object, a task);
    ``exc`` itself for one the project has no words for (its caller re-raises it).

    - bad data (a value its column's type refuses, a constraint, a value nested too deep): ``BadInputError`` with
      the line and column a COPY names (``note`` says where, when no line can be named), PostgreSQL's reason and
      its detail; a row that a COPY's partition guard (``sql.partition_guard``) refused: the line, its value and
      the partition's;
    - a lock wait that ran out: ``LoadError``; ``lock`` says whose lock it is and what that means;
    - ``statement`` (a COPY) cancelled, which is how its reader's own exception reaches psycopg2: ``CopyAborted``;
    - a column the table lacks or cannot take, a missing right, a missing operator (``subject`` then says what
      compares the values): ``ConfigurationError``, with ``fix``, what to do;
    - a lost connection (``closed``) or another operational error: ``LoadError``, with ``statement`` if one ran.
    """
    if isinstance(exc, BAD_DATA):
        position = copy_error_position(exc.diag.context)
        reason = exc.diag.message_primary or str(exc).strip()
        outside = _OUTSIDE.search(reason) if isinstance(exc, psycopg2.errors.InvalidTextRepresentation) else None
        if outside:  # "day 2019-02-03 is not the partition's date 2019-02-01", the line its CONTEXT's
            return BadInputError(describe_bad_input(subject, position, outside["why"]), position.line, None,
                                 outside["why"])
        return BadInputError(describe_bad_input(subject, position, reason) + (f" ({note})" if note else ""),
                             position.line, position.column, reason, exc.diag.message_detail)
    if isinstance(exc, LOCK_TIMEOUT):
        return LoadError(f"{subject}: {lock or _LOCK}; rerun later")
    if isinstance(exc, psycopg2.errors.QueryCanceled) and statement:
        return CopyAborted(f"{subject}: {statement} cancelled: {exc.diag.message_primary or exc}")
    if isinstance(exc, _COLUMNS):
        return ConfigurationError(f"{subject}: {primary_message(exc)}: the table does not match the declared columns "
                                  f"(generated columns cannot be loaded; every declared column must exist): fix "
                                  f"`columns` or the table")
    if isinstance(exc, MISSING_OPERATOR):  # ``subject`` says what compares the values
        return ConfigurationError(f"{subject}, and {primary_message(exc)}: {fix}")
    if isinstance(exc, NO_PRIVILEGE):
        return ConfigurationError(f"{subject}: {primary_message(exc)}: {fix or _GRANT}")
    if isinstance(exc, psycopg2.OperationalError):
        if statement and closed:
            return LoadError(f"{subject}: the database connection failed during {statement}: {str(exc).strip()}")
        if statement:
            return LoadError(f"{subject}: {statement} failed: {exc.diag.message_primary or str(exc).strip()}")
        return LoadError(f"{subject}: database error: {primary_message(exc)}; nothing was written: rerun")
    return exc


@contextmanager
def translating(subject: str, kinds: tuple[type[psycopg2.Error], ...], note: str = "", lock: str = "", fix: str = ""
                ) -> Iterator[None]:
    """``translate`` the database errors of ``kinds`` that the block raises."""
    try:
        yield
    except kinds as exc:
        error = translate(exc, subject, note=note, lock=lock, fix=fix)
        if error is exc:
            raise
        raise error from exc


@contextmanager
def describe_errors(key: ScopedTable, date: datetime.date, lock_timeout_s: int) -> Iterator[None]:
    """Database errors of a partition's transaction that are not about the data become one line naming the
    partition and what to do."""
    with translating(f"{key} {date}", _PARTITION, lock=f"another load of this partition holds its lock, and [load] "
                     f"lock_timeout_s = {lock_timeout_s} ran out: it is being loaded now"):
        yield
