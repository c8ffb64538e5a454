"""The finetune task on the ``train`` queue: one admin finetune job, keyed by its row.

Same road as ``generate`` (:mod:`workers.runner`):

1. claim the job row (queued -> running); anything else means "already handled": skip
2. check its config (a bad config fails the job with the message, before any work)
3. train (:func:`finetune.pyramidal.train`) with a heartbeat; every step writes progress
   (throttled) and appends the loss (total and per stage) to the row; a cancel stops the loop
   after a checkpoint, so the folder stays usable; a worker shutdown puts the job back in the
   queue and the next attempt resumes from the last checkpoint
4. register the checkpoint (so the studio lists it) and finish the row with a report
"""
from __future__ import annotations

import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

from db import checkpoints as db_checkpoints
from db import jobs as db_jobs
from db import queue
from db.models import FinetuneJob, Status
from settings import get_settings
from workers import config
from workers.celery_app import app
from workers.progress import SHUTDOWN, Heartbeat
from workers.tasks import FINETUNE_TASK, enqueue_jobs, worker_id

log = logging.getLogger(__name__)


def default_out_dir(name: str) -> str:
    """``<PWAN_DATA_DIR>/checkpoints/<name as a file name>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "checkpoint"
    return str(config.checkpoints_dir() / slug)


def job_config(row: dict[str, Any]):
    """The job's :class:`~finetune.pyramidal.TrainConfig` (checked); raises ConfigError."""
    from finetune.pyramidal import validate_config

    data = dict(row.get("config") or {})
    data["base"] = row["base"]
    data.setdefault("name", row["name"])
    if not data.get("out"):
        data["out"] = default_out_dir(row["name"])
    return validate_config(data)


@app.task(name=FINETUNE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def finetune(self, job_id: int) -> str:
    outcome = execute_job(int(job_id), worker=worker_id(self.request.hostname))
    log.info("finetune job %s: %s", job_id, outcome)
    return outcome


class _Stopped(Exception):
    def __init__(self, status: str, error: str | None = None):
        super().__init__(error or status)
        self.status, self.error = status, error


def execute_job(job_id: int, worker: str) -> str:
    """Run job ``job_id`` once on this worker; returns ``done``, ``failed``, ``cancelled``,
    ``requeued``, ``lost``, ``missing`` or ``skipped: <status>``."""
    claim, row = queue.claim(FinetuneJob, job_id, worker)
    if row is None:
        return "missing"
    if claim is None:
        return f"skipped: {row['status']}"
    with Heartbeat(FinetuneJob, job_id, claim.attempt, get_settings().heartbeat_seconds) as beat:
        try:
            outcome, fields = _train(job_id, claim, beat)
        except _Stopped as stop:
            outcome, fields = stop.status, {"error": stop.error}
        except Exception as exc:  # noqa: BLE001 - every failure ends the job with a message
            log.error("finetune job %s crashed:\n%s", job_id, traceback.format_exc())
            outcome, fields = Status.FAILED.value, {"error": _describe_crash(exc)}
        if outcome == "requeued":
            if queue.give_back(FinetuneJob, job_id, claim.attempt):
                enqueue_jobs([job_id])
                return "requeued"
            return "lost"
        if beat.lost.is_set():
            return "lost"
        if not queue.finish(FinetuneJob, job_id, claim.attempt, outcome, **fields):
            return "lost"
        return outcome


def _describe_crash(exc: BaseException) -> str:
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return (f"The finetune ran out of memory. Lower per_stage, the clip size, use LoRA, bf16 or "
                f"gradient checkpointing. ({name}: {exc})")
    return f"The finetune failed with an unexpected error: {name}: {exc}. See the worker log."


def _train(job_id: int, claim, beat: Heartbeat):
    from finetune.pyramidal import ConfigError, train

    row = claim.row
    try:
        cfg = job_config(row)
    except ConfigError as exc:
        raise _Stopped(Status.FAILED.value, f"The job's settings are not valid: {exc}") from None
    existing = db_checkpoints.find_checkpoint(row["name"])
    if existing is not None and Path(existing["path"]) != Path(cfg.out).resolve():
        raise _Stopped(Status.FAILED.value,
                       f"A checkpoint named {row['name']!r} already exists; submit the job under another name.")
    beat.beat(output_dir=str(Path(cfg.out).resolve()), steps=cfg.steps)

    interval = get_settings().progress_seconds
    pending: list[dict] = []
    last = {"t": float("-inf")}

    def flush(force: bool = False, **progress) -> None:
        now = time.monotonic()
        if not force and now - last["t"] < interval:
            return
        last["t"] = now
        if pending:
            db_jobs.append_losses(job_id, claim.attempt, list(pending))
            pending.clear()
        beat.beat(**progress)

    def on_step(info: dict) -> bool:
        if info.get("phase") == "train":
            pending.append({"step": info["step"], "loss": round(info["loss"], 6),
                            "stages": [round(x, 6) for x in info["stages"]]})
            flush(force=info["step"] == info["steps"], step=info["step"], steps=info["steps"],
                  fraction=info["step"] / info["steps"])
        return beat.should_stop

    try:
        result = train(cfg, on_step=on_step, log=lambda msg: log.info("job %s: %s", job_id, msg))
    except ConfigError as exc:
        raise _Stopped(Status.FAILED.value, f"The job's settings are not valid: {exc}") from None
    if pending:
        db_jobs.append_losses(job_id, claim.attempt, list(pending))
        pending.clear()
    if beat.lost.is_set():
        raise _Stopped(Status.FAILED.value, "taken away")
    if SHUTDOWN.is_set() and result.status != "done":
        raise _Stopped("requeued")

    checkpoint = _register(row["name"], cfg, result) if result.step > 0 else None
    report = {"steps": result.step, "seconds": result.seconds, "status": result.status,
              "losses": result.card.get("losses"), "data": result.card.get("data"),
              "windows": result.card.get("windows"), "worker": row.get("worker")}
    fields = {"report": report, "output_dir": str(result.out.resolve()),
              "checkpoint_id": checkpoint["id"] if checkpoint else None, "step": result.step}
    if result.status == "done":
        return Status.DONE.value, {**fields, "fraction": 1.0}
    return Status.CANCELLED.value, fields


def _register(name: str, cfg, result) -> dict | None:
    """Register the checkpoint folder (idempotent for the same folder)."""
    from core.checkpoints import read_card

    path = str(result.out.resolve())
    existing = db_checkpoints.find_checkpoint(name)
    card = read_card(path)
    if existing is not None:
        if existing["path"] == path:
            return existing
        raise _Stopped(Status.FAILED.value, f"A checkpoint named {name!r} already exists.")
    try:
        return db_checkpoints.add_checkpoint(name=name, path=path, base=cfg.base, kind=card["kind"], card=card)
    except db_checkpoints.NameTaken as exc:
        raise _Stopped(Status.FAILED.value, str(exc)) from None
