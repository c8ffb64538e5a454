"""The Python API of the run queue, used by the Gradio page and the REST API.

Every function validates its input before anything is written or enqueued and raises:

* :class:`ValidationError` (``.field`` names the input, the message says what to do),
* :class:`NotFoundError` for an id that does not exist,
* :class:`ConflictError` for an action the current state does not allow,
* :class:`UnauthorizedError` / :class:`ForbiddenError` for a cancel without / with a wrong token.

Every submit answers each new run with its ``cancel_token``: a secret, stored only as its
SHA-256, that lets whoever submitted the run cancel it (the admin may cancel any run).

Results are plain dicts (see :func:`db.models.to_dict`), ready for JSON.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from pathlib import Path
from typing import Any

from core.errors import RequestError
from core.text import check_text
from db import checkpoints as db_checkpoints
from db import jobs as db_jobs
from db import queue
from db import runs as db_runs
from db.config import data_dir as _data_dir
from db.models import ALL_STATUSES, FINAL_STATUSES, FinetuneJob, Run

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
MAX_NAME_CHARS = 200
MAX_SEED = 2**32 - 1
MAX_PAGE = 500
CHECKPOINT_KINDS = ("full", "lora")
DEFAULT_PYRAMID_SCHEDULE = "20-20-10"


class ValidationError(RequestError):
    """Input that cannot be accepted; ``field`` names it (None: the request as a whole)."""


class NotFoundError(LookupError):
    """No run / checkpoint / job with that id."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return self.args[0]


class ConflictError(RuntimeError):
    """The action does not fit the current state (e.g. deleting a running run)."""


class AuthError(PermissionError):
    """Cancelling needs the run's cancel token or the admin password; ``field`` names the token."""

    field = "cancel_token"


class UnauthorizedError(AuthError):
    """No cancel token (and not the admin): HTTP 401."""


class ForbiddenError(AuthError):
    """A cancel token that is not the run's: HTTP 403."""


MAX_TOKEN_CHARS = 200


def new_cancel_token() -> tuple[str, str]:
    """A fresh secret cancel token and the SHA-256 hex that is stored in its place."""
    token = secrets.token_urlsafe(24)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------------------- validation
MAX_ID = 2**63 - 1  # the databases' integer range


def _check_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValidationError(f"{what} id must be a whole number from 1 to {MAX_ID:,}; got {value!r}", "id")
    return value


def _check_text(
    value: Any, field: str, label: str, *, required: bool, limit: int, empty: str = ""
) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text; got {type(value).__name__}", field)
    try:
        check_text(value, field, label)  # core's rule: no control characters
    except RequestError as exc:
        raise ValidationError(str(exc), exc.field) from None
    text = value.strip()
    if required and not text:
        raise ValidationError(f"{label} is empty{empty}", field)
    if len(text) > limit:
        raise ValidationError(
            f"{label} has {len(text):,} characters; at most {limit:,} are allowed. Shorten it.", field
        )
    return text


def baseline_schedule(schedule: str) -> str:
    """The one-stage (original model) schedule with the same total steps: 20-20-10 -> 0-0-50."""
    parts = [p.strip() for p in str(schedule).split("-")]
    try:
        total = sum(int(p) for p in parts)
    except ValueError:
        raise ValidationError(
            f"schedule {schedule!r} is not valid; write one like 20-20-10", "schedule"
        ) from None
    return "-".join(["0"] * (len(parts) - 1) + [str(total)])


def _resolve_checkpoint(checkpoint: Any, model: str | None) -> tuple[dict | None, str | None]:
    """The checkpoint row for an id or a name (None for none), and the model it implies."""
    if checkpoint is None or checkpoint == "":
        return None, model
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, str)):
        raise ValidationError("checkpoint must be a checkpoint id or name", "checkpoint")
    if isinstance(checkpoint, int):
        row = db_checkpoints.get_checkpoint(checkpoint) if 1 <= checkpoint <= MAX_ID else None
    else:
        name = _check_text(checkpoint, "checkpoint", "the checkpoint name", required=False, limit=MAX_NAME_CHARS)
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


