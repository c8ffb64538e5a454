"""Registered checkpoints (trained transformers over a base preset)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.models import Checkpoint, to_dict
from db.session import read_session, write_session


class NameTaken(Exception):
    """Another checkpoint already has this name."""


def add_checkpoint(
    *, name: str, path: str, base: str, kind: str = "full", card: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Insert a checkpoint row; raises :class:`NameTaken` if the name is in use."""
    try:
        with write_session() as session:
            row = Checkpoint(name=name, path=path, base=base, kind=kind, card=card or {})
            session.add(row)
            session.flush()
            return to_dict(row)
    except IntegrityError:
        raise NameTaken(f"A checkpoint named {name!r} already exists; choose another name.") from None


def get_checkpoint(checkpoint_id: int) -> dict[str, Any] | None:
    with read_session() as session:
        row = session.get(Checkpoint, checkpoint_id)
        return to_dict(row) if row is not None else None


def find_checkpoint(name: str) -> dict[str, Any] | None:
    """The checkpoint with this exact name, or None."""
    with read_session() as session:
        row = session.execute(select(Checkpoint).where(Checkpoint.name == name)).scalar_one_or_none()
        return to_dict(row) if row is not None else None


def list_checkpoints(base: str | None = None) -> list[dict[str, Any]]:
    """Registered checkpoints, newest first (optionally only those over ``base``)."""
    query = select(Checkpoint).order_by(Checkpoint.id.desc())
    if base:
        query = query.where(Checkpoint.base == base)
    with read_session() as session:
        return [to_dict(row) for row in session.execute(query).scalars()]


def rename_checkpoint(checkpoint_id: int, name: str) -> dict[str, Any] | None:
    """Rename; returns the row (None if missing), raises :class:`NameTaken` on a clash."""
    try:
        with write_session() as session:
            row = session.get(Checkpoint, checkpoint_id)
            if row is None:
                return None
            row.name = name
            session.flush()
            return to_dict(row)
    except IntegrityError:
        raise NameTaken(f"A checkpoint named {name!r} already exists; choose another name.") from None


def delete_checkpoint(checkpoint_id: int) -> dict[str, Any] | None:
    """Delete the row (runs keep ``checkpoint_name``); returns the deleted row or None."""
    with write_session() as session:
        row = session.get(Checkpoint, checkpoint_id)
        if row is None:
            return None
        data = to_dict(row)
        session.delete(row)
        return data
