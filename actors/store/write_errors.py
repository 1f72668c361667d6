"""Is a failed write the record's fault or the database's? Decided by SQLSTATE. Pure.

A record PostgreSQL refuses for what it *is* will be refused again however often it is
retried: it is set aside (the spool's ``rejected.jsonl``, with the error) and alerted, and
never blocks the records behind it. Anything else is the database's condition
(unreachable, read-only in a failover, out of disk or connections, a deadlock, a
statement timeout, an administrator's shutdown): the records wait in the spool for it to
recover. An error neither list knows (a bug in the writer) is not guessed at: it is
raised, and the supervisor sees it.
"""

from __future__ import annotations

from typing import Final

import asyncpg
import asyncpg.exceptions._base as asyncpg_base
import msgspec

from actors.store.db import TRANSIENT_ERRORS

# SQLSTATE classes that depend on the record's content (PostgreSQL Appendix A).
POISON_CLASSES: Final = {
    # "ON CONFLICT DO UPDATE command cannot affect row a second time": two rows with one
    # key in a statement; depends on the batch, and writing one by one settles it.
    "21": "cardinality violation",
    # A value the column cannot hold: too long, out of range, invalid text or JSON, a NUL.
    "22": "data exception",
    # The record breaks a constraint (a status the CHECK does not know, say).
    "23": "integrity constraint violation",
    # Program limits: an index row over ~2.7 kB (a huge key), a statement too complex.
    "54": "program limit exceeded",
}


class RecordRefused(ValueError):
    """A record the writer refuses before PostgreSQL sees it (a key too long to be one)."""


# Raised while encoding a record's values, before any byte reaches the server: asyncpg's
# client-side DataError (an InterfaceError: it must be tested before the outage list),
# and Python's own conversions.
_CLIENT_SIDE: Final = (
    RecordRefused,
    asyncpg_base.DataError,
    msgspec.EncodeError,
    OverflowError,
    TypeError,
    ValueError,
)


def sqlstate_class(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state[:2] if isinstance(state, str) and len(state) == 5 else None


def is_poison(exc: BaseException) -> bool:
    """The record's fault: retrying it can never succeed."""
    if isinstance(exc, asyncpg.PostgresError):
        return sqlstate_class(exc) in POISON_CLASSES
    return isinstance(exc, _CLIENT_SIDE) and not isinstance(exc, TimeoutError)


def is_outage(exc: BaseException) -> bool:
    """The database's condition: the record waits in the spool."""
    if is_poison(exc):
        return False
    return isinstance(exc, (*TRANSIENT_ERRORS, asyncpg.PostgresError))


def describe_refusal(exc: BaseException) -> str:
    kind = POISON_CLASSES.get(sqlstate_class(exc) or "", "refused before writing")
    state = getattr(exc, "sqlstate", None)
    prefix = f"SQLSTATE {state} ({kind})" if state else kind
    return f"{prefix}: {type(exc).__name__}: {exc}"[:2000]
