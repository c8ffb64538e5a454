"""Running one generation: the body of the ``generate`` task, free of Celery.

1. claim the row (queued -> running); anything else means "already handled": skip
2. build and validate the request; find the checkpoint folder
3. get the pipeline from the resident cache (load seconds: 0 when warm); phase "loading"
4. sample ("denoising") and decode ("decoding"), with heartbeat, throttled progress (its
   fraction split between the phases by :func:`workers.progress.estimate_shares`) and cancel
   checks at every step
5. write the mp4 (atomically) and a small still ("writing video"), then the report and ``done``

Each failure ends the run ``failed`` with a message a person can act on; a cancel ends it
``cancelled``; a worker shutdown puts it back in the queue.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from db import checkpoints as db_checkpoints
from db import queue
from db import runs as db_runs
from db.models import Run, Status
from settings import get_settings
from workers import config
from workers.models import ModelCache, model_cache
from workers.progress import SHUTDOWN, Heartbeat, PhaseShares, ProgressReporter, estimate_shares

log = logging.getLogger(__name__)

REQUEST_FIELDS = (
    "prompt", "negative_prompt", "model", "mode", "schedule", "guidance", "seed", "frames",
    "height", "width", "guidance_source",
)  # fmt: skip


class _Stopped(Exception):
    """Internal: the run ends with ``status`` and ``error``; or, for the pseudo statuses,
    goes back to the queue (``requeued``) or is no longer ours (``lost``)."""

    def __init__(self, status: str, error: str | None = None):
        super().__init__(error or status)
        self.status, self.error = status, error


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.rstrip("Z")) if value else None


def output_path(run_id: int) -> Path:
    return config.outputs_dir() / f"{run_id}.mp4"


def preview_path(run_id: int) -> Path:
    return config.outputs_dir() / f"{run_id}.preview.mp4"


def still_path(run_id: int) -> Path:
    return config.outputs_dir() / f"{run_id}.still.jpg"


#: Width (px) of the still History shows beside a finished run.
STILL_WIDTH = 160


def _write_still(frames, path: Path) -> None:
    """The middle frame as a JPEG at most ``STILL_WIDTH`` px wide (atomically)."""
    from PIL import Image

    image = Image.fromarray(frames[len(frames) // 2])
    if image.width > STILL_WIDTH:
        image = image.resize((STILL_WIDTH, max(round(image.height * STILL_WIDTH / image.width), 1)),
                             Image.Resampling.LANCZOS)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        image.save(tmp, format="JPEG", quality=85)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_video(frames, path: Path, fps: int) -> None:
    from core.video import write_mp4

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write_mp4(frames, tmp, fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _request_for(row: dict[str, Any]):
    from core import GenerationRequest, RequestError

    try:
        # the stored guidance was resolved at submit time; its source travels with it into the report
        return GenerationRequest(**{k: row.get(k) for k in REQUEST_FIELDS}).validated()
    except RequestError as exc:
        raise _Stopped(Status.FAILED.value, f"The run's settings are not valid: {exc}") from None


def _checkpoint_dir(row: dict[str, Any]) -> str | None:
    if row["checkpoint_id"] is None:
        if row["checkpoint_name"]:
            raise _Stopped(
                Status.FAILED.value,
                f"Checkpoint {row['checkpoint_name']!r} was deleted after this run was queued.",
            )
        return None
    checkpoint = db_checkpoints.get_checkpoint(row["checkpoint_id"])
    if checkpoint is None:
        raise _Stopped(Status.FAILED.value, "The run's checkpoint was deleted after it was queued.")
    return checkpoint["path"]


def _load(cache: ModelCache, row: dict[str, Any], checkpoint_dir: str | None):
    from core import ModelLoadError

    try:
        return cache.get(row["model"], checkpoint_dir)
    except ModelLoadError as exc:
        raise _Stopped(Status.FAILED.value, f"The model could not be loaded: {exc}") from None


def _describe_crash(exc: BaseException) -> str:
    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return (
            "The worker ran out of memory during generation. Try fewer frames, a smaller size, "
            f"or fewer stages at full resolution. ({name}: {exc})"
        )
    return f"Generation failed with an unexpected error: {name}: {exc}. See the worker log."


def execute_run(run_id: int, worker: str, cache: ModelCache | None = None) -> str:
    """Run ``run_id`` once on this worker. Returns what happened: ``done``, ``failed``,
    ``cancelled``, ``requeued`` (worker shutting down), ``lost`` (taken away meanwhile), or
    ``skipped: <status>`` / ``missing`` when there was nothing to do (idempotent re-delivery),
    ``deferred`` (the message came while the worker shuts down: sent again, not started).
    """
    if SHUTDOWN.is_set():
        # Delivered while this worker shuts down: leave the run queued for the next worker.
        from workers.tasks import enqueue_runs

        enqueue_runs([run_id])
        return "deferred"
    claim, row = queue.claim(Run, run_id, worker)
    if row is None:
        log.info("run %s no longer exists: nothing to do", run_id)
        return "missing"
    if claim is None:
        log.info("run %s is %s: not running it again", run_id, row["status"])
        return f"skipped: {row['status']}"
    cache = cache or model_cache()
    with Heartbeat(Run, run_id, claim.attempt, get_settings().heartbeat_seconds) as beat:
        try:
            outcome, fields = _generate(run_id, claim.row, cache, beat)
        except _Stopped as stop:
            outcome, fields = stop.status, {"error": stop.error}
        except Exception as exc:  # noqa: BLE001 - every failure must end the run, with a message
            log.error("run %s crashed:\n%s", run_id, traceback.format_exc())
            outcome, fields = Status.FAILED.value, {"error": _describe_crash(exc)}
        if outcome == "requeued":
            return _requeue_after_shutdown(run_id, claim.attempt)
        if outcome == "lost" or beat.lost.is_set():
            log.warning("run %s was taken from this worker (reaped or deleted)", run_id)
            return "lost"
        try:
            finished = queue.finish(Run, run_id, claim.attempt, outcome, **fields)
        except Exception as exc:  # e.g. a report that cannot be stored: still end the run
            log.error("run %s: storing the result failed:\n%s", run_id, traceback.format_exc())
            outcome = Status.FAILED.value
            finished = queue.finish(
                Run, run_id, claim.attempt, outcome,
                error=f"The result could not be stored: {type(exc).__name__}: {exc}",
            )
        if not finished:
            log.warning("run %s was taken from this worker before it finished", run_id)
            return "lost"
        return outcome


def _generate(run_id: int, row: dict[str, Any], cache: ModelCache, beat: Heartbeat):
    from core import Cancelled

    request = _request_for(row)
    checkpoint_dir = _checkpoint_dir(row)
    beat.beat(phase="loading")
    pipe, load_seconds = _load(cache, row, checkpoint_dir)
    fps = getattr(pipe, "fps", 16)
    beat.beat()  # picks up a cancel that came during the load
    _check_stop(beat)
    shares = _phase_shares(pipe, request)

    preview = {}

    def save_preview(frames) -> None:
        path = preview_path(run_id)
        _write_video(frames, path, fps)
        preview["path"] = str(path)
        beat.beat(preview_path=str(path))  # followers see it now, not only when the run ends

    reporter = ProgressReporter(beat, get_settings().progress_seconds, on_preview=save_preview, shares=shares,
                                phase="loading")
    try:
        result = pipe.generate(request, callback=reporter)
    except Cancelled:
        _check_stop(beat)
        raise _Stopped(Status.CANCELLED.value) from None

    reporter.set_phase("writing video")
    t0 = time.perf_counter()
    path = output_path(run_id)
    _write_video(result.frames, path, result.fps)
    still = still_path(run_id)
    try:
        _write_still(result.frames, still)
    except Exception:  # a still is a nicety: never fail the run for it
        log.exception("run %s: could not write the still", run_id)
        still = None
    write_seconds = time.perf_counter() - t0

    report = _plain(result.report)
    seconds = dict(report.get("seconds", {}))
    seconds["load"] = load_seconds
    seconds["write"] = write_seconds
    report["seconds"] = seconds
    report["phase_shares"] = shares.to_dict() if shares is not None else None
    report["load_seconds"] = load_seconds
    report["worker"] = row["worker"]
    created, started = _parse_time(row["created_at"]), _parse_time(row["started_at"])
    if created and started:
        report["queue_seconds"] = max((started - created).total_seconds(), 0.0)
    return Status.DONE.value, {
        "output_path": str(path),
        "preview_path": preview.get("path"),
        "still_path": str(still) if still is not None else None,
        "report": report,
        "load_seconds": load_seconds,
        "total_seconds": seconds.get("total"),
        "tflops": report.get("tflops"),
        "peak_memory_mb": report.get("peak_memory_mb"),
        "fraction": 1.0,
    }


def _phase_shares(pipe, request) -> PhaseShares | None:
    """The run's split between denoising, decoding and writing (see :func:`estimate_shares`);
    None (progress of the denoising steps only) when it cannot be estimated."""
    try:
        previous = db_runs.last_done_run(request.model, request.frames, request.height, request.width)
        return estimate_shares(request, previous, getattr(pipe, "estimate_tflops", None))
    except Exception:  # an estimate is a nicety: never fail the run for it
        log.exception("could not estimate the phases of a %s run", request.model)
        return None


def _check_stop(beat: Heartbeat) -> None:
    if beat.lost.is_set():  # reaped or deleted: write nothing
        raise _Stopped("lost")
    if SHUTDOWN.is_set():
        raise _Stopped("requeued")
    if beat.cancel_requested.is_set():
        raise _Stopped(Status.CANCELLED.value)


def _plain(value: Any) -> Any:
    """JSON-safe copy of a report (numpy scalars and arrays, tuples, paths -> plain types)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # numpy / torch
        return _plain(value.tolist())
    return str(value)


def _requeue_after_shutdown(run_id: int, attempt: int) -> str:
    """The worker is stopping: put the run back in the queue without using up its retries."""
    from workers.tasks import enqueue_runs

    if queue.give_back(Run, run_id, attempt):
        enqueue_runs([run_id])
        return "requeued"
    return "lost"
