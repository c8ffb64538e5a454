"""The admin lockout's memory: recent wrong passwords per client, one row each.

Kept in the database (not in a process) so that every page process behind a proxy counts the
same failures. Times are unix seconds (``time.time()``: the same clock on every machine).
Each attempt is decided and recorded in one write transaction that holds the client's row
(SQLite: the database write lock of ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``
after an insert that makes sure the row exists), so concurrent guesses cannot slip past the limit.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from db.models import AdminFailure, utcnow
from db.session import read_session, write_session

MAX_CLIENT_CHARS = 200


@dataclass(frozen=True)
class Attempt:
    """What the lockout says about one attempt."""

    outcome: str  # "ok" | "missing" | "wrong" | "locked"
    failures: int  # wrong passwords of the client within the window (this one included)
    retry_after: float = 0.0  # seconds until a locked client may try again


def _key(client: str) -> str:
    return (client or "?")[:MAX_CLIENT_CHARS]


def _recent(times, now: float, window: float) -> list[float]:
    return sorted(float(t) for t in (times or []) if now - float(t) < window)


def recent_failures(client: str, *, now: float, window: float) -> list[float]:
    """Times of the client's wrong passwords within the last ``window`` seconds, oldest first."""
    with read_session() as session:
        row = session.get(AdminFailure, _key(client))
        return _recent(row.failures if row is not None else [], now, window)


def attempt(client: str, outcome: str, *, now: float, window: float, max_failures: int) -> Attempt:
    """Decide and record one password attempt of ``client``.

    ``outcome`` is what the password was: "ok" (right), "missing" or "wrong". A client with
    ``max_failures`` wrong passwords in the last ``window`` seconds is "locked" whatever it
    sends, until the oldest of them is ``window`` seconds old. Only a wrong password (of a
    client not locked) is written; rows untouched for a window are removed on the way.
    """
    if outcome not in ("ok", "missing", "wrong"):
        raise ValueError(f"outcome must be 'ok', 'missing' or 'wrong'; got {outcome!r}")
    key = _key(client)
    if outcome != "wrong":  # nothing to write: a read decides
        recent = recent_failures(key, now=now, window=window)
        if len(recent) >= max_failures:
            return Attempt("locked", len(recent), recent[-max_failures] + window - now)
        return Attempt(outcome, len(recent))
    with write_session() as session:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(insert(AdminFailure).values(client=key, failures=[], updated_at=utcnow())
                        .on_conflict_do_nothing(index_elements=["client"]))
        row = session.execute(
            select(AdminFailure).where(AdminFailure.client == key).with_for_update()
        ).scalar_one()
        recent = _recent(row.failures, now, window)
        if len(recent) >= max_failures:
            return Attempt("locked", len(recent), recent[-max_failures] + window - now)
        row.failures = recent + [now]
        row.updated_at = utcnow()
        session.execute(delete(AdminFailure).where(
            AdminFailure.updated_at < utcnow() - dt.timedelta(seconds=window), AdminFailure.client != key))
        return Attempt("wrong", len(row.failures))
