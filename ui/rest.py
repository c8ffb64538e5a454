"""The REST API, mounted next to the page on the same server (``/api/...``; OpenAPI at
``/openapi.json``, docs at ``/docs``).

Runs are posted with the CLI's names (prompt, negative_prompt, model, mode, schedule, guidance,
seed, frames, height, width). Every error is JSON ``{"detail": "...", "field": ...}``: 422 for
input a person must change, 404 for an unknown id, 409 for an action the state does not allow,
401/403/429 for the admin password or a run's cancel token.

Every answer that creates a run carries its ``cancel_token`` (for a comparison: one per run,
in ``runs``). ``POST /api/runs/{id}/cancel`` needs that token in the ``X-Cancel-Token`` header,
or the admin password (HTTP Basic or Bearer): none is 401, a wrong one 403.
"""
from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

import service
from core.plan import MAX_FRAMES, MAX_SIDE
from ui.auth import admin_password, client_key, guard

Id = Annotated[int, PathParam(ge=1, le=service.MAX_ROW_ID, description="a positive id")]
QueryId = Annotated[int, Query(ge=1, le=service.MAX_ROW_ID)]
Offset = Annotated[int, Query(ge=0, le=service.MAX_ROW_ID)]
Limit = Annotated[int, Query(ge=1, le=service.MAX_PAGE)]
Status = Literal["queued", "running", "done", "failed", "cancelled"]
#: Bounds of a run's shape, from core's limits; core's rules say which shapes inside them fit a plan.
Frames = Annotated[int, Field(ge=0, le=MAX_FRAMES, description=f"1 + a multiple of the plan's frame step, at most {MAX_FRAMES}")]
Side = Annotated[int, Field(ge=0, le=MAX_SIDE, description=f"a multiple of the plan's size step, at most {MAX_SIDE}")]
#: The header that asks a client for credentials, with a 401.
CHALLENGE = {"WWW-Authenticate": 'Basic realm="pwan admin", Bearer'}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None, headers=None):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers


# ---------------------------------------------------------------------------- bodies
class _VideoIn(BaseModel):
    """What a run and a comparison share: the prompt, the model, the guidance, the seed, the shape."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description=f"what the video shows (1 to {service.MAX_PROMPT_CHARS:,} characters)")
    negative_prompt: str = ""
    model: str | None = Field(None, description="model preset; default: the server's (PWAN_MODEL)")
    checkpoint: int | str | None = Field(None, description="a registered checkpoint id or name")
    guidance: float | list[float] | None = Field(
        None, description="one value, or one per stage; default: the model's recommended (5 for Wan)")
    seed: int | None = Field(None, description=f"0 to {service.MAX_SEED:,}; default random")
    frames: Frames = 17
    height: Side = 128
    width: Side = 128
    decoder: Literal["full", "tiny", "both"] = Field(
        "full", description="what decodes the final video: full (the VAE), tiny (the tiny decoder: ~10x faster "
                            "decode, slightly softer) or both (the full video, and the tiny one at ?decoder=tiny)")


class RunIn(_VideoIn):
    """One run, with the names of ``python -m core.generate``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "prompt": "a red circle moves to the right", "model": "tiny", "mode": "pyramidal",
        "schedule": "2-2-1", "seed": 0, "frames": 17, "height": 128, "width": 128}]})

    mode: Literal["pyramidal", "original"] = "pyramidal"
    schedule: str | None = Field(None, description="steps per stage, lowest resolution first: 20-20-10; 0-0-50 is "
                                                   "the original; default: a distilled checkpoint's recipe, else "
                                                   "20-20-10 (0-0-50 for the original)")


