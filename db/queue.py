"""The queue state machine shared by runs and finetune jobs.

Every change is one conditional ``UPDATE`` (``... WHERE id = ? AND status = ?``), so two
workers, a reaper and a person pressing Cancel can race without corrupting a row: whoever
matches the condition first wins and the others see ``rowcount == 0``.

``attempts`` is incremented when a worker claims an item and doubles as a fencing token: a
worker only writes progress or a result while the row is still ``running`` with *its* attempt
number, so a worker that was declared dead and comes back cannot overwrite the new attempt.

Works for any model with the queue columns (:class:`~db.models.Run`,
:class:`~db.models.FinetuneJob`).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update

from db.models import FINAL_STATUSES, FinetuneJob, Run, Status, to_dict, utcnow
from db.session import read_session, write_session

QueueModel = type[Run] | type[FinetuneJob]

QUEUED = Status.QUEUED.value
RUNNING = Status.RUNNING.value
DONE = Status.DONE.value
FAILED = Status.FAILED.value
CANCELLED = Status.CANCELLED.value

_PROGRESS_RESET = {"fraction": 0.0, "step": None, "steps": None}


def _progress_reset(model: QueueModel) -> dict[str, Any]:
    reset = dict(_PROGRESS_RESET)
    if model is Run:
        reset.update(stage=None, stages=None, phase=None)
    return reset


@dataclass(frozen=True)
class Claim:
    """What a worker gets when it wins an item: the row as it was claimed and its token."""

    id: int
    attempt: int
    row: dict[str, Any]


def claim(model: QueueModel, item_id: int, worker: str) -> tuple[Claim | None, dict[str, Any] | None]:
    """Move a ``queued`` item to ``running`` for ``worker``.

    Returns ``(claim, row)``: ``claim`` is None when the item was not queued (already running
    elsewhere, finished, cancelled); ``row`` is None when it does not exist.
    """
    now = utcnow()
    with write_session() as session:
        result = session.execute(
            update(model)
            .where(model.id == item_id, model.status == QUEUED)
            .values(
                status=RUNNING,
                attempts=model.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                worker=worker,
                error=None,
                updated_at=now,
                **_progress_reset(model),
            )
            .execution_options(synchronize_session=False)
        )
        row = session.get(model, item_id, populate_existing=True)
        if row is None:
            return None, None
        data = to_dict(row)
        if result.rowcount != 1:
            return None, data
        return Claim(id=item_id, attempt=row.attempts, row=data), data


def _owned(model: QueueModel, item_id: int, attempt: int):
    return (model.id == item_id, model.status == RUNNING, model.attempts == attempt)


def heartbeat(model: QueueModel, item_id: int, attempt: int, **progress: Any) -> tuple[bool, bool]:
    """Refresh the heartbeat (and optionally progress columns) of an owned item.

    Returns ``(owned, cancel_requested)``; ``owned`` is False when the item is no longer
    running under this attempt (reaped, deleted, or finished by someone else): stop working.
    """
    now = utcnow()
    with write_session() as session:
        result = session.execute(
            update(model)
            .where(*_owned(model, item_id, attempt))
            .values(heartbeat_at=now, updated_at=now, **progress)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False, False
        cancel = session.execute(
            select(model.cancel_requested).where(model.id == item_id)
        ).scalar_one()
        return True, bool(cancel)


def finish(model: QueueModel, item_id: int, attempt: int, status: str, **fields: Any) -> bool:
    """Record the final state of an owned item. Returns False when it was no longer ours."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"finish() needs a final status, not {status!r}")
    now = utcnow()
    with write_session() as session:
        result = session.execute(
            update(model)
            .where(*_owned(model, item_id, attempt))
            .values(status=status, finished_at=now, heartbeat_at=now, updated_at=now, **fields)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def give_back(model: QueueModel, item_id: int, attempt: int) -> bool:
    """An owned item goes back to ``queued`` (its worker is shutting down); this does not use up
    its re-queue allowance. The caller must send a new broker message."""
    now = utcnow()
    with write_session() as session:
        result = session.execute(
            update(model)
            .where(*_owned(model, item_id, attempt))
            .values(
                status=QUEUED,
                worker=None,
                heartbeat_at=None,
                started_at=None,
                updated_at=now,
                **_progress_reset(model),
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def request_cancel(model: QueueModel, item_id: int) -> dict[str, Any] | None:
    """Cancel a queued item at once; ask a running one to stop at its next step.

    Returns the row after the change (None if it does not exist). Finished items are left
    as they are.
    """
    now = utcnow()
    with write_session() as session:
        session.execute(
            update(model)
            .where(model.id == item_id, model.status == QUEUED)
            .values(
                status=CANCELLED,
                cancel_requested=True,
                finished_at=now,
                updated_at=now,
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(model)
            .where(model.id == item_id, model.status == RUNNING)
            .values(cancel_requested=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        row = session.get(model, item_id, populate_existing=True)
        return to_dict(row) if row is not None else None


def mark_enqueued(model: QueueModel, item_ids: Iterable[int]) -> None:
    """Note when a message for these items was last handed to the broker."""
    ids = list(item_ids)
    if not ids:
        return
    now = utcnow()
    with write_session() as session:
        session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(enqueued_at=now)
            .execution_options(synchronize_session=False)
        )


def queued_ids(model: QueueModel, enqueued_before: dt.datetime | None = None) -> list[int]:
    """Ids of queued items, oldest first; with ``enqueued_before``, only those whose last
    broker message is older than that (or that never had one)."""
    conditions = [model.status == QUEUED]
    if enqueued_before is not None:
        conditions.append(
            or_(model.enqueued_at < enqueued_before, model.enqueued_at.is_(None))
        )
    with read_session() as session:
        return list(
            session.execute(select(model.id).where(*conditions).order_by(model.id)).scalars().all()
        )


@dataclass
class Released:
    """What :func:`release_stale` / :func:`release_worker` did, by item id."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled)


def _lost_message(kind: str, worker: str | None, why: str, requeues: int) -> str:
    who = f"the worker ({worker})" if worker else "the worker"
    return (
        f"This {kind} was stopped because {who} running it {why}. "
        f"It had already been re-queued {requeues} time(s) after losing a worker, so it was not "
        f"tried again. This usually means the worker ran out of memory or was killed: check the "
        f"worker log, then use Re-run."
    )


def _release(
    model: QueueModel,
    conditions: tuple,
    why: str,
    max_requeues: int,
    count_requeue: bool,
) -> Released:
    kind = "run" if model is Run else "finetune job"
    released = Released()
    with read_session() as session:
        candidates = session.execute(
            select(model.id, model.attempts, model.requeues, model.cancel_requested, model.worker)
            .where(model.status == RUNNING, *conditions)
            .order_by(model.id)
        ).all()
    for item_id, attempt, requeues, cancel_requested, worker in candidates:
        now = utcnow()
        if cancel_requested:
            status, values = CANCELLED, {"finished_at": now}
        elif requeues < max_requeues or not count_requeue:
            status = QUEUED
            values = {
                "requeues": requeues + (1 if count_requeue else 0),
                "worker": None,
                "heartbeat_at": None,
                "started_at": None,
                **_progress_reset(model),
            }
        else:
            status = FAILED
            values = {"finished_at": now, "error": _lost_message(kind, worker, why, requeues)}
        with write_session() as session:
            result = session.execute(
                update(model)
                # Same attempt and still running: nobody finished or reclaimed it meanwhile.
                .where(*_owned(model, item_id, attempt), *conditions)
                .values(status=status, updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount == 1:
            {QUEUED: released.requeued, FAILED: released.failed, CANCELLED: released.cancelled}[
                status
            ].append(item_id)
    return released


def release_stale(model: QueueModel, stale_after_s: float, max_requeues: int = 1) -> Released:
    """The reaper: running items whose heartbeat is older than ``stale_after_s`` lost their
    worker. Each is re-queued (at most ``max_requeues`` times in its life), then failed with a
    clear error; one whose cancel was requested ends ``cancelled``.

    Re-queued items still need a broker message: send one for every id in ``requeued``.
    """
    cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
    stale = (or_(model.heartbeat_at < cutoff, model.heartbeat_at.is_(None)),)
    why = f"stopped responding (no heartbeat for more than {stale_after_s:g} s)"
    return _release(model, stale, why, max_requeues, count_requeue=True)


def release_worker(
    model: QueueModel, worker: str, max_requeues: int = 1, count_requeue: bool = True
) -> Released:
    """Release the running items of a worker known to be gone (its supervisor saw it exit).

    With ``count_requeue=False`` (a deliberate stop, not a crash) items go back to the queue
    without using up their re-queue allowance.
    """
    return _release(
        model, (model.worker == worker,), "exited unexpectedly", max_requeues, count_requeue
    )


def counts_by_status(model: QueueModel) -> dict[str, int]:
    """How many items are in each status (all statuses present, zero when none)."""
    from sqlalchemy import func

    counts = {s.value: 0 for s in Status}
    with read_session() as session:
        for status, n in session.execute(
            select(model.status, func.count()).group_by(model.status)
        ).all():
            counts[status] = n
    return counts
