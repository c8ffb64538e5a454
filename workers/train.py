"""Running one admin finetune job: the body of the ``finetune`` task, free of Celery.

Claim, heartbeat, stop and finish are the road every queue item takes
(:mod:`workers.execution`); a job's own steps are:

1. check its config (a bad config fails the job with the message, before any work)
2. train (:func:`finetune.pyramidal.train`) with a heartbeat; every step writes progress
   (throttled) and appends the loss (total and per stage) to the row; a cancel stops the loop
   after a checkpoint, so the folder stays usable; a worker shutdown puts the job back in the
   queue and the next attempt resumes from the last checkpoint
3. register the checkpoint (so the studio lists it) and finish the row with a report
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from db import checkpoints as db_checkpoints
from db import jobs as db_jobs
from db.files import default_out_dir
from db.models import FinetuneJob, Status
from settings import get_settings
from workers import config
from workers.enqueue import enqueue_jobs
from workers.execution import ItemKind, Stopped, execute
from workers.progress import SHUTDOWN, Heartbeat

log = logging.getLogger(__name__)

JOB = ItemKind(
    model=FinetuneJob, label="finetune job", enqueue=enqueue_jobs, crashed="The finetune",
    out_of_memory="The finetune ran out of memory. Lower per_stage, the clip size, use LoRA, bf16 "
                  "or gradient checkpointing.",
)


def job_config(row: dict[str, Any]):
    """The job's :class:`~finetune.pyramidal.TrainConfig` (checked); raises ConfigError."""
    from finetune.pyramidal import validate_config

    data = dict(row.get("config") or {})
    data["base"] = row["base"]
    data.setdefault("name", row["name"])
    if not data.get("out"):
        data["out"] = default_out_dir(row["name"])
    return validate_config(data)


def execute_job(job_id: int, worker: str) -> str:
    """Run job ``job_id`` once on this worker; returns what happened (see
    :func:`workers.execution.execute`)."""
    return execute(JOB, job_id, worker, lambda claim, beat: _train(job_id, claim, beat))


def _train(job_id: int, claim, beat: Heartbeat):
    from finetune.pyramidal import ConfigError, train

    row = claim.row
    try:
        cfg = job_config(row)
    except ConfigError as exc:
        raise Stopped(Status.FAILED.value, f"The job's settings are not valid: {exc}") from None
    existing = db_checkpoints.find_checkpoint(row["name"])
    if existing is not None and Path(existing["path"]) != Path(cfg.out).resolve():
        raise Stopped(Status.FAILED.value,
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
        raise Stopped(Status.FAILED.value, f"The job's settings are not valid: {exc}") from None
    if pending:
        db_jobs.append_losses(job_id, claim.attempt, list(pending))
        pending.clear()
    if beat.lost.is_set():
        raise Stopped("lost")
    if SHUTDOWN.is_set() and result.status != "done":
        raise Stopped("requeued")

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
        raise Stopped(Status.FAILED.value, f"A checkpoint named {name!r} already exists.")
    try:
        return db_checkpoints.add_checkpoint(name=name, path=path, base=cfg.base, kind=card["kind"], card=card)
    except db_checkpoints.NameTaken as exc:
        raise Stopped(Status.FAILED.value, str(exc)) from None
