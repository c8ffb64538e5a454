"""Running one generation: the body of the ``generate`` task, free of Celery.

Claim, heartbeat, stop and finish are the road every queue item takes
(:mod:`workers.execution`); a run's own steps are:

1. build and validate the request; find the checkpoint folder
2. get the pipeline from the resident cache (load seconds: 0 when warm); phase "loading"
3. sample ("denoising") and decode ("decoding"), with heartbeat, throttled progress (its
   fraction split between the phases by :func:`workers.progress.estimate_shares`) and cancel
   checks at every step
4. write the mp4 (atomically) and a small still ("writing video"), then the report and ``done``

Each failure ends the run ``failed`` with a message a person can act on; a cancel ends it
``cancelled``; a worker shutdown puts it back in the queue.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

from db import checkpoints as db_checkpoints
from db import runs as db_runs
from db.files import output_path, preview_path, still_path, tiny_output_path
from db.models import Run, Status
from settings import get_settings
from workers import config
from workers.enqueue import enqueue_runs
from workers.execution import ItemKind, Stopped, check_stop, execute
from workers.models import ModelCache, model_cache
from workers.progress import Heartbeat, PhaseShares, ProgressReporter, estimate_shares

log = logging.getLogger(__name__)

REQUEST_FIELDS = (
    "prompt", "negative_prompt", "model", "mode", "schedule", "guidance", "seed", "frames",
    "height", "width", "guidance_source", "decoder",
)  # fmt: skip


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.rstrip("Z")) if value else None


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
        fields = {k: row.get(k) for k in REQUEST_FIELDS}
        fields["decoder"] = fields["decoder"] or "full"
        return GenerationRequest(**fields).validated()
    except RequestError as exc:
        raise Stopped(Status.FAILED.value, f"The run's settings are not valid: {exc}") from None


def _checkpoint_dir(row: dict[str, Any]) -> str | None:
    if row["checkpoint_id"] is None:
        if row["checkpoint_name"]:
            raise Stopped(
                Status.FAILED.value,
                f"Checkpoint {row['checkpoint_name']!r} was deleted after this run was queued.",
            )
        return None
    checkpoint = db_checkpoints.get_checkpoint(row["checkpoint_id"])
    if checkpoint is None:
        raise Stopped(Status.FAILED.value, "The run's checkpoint was deleted after it was queued.")
    return checkpoint["path"]


def _load(cache: ModelCache, row: dict[str, Any], checkpoint_dir: str | None):
    from core import ModelLoadError

    try:
        return cache.get(row["model"], checkpoint_dir)
    except ModelLoadError as exc:
        raise Stopped(Status.FAILED.value, f"The model could not be loaded: {exc}") from None


RUN = ItemKind(
    model=Run, label="run", enqueue=enqueue_runs, crashed="Generation",
    out_of_memory="The worker ran out of memory during generation. Try fewer frames, a smaller "
                  "size, or fewer stages at full resolution.",
)


def execute_run(run_id: int, worker: str, cache: ModelCache | None = None) -> str:
    """Run ``run_id`` once on this worker; returns what happened (see
    :func:`workers.execution.execute`: ``done``, ``failed``, ``cancelled``, ``requeued``,
    ``lost``, ``missing``, ``skipped: <status>`` or ``deferred``)."""
    return execute(RUN, run_id, worker,
                   lambda claim, beat: _generate(run_id, claim.row, cache or model_cache(), beat))


def _generate(run_id: int, row: dict[str, Any], cache: ModelCache, beat: Heartbeat):
    from core import Cancelled

    request = _request_for(row)
    checkpoint_dir = _checkpoint_dir(row)
    beat.beat(phase="loading")
    pipe, load_seconds = _load(cache, row, checkpoint_dir)
    fps = getattr(pipe, "fps", 16)
    beat.beat()  # picks up a cancel that came during the load
    check_stop(beat)
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
        check_stop(beat)
        raise Stopped(Status.CANCELLED.value) from None

    reporter.set_phase("writing video")
    t0 = time.perf_counter()
    path = output_path(run_id)
    _write_video(result.frames, path, result.fps)
    tiny_path = None
    if getattr(result, "frames_tiny", None) is not None:  # decoder="both": the tiny decode beside it
        tiny_path = tiny_output_path(run_id)
        _write_video(result.frames_tiny, tiny_path, result.fps)
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
    report["tiny_video_path"] = str(tiny_path) if tiny_path is not None else None
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
        previous = db_runs.last_done_run(request.model, request.frames, request.height, request.width,
                                         decoder=request.decoder)
        return estimate_shares(request, previous, getattr(pipe, "estimate_tflops", None))
    except Exception:  # an estimate is a nicety: never fail the run for it
        log.exception("could not estimate the phases of a %s run", request.model)
        return None


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
