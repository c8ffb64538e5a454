"""Admin finetune jobs: list, follow, submit (to the ``train`` queue) and cancel."""
from __future__ import annotations

import logging
from typing import Any

from core.pipeline import MAX_PROMPT_CHARS
from db import checkpoints as db_checkpoints
from db import jobs as db_jobs
from db import queue
from db.config import data_dir
from db.files import default_out_dir
from db.models import FinetuneJob
from service.checks import check_id, check_name, check_page, check_status, check_text_input, page_of
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


def submit_job(name: str, base: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a pyramidal finetune (``finetune.pyramidal.TrainConfig`` fields), store a queued
    job and send it to the ``train`` queue. Bad settings are refused before anything is written."""
    from finetune.pyramidal import ConfigError, validate_config  # the training code, on demand

    name = check_name(name)
    if db_checkpoints.find_checkpoint(name) is not None:
        raise ValidationError(f"A checkpoint named {name!r} already exists; choose another name.", "name")
    settings = {**(config or {}), "base": base, "name": name}
    for key, value in settings.items():  # free-text settings (sample prompt, data, teacher...) too
        if isinstance(value, str):
            check_text_input(value, str(key), f"setting {key!r}", required=False, limit=MAX_SETTING_CHARS)
    settings = _confined_settings(settings)
    settings.setdefault("out", default_out_dir(name))
    try:
        checked = validate_config(settings)
    except ConfigError as exc:
        raise ValidationError(str(exc), exc.field) from None
    row = db_jobs.add_job(name=name, base=base, config=checked.to_dict())
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