class ComparisonIn(_VideoIn):
    """The original model and the pyramidal one, same prompt and seed."""

    schedule: str | None = Field(None, description="the pyramid's schedule; default: a distilled checkpoint's "
                                                   "recipe, else 20-20-10")
    original_schedule: str | None = Field(None, description="default: one stage, same total steps (against a "
                                                            "distilled checkpoint: 0-0-50, the original's full plan)")


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a checkpoint folder on the server")
    base: str = Field(description="the model preset it was trained over")
    name: str
    card: dict[str, Any] | None = None


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class JobIn(BaseModel):
    """A finetune job. ``config["kind"]`` says which: ``"pyramidal"`` (the default; the other keys
    are ``finetune.pyramidal.TrainConfig`` fields) or ``"distill"`` (step distillation into a
    few-step student; ``finetune.distill.DistillConfig`` fields: method, teacher (a registered
    checkpoint's name or id, or a checkpoint folder), student_plan, steps, ...)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "tiny-pyramid", "base": "tiny", "config": {"data": "world:64", "steps": 50, "schedule": "2-2-1"}},
        {"name": "mini-distilled-2", "base": "mini", "config": {
            "kind": "distill", "method": "dmd-pt-star", "teacher": "mini-pyramidal", "student_plan": "2-2-1",
            "data": "world:256", "steps": 300}}]})

    name: str = Field(description="the checkpoint it will register")
    base: str = Field(description="the model preset to finetune")
    config: dict[str, Any] = Field(default_factory=dict, description="training settings: kind (pyramidal | distill), "
                                                                     "steps, data, lr, ...")


# ---------------------------------------------------------------------------- errors
def _call(fn, *args, **kwargs):
    """Call the service, answering its errors with their statuses (:data:`service.HTTP_STATUS`)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        status = service.http_status(exc)
        if status >= 500:
            raise
        raise ApiError(status, str(exc), service.error_field(exc),
                       headers=CHALLENGE if status == 401 else None) from None


def _pydantic_message(exc: RequestValidationError) -> tuple[str, str | None]:
    messages, field = [], None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        name = ".".join(loc) or "the request body"
        field = field or (loc[0] if loc else None)
        msg = err.get("msg", "is not valid")
        if err.get("type") == "missing":
            msg = "is required"
        elif err.get("type") == "extra_forbidden":
            msg = "is not a known field (check the spelling: prompt, negative_prompt, model, mode, schedule, guidance, seed, frames, height, width)"
        elif err.get("type") == "json_invalid":
            name, msg = "the request body", "is not valid JSON"
        messages.append(f"{name}: {msg}")
    return "; ".join(dict.fromkeys(messages)) or "the request is not valid", field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        body = {"detail": exc.detail}
        if exc.field is not None:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, field = _pydantic_message(exc)
        return JSONResponse({"detail": message, "field": field}, status_code=422)


# ---------------------------------------------------------------------------- admin
_basic = HTTPBasic(auto_error=False, description="any user name, the admin password")
_bearer = HTTPBearer(auto_error=False, description="the admin password as the token")


def _password(request: Request, basic: HTTPBasicCredentials | None,
              bearer: HTTPAuthorizationCredentials | None) -> str | None:
    """The admin password the request shows (Bearer, or Basic with any user name), or None."""
    if bearer is not None:
        return bearer.credentials
    if basic is not None:
        return basic.password
    header = request.headers.get("authorization", "")  # a malformed header counts as none
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:]).decode().partition(":")[2]
        except Exception:  # noqa: BLE001
            return None
    return None


def request_client(request: Request) -> str:
    """The client key of the admin lockout (see :func:`ui.auth.client_key`)."""
    return client_key(request.client.host if request.client else None,
                      request.headers.getlist("x-forwarded-for"))


def _refuse(verdict) -> None:
    if verdict.reason == "missing":
        raise ApiError(401, verdict.message, headers=CHALLENGE)
    if verdict.reason == "locked":
        raise ApiError(429, verdict.message, headers={"Retry-After": str(verdict.retry_after)})
    raise ApiError(403, verdict.message)


