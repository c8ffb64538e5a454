"""Runs and comparisons: create, read, list, delete. State changes live in :mod:`db.queue`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from db.models import Comparison, Run, Status, to_dict
from db.session import read_session, write_session

#: Columns a caller may set when creating a run (everything else belongs to the queue).
RUN_INPUT_FIELDS = (
    "prompt",
    "negative_prompt",
    "model",
    "checkpoint_id",
    "checkpoint_name",
    "mode",
    "schedule",
    "guidance",
    "guidance_source",
    "seed",
    "frames",
    "height",
    "width",
    "decoder",
)


class RunIsRunning(Exception):
    """A running run cannot be deleted; cancel it first."""


@dataclass(frozen=True)
class Page:
    """One page of a listing: ``items`` plus the ``total`` that match the filters."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


def add_runs(
    specs: Sequence[Mapping[str, Any]], comparison: Mapping[str, Any] | None = None,
    *, cancel_token_hashes: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """Insert queued runs in one transaction (optionally grouped into a new comparison).

    ``cancel_token_hashes``: one per spec, the SHA-256 hex of the secret that lets the
    submitter cancel that run (stored only as the hash, never returned by :func:`to_dict`).
    """
    for spec in specs:
        unknown = set(spec) - set(RUN_INPUT_FIELDS)
        if unknown:
            raise TypeError(f"not run input fields: {sorted(unknown)}")
    hashes = list(cancel_token_hashes) if cancel_token_hashes is not None else [None] * len(specs)
    if len(hashes) != len(specs):
        raise ValueError(f"{len(specs)} runs but {len(hashes)} cancel token hashes")
    with write_session() as session:
        group = Comparison(**comparison) if comparison is not None else None
        if group is not None:
            session.add(group)
        rows = [Run(**spec, comparison=group, status=Status.QUEUED.value, cancel_token_hash=h)
                for spec, h in zip(specs, hashes)]
        session.add_all(rows)
        session.flush()
        return [to_dict(row) for row in rows]


def get_run(run_id: int) -> dict[str, Any] | None:
    with read_session() as session:
        row = session.get(Run, run_id)
        return to_dict(row) if row is not None else None


def get_cancel_token_hash(run_id: int) -> tuple[bool, str | None]:
    """``(exists, hash)``: whether the run exists, and the hash of its cancel token (None for a
    run made before tokens existed: only the admin may cancel it)."""
    with read_session() as session:
        found = session.execute(select(Run.cancel_token_hash).where(Run.id == run_id)).one_or_none()
        return (False, None) if found is None else (True, found[0])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_runs(
    *,
    status: str | Sequence[str] | None = None,
    model: str | None = None,
    search: str | None = None,
    comparison_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Runs, newest first, filtered by status(es), model preset, prompt text, comparison."""
    conditions = []
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        conditions.append(Run.status.in_(statuses))
    if model:
        conditions.append(Run.model == model)
    if search and search.strip():
        pattern = f"%{_escape_like(search.strip())}%"
        conditions.append(Run.prompt.ilike(pattern, escape="\\"))
    if comparison_id is not None:
        conditions.append(Run.comparison_id == comparison_id)
    with read_session() as session:
        total = session.execute(select(func.count()).select_from(Run).where(*conditions)).scalar_one()
        rows = session.execute(
            select(Run).where(*conditions).order_by(Run.id.desc()).limit(limit).offset(offset)
        ).scalars()
        return Page(items=[to_dict(r) for r in rows], total=total, limit=limit, offset=offset)


def last_done_run(model: str, frames: int, height: int, width: int,
                  decoder: str | None = None) -> dict[str, Any] | None:
    """The latest finished (``done``) run of preset ``model`` (and ``decoder``, when given: the
    tiny decoder's decode takes a fraction of the VAE's), of the same shape if there is one, else
    of any shape; None if the model has none. Its measured seconds predict a new run's phases
    (:mod:`workers.progress`)."""
    base = [Run.model == model, Run.status == Status.DONE.value]
    if decoder is not None:
        base.append(Run.decoder == decoder)
    same = [Run.frames == frames, Run.height == height, Run.width == width]
    with read_session() as session:
        for conditions in (base + same, base):
            row = session.execute(
                select(Run).where(*conditions).order_by(Run.finished_at.desc(), Run.id.desc()).limit(1)
            ).scalar_one_or_none()
            if row is not None:
                return to_dict(row)
    return None


def active_run_ids(*, checkpoint_id: int | None = None) -> list[int]:
    """Ids of queued or running runs (optionally only those using a checkpoint)."""
    conditions = [Run.status.in_([Status.QUEUED.value, Status.RUNNING.value])]
    if checkpoint_id is not None:
        conditions.append(Run.checkpoint_id == checkpoint_id)
    with read_session() as session:
        return list(session.execute(select(Run.id).where(*conditions).order_by(Run.id)).scalars())


def count_runs() -> int:
    with read_session() as session:
        return session.execute(select(func.count()).select_from(Run)).scalar_one()


def delete_run(run_id: int) -> dict[str, Any] | None:
    """Delete a run that is not running; returns the deleted row (None if it did not exist).

    Raises :class:`RunIsRunning` for a running run. A comparison left with no runs goes too.
    """
    with write_session() as session:
        row = session.get(Run, run_id)
        if row is None:
            return None
        if row.status == Status.RUNNING.value:
            raise RunIsRunning(f"Run {run_id} is running; cancel it and delete it once it stopped.")
        data = to_dict(row)
        result = session.execute(
            delete(Run).where(Run.id == run_id, Run.status != Status.RUNNING.value)
        )
        if result.rowcount != 1:  # it started meanwhile (PostgreSQL; SQLite holds the lock)
            raise RunIsRunning(f"Run {run_id} is running; cancel it and delete it once it stopped.")
        if row.comparison_id is not None:
            left = session.execute(
                select(func.count()).select_from(Run).where(Run.comparison_id == row.comparison_id)
            ).scalar_one()
            if left == 0:
                session.execute(delete(Comparison).where(Comparison.id == row.comparison_id))
        return data


def get_comparison(comparison_id: int) -> dict[str, Any] | None:
    """A comparison with its runs (``runs``: list of run dicts, oldest first)."""
    with read_session() as session:
        group = session.get(Comparison, comparison_id)
        if group is None:
            return None
        data = to_dict(group)
        data["runs"] = [to_dict(r) for r in group.runs]
        return data