def shipped_pyramidal(preset: str) -> dict | None:
    """The pyramidal finetune of ``preset`` registered as ``<preset>-pyramidal`` (``models/mini-pyramidal``
    is, at start-up), or None. Requests that name no model run it for pyramidal plans."""
    row = db_checkpoints.find_checkpoint(f"{preset}-pyramidal")
    if row is not None and row["base"] == preset and Path(row["path"]).is_dir():
        return row
    return None


def _run_spec(
    *,
    prompt: Any,
    negative_prompt: Any,
    model: Any,
    checkpoint: Any,
    mode: Any,
    schedule: Any,
    guidance: Any,
    seed: Any,
    frames: Any,
    height: Any,
    width: Any,
) -> dict[str, Any]:
    """Validate one run's settings; returns the columns to insert."""
    from core import GenerationRequest, RequestError, default_preset, resolve_guidance

    prompt = _check_text(
        prompt, "prompt", "the prompt", required=True, limit=MAX_PROMPT_CHARS,
        empty=": describe the video you want",
    )
    negative_prompt = _check_text(
        negative_prompt, "negative_prompt", "the negative prompt", required=False,
        limit=MAX_PROMPT_CHARS,
    )
    if model is not None and not isinstance(model, str):
        raise ValidationError("model must be the name of a model preset", "model")
    checkpoint_row, model = _resolve_checkpoint(checkpoint, model or None)
    if model is None and mode == "pyramidal":
        # no model named: a pyramidal plan runs the default preset's shipped pyramidal finetune
        checkpoint_row = shipped_pyramidal(default_preset())
    model = model or default_preset()
    if schedule is None or schedule == "":
        schedule = (
            DEFAULT_PYRAMID_SCHEDULE if mode != "original"
            else baseline_schedule(DEFAULT_PYRAMID_SCHEDULE)
        )
    guidance, guidance_source = resolve_guidance(
        guidance, model, checkpoint_row["card"] if checkpoint_row else None, stages=_stage_count(mode, schedule))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValidationError(
            f"seed must be a whole number from 0 to {MAX_SEED:,}; got {seed!r}", "seed"
        )
    request = GenerationRequest(
        prompt=prompt, negative_prompt=negative_prompt, model=model, mode=mode, schedule=schedule,
        guidance=guidance, seed=seed, frames=frames, height=height, width=width,
    )
    try:
        request = request.validated()
    except RequestError as exc:
        raise ValidationError(str(exc), exc.field) from None
    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "model": request.model,
        "checkpoint_id": checkpoint_row["id"] if checkpoint_row else None,
        "checkpoint_name": checkpoint_row["name"] if checkpoint_row else None,
        "mode": request.mode,
        "schedule": request.schedule,
        "guidance": [float(g) for g in request.guidance],
        "guidance_source": guidance_source,
        "seed": request.seed,
        "frames": request.frames,
        "height": request.height,
        "width": request.width,
    }


def _stage_count(mode: Any, schedule: Any) -> int | None:
    """Stages the plan will run (None when the schedule is invalid: the request reports that)."""
    from core import RequestError, StagePlan

    if mode == "original":
        return 1
    try:
        return StagePlan.parse(schedule).num_stages
    except (RequestError, TypeError, ValueError):
        return None


def _send(run_ids: list[int]) -> None:
    from workers.tasks import enqueue_runs

    try:
        enqueue_runs(run_ids)
    except Exception:  # the rows are safe; a worker re-sends queued runs when it starts
        log.exception("could not reach the broker for runs %s; they stay queued", run_ids)


def _random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


