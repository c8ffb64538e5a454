"""Finetune jobs: create, read, list. State changes live in :mod:`db.queue`.

The training task itself is written in ``finetune/`` + ``workers/tasks.py`` (``train`` queue).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from db.models import FinetuneJob, Status, to_dict
from db.runs import Page
from db.session import read_session, write_session

#: What a finetune job trains, stored as its config's ``kind``: a pyramidal finetune (the default,
#: also for rows from before kinds existed) or a step distillation into a few-step student.
JOB_KINDS = ("pyramidal", "distill")


def job_kind(config: dict[str, Any] | None) -> str:
    """The kind of a job with this stored ``config`` (``"pyramidal"`` when it names none)."""
    return (config or {}).get("kind") or JOB_KINDS[0]


def add_job(*, name: str, base: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Insert a queued finetune job."""
    with write_session() as session:
        row = FinetuneJob(name=name, base=base, config=config or {}, status=Status.QUEUED.value)
        session.add(row)
        session.flush()
        return to_dict(row)


def get_job(job_id: int) -> dict[str, Any] | None:
    with read_session() as session:
        row = session.get(FinetuneJob, job_id)
        return to_dict(row) if row is not None else None


def list_jobs(*, status: str | None = None, limit: int = 50, offset: int = 0) -> Page:
    """Finetune jobs, newest first."""
    conditions = [FinetuneJob.status == status] if status else []
    with read_session() as session:
        total = session.execute(
            select(func.count()).select_from(FinetuneJob).where(*conditions)
        ).scalar_one()
        rows = session.execute(
            select(FinetuneJob)
            .where(*conditions)
            .order_by(FinetuneJob.id.desc())
            .limit(limit)
            .offset(offset)
        ).scalars()
        return Page(items=[to_dict(r) for r in rows], total=total, limit=limit, offset=offset)


def append_losses(job_id: int, attempt: int, points: list[dict[str, Any]]) -> bool:
    """Append loss points to an owned running job (read-modify-write in one write transaction)."""
    with write_session() as session:
        row = session.get(FinetuneJob, job_id, with_for_update=True)
        if row is None or row.status != Status.RUNNING.value or row.attempts != attempt:
            return False
        row.losses = [*row.losses, *points]
        return True
