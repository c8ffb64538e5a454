"""Housekeeping for the SQL (kombu ``sqla+``) broker file.

kombu's SQL transport marks a delivered message ``visible = false`` and never deletes it (it is
never re-delivered either), so its table only grows and every poll scans more rows. Deleting
delivered messages after a while keeps the broker file small.
"""
from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import Boolean, Column, DateTime, Engine, Integer, MetaData, Table, create_engine
from sqlalchemy import delete, inspect

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def _message_table(name: str) -> Table:
    # Only the columns we need from kombu.transport.sqlalchemy.models.Message.
    return Table(
        name, MetaData(),
        Column("id", Integer, primary_key=True),
        Column("visible", Boolean),
        Column("timestamp", DateTime),
    )  # fmt: skip


def _engine(url: str) -> Engine:
    with _lock:
        if url not in _engines:
            args = {"timeout": 30} if url.startswith("sqlite") else {}
            _engines[url] = create_engine(url, connect_args=args)
        return _engines[url]


def prune_delivered_messages(
    broker_url: str, older_than_s: float = 3600.0, table: str = "kombu_message"
) -> int:
    """Delete messages delivered more than ``older_than_s`` ago; returns how many.

    Does nothing (0) for brokers that are not ``sqla+``/``sqlalchemy+`` URLs or when the table
    does not exist yet.
    """
    if not broker_url.startswith(("sqla+", "sqlalchemy+")):
        return 0
    engine = _engine(broker_url.split("+", 1)[1])
    # kombu stamps messages with local naive time (datetime.now).
    cutoff = dt.datetime.now() - dt.timedelta(seconds=older_than_s)
    messages = _message_table(table)
    with engine.begin() as conn:
        if not inspect(conn).has_table(table):
            return 0
        result = conn.execute(
            delete(messages).where(messages.c.visible.is_(False), messages.c.timestamp < cutoff)
        )
        return result.rowcount or 0
