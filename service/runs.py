"""Runs and comparisons: submit, follow, list, cancel, delete and re-run.

A submit fills in what the request leaves out (the model, the checkpoint, the schedule, the
guidance, a random seed), leaves the rules of a generation to
:meth:`core.GenerationRequest.validated`, stores the queued run and sends it to the ``infer``
queue. Every new run is answered with its ``cancel_token``: a secret, stored only as its
SHA-256, that lets whoever submitted the run cancel it (the admin may cancel any run).

Results are plain dicts (see :func:`db.models.to_dict`), ready for JSON.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any

from core import GenerationRequest, RequestError, default_preset, has_tiny_decoder
from core.fewstep import FewStepRecipe
from core.pipeline import DEFAULT_SCHEDULE, MAX_PROMPT_CHARS, MAX_SEED
from core.pipeline import baseline_schedule as _core_baseline_schedule
from db import checkpoints as db_checkpoints
from db import queue
from db import runs as db_runs
from db.files import preview_path, side_by_side_path, tiny_output_path  # noqa: F401  (for the page and the REST API)
from db.models import Run
from service.checks import (
    MAX_NAME_CHARS, MAX_ROW_ID, MAX_TOKEN_CHARS, check_id, check_page, check_status,
    check_text_input, page_of,
)
from service.errors import (
    ConflictError, ForbiddenError, NotFoundError, UnauthorizedError, ValidationError,
)
from workers.enqueue import enqueue_runs

log = logging.getLogger(__name__)


def new_cancel_token() -> tuple[str, str]:
    """A fresh secret cancel token and the SHA-256 hex that is stored in its place."""
    token = secrets.token_urlsafe(24)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def baseline_schedule(schedule: str) -> str:
    """The one-stage (original model) schedule with the same total steps: 20-20-10 -> 0-0-50
    (:func:`core.pipeline.baseline_schedule`); a schedule that does not parse is a ValidationError."""
    try:
        return _core_baseline_schedule(str(schedule))
    except RequestError as exc:
        raise ValidationError(str(exc), "schedule") from None


def shipped_pyramidal(preset: str) -> dict | None:
    """The pyramidal finetune of ``preset`` registered as ``<preset>-pyramidal`` (``models/mini-pyramidal``
    is, at start-up), or None. Requests that name no model run it for pyramidal plans."""
    row = db_checkpoints.find_checkpoint(f"{preset}-pyramidal")
    if row is not None and row["base"] == preset and Path(row["path"]).is_dir():
        return row
    return None


# ---------------------------------------------------------------------------- defaults
def _resolve_checkpoint(checkpoint: Any, model: Any) -> tuple[dict | None, Any]:
    """The checkpoint row for an id or a name (None for none), and the model it implies."""
    if checkpoint is None or checkpoint == "":
        return None, model
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, str)):
        raise ValidationError("checkpoint must be a checkpoint id or name", "checkpoint")
    if isinstance(checkpoint, int):
        row = db_checkpoints.get_checkpoint(checkpoint) if 1 <= checkpoint <= MAX_ROW_ID else None
    else:
        name = check_text_input(checkpoint, "checkpoint", "the checkpoint name", required=False,
                                limit=MAX_NAME_CHARS)
        row = db_checkpoints.find_checkpoint(name)
    if row is None:
        names = [c["name"] for c in db_checkpoints.list_checkpoints()][:10]
        hint = f"registered: {', '.join(names)}" if names else "no checkpoints are registered"
        raise ValidationError(f"unknown checkpoint {checkpoint!r} ({hint})", "checkpoint")
    if model is not None and model != row["base"]:
        raise ValidationError(
            f"checkpoint {row['name']!r} was trained over model {row['base']!r}, not {model!r}; "
            f"choose model {row['base']!r} or another checkpoint",
            "checkpoint",
        )
    if not Path(row["path"]).is_dir():
        raise ValidationError(
            f"checkpoint {row['name']!r} points to {row['path']}, which no longer exists",
            "checkpoint",
        )
    return row, row["base"]


def _run_spec(*, prompt: Any, negative_prompt: Any, model: Any, checkpoint: Any, mode: Any,
              schedule: Any, guidance: Any, seed: Any, frames: Any, height: Any, width: Any,
              decoder: Any = "full") -> dict:
    """One run's columns: the defaults filled in, then checked by core's rules (and the tiny
    decoder refused up front for a model that has none). A distilled checkpoint's card fills and
    locks its recipe (:meth:`core.GenerationRequest.resolved`): a schedule, guidance or mode that
    would break it is refused with a message naming what it was trained for."""
    checkpoint_row, model = _resolve_checkpoint(checkpoint, None if model in (None, "") else model)
    if model is None and mode == "pyramidal":
        # no model named: a pyramidal plan runs the default preset's shipped pyramidal finetune
        checkpoint_row = shipped_pyramidal(default_preset())
    model = default_preset() if model is None else model
    request = GenerationRequest(  # no schedule: core fills a distilled checkpoint's recipe, else its default
        prompt=prompt, negative_prompt=negative_prompt, model=model, mode=mode,
        schedule=None if schedule in (None, "") else schedule,
        guidance=guidance, seed=seed, frames=frames, height=height, width=width,
        decoder="full" if decoder is None else decoder,
    )
    try:  # the request's guidance, else the checkpoint's or the model's recommendation
        request = request.resolved(checkpoint_row["card"] if checkpoint_row else None).validated()
    except RequestError as exc:
        raise ValidationError(str(exc), exc.field) from None
    _check_tiny_decoder(request.model, request.decoder)
    return {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "model": request.model,
        "checkpoint_id": checkpoint_row["id"] if checkpoint_row else None,
        "checkpoint_name": checkpoint_row["name"] if checkpoint_row else None,
        "mode": request.mode, "schedule": request.schedule,
        "guidance": [float(g) for g in request.guidance], "guidance_source": request.guidance_source,
        "seed": request.seed, "frames": request.frames, "height": request.height, "width": request.width,
        "decoder": request.decoder,
    }


def _check_tiny_decoder(model: str, decoder: str) -> None:
    """Refuse ``decoder`` "tiny" or "both" for a model with no tiny decoder, before anything is queued."""
    if decoder != "full" and not has_tiny_decoder(model):
        raise ValidationError(
            f"model {model!r} has no tiny decoder, so decoder {decoder!r} cannot run: use decoder 'full', "
            f"or train one with `python -m finetune tiny-decoder --base {model} --data world:N "
            f"--out models/{model}-tiny-decoder`", "decoder")


def _random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def _add_and_send(specs: list[dict], comparison: dict | None = None) -> list[dict[str, Any]]:
    """Store queued runs, each with a fresh cancel token, and send them to the ``infer`` queue.
    Returns the rows, each with its ``cancel_token``."""
    tokens = [new_cancel_token() for _ in specs]
    rows = db_runs.add_runs(specs, comparison=comparison,
                            cancel_token_hashes=[digest for _, digest in tokens])
    ids = [row["id"] for row in rows]
    try:
        enqueue_runs(ids)
    except Exception:  # the rows are safe; a worker re-sends queued runs when it starts
        log.exception("could not reach the broker for runs %s; they stay queued", ids)
    return [{**row, "cancel_token": token} for row, (token, _) in zip(rows, tokens)]


# ---------------------------------------------------------------------------- submit
def submit_run(
    prompt: str,
    *,
    negative_prompt: str = "",
    model: str | None = None,
    checkpoint: int | str | None = None,
    mode: str = "pyramidal",
    schedule: str | None = None,
    guidance: float | list[float] | None = None,
    seed: int | None = None,
    frames: int = 17,
    height: int = 128,
    width: int = 128,
    decoder: str = "full",
) -> dict[str, Any]:
    """Validate, store a queued run, and send it to the ``infer`` queue. Returns the run.

    ``decoder``: "full" (the VAE), "tiny" (the tiny decoder: much faster, slightly softer) or
    "both" (the full video plus the tiny one, to compare them).

    ``model`` defaults to the checkpoint's base, else ``core.default_preset()`` (a pyramidal run
    with neither then uses that preset's shipped pyramidal finetune, see :func:`shipped_pyramidal`);
    ``seed`` defaults to a random one (stored, so Re-run reproduces it).
    """
    spec = _run_spec(
        prompt=prompt, negative_prompt=negative_prompt, model=model, checkpoint=checkpoint,
        mode=mode, schedule=schedule, guidance=guidance,
        seed=_random_seed() if seed is None else seed, frames=frames, height=height, width=width,
        decoder=decoder,
    )
    (row,) = _add_and_send([spec])
    return row


def submit_comparison(
    prompt: str,
    *,
    negative_prompt: str = "",
    model: str | None = None,
    checkpoint: int | str | None = None,
    schedule: str | None = None,
    original_schedule: str | None = None,
    guidance: float | list[float] | None = None,
    seed: int | None = None,
    frames: int = 17,
    height: int = 128,
    width: int = 128,
    decoder: str = "full",
) -> dict[str, Any]:
    """The original model and the pyramidal one on the same prompt and seed, as a comparison;
    both runs use ``decoder``.

    ``original_schedule`` defaults to one stage with the pyramid's total steps (20-20-10 ->
    0-0-50); a guidance list applies to the pyramid, its last value to the original. Without a
    guidance each model gets its own recommended one. A distilled (few-step) checkpoint runs its
    recipe, and the original runs at its own full schedule (``0-0-50``: the steps of core's
    default plan) with its own recommended guidance.
    Returns the comparison with its ``runs`` (original first), each run with its own
    ``cancel_token``.
    """
    seed = _random_seed() if seed is None else seed
    common = dict(
        prompt=prompt, negative_prompt=negative_prompt, model=model, checkpoint=checkpoint,
        seed=seed, frames=frames, height=height, width=width, decoder=decoder,
    )
    pyramid = _run_spec(mode="pyramidal", schedule=schedule, guidance=guidance, **common)
    few_step = _is_few_step(pyramid["checkpoint_id"])
    # the original is the pretrained model: a finetuned checkpoint is compared with its base preset
    original = _run_spec(
        mode="original",
        schedule=original_schedule or baseline_schedule(DEFAULT_SCHEDULE if few_step else pyramid["schedule"]),
        guidance=None if guidance is None or few_step else pyramid["guidance"][-1],
        **dict(common, model=pyramid["model"], checkpoint=None),
    )
    rows = _add_and_send([original, pyramid], comparison={"prompt": pyramid["prompt"], "seed": seed})
    group = get_comparison(rows[0]["comparison_id"])
    tokens = {row["id"]: row["cancel_token"] for row in rows}
    group["runs"] = [{**r, "cancel_token": tokens[r["id"]]} for r in group["runs"]]
    return group


def _is_few_step(checkpoint_id: int | None) -> bool:
    """Whether the checkpoint is a distilled few-step student (its card locks a recipe)."""
    row = db_checkpoints.get_checkpoint(checkpoint_id) if checkpoint_id is not None else None
    try:
        return row is not None and FewStepRecipe.from_card(row["card"]) is not None
    except RequestError:
        return False


def rerun(run_id: int, *, decoder: str | None = None) -> dict[str, Any]:
    """A new queued run with the same settings (same seed) as ``run_id``, with its own
    ``cancel_token``; ``decoder`` replaces its decoder (the Compare tab's "decode both ways")."""
    row = get_run(run_id)
    if row["checkpoint_name"] and row["checkpoint_id"] is None:
        raise ValidationError(
            f"checkpoint {row['checkpoint_name']!r} used by run {run_id} was deleted", "checkpoint"
        )
    spec = _run_spec(
        prompt=row["prompt"], negative_prompt=row["negative_prompt"], model=row["model"],
        checkpoint=row["checkpoint_id"], mode=row["mode"], schedule=row["schedule"],
        guidance=row["guidance"], seed=row["seed"], frames=row["frames"], height=row["height"],
        width=row["width"], decoder=decoder or row.get("decoder") or "full",
    )
    # the same guidance, and the same account of where it came from
    spec["guidance_source"] = row.get("guidance_source") or spec["guidance_source"]
    (new,) = _add_and_send([spec])
    return new


# ---------------------------------------------------------------------------- follow
def get_run(run_id: int) -> dict[str, Any]:
    row = db_runs.get_run(check_id(run_id, "run"))
    if row is None:
        raise NotFoundError(f"There is no run {run_id}.")
    return row


def decoded_video_path(row: dict[str, Any], decoder: str = "full") -> str | None:
    """The run's finished video as decoded by ``decoder`` ("full" or "tiny"), or None: the main
    video when the run used that decoder (a "both" run's main video is the full decode), the tiny
    video beside it for a "both" run."""
    ran = row.get("decoder") or "full"
    if decoder == ("tiny" if ran == "tiny" else "full"):
        return row.get("output_path")
    if decoder == "tiny" and ran == "both":
        return (row.get("report") or {}).get("tiny_video_path")
    return None


def get_comparison(comparison_id: int) -> dict[str, Any]:
    group = db_runs.get_comparison(check_id(comparison_id, "comparison"))
    if group is None:
        raise NotFoundError(f"There is no comparison {comparison_id}.")
    return group


def list_runs(
    *,
    status: str | list[str] | None = None,
    model: str | None = None,
    search: str | None = None,
    comparison_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Runs, newest first: ``{"items": [...], "total": n, "limit": .., "offset": ..}``."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    for s in statuses:
        check_status(s)
    check_page(limit, offset)
    if search is not None:
        search = check_text_input(search, "search", "the search text", required=False,
                                  limit=MAX_PROMPT_CHARS)
    if model is not None:
        model = check_text_input(model, "model", "the model", required=False, limit=MAX_NAME_CHARS)
    return page_of(db_runs.list_runs(
        status=statuses or None, model=model or None, search=search or None,
        comparison_id=comparison_id, limit=limit, offset=offset,
    ))


def queue_counts() -> dict[str, int]:
    """How many runs are in each status."""
    return queue.counts_by_status(Run)


# ---------------------------------------------------------------------------- cancel, delete
def check_cancel_token(run_id: int, token: Any = None, *, admin: bool = False) -> None:
    """Refuse a cancel of ``run_id`` that shows neither its cancel token nor admin rights.

    ``admin``: the caller has checked the admin password. Raises :class:`NotFoundError`
    (no such run), :class:`UnauthorizedError` (no token), :class:`ForbiddenError` (a wrong
    token, or a run made before tokens existed, which only the admin may cancel).
    """
    run_id = check_id(run_id, "run")
    exists, digest = db_runs.get_cancel_token_hash(run_id)
    if not exists:
        raise NotFoundError(f"There is no run {run_id}.")
    if admin:
        return
    if token is None or token == "":
        raise UnauthorizedError(
            f"Cancelling run {run_id} needs its cancel token (given when it was submitted) "
            "or the admin password.")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise ForbiddenError(f"That is not the cancel token of run {run_id}.")
    if digest is None:
        raise ForbiddenError(f"Run {run_id} has no cancel token (it was made before tokens "
                             "existed): only the admin can cancel it.")
    if not hmac.compare_digest(token_hash(token), digest):
        raise ForbiddenError(f"That is not the cancel token of run {run_id}.")


def cancel_run(run_id: int, token: str | None = None, *, admin: bool = False) -> dict[str, Any]:
    """Cancel, with the run's cancel ``token`` or ``admin=True`` (the caller checked the admin
    password; see :func:`check_cancel_token`): a queued run ends ``cancelled`` at once; a
    running one stops at its next step (``cancel_requested`` is set; the worker writes
    ``cancelled``). Finished runs are unchanged."""
    check_cancel_token(run_id, token, admin=admin)
    row = queue.request_cancel(Run, check_id(run_id, "run"))
    if row is None:
        raise NotFoundError(f"There is no run {run_id}.")
    return row


def delete_run(run_id: int, *, delete_files: bool = True) -> dict[str, Any]:
    """Delete a run that is not running (and its video files). Returns the deleted run."""
    try:
        row = db_runs.delete_run(check_id(run_id, "run"))
    except db_runs.RunIsRunning as exc:
        raise ConflictError(str(exc)) from None
    if row is None:
        raise NotFoundError(f"There is no run {run_id}.")
    if delete_files:
        for key in ("output_path", "preview_path", "still_path"):
            if row.get(key):
                Path(row[key]).unlink(missing_ok=True)
        tiny = (row.get("report") or {}).get("tiny_video_path")
        if tiny:
            Path(tiny).unlink(missing_ok=True)
    return row