# ---------------------------------------------------------------------------- runs
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
) -> dict[str, Any]:
    """Validate, store a queued run, and send it to the ``infer`` queue. Returns the run.

    ``model`` defaults to the checkpoint's base, else ``core.default_preset()`` (a pyramidal run
    with neither then uses that preset's shipped pyramidal finetune, see :func:`shipped_pyramidal`);
    ``seed`` defaults to a random one (stored, so Re-run reproduces it).
    """
    spec = _run_spec(
        prompt=prompt, negative_prompt=negative_prompt, model=model, checkpoint=checkpoint,
        mode=mode, schedule=schedule, guidance=guidance,
        seed=_random_seed() if seed is None else seed, frames=frames, height=height, width=width,
    )
    token, digest = new_cancel_token()
    (row,) = db_runs.add_runs([spec], cancel_token_hashes=[digest])
    _send([row["id"]])
    return {**row, "cancel_token": token}


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
) -> dict[str, Any]:
    """The original model and the pyramidal one on the same prompt and seed, as a comparison.

    ``original_schedule`` defaults to one stage with the pyramid's total steps (20-20-10 ->
    0-0-50); a guidance list applies to the pyramid, its last value to the original. Without a
    guidance each model gets its own recommended one.
    Returns the comparison with its ``runs`` (original first), each run with its own
    ``cancel_token``.
    """
    seed = _random_seed() if seed is None else seed
    schedule = schedule or DEFAULT_PYRAMID_SCHEDULE
    common = dict(
        prompt=prompt, negative_prompt=negative_prompt, model=model, checkpoint=checkpoint,
        seed=seed, frames=frames, height=height, width=width,
    )
    pyramid = _run_spec(mode="pyramidal", schedule=schedule, guidance=guidance, **common)
    # the original is the pretrained model: a finetuned checkpoint is compared with its base preset
    original = _run_spec(
        mode="original",
        schedule=original_schedule or baseline_schedule(pyramid["schedule"]),
        guidance=None if guidance is None else pyramid["guidance"][-1],
        **dict(common, model=pyramid["model"], checkpoint=None),
    )
    tokens = [new_cancel_token() for _ in range(2)]
    rows = db_runs.add_runs(
        [original, pyramid], comparison={"prompt": pyramid["prompt"], "seed": seed},
        cancel_token_hashes=[digest for _, digest in tokens],
    )
    _send([r["id"] for r in rows])
    group = get_comparison(rows[0]["comparison_id"])
    by_id = {row["id"]: token for row, (token, _) in zip(rows, tokens)}
    group["runs"] = [{**r, "cancel_token": by_id[r["id"]]} for r in group["runs"]]
    return group


def get_run(run_id: int) -> dict[str, Any]:
    row = db_runs.get_run(_check_id(run_id, "run"))
    if row is None:
        raise NotFoundError(f"There is no run {run_id}.")
    return row


def get_comparison(comparison_id: int) -> dict[str, Any]:
    group = db_runs.get_comparison(_check_id(comparison_id, "comparison"))
    if group is None:
        raise NotFoundError(f"There is no comparison {comparison_id}.")
    return group


def _check_page(limit: Any, offset: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_PAGE}", "limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationError("offset must be a whole number, 0 or more", "offset")


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
        if s not in ALL_STATUSES:
            raise ValidationError(
                f"unknown status {s!r}; use one of: {', '.join(ALL_STATUSES)}", "status"
            )
    _check_page(limit, offset)
    if search is not None:
        search = _check_text(search, "search", "the search text", required=False,
                             limit=MAX_PROMPT_CHARS)
    if model is not None:
        model = _check_text(model, "model", "the model", required=False, limit=MAX_NAME_CHARS)
    page = db_runs.list_runs(
        status=statuses or None, model=model or None, search=search or None,
        comparison_id=comparison_id, limit=limit, offset=offset,
    )
    return {"items": page.items, "total": page.total, "limit": page.limit, "offset": page.offset}