def require_admin(
    request: Request,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    verdict = guard.check(_password(request, basic, bearer), request_client(request))
    if not verdict.ok:
        _refuse(verdict)


def _finite(value):
    """JSON has no infinity: identical frames (PSNR = inf) are answered as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------- routes
def _video(row: dict, key: str, what: str, suffix: str = "") -> FileResponse:
    path = row.get(key)
    if key == "preview_path" and not path:
        candidate = service.preview_path(row["id"])
        path = str(candidate) if candidate.is_file() else None
    if not path or not Path(path).is_file():
        raise ApiError(404, f"Run {row['id']} has no {what} (status {row['status']}).")
    suffix = "-preview" if key == "preview_path" else suffix
    return FileResponse(path, media_type="video/mp4", filename=f"run-{row['id']}{suffix}.mp4",
                        content_disposition_type="inline")


def _health_routes(r: APIRouter, worker) -> None:
    @r.get("/health", tags=["server"], summary="Is the server up; queue counts; the embedded worker")
    def health() -> dict:
        from core import default_preset

        try:
            counts = service.queue_counts()
            database = "ok"
        except Exception as exc:  # noqa: BLE001 - health reports, never fails
            counts, database = {}, f"error: {type(exc).__name__}: {exc}"
        return {
            "status": "ok" if database == "ok" else "degraded",
            "database": database,
            "queue": counts,
            "default_model": default_preset(),
            "embedded_worker": None if worker is None else {"alive": worker.alive, "restarts": worker.restarts},
            "admin": admin_password() is not None,
        }


def _run_routes(r: APIRouter) -> None:
    @r.post("/runs", status_code=201, tags=["runs"], summary="Queue a run; answers the run (with its id and its secret cancel_token)")
    def post_run(body: RunIn) -> dict:
        data = body.model_dump()
        return _call(service.submit_run, data.pop("prompt"), **data)

    @r.get("/runs", tags=["runs"], summary="Runs, newest first")
    def get_runs(
        status: Annotated[list[Status] | None, Query()] = None,
        model: Annotated[str | None, Query(max_length=service.MAX_NAME_CHARS)] = None,
        search: Annotated[str | None, Query(max_length=service.MAX_PROMPT_CHARS)] = None,
        comparison_id: QueryId | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> dict:
        return _call(service.list_runs, status=status, model=model, search=search,
                     comparison_id=comparison_id, limit=limit, offset=offset)

    @r.get("/runs/{run_id}", tags=["runs"], summary="One run: status, progress, report, error")
    def get_run(run_id: Id) -> dict:
        return _call(service.get_run, run_id)

    @r.post("/runs/{run_id}/rerun", status_code=201, tags=["runs"], summary="Queue a new run with the same settings (answered with its own cancel_token)")
    def rerun(run_id: Id) -> dict:
        return _call(service.rerun, run_id)


def _file_routes(r: APIRouter) -> None:
    @r.get("/runs/{run_id}/video", tags=["runs"], summary="The finished mp4",
           response_class=FileResponse, responses={200: {"content": {"video/mp4": {}}}})
    def get_video(run_id: Id, decoder: Annotated[Literal["full", "tiny"] | None, Query(
            description="the video by one decoder: full, or tiny (of a run with decoder tiny or both); "
                        "default: the run's main video")] = None):
        row = _call(service.get_run, run_id)
        if decoder is None:
            return _video(row, "output_path", "video yet")
        path = service.decoded_video_path(row, decoder)
        if path is None and row.get("status") == "done":
            raise ApiError(404, f"Run {row['id']} has no {decoder}-decoded video: it ran with decoder "
                                f"{row.get('decoder')!r} (decoder 'both' makes both).", "decoder")
        return _video({**row, "decoded": path}, "decoded", f"{decoder}-decoded video yet", f"-{decoder}")

    @r.get("/runs/{run_id}/preview", tags=["runs"], summary="The low-resolution preview (pyramidal runs)",
           response_class=FileResponse, responses={200: {"content": {"video/mp4": {}}}})
    def get_preview(run_id: Id):
        return _video(_call(service.get_run, run_id), "preview_path", "preview yet")

    @r.get("/runs/{run_id}/still", tags=["runs"], summary="A small still (JPEG) of the finished video",
           response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}}}})
    def get_still(run_id: Id):
        row = _call(service.get_run, run_id)
        path = row.get("still_path")
        if not path or not Path(path).is_file():
            raise ApiError(404, f"Run {row['id']} has no still yet (status {row['status']}).")
        return FileResponse(path, media_type="image/jpeg", filename=f"run-{row['id']}.jpg",
                            content_disposition_type="inline")


def _cancel_route(r: APIRouter) -> None:
    @r.post("/runs/{run_id}/cancel", tags=["runs"], summary="Cancel a queued or running run",
            description="Needs the run's cancel token (the `cancel_token` its submit answered) in "
                        "the `X-Cancel-Token` header, or the admin password (HTTP Basic or Bearer). "
                        "Neither: 401; a wrong one: 403. Runs made before cancel tokens existed "
                        "can be cancelled by the admin only.",
            responses={401: {"description": "no cancel token and no admin password"},
                       403: {"description": "a wrong cancel token or admin password"}})
    def cancel(
        run_id: Id,
        request: Request,
        basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        x_cancel_token: Annotated[str | None, Header(description="the run's cancel token")] = None,
    ) -> dict:
        admin = False
        password = _password(request, basic, bearer)
        if password is not None:  # admin credentials, when given, must be right (or a token given)
            verdict = guard.check(password, request_client(request))
            admin = verdict.ok
            if not admin and not x_cancel_token:
                _refuse(verdict)
        return _call(service.cancel_run, run_id, x_cancel_token, admin=admin)


def _comparison_routes(r: APIRouter) -> None:
    from ui import compare as cmp

    @r.post("/comparisons", status_code=201, tags=["comparisons"],
            summary="Queue the original and the pyramidal model on the same prompt and seed; each run in runs has its own cancel_token")
    def post_comparison(body: ComparisonIn) -> dict:
        data = body.model_dump()
        return _call(service.submit_comparison, data.pop("prompt"), **data)

    @r.get("/comparisons/{comparison_id}", tags=["comparisons"], summary="A comparison and its runs")
    def get_comparison(comparison_id: Id) -> dict:
        return _call(service.get_comparison, comparison_id)

    @r.get("/compare", tags=["comparisons"], summary="Compare two finished runs: costs and PSNR/SSIM")
    def compare(a: QueryId, b: QueryId) -> dict:
        return _finite(_call(cmp.compare_runs, a, b))

    @r.get("/compare/video", tags=["comparisons"], summary="The two runs side by side, labelled (mp4)",
           response_class=FileResponse, responses={200: {"content": {"video/mp4": {}}}})
    def compare_video(a: QueryId, b: QueryId):
        path = _call(cmp.side_by_side, a, b)
        return FileResponse(path, media_type="video/mp4", filename=Path(path).name)


def _job_routes(admin: APIRouter) -> None:
    @admin.get("/jobs", summary="Finetune jobs, newest first")
    def jobs(status: Annotated[Status | None, Query()] = None, limit: Limit = 50, offset: Offset = 0) -> dict:
        return _call(service.list_jobs, status=status, limit=limit, offset=offset)

    @admin.get("/jobs/{job_id}", summary="One finetune job with its progress and losses")
    def job(job_id: Id) -> dict:
        return _call(service.get_job, job_id)

    @admin.post("/jobs/{job_id}/cancel", summary="Cancel a finetune job")
    def cancel_job(job_id: Id) -> dict:
        return _call(service.cancel_job, job_id)

    @admin.post("/jobs", status_code=201, summary="Queue a finetune job (config.kind: pyramidal or distill)")
    def submit_job(body: JobIn) -> dict:
        return _call(service.submit_job, body.name, body.base, body.config)


def _checkpoint_routes(admin: APIRouter) -> None:
    @admin.get("/checkpoints", summary="Model presets and registered checkpoints")
    def checkpoints() -> list[dict]:
        return _call(service.list_checkpoints)

    @admin.post("/checkpoints", status_code=201, summary="Register a checkpoint folder")
    def register(body: CheckpointIn) -> dict:
        return _call(service.register_checkpoint, body.path, body.base, body.name, body.card,
                     roots=service.allowed_roots())

    @admin.patch("/checkpoints/{checkpoint_id}", summary="Rename a checkpoint")
    def rename(checkpoint_id: Id, body: RenameIn) -> dict:
        return _call(service.rename_checkpoint, checkpoint_id, body.name)

    @admin.delete("/checkpoints/{checkpoint_id}", summary="Unregister a checkpoint (its folder stays)")
    def delete_checkpoint(checkpoint_id: Id) -> dict:
        return _call(service.delete_checkpoint, checkpoint_id)


def build_router(worker=None) -> APIRouter:
    """All ``/api`` routes. ``worker``: the embedded worker, if any (for /api/health)."""
    r = APIRouter(prefix="/api")
    _health_routes(r, worker)
    _run_routes(r)
    _file_routes(r)
    _cancel_route(r)
    _comparison_routes(r)

    admin = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)], tags=["admin"])
    _job_routes(admin)
    _checkpoint_routes(admin)

    @admin.delete("/runs/{run_id}", summary="Delete a run that is not running, and its video")
    def delete_run(run_id: Id) -> dict:
        return _call(service.delete_run, run_id)

    r.include_router(admin)
    return r
