"""Admin finetune jobs: list, follow, submit (to the ``train`` queue) and cancel.

A job has a kind (its config's ``kind``): ``"pyramidal"`` (the default; a pyramidal finetune,
:class:`finetune.pyramidal.TrainConfig`) or ``"distill"`` (step distillation into a few-step
student, :class:`finetune.distill.DistillConfig`, whose ``teacher`` may name a registered checkpoint).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.pipeline import MAX_PROMPT_CHARS
from db import checkpoints as db_checkpoints
from db import jobs as db_jobs
from db import queue
from db.config import data_dir
from db.files import default_out_dir
from db.models import FinetuneJob
from db.jobs import JOB_KINDS
from service.checks import (MAX_ROW_ID, check_id, check_name, check_page, check_status, check_text_input,
                            page_of)
from service.errors import NotFoundError, ValidationError
from service.paths import allowed_roots, confine
from workers.enqueue import enqueue_jobs

log = logging.getLogger(__name__)

#: Longest free-text training setting (a sample prompt, a teacher name, ...).
MAX_SETTING_CHARS = 10 * MAX_PROMPT_CHARS


def list_jobs(*, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Finetune jobs, newest first: ``{"items": [...], "total": n, "limit": .., "offset": ..}``."""
    if status is not None:
        check_status(status)
    check_page(limit, offset)
    return page_of(db_jobs.list_jobs(status=status, limit=limit, offset=offset))


def get_job(job_id: int) -> dict[str, Any]:
    row = db_jobs.get_job(check_id(job_id, "job"))
    if row is None:
        raise NotFoundError(f"There is no finetune job {job_id}.")
    return row


def _confined_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A job names no server paths of its own choosing: its checkpoint and cache go under the
    data folder, and its data is the mini world or a folder inside the allowed roots."""
    for key in ("out", "cache_dir"):
        if settings.get(key) not in (None, ""):
            settings[key] = str(confine(settings[key], key, [data_dir().resolve()]))
    data = settings.get("data")
    if isinstance(data, str) and data.strip() and not data.startswith("world:"):
        settings["data"] = str(confine(data, "data", allowed_roots()))
    return settings


def _job_kind(value: Any) -> str:
    kind = JOB_KINDS[0] if value in (None, "") else value
    if kind not in JOB_KINDS:
        raise ValidationError(f"job kind must be one of: {', '.join(JOB_KINDS)}; got {value!r}", "kind")
    return kind


def _teacher_row(teacher: Any) -> dict[str, Any] | None:
    """The registered checkpoint ``teacher`` names (an id, or a name), or None for a folder path."""
    if isinstance(teacher, bool) or not isinstance(teacher, (int, str)):
        raise ValidationError("teacher must be a registered checkpoint's name or id, or a checkpoint folder",
                              "teacher")
    if isinstance(teacher, int):
        row = db_checkpoints.get_checkpoint(teacher) if 1 <= teacher <= MAX_ROW_ID else None
        if row is None:
            raise ValidationError(f"there is no checkpoint {teacher} to use as the teacher", "teacher")
        return row
    return db_checkpoints.find_checkpoint(teacher.strip())


def _check_teacher_card(card: dict[str, Any], label: str, base: str) -> None:
    """A distillation's teacher is a pyramidal checkpoint over the job's base model."""
    if card.get("trained_for") == "few-step":
        raise ValidationError(f"teacher {label} is a distilled few-step student; a distillation needs a "
                              "pyramidal teacher (a pyramidal finetune's checkpoint)", "teacher")
    if card.get("base") not in (None, base):
        raise ValidationError(f"teacher {label} was trained over {card['base']!r}, not {base!r}: choose a "
                              f"pyramidal checkpoint over {base!r}", "teacher")


def _resolved_teacher(settings: dict[str, Any], base: str) -> dict[str, Any]:
    """A distillation's ``teacher`` as a checkpoint folder: a registered checkpoint (name or id) is
    its folder; any other value is a folder that must lie inside the allowed roots."""
    teacher = settings.get("teacher")
    if teacher is None or teacher == "":
        return settings  # finetune.distill says which methods need one
    row = _teacher_row(teacher)
    if row is not None:
        _check_teacher_card(row["card"] or {}, repr(row["name"]), base)
        return {**settings, "teacher": row["path"]}
    folder = confine(teacher, "teacher", allowed_roots())
    try:
        card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").is_file() else {}
    except (OSError, ValueError):
        card = {}
    _check_teacher_card(card if isinstance(card, dict) else {}, repr(Path(str(teacher)).name), base)
    return {**settings, "teacher": str(folder)}


def _validated(kind: str, settings: dict[str, Any]):
    """The checked training config of a job of ``kind``; a ValidationError names the bad setting."""
    from finetune.toolkit import ConfigError  # the training code, on demand

    if kind == "distill":
        from finetune.distill import validate_config
    else:
        from finetune.pyramidal import validate_config
    try:
        return validate_config(settings)
    except ConfigError as exc:
        raise ValidationError(str(exc), exc.field) from None


def submit_job(name: str, base: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a finetune job, store it queued and send it to the ``train`` queue. Bad settings
    are refused before anything is written.

    ``config["kind"]``: ``"pyramidal"`` (default; ``finetune.pyramidal.TrainConfig`` fields) or
    ``"distill"`` (``finetune.distill.DistillConfig`` fields: method, teacher, student_plan, steps,
    ...; ``teacher`` may be a registered checkpoint's name or id). The stored config holds the kind
    and every checked setting."""
    name = check_name(name)
    if db_checkpoints.find_checkpoint(name) is not None:
        raise ValidationError(f"A checkpoint named {name!r} already exists; choose another name.", "name")
    settings = {**(config or {}), "base": base, "name": name}
    kind = _job_kind(settings.pop("kind", None))
    for key, value in settings.items():  # free-text settings (sample prompt, data, teacher...) too
        if isinstance(value, str):
            check_text_input(value, str(key), f"setting {key!r}", required=False, limit=MAX_SETTING_CHARS)
    settings = _confined_settings(settings)
    if kind == "distill":
        settings = _resolved_teacher(settings, base)
    settings.setdefault("out", default_out_dir(name))
    checked = _validated(kind, settings)
    row = db_jobs.add_job(name=name, base=base, config={"kind": kind, **checked.to_dict()})
    try:
        enqueue_jobs([row["id"]])
    except Exception:  # the row is safe; a worker re-sends queued jobs when it starts
        log.exception("could not reach the broker for job %s; it stays queued", row["id"])
    return row


def cancel_job(job_id: int) -> dict[str, Any]:
    """Cancel a finetune job: a queued one ends ``cancelled`` at once; a running one stops after
    its next checkpoint (the worker writes ``cancelled``)."""
    row = queue.request_cancel(FinetuneJob, check_id(job_id, "job"))
    if row is None:
        raise NotFoundError(f"There is no finetune job {job_id}.")
    return row