def check_cancel_token(run_id: int, token: Any = None, *, admin: bool = False) -> None:
    """Refuse a cancel of ``run_id`` that shows neither its cancel token nor admin rights.

    ``admin``: the caller has checked the admin password. Raises :class:`NotFoundError`
    (no such run), :class:`UnauthorizedError` (no token), :class:`ForbiddenError` (a wrong
    token, or a run made before tokens existed, which only the admin may cancel).
    """
    run_id = _check_id(run_id, "run")
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
    row = queue.request_cancel(Run, _check_id(run_id, "run"))
    if row is None:
        raise NotFoundError(f"There is no run {run_id}.")
    return row


def delete_run(run_id: int, *, delete_files: bool = True) -> dict[str, Any]:
    """Delete a run that is not running (and its video files). Returns the deleted run."""
    try:
        row = db_runs.delete_run(_check_id(run_id, "run"))
    except db_runs.RunIsRunning as exc:
        raise ConflictError(str(exc)) from None
    if row is None:
        raise NotFoundError(f"There is no run {run_id}.")
    if delete_files:
        for key in ("output_path", "preview_path", "still_path"):
            if row.get(key):
                Path(row[key]).unlink(missing_ok=True)
    return row


def rerun(run_id: int) -> dict[str, Any]:
    """A new queued run with the same settings (same seed) as ``run_id``, with its own
    ``cancel_token``."""
    row = get_run(run_id)
    if row["checkpoint_name"] and row["checkpoint_id"] is None:
        raise ValidationError(
            f"checkpoint {row['checkpoint_name']!r} used by run {run_id} was deleted", "checkpoint"
        )
    spec = _run_spec(
        prompt=row["prompt"], negative_prompt=row["negative_prompt"], model=row["model"],
        checkpoint=row["checkpoint_id"], mode=row["mode"], schedule=row["schedule"],
        guidance=row["guidance"], seed=row["seed"], frames=row["frames"], height=row["height"],
        width=row["width"],
    )
    # the same guidance, and the same account of where it came from
    spec["guidance_source"] = row.get("guidance_source") or spec["guidance_source"]
    token, digest = new_cancel_token()
    (new,) = db_runs.add_runs([spec], cancel_token_hashes=[digest])
    _send([new["id"]])
    return {**new, "cancel_token": token}


def queue_counts() -> dict[str, int]:
    """How many runs are in each status."""
    return queue.counts_by_status(Run)


# ---------------------------------------------------------------------------- checkpoints
def _check_name(name: Any) -> str:
    return _check_text(name, "name", "the name", required=True, limit=MAX_NAME_CHARS)


def list_checkpoints() -> list[dict[str, Any]]:
    """Built-in presets first (``builtin: True``, ``id: None``), then registered checkpoints."""
    from core import list_presets

    builtins = [
        {"id": None, "name": p, "base": p, "kind": "preset", "path": None, "card": {},
         "builtin": True}
        for p in list_presets()
    ]
    registered = [{**c, "builtin": False} for c in db_checkpoints.list_checkpoints()]
    return builtins + registered


def get_checkpoint(checkpoint_id: int) -> dict[str, Any]:
    row = db_checkpoints.get_checkpoint(_check_id(checkpoint_id, "checkpoint"))
    if row is None:
        raise NotFoundError(f"There is no checkpoint {checkpoint_id}.")
    return row


def allowed_roots() -> list[Path]:
    """Folders the page and the REST API may name on the server: the data folder and the
    checkpoints shipped with the project (``models/``)."""
    return [_data_dir().resolve(), (Path(__file__).resolve().parent.parent / "models").resolve()]


def _confine(value: Any, field: str, roots: list[Path]) -> Path:
    """``value`` as a path that stays inside one of ``roots`` once resolved (no ``..`` or links out)."""
    if not isinstance(value, (str, Path)) or not str(value).strip() or "\x00" in str(value):
        raise ValidationError(f"{field} must be a folder path", field)
    raw = Path(str(value)).expanduser()
    resolved = (roots[0] / raw).resolve() if not raw.is_absolute() else raw.resolve()
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise ValidationError(
            f"{field} {str(value)!r} is outside the folders the studio may use "
            f"({', '.join(str(r) for r in roots)})", field)
    return resolved


