"""One claimed queue item (a run or a finetune job), from its claim to its final status.

Both task bodies go the same road:

1. claim the row (queued -> running); a row that is not queued was handled already: skip it
   (tasks are keyed by the row, so a re-delivered message never does the work twice)
2. do the work with a :class:`~workers.progress.Heartbeat`; the work raises :class:`Stopped`
   to end early (failed with a message, cancelled, back to the queue, or no longer ours)
3. store the outcome, if the row is still ours; any crash ends the item ``failed`` with a message
   a person can act on, and a worker shutdown puts it back in the queue without using a retry
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db import queue
from db.models import FinetuneJob, Run, Status
from settings import get_settings
from workers.progress import SHUTDOWN, Heartbeat

log = logging.getLogger(__name__)

#: The work of one item: ``(claim, heartbeat) -> (final status, columns to store)``.
Work = Callable[[queue.Claim, Heartbeat], "tuple[str, dict[str, Any]]"]


class Stopped(Exception):
    """The item ends with ``status`` and ``error``; or, for the pseudo statuses, goes back to the
    queue (``requeued``) or is no longer ours (``lost``)."""

    def __init__(self, status: str, error: str | None = None):
        super().__init__(error or status)
        self.status, self.error = status, error


@dataclass(frozen=True)
class ItemKind:
    """What differs between runs and finetune jobs on the shared road."""

    model: type[Run] | type[FinetuneJob]
    label: str  # in log lines: "run", "finetune job"
    enqueue: Callable[[list[int]], list[int]]  # sends the item's message again
    out_of_memory: str  # what to tell a person whose item ran out of memory
    crashed: str  # the subject of "<crashed> failed with an unexpected error"


def describe_crash(exc: BaseException, kind: ItemKind) -> str:
    """The error stored for an unexpected exception: out of memory gets advice of its own."""
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return f"{kind.out_of_memory} ({name}: {exc})"
    return f"{kind.crashed} failed with an unexpected error: {name}: {exc}. See the worker log."


def check_stop(beat: Heartbeat) -> None:
    """Raise :class:`Stopped` when the item must stop now: taken away, shutdown, or cancelled."""
    if beat.lost.is_set():  # reaped or deleted: write nothing
        raise Stopped("lost")
    if SHUTDOWN.is_set():
        raise Stopped("requeued")
    if beat.cancel_requested.is_set():
        raise Stopped(Status.CANCELLED.value)


def execute(kind: ItemKind, item_id: int, worker: str, work: Work) -> str:
    """Run item ``item_id`` once on ``worker``. Returns what happened: ``done``, ``failed``,
    ``cancelled``, ``requeued`` (worker shutting down), ``lost`` (taken away meanwhile), or
    ``skipped: <status>`` / ``missing`` when there was nothing to do (idempotent re-delivery),
    ``deferred`` (the message came while the worker shuts down: sent again, not started).
    """
    if SHUTDOWN.is_set():
        kind.enqueue([item_id])  # leave the item queued for the next worker
        return "deferred"
    claim, row = queue.claim(kind.model, item_id, worker)
    if row is None:
        log.info("%s %s no longer exists: nothing to do", kind.label, item_id)
        return "missing"
    if claim is None:
        log.info("%s %s is %s: not running it again", kind.label, item_id, row["status"])
        return f"skipped: {row['status']}"
    with Heartbeat(kind.model, item_id, claim.attempt, get_settings().heartbeat_seconds) as beat:
        try:
            outcome, fields = work(claim, beat)
        except Stopped as stop:
            outcome, fields = stop.status, {"error": stop.error}
        except Exception as exc:  # noqa: BLE001 - every failure must end the item, with a message
            log.error("%s %s crashed:\n%s", kind.label, item_id, traceback.format_exc())
            outcome, fields = Status.FAILED.value, {"error": describe_crash(exc, kind)}
        if outcome == "requeued":
            return _give_back(kind, item_id, claim.attempt)
        if outcome == "lost" or beat.lost.is_set():
            log.warning("%s %s was taken from this worker (reaped or deleted)", kind.label, item_id)
            return "lost"
        return _finish(kind, item_id, claim.attempt, outcome, fields)


def _finish(kind: ItemKind, item_id: int, attempt: int, outcome: str, fields: dict) -> str:
    """Store the outcome; a result that cannot be stored still ends the item ``failed``."""
    try:
        finished = queue.finish(kind.model, item_id, attempt, outcome, **fields)
    except Exception as exc:  # noqa: BLE001 - e.g. a report the database refuses
        log.error("%s %s: storing the result failed:\n%s", kind.label, item_id, traceback.format_exc())
        outcome = Status.FAILED.value
        finished = queue.finish(
            kind.model, item_id, attempt, outcome,
            error=f"The result could not be stored: {type(exc).__name__}: {exc}",
        )
    if not finished:
        log.warning("%s %s was taken from this worker before it finished", kind.label, item_id)
        return "lost"
    return outcome


def _give_back(kind: ItemKind, item_id: int, attempt: int) -> str:
    """The worker is stopping: put the item back in the queue without using up its retries."""
    if queue.give_back(kind.model, item_id, attempt):
        kind.enqueue([item_id])
        return "requeued"
    return "lost"
