"""Running one admin finetune job: the body of the ``finetune`` task, free of Celery.

Claim, heartbeat, stop and finish are the road every queue item takes
(:mod:`workers.execution`); a job's own steps are:

1. check its config (a bad config fails the job with the message, before any work)
2. train with a heartbeat: a pyramidal finetune (:func:`finetune.pyramidal.train`) or, for a job
   of kind ``distill``, a step distillation (:func:`finetune.distill.train`); every step writes
   progress (throttled) and appends its losses to the row (the total and per stage; the generator's
   and the critic's); a cancel stops the loop after a checkpoint, so the folder stays usable; a
   worker shutdown puts the job back in the queue and the next attempt resumes from the last
   checkpoint
3. register the checkpoint with its card (so the studio lists it) and finish the row with a report
"""
from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import checkpoints as db_checkpoints
from db import jobs as db_jobs
from db.files import default_out_dir
from db.models import FinetuneJob, Status
from settings import get_settings
from workers.enqueue import enqueue_jobs
from workers.execution import ItemKind, Stopped, execute
from workers.progress import SHUTDOWN, Heartbeat

log = logging.getLogger(__name__)

JOB = ItemKind(
    model=FinetuneJob, label="finetune job", enqueue=enqueue_jobs, crashed="The finetune",
    out_of_memory="The finetune ran out of memory. Lower per_stage (a distillation: batch), the clip size, "
                  "use LoRA, bf16 or gradient checkpointing.",
)


def _number(value: Any) -> float | None:
    """A loss as stored: rounded, and None when it is not finite (JSON has no NaN)."""
    return round(float(value), 6) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass(frozen=True)
class Training:
    """What differs between the kinds of finetune job on the shared road."""

    module: str  # the training code: validate_config(dict) and train(cfg, on_step, log)
    point: Callable[[dict], dict]  # the loss point a step's info appends to the row
    report: Callable[[Any], dict]  # the kind's part of the finished job's report


def _pyramidal_point(info: dict) -> dict:
    return {"step": info["step"], "loss": round(info["loss"], 6), "stages": [round(x, 6) for x in info["stages"]]}


def _distill_point(info: dict) -> dict:
    return {"step": info["step"], "generator_loss": _number(info.get("generator_loss")),
            "critic_loss": _number(info.get("critic_loss")), "exit_stage": info.get("exit_stage")}


def _pyramidal_report(result) -> dict:
    return {"losses": result.card.get("losses"), "data": result.card.get("data"),
            "windows": result.card.get("windows")}


def _distill_report(result) -> dict:
    card = result.card
    return {"losses": card.get("losses"), "data": card.get("data"), "label": card.get("label"),
            "method": card.get("method"), "recipe": card.get("recipe"),
            "teacher": (card.get("teacher") or {}).get("name"), "evaluation": card.get("evaluation"),
            "snapshots": len(result.snapshots)}


TRAININGS = {
    "pyramidal": Training("finetune.pyramidal", _pyramidal_point, _pyramidal_report),
    "distill": Training("finetune.distill", _distill_point, _distill_report),
}


def job_config(row: dict[str, Any]):
    """The job's checked config: a :class:`~finetune.pyramidal.TrainConfig`, or a
    :class:`~finetune.distill.DistillConfig` for a job of kind ``distill``; raises ConfigError."""
    data = {k: v for k, v in (row.get("config") or {}).items() if k != "kind"}
    data["base"] = row["base"]
    data.setdefault("name", row["name"])
    if not data.get("out"):
        data["out"] = default_out_dir(row["name"])
    return _module(row).validate_config(data)


def _training(row: dict[str, Any]) -> Training:
    from finetune.toolkit import ConfigError

    kind = db_jobs.job_kind(row.get("config"))
    if kind not in TRAININGS:
        raise ConfigError(f"unknown job kind {kind!r}; one of: {', '.join(TRAININGS)}", "kind")
    return TRAININGS[kind]


def _module(row: dict[str, Any]):
    return importlib.import_module(_training(row).module)


def execute_job(job_id: int, worker: str) -> str:
    """Run job ``job_id`` once on this worker; returns what happened (see
    :func:`workers.execution.execute`)."""
    return execute(JOB, job_id, worker, lambda claim, beat: _train(job_id, claim, beat))


class _Losses:
    """The job's progress and loss points: each step's point is kept, and written with the progress
    at most every ``PWAN_PROGRESS_SECONDS`` (and at the last step)."""

    def __init__(self, job_id: int, attempt: int, beat: Heartbeat, point: Callable[[dict], dict]):
        self.job_id, self.attempt, self.beat, self.point = job_id, attempt, beat, point
        self.interval, self.last, self.pending = get_settings().progress_seconds, float("-inf"), []

    def on_step(self, info: dict) -> bool:
        if info.get("phase") == "train":
            self.pending.append(self.point(info))
            now = time.monotonic()
            if info["step"] == info["steps"] or now - self.last >= self.interval:
                self.last = now
                self.flush()
                self.beat.beat(step=info["step"], steps=info["steps"], fraction=info["step"] / info["steps"])
        return self.beat.should_stop

    def flush(self) -> None:
        if self.pending:
            db_jobs.append_losses(self.job_id, self.attempt, list(self.pending))
            self.pending.clear()


def _train(job_id: int, claim, beat: Heartbeat):
    from finetune.toolkit import ConfigError

    row = claim.row
    try:
        training = _training(row)
        cfg = job_config(row)
    except ConfigError as exc:
        raise Stopped(Status.FAILED.value, f"The job's settings are not valid: {exc}") from None
    existing = db_checkpoints.find_checkpoint(row["name"])
    if existing is not None and Path(existing["path"]) != Path(cfg.out).resolve():
        raise Stopped(Status.FAILED.value,
                      f"A checkpoint named {row['name']!r} already exists; submit the job under another name.")
    beat.beat(output_dir=str(Path(cfg.out).resolve()), steps=cfg.steps)

    losses = _Losses(job_id, claim.attempt, beat, training.point)
    try:
        result = importlib.import_module(training.module).train(
            cfg, on_step=losses.on_step, log=lambda msg: log.info("job %s: %s", job_id, msg))
    except ConfigError as exc:
        raise Stopped(Status.FAILED.value, f"The job's settings are not valid: {exc}") from None
    losses.flush()
    if beat.lost.is_set():
        raise Stopped("lost")
    if SHUTDOWN.is_set() and result.status != "done":
        raise Stopped("requeued")

    checkpoint = _register(row["name"], cfg, result) if result.step > 0 else None
    report = {"kind": db_jobs.job_kind(row.get("config")), "steps": result.step, "seconds": result.seconds,
              "status": result.status, **training.report(result), "worker": row.get("worker")}
    fields = {"report": report, "output_dir": str(result.out.resolve()),
              "checkpoint_id": checkpoint["id"] if checkpoint else None, "step": result.step}
    if result.status == "done":
        return Status.DONE.value, {**fields, "fraction": 1.0}
    return Status.CANCELLED.value, fields


def _register(name: str, cfg, result) -> dict | None:
    """Register the checkpoint folder with its card (idempotent for the same folder)."""
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
