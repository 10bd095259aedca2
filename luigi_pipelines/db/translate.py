"""What a database error means to the project: the one place that turns psycopg2's errors into luigi_pipelines's."""
from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors

from ..errors import ConfigurationError, LoadError
from ..partitions import ScopedTable


@contextmanager
def describe_errors(key: ScopedTable, date: datetime.date, lock_timeout_s: int) -> Iterator[None]:
    """Database errors that are not about the data become one line naming the partition and what to do."""
    try:
        yield
    except psycopg2.errors.LockNotAvailable as exc:
        raise LoadError(f"{key} {date}: another load of this partition holds its lock, and [load] lock_timeout_s "
                        f"= {lock_timeout_s} ran out: it is being loaded now; rerun later") from exc
    except (psycopg2.errors.UndefinedColumn, psycopg2.errors.InvalidColumnReference,
            psycopg2.errors.GeneratedAlways) as exc:
        raise ConfigurationError(f"{key} {date}: {_primary(exc)}: the table does not match the declared columns "
                                 f"(generated columns cannot be loaded; every declared column must exist): fix "
                                 f"`columns` or the table") from exc
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(f"{key} {date}: {_primary(exc)}: grant the loading user the right") from exc
    except (psycopg2.DatabaseError, psycopg2.InterfaceError) as exc:
        if isinstance(exc, psycopg2.OperationalError):
            raise LoadError(f"{key} {date}: database error: {_primary(exc)}; nothing was written: rerun") from exc
        raise


def _primary(exc: psycopg2.Error) -> str:
    return (exc.diag.message_primary if exc.diag else None) or str(exc).strip().splitlines()[0]