def register_checkpoint(
    path: str | Path, base: str, name: str, card: dict[str, Any] | None = None,
    *, roots: list[Path] | None = None,
) -> dict[str, Any]:
    """Register a checkpoint folder over preset ``base`` under ``name``.

    ``card`` defaults to the folder's ``card.json`` (if any); its ``kind`` (full | lora,
    default full) and ``base`` (must match) are checked. With ``roots`` (the page and the REST
    API pass :func:`allowed_roots`) the folder must lie inside one of them.
    """
    from core import list_presets

    name = _check_name(name)
    if roots is not None:
        path = _confine(path, "path", roots)
    folder = Path(str(path or "")).expanduser()
    if not str(path or "").strip() or not folder.is_dir():
        raise ValidationError(f"checkpoint folder {str(path)!r} does not exist", "path")
    presets = list_presets()
    if base not in presets:
        raise ValidationError(
            f"unknown base model {base!r}; choose one of: {', '.join(presets)}", "base"
        )
    if card is None:
        card_file = folder / "card.json"
        try:
            card = json.loads(card_file.read_text()) if card_file.is_file() else {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{card_file} cannot be read: {exc}", "card") from None
    if not isinstance(card, dict):
        raise ValidationError("the card must be a JSON object", "card")
    kind = card.get("kind", "full")
    if kind not in CHECKPOINT_KINDS:
        raise ValidationError(f"card kind must be 'full' or 'lora'; got {kind!r}", "card")
    if card.get("base") not in (None, base):
        raise ValidationError(
            f"the card says this checkpoint was trained over {card['base']!r}, not {base!r}", "base"
        )
    try:
        return db_checkpoints.add_checkpoint(
            name=name, path=str(folder.resolve()), base=base, kind=kind, card=card
        )
    except db_checkpoints.NameTaken as exc:
        raise ValidationError(str(exc), "name") from None


def register_shipped_checkpoints(models_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Register the checkpoints shipped in ``models/`` (folders with a ``card.json`` whose base
    preset is available) that are not registered yet, under their folder name. Returns the new rows.
    Called at start-up, so a shipped pyramidal model is in the model list without admin work."""
    from core import list_presets

    folder = Path(models_dir) if models_dir is not None else allowed_roots()[1]
    if not folder.is_dir():
        return []
    known = {row["path"] for row in db_checkpoints.list_checkpoints()}
    added = []
    for card_file in sorted(folder.glob("*/card.json")):
        path = card_file.parent.resolve()
        try:
            card = json.loads(card_file.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("shipped checkpoint %s has an unreadable card; skipped", path)
            continue
        if str(path) in known or card.get("base") not in list_presets() or card.get("kind") not in CHECKPOINT_KINDS:
            continue
        try:
            added.append(register_checkpoint(path, card["base"], path.name, card))
        except ValidationError as exc:
            log.warning("shipped checkpoint %s not registered: %s", path, exc)
    return added


def rename_checkpoint(checkpoint_id: int, name: str) -> dict[str, Any]:
    checkpoint_id = _check_id(checkpoint_id, "checkpoint")
    name = _check_name(name)
    try:
        row = db_checkpoints.rename_checkpoint(checkpoint_id, name)
    except db_checkpoints.NameTaken as exc:
        raise ValidationError(str(exc), "name") from None
    if row is None:
        raise NotFoundError(f"There is no checkpoint {checkpoint_id}.")
    return row


def delete_checkpoint(checkpoint_id: int) -> dict[str, Any]:
    """Unregister a checkpoint (its folder stays on disk). Refused while runs that use it are
    queued or running."""
    checkpoint_id = _check_id(checkpoint_id, "checkpoint")
    busy = db_runs.active_run_ids(checkpoint_id=checkpoint_id)
    if busy:
        raise ConflictError(
            f"checkpoint {checkpoint_id} is used by queued or running runs {busy}; "
            "cancel them or wait until they finish"
        )
    row = db_checkpoints.delete_checkpoint(checkpoint_id)
    if row is None:
        raise NotFoundError(f"There is no checkpoint {checkpoint_id}.")
    return row


# ---------------------------------------------------------------------------- finetune jobs
def list_jobs(*, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    if status is not None and status not in ALL_STATUSES:
        raise ValidationError(
            f"unknown status {status!r}; use one of: {', '.join(ALL_STATUSES)}", "status"
        )
    _check_page(limit, offset)
    page = db_jobs.list_jobs(status=status, limit=limit, offset=offset)
    return {"items": page.items, "total": page.total, "limit": page.limit, "offset": page.offset}


def get_job(job_id: int) -> dict[str, Any]:
    row = db_jobs.get_job(_check_id(job_id, "job"))
    if row is None:
        raise NotFoundError(f"There is no finetune job {job_id}.")
    return row


def submit_job(name: str, base: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a pyramidal finetune (``finetune.pyramidal.TrainConfig`` fields), store a queued
    job and send it to the ``train`` queue. Bad settings are refused before anything is written."""
    from finetune.pyramidal import ConfigError, validate_config
    from workers.train import default_out_dir

    name = _check_name(name)
    if db_checkpoints.find_checkpoint(name) is not None:
        raise ValidationError(f"A checkpoint named {name!r} already exists; choose another name.", "name")
    settings = {**(config or {}), "base": base, "name": name}
    for key, value in settings.items():  # free-text settings (sample prompt, data, teacher...) too
        if isinstance(value, str):
            _check_text(value, str(key), f"setting {key!r}", required=False, limit=10 * MAX_PROMPT_CHARS)
    # A job names no server paths of its own choosing: its checkpoint and cache go under the
    # data folder, and its data is the mini world or a folder inside the data folder.
    roots = allowed_roots()
    for key in ("out", "cache_dir"):
        if settings.get(key) not in (None, ""):
            settings[key] = str(_confine(settings[key], key, [_data_dir().resolve()]))
    data = settings.get("data")
    if isinstance(data, str) and data.strip() and not data.startswith("world:"):
        settings["data"] = str(_confine(data, "data", roots))
    settings.setdefault("out", default_out_dir(name))
    try:
        checked = validate_config(settings)
    except ConfigError as exc:
        raise ValidationError(str(exc), exc.field) from None
    row = db_jobs.add_job(name=name, base=base, config=checked.to_dict())
    try:
        from workers.tasks import enqueue_jobs

        enqueue_jobs([row["id"]])
    except Exception:  # the row is safe; a worker re-sends queued jobs when it starts
        log.exception("could not reach the broker for job %s; it stays queued", row["id"])
    return row


def cancel_job(job_id: int) -> dict[str, Any]:
    """Like :func:`cancel_run`, for a finetune job."""
    row = queue.request_cancel(FinetuneJob, _check_id(job_id, "job"))
    if row is None:
        raise NotFoundError(f"There is no finetune job {job_id}.")
    return row


__all__ = [
    "AuthError", "ConflictError", "ForbiddenError", "NotFoundError", "UnauthorizedError", "ValidationError", "FINAL_STATUSES", "baseline_schedule",
    "cancel_job", "cancel_run", "check_cancel_token", "delete_checkpoint", "delete_run", "get_checkpoint",
    "get_comparison", "get_job", "get_run", "list_checkpoints", "list_jobs", "list_runs",
    "queue_counts", "register_checkpoint", "register_shipped_checkpoints", "rename_checkpoint", "rerun", "submit_comparison",
    "submit_job", "submit_run",
]
